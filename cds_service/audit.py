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

This module writes (the serialised append: lock, chain head, insert, retries); the group
commit that lets concurrent appends share one transaction is
:mod:`cds_service.audit_group_commit` (the trail's base class), the chain's table, entries
and hashing are :mod:`cds_service.audit_chain`, queries and verification
:mod:`cds_service.audit_reading`. The names callers use are all importable from here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
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
    patient_filter_problem,
    prepare,
    scrub,
)
from cds_service.audit_group_commit import GroupCommit, QueuedAppend
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
    "patient_filter_problem",
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


class AuditTrail(GroupCommit):
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
        super().__init__()

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

    def record_read(
        self,
        reader: Actor,
        endpoint: str,
        query: Sequence[tuple[str, str]],
        patient: str | None,
        returned: int,
        seq: int | None = None,
    ) -> None:
        """The ``audit-read`` entry of one answered read of the trail (HTTP or CLI): who read,
        where, with which filters (``query``: name and value pairs), about which patient, and
        how many entries went out. Reading the trail is access to the patient references in
        it. Call it after the page is read, so a page never holds its own read."""
        detail: dict[str, Any] = {
            "endpoint": endpoint,
            "query": [[name, value] for name, value in query],
            "returned": returned,
        }
        if seq is not None:
            detail["seq"] = seq
        self.record("audit-read", actor=reader, patient=patient, detail=detail)

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
        item = QueuedAppend(pending, with_rows)
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
        item = QueuedAppend(pending, with_rows, waiter=(loop, future))
        self._queue_awaited(item)
        # Shielded: a cancelled request must not cancel the future the writer will settle.
        await asyncio.shield(future)

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
