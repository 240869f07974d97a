"""Waiting for classification results without polling a broker.

In embedded mode the job runs in this process and :meth:`ResultWaits.notify` wakes the
waits for the ECGs it names through a condition variable; in distributed mode the result
appears in the shared database, which the wait reads again every poll interval.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence


class ResultWaits:
    """The waits of one process for results; thread-safe."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._generation = 0
        #: (generation, ECG ids or None for any) of the latest notifications.
        self._notes: deque[tuple[int, frozenset[str] | None]] = deque(maxlen=256)

    def notify(self, ecg_ids: Iterable[str] | None = None) -> None:
        """Wake the waits for ``ecg_ids`` (a result or failure was just stored for them;
        None: for any ECG). Waits for other ECGs go back to sleep without reading the
        database: with a burst of hook calls each batch woke every waiter to query."""
        with self._changed:
            self._generation += 1
            self._notes.append((self._generation, None if ecg_ids is None else frozenset(ecg_ids)))
            self._changed.notify_all()

    def _news_for(self, pending: set[str], since: int) -> bool:
        """Whether a notification after generation ``since`` may concern ``pending`` (called
        holding ``_changed``; notes older than those kept count as news)."""
        if self._generation == since:
            return False
        if not self._notes or self._notes[0][0] > since + 1:
            return True
        return any(
            generation > since and (ids is None or not ids.isdisjoint(pending))
            for generation, ids in self._notes
        )

    def until(
        self,
        ecg_ids: Sequence[str],
        timeout_s: float,
        fetch: Callable[[set[str]], set[str]],
        failed: Callable[[set[str]], set[str]],
        poll_s: float | None,
    ) -> dict[str, bool]:
        """Wait until every id is in ``fetch``'s answer (it has a result) or in ``failed``'s,
        or the time is up; id -> True (result) or False (failed) for those finished. With
        ``poll_s`` None the jobs run in this process and :meth:`notify` wakes the wait;
        otherwise the database is read again every ``poll_s`` seconds."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        pending = set(ecg_ids)
        finished: dict[str, bool] = {}
        while True:
            generation = self._generation
            for ecg_id in fetch(pending) & pending:
                finished[ecg_id] = True
            pending -= set(finished)
            if pending:
                failures = failed(pending)
                finished.update(dict.fromkeys(failures, False))
                pending -= failures
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                break
            if poll_s is None:
                with self._changed:
                    while not self._news_for(pending, generation) and remaining > 0:
                        self._changed.wait(remaining)
                        remaining = deadline - time.monotonic()
            else:
                time.sleep(min(poll_s, remaining))
        return finished
