"""The embedded dispatcher: interactive jobs overtake queued bulk work; retries back off."""

from __future__ import annotations

import threading
import time
from typing import Any

from cds_service.jobs.dispatch import EmbeddedDispatcher
from cds_service.jobs.errors import RetryableError, backoff_s


def test_interactive_jobs_overtake_queued_bulk_jobs() -> None:
    started, release = threading.Event(), threading.Event()
    order: list[str] = []
    done = threading.Semaphore(0)

    calls: list[tuple[str, list[str], bool]] = []

    def runner(task: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = list(args[0]) if task == "classify_ecgs" else [str(args[0])]
        if ids == ["blocker"]:
            started.set()
            release.wait(10)
        calls.append((task, ids, bool(kwargs.get("bulk"))))
        order.extend(ids)
        for _ in ids:
            done.release()

    dispatcher = EmbeddedDispatcher(threads=1, max_retries=0)
    dispatcher.start(runner)
    try:
        dispatcher.enqueue("classify_ecg", "blocker", bulk=True)
        assert started.wait(10)
        for name in ("bulk-1", "bulk-2", "bulk-3"):
            dispatcher.enqueue("classify_ecg", name, bulk=True)
        dispatcher.enqueue("classify_ecg", "hook")  # a clinician is waiting for this one
        release.set()
        for _ in range(5):
            assert done.acquire(timeout=10)
    finally:
        dispatcher.shutdown()
    assert order == ["blocker", "hook", "bulk-1", "bulk-2", "bulk-3"]
    # The bulk jobs that queued up behind the busy worker ran as one batch, still bulk.
    assert calls[1] == ("classify_ecg", ["hook"], False)
    assert calls[2] == ("classify_ecgs", ["bulk-1", "bulk-2", "bulk-3"], True)


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
    started, release = threading.Event(), threading.Event()
    calls: list[tuple[str, list[str], bool]] = []
    done = threading.Semaphore(0)

    def runner(task: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = list(args[0]) if task == "classify_ecgs" else [str(args[0])]
        if ids == ["blocker"]:
            started.set()
            release.wait(10)
        calls.append((task, ids, bool(kwargs.get("bulk"))))
        for _ in ids:
            done.release()

    dispatcher = EmbeddedDispatcher(threads=1, max_retries=0, max_batch=16, late_after_s=0.05)
    dispatcher.start(runner)
    try:
        dispatcher.enqueue("classify_ecg", "blocker")
        assert started.wait(10)
        dispatcher.enqueue("classify_ecg", "bulk-1", bulk=True)
        stale = [f"stale-{i}" for i in range(3)]
        for name in stale:
            dispatcher.enqueue("classify_ecg", name)
        time.sleep(0.2)  # their callers' budget is over
        dispatcher.enqueue("classify_ecg", "fresh-1")
        dispatcher.enqueue("classify_ecg", "fresh-2")
        release.set()
        for _ in range(7):
            assert done.acquire(timeout=10)
    finally:
        dispatcher.shutdown()
    assert calls[1] == ("classify_ecgs", ["fresh-1", "fresh-2"], False)
    # The late ones: after the fresh ones, interactive still, in batches of 16 // 8 = 2.
    assert [c[1] for c in calls[2:4]] == [["stale-0", "stale-1"], ["stale-2"]]
    assert not calls[2][2] and not calls[3][2]
    assert calls[4] == ("classify_ecg", ["bulk-1"], True)


def test_without_a_budget_the_order_stays_first_in_first_out() -> None:
    started, release = threading.Event(), threading.Event()
    order: list[str] = []
    done = threading.Semaphore(0)

    def runner(task: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = list(args[0]) if task == "classify_ecgs" else [str(args[0])]
        if ids == ["blocker"]:
            started.set()
            release.wait(10)
        order.extend(ids)
        for _ in ids:
            done.release()

    dispatcher = EmbeddedDispatcher(threads=1, max_retries=0)
    dispatcher.start(runner)
    try:
        dispatcher.enqueue("classify_ecg", "blocker")
        assert started.wait(10)
        dispatcher.enqueue("classify_ecg", "old")
        time.sleep(0.1)
        dispatcher.enqueue("classify_ecg", "new")
        release.set()
        for _ in range(3):
            assert done.acquire(timeout=10)
    finally:
        dispatcher.shutdown()
    assert order == ["blocker", "old", "new"]
