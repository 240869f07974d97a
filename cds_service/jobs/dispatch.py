"""Where a job goes once submitted: the same task bodies, two transports, chosen by settings.

* :class:`EmbeddedDispatcher` (``jobs.mode = "embedded"``): a small in-process thread pool
  runs the task bodies; no broker, nothing polls, the waiting hook is woken by a
  ``threading.Condition`` the moment a result is stored.
* :class:`CeleryDispatcher` (``jobs.mode = "distributed"``): the task is sent by name to the
  broker and run by ``ecg-cds worker`` processes on any machine.

Task bodies live in :mod:`cds_service.jobs.work` and take identifiers only.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from cds_service.jobs.errors import RetryableError, backoff_s

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

#: Task names on the broker, one per job kind (stable: workers and senders must agree).
TASK_NAMES = {
    "classify_ecg": "ecg_cds.classify_ecg",
    "classify_ecgs": "ecg_cds.classify_ecgs",
    "annotate_report": "ecg_cds.annotate_report",
    "backfill": "ecg_cds.backfill",
}

TaskRunner = Callable[[str, tuple[Any, ...], dict[str, Any]], None]

#: Lower runs first: a hook waiting for one ECG overtakes a backfill of thousands. LATE is
#: interactive work whose caller has stopped waiting (older than the hook's wait budget):
#: it yields to ECGs a caller still waits for, and still overtakes bulk work.
INTERACTIVE, LATE, BULK = 0, 1, 2


def bulk_queue(queue: str) -> str:
    """The broker queue for bulk work (ingest of folders, backfills) beside ``queue``."""
    return f"{queue}.bulk"


class Dispatcher(Protocol):
    #: True when jobs run in this process, so waiters can be woken without polling.
    in_process: bool

    def enqueue(self, task: str, *args: Any, bulk: bool = False, **kwargs: Any) -> None:
        """Run ``task(*args, **kwargs)`` soon; ``bulk`` work yields to interactive work."""
        ...

    def start(self, runner: TaskRunner) -> None:
        """Begin running jobs (in-process dispatchers call ``runner``; others ignore it)."""
        ...

    def shutdown(self) -> None: ...


class EmbeddedDispatcher:
    """Runs task bodies on worker threads in this process, interactive jobs first;
    retries with backoff on timers."""

    in_process = True

    def __init__(
        self,
        *,
        threads: int,
        max_retries: int,
        max_batch: int = 64,
        late_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``late_after_s``: age at which a queued interactive classification becomes LATE
        (the hook's wait budget: no hook waits longer for it); None keeps plain FIFO order.
        A LATE job waits while interactive jobs still in time are queued (under a steady
        stream of them, until the stream pauses) and runs before any bulk job; its ECG stays
        pending meanwhile, so a later hook call still finds it. ``clock``: seconds, for
        the ages (tests pass their own)."""
        self._runner: TaskRunner | None = None
        self._max_retries = max_retries
        self._max_batch = max(1, max_batch)
        self._late_after_s = late_after_s
        self._clock = clock
        self._queue: queue.PriorityQueue[tuple[int, int, _Job | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._size = max(1, threads)
        self._threads: list[threading.Thread] = []

    def start(self, runner: TaskRunner) -> None:
        """Start running jobs with ``runner`` (jobs enqueued before now wait for it).

        The runner comes after construction because it needs what is built with the
        dispatcher (the runtime the task bodies read from).
        """
        with self._lock:
            if self._runner is not None:
                raise RuntimeError("the dispatcher is already started")
            self._runner = runner
            self._threads = [
                threading.Thread(target=self._work, name=f"ecg-job-{i}", daemon=True)
                for i in range(self._size)
            ]
        for thread in self._threads:
            thread.start()

    def enqueue(self, task: str, *args: Any, bulk: bool = False, **kwargs: Any) -> None:
        if task not in TASK_NAMES:
            raise ValueError(f"unknown task {task!r}")
        priority = BULK if bulk else INTERACTIVE
        self._put(_Job(task, args, kwargs, priority, attempt=0, queued_at=self._clock()))

    def _put(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                log.warning("job %s not started: the service is shutting down", job.task)
                return
            self._queue.put((job.priority, next(self._order), job))

    def _work(self) -> None:
        while True:
            _, _, job = self._queue.get()
            if job is None:  # shutdown
                return
            if self._is_late(job):
                # Deadline first: under a burst, ECGs whose callers gave up would otherwise
                # join every later batch and make it miss the budget too (the service
                # tipped into answering "pending" to most calls). Requeued behind the
                # interactive jobs still in time; it comes straight back if there are none.
                self._put(replace(job, priority=LATE))
                continue
            if job.task == "classify_ecg":
                job = self._coalesce(job)
            self._run(job)

    def _is_late(self, job: _Job) -> bool:
        return (
            self._late_after_s is not None
            and job.priority == INTERACTIVE
            and job.task == "classify_ecg"
            and self._clock() - job.queued_at > self._late_after_s
        )

    def _coalesce(self, first: _Job) -> _Job:
        """Micro-batching: classify jobs of the same priority already waiting join this one,
        so ECGs that arrive while the model is busy go through it together, in one batch
        and one storage transaction, instead of one after another."""
        ids = [str(first.args[0])]
        # Late work goes in small batches, so that an ECG a caller waits for, arriving
        # meanwhile, waits for a few classifications and not for a whole batch.
        limit = self._max_batch if first.priority != LATE else max(1, self._max_batch // 8)
        while len(ids) < limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            job = item[2]
            if job is None or job.task != "classify_ecg" or job.priority != first.priority:
                self._queue.put(item)  # not ours: back in its place (same priority and order)
                break
            ids.append(str(job.args[0]))
        bulk = first.priority == BULK  # what the classification causes keeps its priority
        if len(ids) == 1:
            return replace(first, kwargs={"bulk": bulk})
        return replace(first, task="classify_ecgs", args=(ids,), kwargs={"bulk": bulk})

    def _run(self, job: _Job) -> None:
        assert self._runner is not None  # threads run only once started
        try:
            self._runner(job.task, job.args, {**job.kwargs, "attempt": job.attempt})
        except RetryableError as exc:
            if job.attempt >= self._max_retries:
                log.error("job %s gave up after %d attempts: %s", job.task, job.attempt + 1, exc)
                return
            delay = backoff_s(job.attempt)
            log.warning("job %s will retry in %.0f s: %s", job.task, delay, exc)
            again = replace(job, attempt=job.attempt + 1)  # its age counts from the first try
            timer = threading.Timer(delay, self._retry, (again,))
            timer.daemon = True
            with self._lock:
                self._timers.add(timer)
            timer.start()
        except Exception:  # the body has recorded the failure; keep the thread alive
            log.exception("job %s failed", job.task)

    def _retry(self, job: _Job) -> None:
        with self._lock:
            self._timers = {
                t for t in self._timers if t.is_alive() and t is not threading.current_thread()
            }
        self._put(job)

    def shutdown(self) -> None:
        """Finish running jobs; drop queued ones and retries (their ECGs stay pending and are
        resumed at the next start)."""
        with self._lock:
            self._closed = True
            timers = list(self._timers)
            dropped = 0
            while True:
                try:
                    self._queue.get_nowait()
                    dropped += 1
                except queue.Empty:
                    break
            for _ in self._threads:  # sentinels sort after every real job's priority
                self._queue.put((BULK + 1, next(self._order), None))
        for timer in timers:
            timer.cancel()
        if dropped:
            log.info("%d queued jobs left for the next start", dropped)
        for thread in self._threads:
            thread.join()


@dataclass(frozen=True)
class _Job:
    task: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    priority: int
    attempt: int
    queued_at: float


class CeleryDispatcher:
    """Sends tasks by name to the broker; ``ecg-cds worker`` processes run them.

    Bulk work goes to its own queue; workers consume both queues in turn, so a hook's
    classification waits for at most one bulk task per worker process, not for the backlog.
    """

    in_process = False

    def __init__(self, app: Celery, queue: str) -> None:
        self._app = app
        self._queue = queue

    def start(self, runner: TaskRunner) -> None:
        """Nothing to start here: ``ecg-cds worker`` processes run the task bodies."""

    def enqueue(self, task: str, *args: Any, bulk: bool = False, **kwargs: Any) -> None:
        self._app.send_task(
            TASK_NAMES[task],
            args=list(args),
            kwargs=kwargs,
            queue=bulk_queue(self._queue) if bulk else self._queue,
        )

    def shutdown(self) -> None:
        self._app.close()
