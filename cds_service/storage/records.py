"""Plain records the stores hand out: what callers see of the tables, detached from sessions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.orm import object_session

from cds_service.storage.compact import Parts, join
from cds_service.storage.tables import EcgRow, FeedbackRow, ResultPartRow, ResultRow
from models.results import ClassificationResult

EcgStatus = Literal["pending", "done", "failed", "rejected"]


@dataclass(frozen=True)
class EcgInfo:
    """One stored ECG. ``created`` is True only on the call that first accepted it."""

    id: str
    sha256: str
    source_uri: str | None
    format: str
    patient_ref: str | None
    acquired_at: datetime | None
    created_at: datetime
    status: str
    error: str | None
    created: bool = False
    file_patient_id: str | None = None
    n_leads: int = 0
    fs: float = 0.0
    duration_s: float = 0.0
    size_bytes: int = 0

    @classmethod
    def from_row(cls, row: EcgRow, *, created: bool = False) -> EcgInfo:
        return cls(created=created, **{name: getattr(row, name) for name in _ECG_ROW_FIELDS})

    @classmethod
    def from_values(cls, values: Mapping[str, Any], *, created: bool = False) -> EcgInfo:
        """The info of an ``ecgs`` row from the values it was inserted with (an insert of a
        group builds no ORM object per ECG just to read its fields back). A new row has no
        error unless the values give one."""
        given = {name: values[name] for name in _ECG_ROW_FIELDS if name != "error"}
        return cls(created=created, error=values.get("error"), **given)


#: The columns of an ``ecgs`` row an :class:`EcgInfo` carries (every field but ``created``).
_ECG_ROW_FIELDS = tuple(f.name for f in fields(EcgInfo) if f.name != "created")


@dataclass(frozen=True)
class StoredResult:
    ecg_id: str
    model_version: str
    result: ClassificationResult
    created_at: datetime

    @classmethod
    def from_row(cls, row: ResultRow, parts: Parts | None = None) -> StoredResult:
        """The result a row holds, either form. A compact row's ``parts`` are read through
        the row's session when not given (:meth:`JobLedger.results` passes them cached)."""
        if row.parts_digest is not None and parts is None:
            session = object_session(row)
            body = session.get(ResultPartRow, row.parts_digest) if session else None
            parts = None if body is None else Parts.from_body(body.body)
        return cls(
            ecg_id=row.ecg_id,
            model_version=row.model_version,
            result=join(row.result, parts),
            created_at=row.created_at,
        )


@dataclass(frozen=True)
class FeedbackInfo:
    id: int
    card_uuid: str
    card_known: bool
    service_id: str
    ecg_id: str | None
    outcome: str
    accepted_suggestions: list[str]
    override_reason: dict[str, Any] | None
    user_comment: str | None
    outcome_timestamp: datetime | None
    source: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: FeedbackRow) -> FeedbackInfo:
        return cls(
            id=row.id,
            card_uuid=row.card_uuid,
            card_known=row.card_known,
            service_id=row.service_id,
            ecg_id=row.ecg_id,
            outcome=row.outcome,
            accepted_suggestions=list(row.accepted_suggestions or []),
            override_reason=row.override_reason,
            user_comment=row.user_comment,
            outcome_timestamp=row.outcome_timestamp,
            source=row.source,
            created_at=row.created_at,
        )
