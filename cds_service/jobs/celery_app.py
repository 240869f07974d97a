"""The project's one Celery app. Every Celery setting is here, derived from :class:`JobSettings`.

Why these settings (see the Celery docs on reliability):

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged only when it
  finished, so a worker killed mid-task leaves it to be redelivered. Tasks are idempotent
  (results are unique per ECG and model version), so running one twice is harmless.
* ``worker_prefetch_multiplier = 1``: a worker reserves one task per process at a time; long
  classifications never sit behind a busy process while another is idle.
* time limits and ``worker_max_memory_per_child``: a stuck or leaking process is replaced.
* ``visibility_timeout`` (Redis): how long an unacknowledged task waits before redelivery.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from cds_service.settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    jobs = settings.jobs
    return {
        "broker_url": jobs.broker_url,
        "result_backend": jobs.result_backend,
        # Results live in the service database; the broker's result store is optional.
        "task_ignore_result": jobs.result_backend is None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_time_limit": jobs.task_time_limit_s,
        "task_soft_time_limit": jobs.task_soft_time_limit_s,
        "worker_max_memory_per_child": jobs.worker_max_memory_per_child_kb,
        "worker_concurrency": jobs.worker_concurrency,
        "broker_transport_options": {"visibility_timeout": jobs.visibility_timeout_s},
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": jobs.queue,
        "enable_utc": True,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings`` with the project's tasks registered."""
    app = Celery("ecg_cds", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.include = ["cds_service.jobs.tasks"]
    return app
