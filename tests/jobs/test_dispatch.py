"""The embedded dispatcher: interactive jobs overtake queued bulk work; retries back off."""

from __future__ import annotations

import threading
from typing import Any

from cds_service.jobs.dispatch import EmbeddedDispatcher
from cds_service.jobs.errors import RetryableError, backoff_s


class Recorder:
    """A task runner that records each call (task, ECG ids, bulk) and holds the worker on
    the ECG named "blocker" until released, so that jobs queue up behind it."""

    def __init__(self) -> None:
        self.now = 0.0  # the dispatcher's clock (``clock=recorder.clock``): moved by run()
        self.started, self.release = threading.Event(), threading.Event()
        self.calls: list[tuple[str, list[str], bool]] = []
        self._done = threading.Semaphore(0)

    def __call__(self, task: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = list(args[0]) if task == "classify_ecgs" else [str(args[0])]
        if ids == ["blocker"]:
            self.started.set()
            self.release.wait(10)
        self.calls.append((task, ids, bool(kwargs.get("bulk"))))
        for _ in ids:
            self._done.release()

    def clock(self) -> float:
        return self.now

    @property
    def order(self) -> list[str]:
        return [ecg for _, ids, _ in self.calls for ecg in ids]

    def run(self, dispatcher: EmbeddedDispatcher, blocker_bulk: bool, *jobs: Any) -> None:
        """Enqueue the blocker, then each job ((id, bulk), or seconds by which the clock
        moves on), release the blocker and wait until every ECG has run."""
        dispatcher.start(self)
        count = 1
        try:
            dispatcher.enqueue("classify_ecg", "blocker", bulk=blocker_bulk)
            assert self.started.wait(10)
            for job in jobs:
                if isinstance(job, float):
                    self.now += job
                    continue
                dispatcher.enqueue("classify_ecg", job[0], bulk=job[1])
                count += 1
            self.release.set()
            for _ in range(count):
                assert self._done.acquire(timeout=10)
        finally:
            dispatcher.shutdown()


def test_interactive_jobs_overtake_queued_bulk_jobs() -> None:
    recorder = Recorder()
    bulk = [(name, True) for name in ("bulk-1", "bulk-2", "bulk-3")]
    hook = ("hook", False)  # a clinician is waiting for this one
    recorder.run(EmbeddedDispatcher(threads=1, max_retries=0), True, *bulk, hook)
    assert recorder.order == ["blocker", "hook", "bulk-1", "bulk-2", "bulk-3"]
    # The bulk jobs that queued up behind the busy worker ran as one batch, still bulk.
    assert recorder.calls[1] == ("classify_ecg", ["hook"], False)
    assert recorder.calls[2] == ("classify_ecgs", ["bulk-1", "bulk-2", "bulk-3"], True)


def test_outages_are_retried_and_then_given_up() -> None:
    attempts: list[int] = []
    finished = threading.Event()

    def runner(task: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        attempts.append(kwargs["attempt"])
        if kwargs["attempt"] == 1:
            finished.set()
        raise RetryableError("FHIR server unavailable")

    dispatcher = EmbeddedDispatcher(threads=1, max_retries=1)
    dispatcher.start(runner)
    try:
        dispatcher.enqueue("annotate_report", "ecg-1")
        assert finished.wait(backoff_s(0) + 10)
    finally:
        dispatcher.shutdown()
    assert attempts == [0, 1]  # one retry after the first backoff, then it gives up


def test_ecgs_nobody_waits_for_any_more_yield_to_those_a_caller_waits_for() -> None:
    """Deadline first: an interactive classification queued for longer than the hook's wait
    budget runs after the ones queued since (still before bulk work), in small batches."""
    recorder = Recorder()
    dispatcher = EmbeddedDispatcher(
        threads=1, max_retries=0, max_batch=16, late_after_s=0.35, clock=recorder.clock
    )
    stale = [(f"stale-{i}", False) for i in range(3)]
    fresh = [("fresh-1", False), ("fresh-2", False)]
    # 0.5 s after the stale ones were queued, their callers' budget is over.
    recorder.run(dispatcher, False, ("bulk-1", True), *stale, 0.5, *fresh)
    calls = recorder.calls
    assert calls[1] == ("classify_ecgs", ["fresh-1", "fresh-2"], False)
    # The late ones: after the fresh ones, interactive still, in batches of 16 // 8 = 2.
    assert [c[1] for c in calls[2:4]] == [["stale-0", "stale-1"], ["stale-2"]]
    assert not calls[2][2] and not calls[3][2]
    assert calls[4] == ("classify_ecg", ["bulk-1"], True)


def test_without_a_budget_the_order_stays_first_in_first_out() -> None:
    recorder = Recorder()
    dispatcher = EmbeddedDispatcher(threads=1, max_retries=0, clock=recorder.clock)
    recorder.run(dispatcher, False, ("old", False), 5.0, ("new", False))
    assert recorder.order == ["blocker", "old", "new"]
