"""The tamper-evident audit trail: who did what, when, to which patient and ECG, with which model.

Every entry is appended to one hash chain: ``hash = sha256(prev_hash || canonical JSON of the
entry)``. Changing, inserting or removing an entry in the middle breaks the chain at that
entry, and :meth:`AuditTrail.verify` (``ecg-cds audit verify``) names the first bad ``seq``.

Appends are serialised so that several processes never fork the chain: PostgreSQL takes a
transaction-scoped advisory lock, SQLite takes the write lock up front with ``BEGIN IMMEDIATE``,
and a unique ``seq`` catches anything else (the append is retried). The table is append-only:
this module has no update or delete API, and :func:`append_only_guard_ddl` installs database
triggers that reject ``UPDATE``/``DELETE`` (created with the table by ``create_all`` and by the
alembic migration).

Tokens never reach the trail: :func:`scrub` replaces the values of credential-like keys in
``detail`` before hashing and storing.

This module writes (the serialised, group-committed append); the chain's table, entries and
hashing are :mod:`cds_service.audit_chain`, queries and verification
:mod:`cds_service.audit_reading`. The names callers use are all importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cds_service import audit_reading
from cds_service.audit_chain import (
    AUDIT_TABLE,
    EVENTS,
    GENESIS_HASH,
    OUTCOMES,
    Actor,
    AuditEntry,
    AuditError,
    AuditEventRow,
    AuditFilter,
    AuditPage,
    AuditRecord,
    EventName,
    PendingEntry,
    VerifyReport,
    append_only_guard_ddl,
    canonical_json,
    entry_hash,
    normalise_patient,
    prepare,
    scrub,
)
from cds_service.storage.base import Base

__all__ = [
    "AUDIT_TABLE",
    "EVENTS",
    "GENESIS_HASH",
    "OUTCOMES",
    "Actor",
    "AuditEntry",
    "AuditError",
    "AuditEventRow",
    "AuditFilter",
    "AuditPage",
    "AuditRecord",
    "AuditTrail",
    "EventName",
    "VerifyReport",
    "append_only_guard_ddl",
    "canonical_json",
    "entry_hash",
    "normalise_patient",
    "running_trail",
    "scrub",
]

#: The append's two statements, built once (every hook call appends).
_HEAD: Final = (
    select(AuditEventRow.seq, AuditEventRow.hash).order_by(AuditEventRow.seq.desc()).limit(1)
)
_INSERT: Final = insert(AUDIT_TABLE)


#: PostgreSQL advisory-lock key for the chain ("ECGAUDIT" as an int64).
_PG_LOCK_KEY: Final = int.from_bytes(b"ECGAUDIT", "big") & 0x7FFF_FFFF_FFFF_FFFF
_MAX_APPEND_ATTEMPTS: Final = 8
#: Most appends one group commit takes (more wait for the next): bounds one transaction.
_MAX_GROUP: Final = 256
#: How long the writer thread of awaited appends waits for more work before it ends (a
#: trail nobody awaits on keeps no thread).
_WRITER_IDLE_S: Final = 2.0


@dataclass
class _Append:
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


def _all_rows(batch: Sequence[_Append]) -> Callable[[Connection], None] | None:
    """The callers' ``with_rows`` of a group, run in order in the group's transaction."""
    writers = [item.with_rows for item in batch if item.with_rows is not None]
    if not writers:
        return None

    def write(conn: Connection) -> None:
        for writer in writers:
            writer(conn)

    return write


class AuditTrail:
    """Appends to, queries and verifies the audit chain in the database behind ``session_factory``.

    ``record`` raises :class:`AuditError` when the database refuses the entry: callers on a
    latency-critical path decide whether to fail closed or log and go on.
    """

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory
        bind = session_factory.kw.get("bind")
        if not isinstance(bind, Engine):
            raise TypeError("AuditTrail needs a sessionmaker bound to an Engine")
        self._engine: Engine = bind
        # Group commit: concurrent appends of this process go to the database together.
        self._group = threading.Condition()
        self._queued: list[_Append] = []
        self._writing = False
        self._writer: threading.Thread | None = None  # writes awaited appends

    @property
    def engine(self) -> Engine:
        return self._engine

    def create_table(self) -> None:
        """Create ``audit_events`` and its guard if missing (tests, embedded first start)."""
        Base.metadata.create_all(self._engine, tables=[AUDIT_TABLE])

    # -- writing -----------------------------------------------------------------------------

    def record(
        self,
        event: str,
        *,
        outcome: str = "success",
        actor: Actor | None = None,
        patient: str | None = None,
        ecg_id: str | None = None,
        model_version: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one entry to the chain. ``detail`` is scrubbed of credentials before storing."""
        self.record_many(
            [AuditRecord(event, outcome, actor, patient, ecg_id, model_version, detail)]
        )

    def record_many(
        self,
        records: Sequence[AuditRecord],
        *,
        with_rows: Callable[[Connection], None] | None = None,
    ) -> None:
        """Append several entries in one transaction (one disk sync instead of one each).

        All or none are written, consecutively in the chain. For a caller that records a
        group together, e.g. a hook call with its fetch and its cards. ``with_rows`` writes
        the caller's own rows in the same transaction (it must be idempotent: a lost race
        for the chain head runs the transaction again), so they and their audit entries are
        stored together or not at all.
        """
        pending = [prepare(r) for r in records]  # validate everything before writing
        if not pending:
            return
        item = _Append(pending, with_rows)
        self._commit_grouped(item)
        if item.error is not None:
            raise item.error

    async def arecord_many(
        self,
        records: Sequence[AuditRecord],
        *,
        with_rows: Callable[[Connection], None] | None = None,
    ) -> None:
        """:meth:`record_many` for a coroutine: returns once the entries are committed
        (raises :class:`AuditError` as it does), without holding a worker thread meanwhile.

        The append joins the same group commit as the threads' appends; a writer thread of
        this trail writes it (with whatever else is queued) and settles the future, so a
        hook call answered on the event loop still answers only after its audit is stored.
        """
        pending = [prepare(r) for r in records]
        if not pending:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        item = _Append(pending, with_rows, waiter=(loop, future))
        with self._group:
            self._queued.append(item)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_awaited, name="audit-writer", daemon=True
                )
                self._writer.start()
            self._group.notify_all()
        # Shielded: a cancelled request must not cancel the future the writer will settle.
        await asyncio.shield(future)

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

    def _commit_grouped(self, item: _Append) -> None:
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

    def _write_group(self, batch: list[_Append]) -> None:
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

    def _append_with_retries(
        self, pending: list[PendingEntry], with_rows: Callable[[Connection], None] | None
    ) -> None:
        last_error: Exception | None = None
        from cds_service.instruments import AUDIT_APPEND_SECONDS

        for attempt in range(_MAX_APPEND_ATTEMPTS):
            try:
                with AUDIT_APPEND_SECONDS.time():
                    self._append(pending, with_rows)
                return
            except IntegrityError as exc:  # another writer took the same seq: re-read and retry
                last_error = exc
            except OperationalError as exc:
                if not _is_lock_error(exc):
                    raise AuditError(f"could not write the audit entry: {exc.orig}") from exc
                last_error = exc
            time.sleep(0.01 * (attempt + 1))
        raise AuditError(f"could not append to the audit chain: {last_error}")

    def _append(
        self, pending: list[PendingEntry], with_rows: Callable[[Connection], None] | None = None
    ) -> None:
        dialect = self._engine.dialect.name
        if dialect == "sqlite":
            # pysqlite begins transactions lazily (and only DEFERRED); take the write lock
            # before reading the chain head so no other process can append in between.
            with self._engine.connect() as raw:
                conn = raw.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    if with_rows is not None:
                        with_rows(conn)
                    conn.execute(_INSERT, self._next_rows(conn, pending))
                    conn.exec_driver_sql("COMMIT")
                except BaseException:
                    conn.exec_driver_sql("ROLLBACK")
                    raise
            return
        with self._engine.begin() as conn:
            if dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            if with_rows is not None:
                with_rows(conn)
            conn.execute(_INSERT, self._next_rows(conn, pending))

    @staticmethod
    def _next_rows(conn: Connection, pending: list[PendingEntry]) -> list[dict[str, Any]]:
        """Rows continuing the chain from its current head (read under the append lock)."""
        head = conn.execute(_HEAD).first()
        seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
        now = datetime.now(UTC)
        rows = []
        for p in pending:
            row = {
                "seq": seq,
                "ts": now,
                "event": p.event,
                "outcome": p.outcome,
                "actor_iss": p.actor.iss,
                "actor_sub": p.actor.sub,
                "actor_user": p.actor.user,
                "actor_client": p.actor.client,
                "patient": p.patient,
                "ecg_id": p.ecg_id,
                "model_version": p.model_version,
                "detail": p.detail,
                "prev_hash": prev_hash,
            }
            row["hash"] = prev_hash = entry_hash(row, prev_hash)
            rows.append(row)
            seq += 1
        return rows

    # -- reading -----------------------------------------------------------------------------

    #: The largest position (seq, offset) a SQL BIGINT holds; larger ones match nothing.
    MAX_POSITION = audit_reading.MAX_POSITION

    def query(
        self, filters: AuditFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> AuditPage:
        """Entries matching ``filters``, newest first, with the total count for paging."""
        return audit_reading.query(self._session_factory, filters, limit=limit, offset=offset)

    def get(self, seq: int) -> AuditEntry | None:
        """The entry at ``seq``, or None."""
        return audit_reading.get(self._session_factory, seq)

    def verify(self, batch_size: int = 1000, *, witnessed_hash: str | None = None) -> VerifyReport:
        """Walk the chain and report the first entry that does not check out
        (:func:`cds_service.audit_reading.verify`)."""
        return audit_reading.verify(self._engine, batch_size, witnessed_hash=witnessed_hash)


def _is_lock_error(exc: OperationalError) -> bool:
    message = str(exc.orig).lower()
    return "locked" in message or "busy" in message or "deadlock" in message


def running_trail(app: object) -> AuditTrail | None:
    """The audit trail of a started app (``app.state.runtime.audit``), or None before start.

    For middleware and error handlers, which run outside route dependencies.
    """
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    trail = getattr(runtime, "audit", None)
    return trail if isinstance(trail, AuditTrail) else None
