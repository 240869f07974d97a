"""Where a job goes once submitted: the same task bodies, two transports, chosen by settings.

* :class:`EmbeddedDispatcher` (``jobs.mode = "embedded"``): a small in-process thread pool
  runs the task bodies; no broker, nothing polls, the waiting hook is woken by a
  ``threading.Condition`` the moment a result is stored.
* :class:`CeleryDispatcher` (``jobs.mode = "distributed"``): the task is sent by name to the
  broker and run by ``ecg-cds worker`` processes on any machine.

Task bodies live in :mod:`cds_service.jobs.work` and take identifiers only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from cds_service.jobs.errors import RetryableError, backoff_s

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

#: Task names on the broker, one per job kind (stable: workers and senders must agree).
TASK_NAMES = {
    "classify_ecg": "ecg_cds.classify_ecg",
    "annotate_report": "ecg_cds.annotate_report",
    "backfill": "ecg_cds.backfill",
}

TaskRunner = Callable[[str, tuple[Any, ...], dict[str, Any]], None]


class Dispatcher(Protocol):
    #: True when jobs run in this process, so waiters can be woken without polling.
    in_process: bool

    def enqueue(self, task: str, *args: Any, **kwargs: Any) -> None: ...

    def shutdown(self) -> None: ...


class EmbeddedDispatcher:
    """Runs task bodies on a thread pool in this process; retries with backoff on timers."""

    in_process = True

    def __init__(self, runner: TaskRunner, *, threads: int, max_retries: int) -> None:
        self._runner = runner
        self._max_retries = max_retries
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="ecg-job")
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()
        self._closed = False

    def enqueue(self, task: str, *args: Any, **kwargs: Any) -> None:
        if task not in TASK_NAMES:
            raise ValueError(f"unknown task {task!r}")
        self._submit(task, args, kwargs, attempt=0)

    def _submit(
        self, task: str, args: tuple[Any, ...], kwargs: dict[str, Any], attempt: int
    ) -> None:
        with self._lock:
            if self._closed:
                log.warning("job %s not started: the service is shutting down", task)
                return
            self._pool.submit(self._run, task, args, kwargs, attempt)

    def _run(self, task: str, args: tuple[Any, ...], kwargs: dict[str, Any], attempt: int) -> None:
        try:
            self._runner(task, args, {**kwargs, "attempt": attempt})
        except RetryableError as exc:
            if attempt >= self._max_retries:
                log.error("job %s gave up after %d attempts: %s", task, attempt + 1, exc)
                return
            delay = backoff_s(attempt)
            log.warning("job %s will retry in %.0f s: %s", task, delay, exc)
            timer = threading.Timer(delay, self._retry, (task, args, kwargs, attempt + 1))
            timer.daemon = True
            with self._lock:
                self._timers.add(timer)
            timer.start()
        except Exception:  # the body has recorded the failure; keep the pool alive
            log.exception("job %s failed", task)

    def _retry(
        self, task: str, args: tuple[Any, ...], kwargs: dict[str, Any], attempt: int
    ) -> None:
        with self._lock:
            self._timers = {
                t for t in self._timers if t.is_alive() and t is not threading.current_thread()
            }
        self._submit(task, args, kwargs, attempt)

    def shutdown(self) -> None:
        """Finish running jobs, drop queued retries (their ECGs stay pending and are resumed
        at the next start)."""
        with self._lock:
            self._closed = True
            timers = list(self._timers)
        for timer in timers:
            timer.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


class CeleryDispatcher:
    """Sends tasks by name to the broker; ``ecg-cds worker`` processes run them."""

    in_process = False

    def __init__(self, app: Celery) -> None:
        self._app = app

    def enqueue(self, task: str, *args: Any, **kwargs: Any) -> None:
        self._app.send_task(TASK_NAMES[task], args=list(args), kwargs=kwargs)

    def shutdown(self) -> None:
        self._app.close()
