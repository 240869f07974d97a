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

One module over 400 lines on purpose: the table, its guard, the hashing, the serialised
append, verification and queries are one invariant (an unbroken, append-only chain); split,
a reader would have to hold all the parts at once anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast, get_args

from sqlalchemy import (
    DDL,
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    Table,
    Text,
    event,
    func,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from cds_service.storage.base import Base

#: What can be audited. Callers pass one of these as ``event``.
EventName = Literal[
    "hook-call",
    "fetch",
    "classification",
    "card",
    "feedback",
    "writeback",
    "ingest",
    "auth-failure",
    "viewer-access",
]
EVENTS: Final[tuple[str, ...]] = get_args(EventName)
#: Outcomes, mapped to the FHIR AuditEvent outcome codes (0 success, 4 minor failure such as a
#: refused request, 8 serious failure such as a server error, 12 major failure).
OUTCOMES: Final = {"success": "0", "failure": "4", "error": "8", "fatal": "12"}

GENESIS_HASH: Final = "0" * 64
_REDACTED: Final = "[redacted]"
#: Keys whose values are credentials (compared lower-case with ``-`` and ``_`` removed).
_SECRET_KEYS: Final = frozenset(
    k.lower().replace("_", "").replace("-", "")
    for k in (
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "authorization",
        "fhirAuthorization",
        "bearer",
        "jwt",
        "password",
        "secret",
        "client_secret",
        "api_key",
        "cookie",
        "writeback_token",
    )
)
#: PostgreSQL advisory-lock key for the chain ("ECGAUDIT" as an int64).
_PG_LOCK_KEY: Final = int.from_bytes(b"ECGAUDIT", "big") & 0x7FFF_FFFF_FFFF_FFFF
_MAX_APPEND_ATTEMPTS: Final = 8
#: Most appends one group commit takes (more wait for the next): bounds one transaction.
_MAX_GROUP: Final = 256
#: How long the writer thread of awaited appends waits for more work before it ends (a
#: trail nobody awaits on keeps no thread).
_WRITER_IDLE_S: Final = 2.0


class AuditError(RuntimeError):
    """The trail could not be written or read (the database refused or is unreachable)."""


@dataclass(frozen=True)
class Actor:
    """Who caused an event. Any field may be unknown.

    ``iss``/``sub`` come from the caller's JWT, ``user`` from the hook context
    (e.g. ``"Practitioner/123"``), ``client`` names a non-EHR caller (an ingest token's name,
    the CLI user, a worker).
    """

    iss: str | None = None
    sub: str | None = None
    user: str | None = None
    client: str | None = None


class AuditEventRow(Base):
    """One audit entry. Never updated or deleted (triggers enforce it where the database can)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True, nullable=False)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
    event: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    actor_iss: Mapped[str | None] = mapped_column(String(512))
    actor_sub: Mapped[str | None] = mapped_column(String(512))
    actor_user: Mapped[str | None] = mapped_column(String(512), index=True)
    actor_client: Mapped[str | None] = mapped_column(String(256))
    #: Bare patient id (a leading ``Patient/`` is stripped so both spellings query alike).
    patient: Mapped[str | None] = mapped_column(String(256), index=True)
    ecg_id: Mapped[str | None] = mapped_column(String(128), index=True)
    model_version: Mapped[str | None] = mapped_column(String(128))
    #: Canonical JSON (sorted keys): hashed exactly as stored.
    detail: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)


def append_only_guard_ddl(dialect_name: str) -> list[str]:
    """SQL statements that make ``audit_events`` reject UPDATE and DELETE (and TRUNCATE on PG).

    Migrations call this (``for s in append_only_guard_ddl(op.get_bind().dialect.name):
    op.execute(s)``); ``Base.metadata.create_all`` runs it through an ``after_create`` hook.
    An unknown dialect gets no guard (the chain still detects tampering).
    """
    if dialect_name == "sqlite":
        return [
            "CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
            "CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
        ]
    if dialect_name == "postgresql":
        return [
            "CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'audit_events is append-only'; END; $$ LANGUAGE plpgsql",
            "DROP TRIGGER IF EXISTS audit_events_no_modify ON audit_events",
            "CREATE TRIGGER audit_events_no_modify BEFORE UPDATE OR DELETE ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
            "DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events",
            "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()",
        ]
    return []


def _install_guard(target: Any, connection: Connection, **_: Any) -> None:
    for statement in append_only_guard_ddl(connection.dialect.name):
        connection.execute(DDL(statement))


#: The Core table (typed), for inserts and ``create_all(tables=...)``.
AUDIT_TABLE: Final = cast(Table, AuditEventRow.__table__)
event.listen(AUDIT_TABLE, "after_create", _install_guard)
#: The append's two statements, built once (every hook call appends).
_HEAD: Final = (
    select(AuditEventRow.seq, AuditEventRow.hash).order_by(AuditEventRow.seq.desc()).limit(1)
)
_INSERT: Final = insert(AUDIT_TABLE)


@dataclass(frozen=True)
class AuditEntry:
    """One entry as read back (plain data for the API, the CLI and FHIR AuditEvent)."""

    seq: int
    ts: datetime
    event: str
    outcome: str
    actor: Actor
    patient: str | None
    ecg_id: str | None
    model_version: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ts"] = _iso(self.ts)
        return data


@dataclass(frozen=True)
class AuditFilter:
    """Query filters; all optional and combined with AND. Time bounds are inclusive.

    ``user`` matches any of the actor's user, subject or client, so one value finds everything a
    person or client did whichever way it was identified.
    """

    patient: str | None = None
    user: str | None = None
    iss: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    events: Sequence[str] = ()
    model_version: str | None = None
    outcome: str | None = None
    ecg_id: str | None = None


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    total: int
    limit: int
    offset: int

    @property
    def next_offset(self) -> int | None:
        end = self.offset + len(self.entries)
        return end if end < self.total else None


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    n_entries: int
    first_bad_seq: int | None = None
    reason: str | None = None
    last_hash: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One entry to append (see :meth:`AuditTrail.record` for the fields)."""

    event: str
    outcome: str = "success"
    actor: Actor | None = None
    patient: str | None = None
    ecg_id: str | None = None
    model_version: str | None = None
    detail: Mapping[str, Any] | None = None


@dataclass
class _Append:
    """One caller's entries (and rows) waiting for the group commit. ``waiter``: the event
    loop and future of an awaited append, settled from the writing thread."""

    pending: list[_Pending]
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


@dataclass
class _Pending:
    event: str
    outcome: str
    actor: Actor
    patient: str | None
    ecg_id: str | None
    model_version: str | None
    detail: str


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
        pending = [_prepare(r) for r in records]  # validate everything before writing
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
        pending = [_prepare(r) for r in records]
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
        self, pending: list[_Pending], with_rows: Callable[[Connection], None] | None
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
        self, pending: list[_Pending], with_rows: Callable[[Connection], None] | None = None
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
    def _next_rows(conn: Connection, pending: list[_Pending]) -> list[dict[str, Any]]:
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
    MAX_POSITION = 2**63 - 1

    def query(
        self, filters: AuditFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> AuditPage:
        """Entries matching ``filters``, newest first, with the total count for paging."""
        if limit < 1 or offset < 0:
            raise ValueError("limit must be >= 1 and offset >= 0")
        limit, offset = min(limit, self.MAX_POSITION), min(offset, self.MAX_POSITION)
        conditions = _conditions(filters or AuditFilter())
        with self._session_factory() as session:
            total = session.scalar(
                select(func.count()).select_from(AuditEventRow).where(*conditions)
            )
            rows = session.scalars(
                select(AuditEventRow)
                .where(*conditions)
                .order_by(AuditEventRow.seq.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return AuditPage(
            entries=[_entry(r) for r in rows], total=int(total or 0), limit=limit, offset=offset
        )

    def get(self, seq: int) -> AuditEntry | None:
        """The entry at ``seq``, or None."""
        if not 0 < seq <= self.MAX_POSITION:
            return None
        with self._session_factory() as session:
            row = session.scalars(select(AuditEventRow).where(AuditEventRow.seq == seq)).first()
        return _entry(row) if row else None

    def verify(self, batch_size: int = 1000, *, witnessed_hash: str | None = None) -> VerifyReport:
        """Walk the chain from the first entry; report the first entry that does not check out.

        Catches edited entries (hash mismatch), inserted or removed entries (a gap in ``seq`` or
        a ``prev_hash`` that is not the previous entry's hash). Removing the *newest* entries
        leaves a valid shorter chain; to catch that, keep ``last_hash`` somewhere else (a
        ticket, a log shipper) and pass it back as ``witnessed_hash``: it must still be in the
        chain.
        """
        expected_seq, prev_hash, n = 1, GENESIS_HASH, 0
        witnessed_seen = witnessed_hash is None
        for row in self._iter_rows(batch_size):
            n += 1
            if row["seq"] != expected_seq:
                return VerifyReport(
                    False,
                    n,
                    expected_seq,
                    f"entry seq {expected_seq} is missing (next is {row['seq']})",
                    prev_hash,
                )
            if row["prev_hash"] != prev_hash:
                return VerifyReport(
                    False,
                    n,
                    row["seq"],
                    "prev_hash does not match the previous entry's hash",
                    prev_hash,
                )
            if entry_hash(row, prev_hash) != row["hash"]:
                return VerifyReport(
                    False,
                    n,
                    row["seq"],
                    "content does not match its hash (entry was altered)",
                    prev_hash,
                )
            prev_hash, expected_seq = row["hash"], expected_seq + 1
            witnessed_seen = witnessed_seen or row["hash"] == witnessed_hash
        if not witnessed_seen:
            return VerifyReport(
                False,
                n,
                expected_seq,
                "the witnessed hash is not in the chain (entries removed from its end?)",
                prev_hash if n else None,
            )
        return VerifyReport(True, n, None, None, prev_hash if n else None)

    def _iter_rows(self, batch_size: int) -> Iterator[dict[str, Any]]:
        columns = [c for c in AUDIT_TABLE.columns if c.name != "id"]
        last_seq = 0
        with self._engine.connect() as conn:
            while True:
                rows = (
                    conn.execute(
                        select(*columns)
                        .where(AuditEventRow.seq > last_seq)
                        .order_by(AuditEventRow.seq)
                        .limit(batch_size)
                    )
                    .mappings()
                    .all()
                )
                if not rows:
                    return
                for r in rows:
                    yield dict(r)
                last_seq = rows[-1]["seq"]


# -- helpers -----------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, UTF-8): the same data always hashes alike."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(row: Mapping[str, Any], prev_hash: str) -> str:
    """sha256 over the previous hash and the canonical JSON of the entry's content."""
    content = {
        "seq": row["seq"],
        "ts": _iso(row["ts"]),
        "event": row["event"],
        "outcome": row["outcome"],
        "actor": [row["actor_iss"], row["actor_sub"], row["actor_user"], row["actor_client"]],
        "patient": row["patient"],
        "ecg_id": row["ecg_id"],
        "model_version": row["model_version"],
        "detail": row["detail"],
    }
    return hashlib.sha256((prev_hash + canonical_json(content)).encode("utf-8")).hexdigest()


def scrub(value: Any) -> Any:
    """A copy of ``value`` with the values of credential-like keys replaced by ``[redacted]``."""
    if isinstance(value, Mapping):
        return {
            str(k): (_REDACTED if _is_secret_key(str(k)) else scrub(v)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str) and value[:7].lower() == "bearer ":
        return _REDACTED
    return value


def normalise_patient(patient: str | None) -> str | None:
    """``Patient/123`` and ``123`` name the same patient; store and match the bare id."""
    if not patient:
        return None
    return patient.removeprefix("Patient/")


def _prepare(record: AuditRecord) -> _Pending:
    if record.event not in EVENTS:
        raise ValueError(
            f"unknown audit event {record.event!r}; expected one of {', '.join(EVENTS)}"
        )
    if record.outcome not in OUTCOMES:
        raise ValueError(
            f"unknown audit outcome {record.outcome!r}; expected one of {', '.join(OUTCOMES)}"
        )
    return _Pending(
        event=record.event,
        outcome=record.outcome,
        actor=record.actor or Actor(),
        patient=normalise_patient(record.patient),
        ecg_id=record.ecg_id,
        model_version=record.model_version,
        detail=canonical_json(scrub(dict(record.detail or {}))),
    )


def _is_secret_key(key: str) -> bool:
    return key.lower().replace("_", "").replace("-", "") in _SECRET_KEYS


def _is_lock_error(exc: OperationalError) -> bool:
    message = str(exc.orig).lower()
    return "locked" in message or "busy" in message or "deadlock" in message


def _iso(ts: datetime) -> str:
    """UTC ISO 8601 with microseconds; SQLite hands timestamps back naive (they are UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _as_utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _conditions(f: AuditFilter) -> list[Any]:
    c: list[Any] = []
    if f.patient:
        c.append(AuditEventRow.patient == normalise_patient(f.patient))
    if f.user:
        c.append(
            or_(
                AuditEventRow.actor_user == f.user,
                AuditEventRow.actor_sub == f.user,
                AuditEventRow.actor_client == f.user,
            )
        )
    if f.iss:
        c.append(AuditEventRow.actor_iss == f.iss)
    if f.start:
        c.append(AuditEventRow.ts >= _as_utc(f.start))
    if f.end:
        c.append(AuditEventRow.ts <= _as_utc(f.end))
    if f.events:
        c.append(AuditEventRow.event.in_(list(f.events)))
    if f.model_version:
        c.append(AuditEventRow.model_version == f.model_version)
    if f.outcome:
        c.append(AuditEventRow.outcome == f.outcome)
    if f.ecg_id:
        c.append(AuditEventRow.ecg_id == f.ecg_id)
    return c


def _entry(r: AuditEventRow) -> AuditEntry:
    return AuditEntry(
        seq=r.seq,
        ts=_as_utc(r.ts),
        event=r.event,
        outcome=r.outcome,
        actor=Actor(iss=r.actor_iss, sub=r.actor_sub, user=r.actor_user, client=r.actor_client),
        patient=r.patient,
        ecg_id=r.ecg_id,
        model_version=r.model_version,
        detail=json.loads(r.detail or "{}"),
        prev_hash=r.prev_hash,
        hash=r.hash,
    )


def running_trail(app: object) -> AuditTrail | None:
    """The audit trail of a started app (``app.state.runtime.audit``), or None before start.

    For middleware and error handlers, which run outside route dependencies.
    """
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    trail = getattr(runtime, "audit", None)
    return trail if isinstance(trail, AuditTrail) else None
