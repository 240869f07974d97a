"""The Celery tasks: thin wrappers that run :mod:`cds_service.jobs.work` in a worker process.

Each worker process builds one :class:`~cds_service.runtime.Runtime` (database engine and the
classifier, loaded once) right after the fork (``worker_process_init``), never per task.
Outages raise :class:`RetryableError` and are retried with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_process_init, worker_process_shutdown

from cds_service.jobs import work
from cds_service.jobs.dispatch import TASK_NAMES
from cds_service.jobs.errors import RetryableError, backoff_s
from cds_service.runtime import Runtime

log = logging.getLogger(__name__)

_runtime: Runtime | None = None
_lock = threading.Lock()


def worker_runtime() -> Runtime:
    """This worker process's runtime (created on first use; the model loads once)."""
    global _runtime
    with _lock:
        if _runtime is None:
            from cds_service.settings import Settings

            _runtime = Runtime.start(Settings(), role="worker")
        return _runtime


@worker_process_init.connect
def _load_model_in_child(**_: Any) -> None:
    """Prefork child: open the database and load the model before the first task arrives."""
    runtime = worker_runtime()
    runtime.classifier  # noqa: B018  (load now, not inside the first task's time limit)


@worker_process_shutdown.connect
def _close_runtime(**_: Any) -> None:
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.stop()
            _runtime = None


def _retry(task: Task, exc: RetryableError) -> None:
    runtime = worker_runtime()
    attempt = task.request.retries
    raise task.retry(
        exc=exc, countdown=backoff_s(attempt), max_retries=runtime.settings.jobs.max_retries
    )


@shared_task(bind=True, name=TASK_NAMES["classify_ecg"])
def classify_ecg(self: Task, ecg_id: str) -> str:
    """Classify one stored ECG with this worker's model; a no-op if already classified."""
    # Write-backs caused by bulk work (a folder ingest) stay bulk: follow the queue it came on.
    routing = (self.request.delivery_info or {}).get("routing_key") or ""
    bulk = str(routing).endswith(".bulk")
    try:
        return work.classify_ecgs(worker_runtime(), [ecg_id], bulk=bulk).get(ecg_id, "missing")
    except RetryableError as exc:
        _retry(self, exc)
        raise  # unreachable: retry raises


@shared_task(bind=True, name=TASK_NAMES["annotate_report"])
def annotate_report(self: Task, ecg_id: str) -> str:
    """Write one ECG's result back to the FHIR server; retried while the server is down."""
    try:
        runtime = worker_runtime()
        final = self.request.retries >= runtime.settings.jobs.max_retries
        return work.annotate_report(runtime, ecg_id, final_attempt=final)
    except RetryableError as exc:
        _retry(self, exc)
        raise


@shared_task(bind=True, name=TASK_NAMES["classify_ecgs"])
def classify_ecgs(self: Task, ecg_ids: list[str], bulk: bool = False) -> dict[str, str]:
    """Classify a batch of stored ECGs in one model call (a no-op for those done)."""
    try:
        return work.classify_ecgs(worker_runtime(), ecg_ids, bulk=bulk)
    except RetryableError as exc:
        _retry(self, exc)
        raise


@shared_task(bind=True, name=TASK_NAMES["backfill"])
def backfill(
    self: Task,
    patient_ref: str | None = None,
    source_prefix: str | None = None,
    after_id: str | None = None,
    chunk_size: int | None = None,
    run: str | None = None,
    ids: list[str] | None = None,
) -> str | None:
    """Start a backfill run (queue its first chunks), or classify one chunk of a run and
    queue the next (see :func:`cds_service.jobs.work.backfill`)."""
    try:
        return work.backfill(
            worker_runtime(),
            patient_ref=patient_ref,
            source_prefix=source_prefix,
            after_id=after_id,
            chunk_size=chunk_size,
            run=run,
            ids=ids,
        )
    except RetryableError as exc:
        _retry(self, exc)
        raise
