"""The service's tables: ECG records and their original bytes, results, jobs, cards, feedback.

Idempotency lives in the schema, not in the callers: ``ecgs.sha256`` is unique (a duplicate
upload finds the existing record), ``results`` is unique on ``(ecg_id, model_version)`` (the
same ECG and model version never produce two results, however often a task is redelivered),
and ``jobs`` is unique on ``(kind, ecg_id, model_version)`` (one row tracks every attempt).

The original bytes sit in their own table so that listing ECGs never reads waveforms, and
live in the database rather than a folder so that workers on other machines need nothing
but the database URL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column

from cds_service.storage.base import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class EcgRow(Base):
    """One accepted ECG: where it came from, what it is, and how far processing got."""

    __tablename__ = "ecgs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    source_uri: Mapped[str | None] = mapped_column(Text, index=True)
    format: Mapped[str] = mapped_column(String(32))
    #: ``raw``: the bytes are the file; ``zip``: a bundle of several files (WFDB header + signals).
    container: Mapped[str] = mapped_column(String(8), default="raw")
    #: A FHIR reference (``Patient/123``) when the caller gave one.
    patient_ref: Mapped[str | None] = mapped_column(String(256), index=True)
    #: The patient id the file itself carries (not necessarily a FHIR id).
    file_patient_id: Mapped[str | None] = mapped_column(String(256))
    #: Acquisition time as the file states it; a naive value is the cart's local clock.
    acquired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    n_leads: Mapped[int] = mapped_column(Integer)
    fs: Mapped[float] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float)
    size_bytes: Mapped[int] = mapped_column(Integer)
    #: ``pending`` | ``done`` | ``failed`` | ``rejected`` (quality gate said no).
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class EcgBlobRow(Base):
    """The original bytes of an ECG, exactly as received (or a zip bundle of its files)."""

    __tablename__ = "ecg_blobs"

    ecg_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("ecgs.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ResultPartRow(Base):
    """What results share (label texts, codes, measurement units...), stored once under the
    SHA-256 of its canonical JSON (see :mod:`cds_service.storage.compact`); never changed."""

    __tablename__ = "result_parts"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ResultRow(Base):
    """What one model version said about one ECG: the compact form (what varies, plus the
    digest of its ``result_parts``) or, for rows written before it, ``to_dict()`` in full."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("ecg_id", "model_version", name="uq_results_ecg_model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ecg_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("ecgs.id", ondelete="CASCADE"), index=True
    )
    model_version: Mapped[str] = mapped_column(String(128))
    acceptable: Mapped[bool] = mapped_column(Boolean)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The ``result_parts`` the compact form names; None: ``result`` is a full ``to_dict()``.
    parts_digest: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("result_parts.digest", name="fk_results_parts_digest")
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class JobRow(Base):
    """A unit of background work and its attempts; the in-flight marker that dedupes submits."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("kind", "ecg_id", "model_version", name="uq_jobs_kind_ecg_model"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: ``classify`` | ``annotate``
    kind: Mapped[str] = mapped_column(String(16))
    ecg_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("ecgs.id", ondelete="CASCADE"), index=True
    )
    model_version: Mapped[str] = mapped_column(String(128))
    #: ``queued`` | ``running`` | ``done`` | ``failed``
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class CardRow(Base):
    """A card the service returned to an EHR (kept so feedback can be tied to an ECG)."""

    __tablename__ = "cards"

    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(128))
    ecg_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("ecgs.id", ondelete="SET NULL"), index=True
    )
    patient_ref: Mapped[str | None] = mapped_column(String(256))
    summary: Mapped[str] = mapped_column(String(256))
    indicator: Mapped[str] = mapped_column(String(16))
    card: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class FeedbackRow(Base):
    """A clinician's answer to a card (CDS Hooks feedback, or the viewer's own form)."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    card_uuid: Mapped[str] = mapped_column(String(64), index=True)
    #: False when no card with this uuid was ever shown (stored anyway, flagged).
    card_known: Mapped[bool] = mapped_column(Boolean)
    service_id: Mapped[str] = mapped_column(String(128))
    ecg_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("ecgs.id", ondelete="SET NULL"), index=True
    )
    outcome: Mapped[str] = mapped_column(String(32))
    accepted_suggestions: Mapped[list[str]] = mapped_column(JSON)
    override_reason: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    user_comment: Mapped[str | None] = mapped_column(Text)
    outcome_timestamp: Mapped[datetime | None] = mapped_column(UtcDateTime)
    source: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class StateRow(Base):
    """Small named values the service remembers between runs (e.g. the last DICOMweb poll)."""

    __tablename__ = "service_state"

    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


Index("ix_ecgs_patient_created", EcgRow.patient_ref, EcgRow.created_at)


class SeenTokenRow(Base):
    """A hook JWT already accepted (``sha256(iss NUL jti)``), kept until it expires, so that
    it is refused when replayed to another web process or after a restart."""

    __tablename__ = "seen_tokens"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
