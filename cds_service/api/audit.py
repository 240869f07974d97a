"""Audit trail queries: ``GET /audit`` (JSON pages) and ``GET /fhir/AuditEvent`` (FHIR searchset).

Both need an audit credential (``Authorization: Bearer <token>`` with a token from
``settings.auth.audit_tokens``), deliberately separate from the EHR's hook JWTs: whoever may call
the hooks may not read who did what. Any failure is a bare 401 and is itself audited as an
``auth-failure`` event.

Every answered read is itself audited as ``audit-read`` (DICOM "Audit Log Used", 110101): the
reader, the endpoint, the filters asked for (the patient in the entry's patient field) and how
many entries were returned. The trail holds patient references, so reading it is access to
PHI, and "who looked at this patient's trail" must have an answer. The entry is appended after
the page is read: a page never contains its own read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cds_service.api.deps import AuditDep, SettingsDep
from cds_service.audit import (
    EVENTS,
    Actor,
    AuditEntry,
    AuditFilter,
    AuditTrail,
    EventName,
    patient_filter_problem,
)
from cds_service.audit_fhir import DateParamError, DateRange, parse_date_param, to_audit_event
from cds_service.auth.static_tokens import require_static_bearer

router = APIRouter(tags=["audit"])

OutcomeName = Literal["success", "failure", "error", "fatal"]
FHIR_JSON = "application/fhir+json"
MAX_PAGE = 500
#: Offsets and sequence numbers beyond this cannot be stored (SQL BIGINT): refused at the edge.
MAX_POSITION = AuditTrail.MAX_POSITION
#: Search parameters ``GET /fhir/AuditEvent`` understands; any other is refused, because
#: silently ignoring a filter would return more audit data than was asked for.
_FHIR_PARAMS = frozenset(
    {"patient", "date", "subtype", "outcome", "entity-id", "_count", "_offset", "_format"}
)


# -- dependencies ------------------------------------------------------------------------------


def require_audit_credential(
    request: Request,
    settings: SettingsDep,
    trail: AuditDep,
) -> Actor:
    """The audit reader, or a bare 401 (recorded as ``auth-failure``)."""
    return require_static_bearer(
        request, settings.auth.audit_tokens, trail, kind="audit", setting="auth.audit_tokens"
    )


# -- schemas -----------------------------------------------------------------------------------


class ActorOut(BaseModel):
    iss: str | None = Field(None, description="JWT issuer of the caller (the EHR)")
    sub: str | None = Field(None, description="JWT subject of the caller")
    user: str | None = Field(None, description="User from the hook context, e.g. Practitioner/123")
    client: str | None = Field(None, description="Non-EHR caller: ingest token, CLI user, worker")


class AuditEntryOut(BaseModel):
    seq: int = Field(description="Position in the hash chain, from 1")
    ts: datetime = Field(description="When it happened (UTC)")
    event: EventName
    outcome: OutcomeName
    actor: ActorOut
    patient: str | None = Field(None, description="Patient id (bare, without Patient/)")
    ecg_id: str | None = None
    model_version: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        a = entry.actor
        return cls(
            seq=entry.seq,
            ts=entry.ts,
            event=entry.event,
            outcome=entry.outcome,
            actor=ActorOut(iss=a.iss, sub=a.sub, user=a.user, client=a.client),
            patient=entry.patient,
            ecg_id=entry.ecg_id,
            model_version=entry.model_version,
            detail=entry.detail,
            prev_hash=entry.prev_hash,
            hash=entry.hash,
        )


class AuditPageOut(BaseModel):
    total: int = Field(description="Entries matching the filters")
    limit: int
    offset: int
    next_offset: int | None = Field(None, description="Offset of the next page; null at the end")
    entries: list[AuditEntryOut] = Field(description="Newest first")


# -- endpoints ---------------------------------------------------------------------------------


@router.get(
    "/audit",
    response_model=AuditPageOut,
    summary="Query the audit trail",
    description="Entries matching all given filters, newest first, one page at a time. "
    "Needs an audit credential (not the EHR's hook JWT).",
    responses={401: {"description": "Missing or unaccepted audit credential"}},
)
def query_audit(
    request: Request,
    reader: Annotated[Actor, Depends(require_audit_credential)],
    trail: AuditDep,
    patient: Annotated[str | None, Query(description="Patient id or Patient/<id>")] = None,
    user: Annotated[
        str | None, Query(description="Matches the actor's user, JWT sub or client name")
    ] = None,
    iss: Annotated[str | None, Query(description="JWT issuer of the caller")] = None,
    start: Annotated[
        datetime | None, Query(alias="from", description="From this time (inclusive, UTC if naive)")
    ] = None,
    end: Annotated[
        datetime | None, Query(alias="to", description="Up to this time (inclusive, UTC if naive)")
    ] = None,
    event: Annotated[list[EventName] | None, Query(description="Event type(s)")] = None,
    model_version: Annotated[str | None, Query()] = None,
    outcome: Annotated[OutcomeName | None, Query()] = None,
    ecg_id: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
) -> AuditPageOut:
    if problem := patient_filter_problem(patient):
        raise HTTPException(422, problem)
    filters = AuditFilter(
        patient=patient,
        user=user,
        iss=iss,
        start=_utc(start, "from"),
        end=_utc(end, "to"),
        events=tuple(event or ()),
        model_version=model_version,
        outcome=outcome,
        ecg_id=ecg_id,
    )
    page = trail.query(filters, limit=limit, offset=offset)
    query = request.query_params.multi_items()
    trail.record_read(reader, "/audit", query, filters.patient, len(page.entries))
    return AuditPageOut(
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        next_offset=page.next_offset,
        entries=[AuditEntryOut.of(e) for e in page.entries],
    )


@router.get(
    "/fhir/AuditEvent",
    summary="Search the audit trail as FHIR R4 AuditEvent resources",
    description="A searchset Bundle. Parameters: `patient` (id or Patient/id), `date` "
    "(repeatable, prefixes eq/gt/ge/lt/le, e.g. `date=ge2026-01-01&date=lt2026-02-01`), "
    "`subtype` (event name), `outcome` (0/4/8/12), `entity-id` (ECG id), `_count`, `_offset`.",
    response_class=JSONResponse,
    responses={
        200: {"content": {FHIR_JSON: {}}, "description": "searchset Bundle"},
        400: {"content": {FHIR_JSON: {}}, "description": "OperationOutcome: bad parameter"},
        401: {"description": "Missing or unaccepted audit credential"},
    },
)
def search_audit_events(
    request: Request,
    reader: Annotated[Actor, Depends(require_audit_credential)],
    trail: AuditDep,
    settings: SettingsDep,
) -> JSONResponse:
    params = request.query_params
    unknown = sorted(set(params.keys()) - _FHIR_PARAMS)
    if unknown:
        return _operation_outcome(400, f"unsupported search parameter(s): {', '.join(unknown)}")
    try:
        count = _int_param(params.get("_count"), "_count", 50, 1, MAX_PAGE)
        offset = _int_param(params.get("_offset"), "_offset", 0, 0, MAX_POSITION)
        dates = DateRange()
        for raw in params.getlist("date"):
            dates = dates.intersect(parse_date_param(raw))
        events = [s.split("|")[-1] for s in params.getlist("subtype")]
        bad_events = [e for e in events if e not in EVENTS]
        if bad_events:
            raise ValueError(f"unknown subtype {bad_events[0]!r}; known: {', '.join(EVENTS)}")
        outcome = _outcome_param(params.get("outcome"))
        if problem := patient_filter_problem(params.get("patient")):
            raise ValueError(problem)
    except (ValueError, DateParamError) as exc:
        return _operation_outcome(400, str(exc))

    filters = AuditFilter(
        patient=params.get("patient"),
        start=dates.start,
        end=dates.end,
        events=tuple(events),
        outcome=outcome,
        ecg_id=params.get("entity-id"),
    )
    page = trail.query(filters, limit=count, offset=offset)
    trail.record_read(
        reader, "/fhir/AuditEvent", params.multi_items(), filters.patient, len(page.entries)
    )
    base = settings.public_base_url.rstrip("/") + "/fhir"
    kept = [(k, v) for k, v in params.multi_items() if k not in ("_offset", "_count")]

    def link(relation: str, at: int) -> dict[str, str]:
        query = urlencode([*kept, ("_count", str(count)), ("_offset", str(at))])
        return {"relation": relation, "url": f"{base}/AuditEvent?{query}"}

    links = [link("self", offset)]
    if page.next_offset is not None:
        links.append(link("next", page.next_offset))
    if offset > 0:
        links.append(link("previous", max(0, offset - count)))
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": page.total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/AuditEvent/{e.seq}",
                "resource": to_audit_event(e),
                "search": {"mode": "match"},
            }
            for e in page.entries
        ],
    }
    if not bundle["entry"]:
        del bundle["entry"]
    return JSONResponse(bundle, media_type=FHIR_JSON)


@router.get(
    "/fhir/AuditEvent/{seq}",
    summary="Read one audit entry as a FHIR R4 AuditEvent",
    response_class=JSONResponse,
    responses={
        200: {"content": {FHIR_JSON: {}}},
        401: {"description": "Missing or unaccepted audit credential"},
        404: {"content": {FHIR_JSON: {}}, "description": "OperationOutcome: no such entry"},
    },
)
def read_audit_event(
    request: Request,
    seq: Annotated[int, Path(ge=1, le=MAX_POSITION, description="Position in the hash chain")],
    reader: Annotated[Actor, Depends(require_audit_credential)],
    trail: AuditDep,
) -> JSONResponse:
    entry = trail.get(seq)
    if entry is None:
        return _operation_outcome(404, f"AuditEvent/{seq} does not exist", code="not-found")
    query = request.query_params.multi_items()
    trail.record_read(reader, "/fhir/AuditEvent/{seq}", query, entry.patient, 1, seq=seq)
    return JSONResponse(to_audit_event(entry), media_type=FHIR_JSON)


# -- helpers -----------------------------------------------------------------------------------


def _utc(ts: datetime | None, name: str) -> datetime | None:
    if ts is None:
        return None
    try:
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 is in year 10000 in UTC
        raise HTTPException(
            422, f"{name}={ts.isoformat()} is outside years 1-9999 once converted to UTC"
        ) from None


def _int_param(raw: str | None, name: str, default: int, low: int, high: int | None) -> int:
    if raw is None:
        return default
    if len(raw) > 20:  # longer than any position; never convert 4,300-digit strings
        raise ValueError(f"{name} must be an integer of at most 20 digits")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _outcome_param(raw: str | None) -> str | None:
    if raw is None:
        return None
    by_code = {"0": "success", "4": "failure", "8": "error", "12": "fatal"}
    if raw not in by_code:
        raise ValueError(f"outcome must be one of 0, 4, 8, 12, got {raw!r}")
    return by_code[raw]


def _operation_outcome(status: int, message: str, code: str = "invalid") -> JSONResponse:
    return JSONResponse(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": message}],
        },
        status_code=status,
        media_type=FHIR_JSON,
    )
