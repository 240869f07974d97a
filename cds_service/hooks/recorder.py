"""Writes what a hook call must leave behind (cards, audit entries) off the response path.

Each of those writes is a database transaction (the audit trail's is a hash-chain append),
and together they cost more than the rest of a cached hook call. One background thread
does them in order right after the response; :func:`flush` waits for it (tests, shutdown:
it is also called at interpreter exit). When the queue is full, the caller writes itself:
back-pressure instead of unbounded memory.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_PENDING = 10_000


class Recorder:
    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._queue: queue.Queue[tuple[Callable[..., None], tuple[Any, ...]]] = queue.Queue(
            maxsize=max_pending
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="ecg-cds-hook-recorder", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            task, args = self._queue.get()
            try:
                task(*args)
            except Exception:
                log.exception("recording a hook call failed")
            finally:
                self._queue.task_done()

    def submit(self, task: Callable[..., None], *args: Any) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait((task, args))
        except queue.Full:
            task(*args)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything submitted so far is written; False on timeout."""
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout_s)


RECORDER = Recorder()


def flush(timeout_s: float = 10.0) -> bool:
    return RECORDER.flush(timeout_s)


atexit.register(flush, 5.0)
