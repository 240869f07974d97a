"""Group commit for the audit trail: concurrent appends of one process share a transaction.

Every append is queued as a :class:`QueuedAppend`; the first caller to find no write in
progress writes everything queued (its own entries included) in one transaction, and the
others wait for that commit, so each caller still returns only once its entries are stored.
Awaited appends (coroutines on the event loop) are written by a writer thread that ends when
idle. When a group's transaction fails, each append is retried on its own so one caller's bad
rows fail that caller alone.

:class:`GroupCommit` is the base of :class:`cds_service.audit.AuditTrail`, which supplies the
database append (``_append_with_retries``: the chain head read under the lock, the insert).
Split from ``cds_service.audit`` so the thread hand-off reads apart from the SQL of one append;
as a base class, the trail keeps its one object and its queue state (``_queued``,
``_writing``) where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Connection

from cds_service.audit_chain import AuditError, PendingEntry
from cds_service.forking import reset_in_forked_child

#: Most appends one group commit takes (more wait for the next): bounds one transaction.
_MAX_GROUP: Final = 256
#: How long the writer thread of awaited appends waits for more work before it ends (a
#: trail nobody awaits on keeps no thread).
_WRITER_IDLE_S: Final = 2.0


@dataclass
class QueuedAppend:
    """One caller's entries (and rows) waiting for the group commit. ``waiter``: the event
    loop and future of an awaited append, settled from the writing thread."""

    pending: list[PendingEntry]
    with_rows: Callable[[Connection], None] | None
    done: bool = False
    error: Exception | None = None
    waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def settle(self) -> None:
        """Wake the awaiting coroutine (from the writing thread), if there is one."""
        if self.waiter is None:
            return
        loop, future = self.waiter
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, future, self.error)


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():  # the awaiting request was cancelled; the entries are written anyway
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _all_rows(batch: Sequence[QueuedAppend]) -> Callable[[Connection], None] | None:
    """The callers' ``with_rows`` of a group, run in order in the group's transaction."""
    writers = [item.with_rows for item in batch if item.with_rows is not None]
    if not writers:
        return None

    def write(conn: Connection) -> None:
        for writer in writers:
            writer(conn)

    return write


class GroupCommit(ABC):
    """The queue, the group-commit writes and the writer thread of awaited appends."""

    def __init__(self) -> None:
        # Group commit: concurrent appends of this process go to the database together.
        self._group = threading.Condition()
        self._queued: list[QueuedAppend] = []
        self._writing = False
        self._writer: threading.Thread | None = None  # writes awaited appends
        reset_in_forked_child(self, GroupCommit._reset_after_fork)

    def _reset_after_fork(self) -> None:
        """A forked child's own lock, an empty queue, no write in progress, no writer."""
        self._group = threading.Condition()
        self._queued = []
        self._writing = False
        self._writer = None

    @abstractmethod
    def _append_with_retries(
        self, pending: list[PendingEntry], with_rows: Callable[[Connection], None] | None
    ) -> None:
        """Write ``pending`` (and ``with_rows``) to the chain in one transaction."""

    def _queue_awaited(self, item: QueuedAppend) -> None:
        """Queue an awaited append for the writer thread, starting it if none runs."""
        with self._group:
            self._queued.append(item)
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_awaited, name="audit-writer", daemon=True
                )
                self._writer.start()
            self._group.notify_all()

    def _write_awaited(self) -> None:
        """The writer thread: group-commit whatever is queued while no one else writes; end
        after ``_WRITER_IDLE_S`` without work (the next awaited append starts another)."""
        with self._group:
            try:
                while True:
                    if self._writing or not self._queued:
                        if not self._group.wait(_WRITER_IDLE_S) and not self._queued:
                            return
                        continue
                    self._write_next_batch()
            finally:
                self._writer = None

    def _write_next_batch(self) -> None:
        """Take up to ``_MAX_GROUP`` queued appends and write them (called holding
        ``_group``, which is released while writing)."""
        self._writing = True
        batch = self._queued[:_MAX_GROUP]
        del self._queued[:_MAX_GROUP]
        self._group.release()
        try:
            self._write_group(batch)
        finally:
            self._group.acquire()
            self._writing = False
            self._group.notify_all()

    def _commit_grouped(self, item: QueuedAppend) -> None:
        """Write ``item`` together with the appends queued beside it (group commit).

        The first caller to find no write in progress writes every queued append (its own
        included) in one transaction; the others wait for that commit, so each caller still
        returns only once its own entries are stored. Under concurrent writers (hook calls
        of several EHR clients) this is one lock, one chain-head read and one commit for
        many calls, instead of one each, queued behind each other.
        """
        with self._group:
            self._queued.append(item)
            while not item.done:
                if self._writing:
                    self._group.wait()
                    continue
                self._write_next_batch()

    def _write_group(self, batch: list[QueuedAppend]) -> None:
        """One transaction for the whole batch; if it fails, each append on its own, so one
        caller's bad rows fail that caller alone. Every item ends ``done``."""
        written: set[int] = set()
        try:
            if len(batch) > 1:
                try:
                    self._append_with_retries(
                        [p for item in batch for p in item.pending], _all_rows(batch)
                    )
                    written.update(range(len(batch)))
                    return
                except Exception:  # retried one by one just below
                    pass
            for index, item in enumerate(batch):
                try:
                    self._append_with_retries(item.pending, item.with_rows)
                    written.add(index)
                except Exception as exc:
                    item.error = exc
        finally:
            for index, item in enumerate(batch):
                if index not in written and item.error is None:  # the writer was interrupted
                    item.error = AuditError("the audit append was interrupted; not written")
                item.done = True
                item.settle()
