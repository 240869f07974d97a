"""The audit chain's definition: its table and guard, its entries and how they hash.

Every entry is appended to one hash chain: ``hash = sha256(prev_hash || canonical JSON of the
entry)`` (:func:`entry_hash`). The table is append-only: :func:`append_only_guard_ddl`
installs database triggers that reject ``UPDATE``/``DELETE`` (created with the table by
``create_all`` and by the alembic migration). Tokens never reach the trail: :func:`scrub`
replaces the values of credential-like keys in ``detail`` before hashing and storing.

Writing (the serialised, group-committed append) is :mod:`cds_service.audit`; reading and
verifying, :mod:`cds_service.audit_reading`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast, get_args

from sqlalchemy import DDL, Connection, DateTime, Integer, String, Table, Text, event
from sqlalchemy.orm import Mapped, mapped_column

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
    "audit-read",
]
EVENTS: Final[tuple[str, ...]] = get_args(EventName)
#: Outcomes, mapped to the FHIR AuditEvent outcome codes (0 success, 4 minor failure such as a
#: refused request, 8 serious failure such as a server error, 12 major failure).
OUTCOMES: Final = {"success": "0", "failure": "4", "error": "8", "fatal": "12"}
#: The patient column's width: a longer patient filter matches nothing and cannot be stored
#: in the ``audit-read`` entry of its own query (PostgreSQL refuses it: a 500).
MAX_PATIENT_CHARS: Final = 256

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
    patient: Mapped[str | None] = mapped_column(String(MAX_PATIENT_CHARS), index=True)
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
        data["ts"] = iso_utc(self.ts)
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
class PendingEntry:
    """An entry validated and scrubbed, waiting to be given its place in the chain."""

    event: str
    outcome: str
    actor: Actor
    patient: str | None
    ecg_id: str | None
    model_version: str | None
    detail: str


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, UTF-8): the same data always hashes alike."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(row: Mapping[str, Any], prev_hash: str) -> str:
    """sha256 over the previous hash and the canonical JSON of the entry's content."""
    content = {
        "seq": row["seq"],
        "ts": iso_utc(row["ts"]),
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


def patient_filter_problem(patient: str | None) -> str | None:
    """Why ``patient`` cannot be a query's patient filter, or None."""
    bare = normalise_patient(patient)
    if bare is not None and len(bare) > MAX_PATIENT_CHARS:
        return (
            f"patient is {len(bare)} characters; a patient id here has at most "
            f"{MAX_PATIENT_CHARS} (a FHIR Patient.id at most 64)"
        )
    return None


def normalise_patient(patient: str | None) -> str | None:
    """``Patient/123`` and ``123`` name the same patient; store and match the bare id."""
    if not patient:
        return None
    return patient.removeprefix("Patient/")


def prepare(record: AuditRecord) -> PendingEntry:
    """Validate ``record`` (known event and outcome) and scrub its detail."""
    if record.event not in EVENTS:
        raise ValueError(
            f"unknown audit event {record.event!r}; expected one of {', '.join(EVENTS)}"
        )
    if record.outcome not in OUTCOMES:
        raise ValueError(
            f"unknown audit outcome {record.outcome!r}; expected one of {', '.join(OUTCOMES)}"
        )
    return PendingEntry(
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


def iso_utc(ts: datetime) -> str:
    """UTC ISO 8601 with microseconds; SQLite hands timestamps back naive (they are UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def as_utc(ts: datetime) -> datetime:
    """``ts`` in UTC; SQLite hands timestamps back naive (they are UTC)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def entry_of(r: AuditEventRow) -> AuditEntry:
    """The plain entry of a stored row."""
    return AuditEntry(
        seq=r.seq,
        ts=as_utc(r.ts),
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
