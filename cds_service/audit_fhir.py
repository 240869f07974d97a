"""Audit entries as FHIR R4 ``AuditEvent`` resources, and FHIR ``date`` search parameters.

Codes follow the FHIR R4 AuditEvent guidance: ``type`` from the DICOM audit event IDs
(DCM 110100-110114), ``subtype`` our event name (and the RESTful interaction where one fits),
``action`` C/R/U/D/E, ``outcome`` 0/4/8/12, the requesting agent from the JWT ``iss``/``sub``
and hook context user, and entities for the patient (object role 1) and the ECG.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from fhir.resources.R4B.auditevent import AuditEvent

from cds_service.audit import OUTCOMES, AuditEntry, canonical_json

DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL_INTERACTION: Final = "http://hl7.org/fhir/restful-interaction"
SOURCE_TYPE: Final = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE: Final = "http://terminology.hl7.org/CodeSystem/object-role"
#: Our event names as a code system (AuditEvent.subtype), and our ECG ids as identifiers.
EVENT_SYSTEM: Final = "urn:ecg-cds:audit-event"
ECG_ID_SYSTEM: Final = "urn:ecg-cds:ecg"

#: event -> (DICOM type code, display, action, RESTful interaction or None)
_EVENT_CODES: Final[dict[str, tuple[str, str, str, str | None]]] = {
    "hook-call": ("110112", "Query", "E", "operation"),
    "fetch": ("110107", "Import", "R", "search-type"),
    "classification": ("110110", "Patient Record", "C", None),
    "card": ("110106", "Export", "E", None),
    "feedback": ("110110", "Patient Record", "C", "operation"),
    "writeback": ("110106", "Export", "C", "transaction"),
    "ingest": ("110107", "Import", "C", None),
    "auth-failure": ("110114", "User Authentication", "E", None),
    "viewer-access": ("110110", "Patient Record", "R", "read"),
    "audit-read": ("110101", "Audit Log Used", "R", "search-type"),
}


def to_audit_event(entry: AuditEntry, *, observer: str = "ecg-cds") -> dict[str, Any]:
    """One audit entry as an R4 AuditEvent (validated with ``fhir.resources.R4B``)."""
    type_code, type_display, action, interaction = _EVENT_CODES[entry.event]
    if entry.event == "audit-read" and "seq" in entry.detail:
        interaction = "read"  # one entry by its id, not a search
    subtype = [{"system": EVENT_SYSTEM, "code": entry.event, "display": entry.event}]
    if interaction:
        subtype.append({"system": RESTFUL_INTERACTION, "code": interaction})
    if entry.event == "auth-failure":
        subtype.append({"system": DCM, "code": "110122", "display": "Login"})

    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(entry.seq),
        "type": {"system": DCM, "code": type_code, "display": type_display},
        "subtype": subtype,
        "action": action,
        "recorded": _instant(entry.ts),
        "outcome": OUTCOMES[entry.outcome],
        "agent": [_requestor(entry), _service_agent(observer)],
        "source": {
            "observer": {"display": observer},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    reason = entry.detail.get("reason") if isinstance(entry.detail, dict) else None
    if entry.outcome != "success" and isinstance(reason, str):
        resource["outcomeDesc"] = reason[:500]
    entities = _entities(entry)
    if entities:
        resource["entity"] = entities
    AuditEvent.model_validate(resource)
    return resource


def _requestor(entry: AuditEntry) -> dict[str, Any]:
    actor = entry.actor
    agent: dict[str, Any] = {"requestor": True}
    who: dict[str, Any] = {}
    if actor.user and "/" in actor.user:
        who["reference"] = actor.user
    elif actor.user:
        who["display"] = actor.user
    if actor.sub:
        who["identifier"] = {"value": actor.sub}
        if actor.iss:
            who["identifier"]["system"] = actor.iss
    elif actor.iss:
        who.setdefault("display", actor.iss)
    if actor.client and "display" not in who and "reference" not in who:
        who["display"] = actor.client
    agent["who"] = who or {"display": "unknown"}
    if actor.sub:
        agent["altId"] = actor.sub
    if actor.client:
        agent["name"] = actor.client
    return agent


def _service_agent(observer: str) -> dict[str, Any]:
    return {"requestor": False, "who": {"display": observer}}


def _entities(entry: AuditEntry) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if entry.patient:
        entities.append(
            {
                "what": {"reference": f"Patient/{entry.patient}"},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    details: list[dict[str, Any]] = [
        {"type": "seq", "valueString": str(entry.seq)},
        {"type": "hash", "valueString": entry.hash},
        {"type": "prev_hash", "valueString": entry.prev_hash},
    ]
    if entry.model_version:
        details.append({"type": "model_version", "valueString": entry.model_version})
    if entry.detail:
        details.append({"type": "detail", "valueString": canonical_json(entry.detail)})
    record: dict[str, Any] = {
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        "detail": details,
    }
    if entry.ecg_id:
        record["what"] = {"identifier": {"system": ECG_ID_SYSTEM, "value": entry.ecg_id}}
        record["name"] = f"ECG {entry.ecg_id}"
    else:
        record["name"] = "audit record"
    entities.append(record)
    return entities


def _instant(ts: datetime) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# -- FHIR date search --------------------------------------------------------------------------

_DATE_RE: Final = re.compile(
    r"^(?P<prefix>eq|ne|gt|lt|ge|le|sa|eb|ap)?"
    r"(?P<value>\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?)$"
)
_ONE_US: Final = timedelta(microseconds=1)


class DateParamError(ValueError):
    """A ``date`` search value this server does not understand."""


@dataclass(frozen=True)
class DateRange:
    """Inclusive bounds; None is open."""

    start: datetime | None = None
    end: datetime | None = None

    def intersect(self, other: DateRange) -> DateRange:
        starts = [d for d in (self.start, other.start) if d]
        ends = [d for d in (self.end, other.end) if d]
        return DateRange(max(starts) if starts else None, min(ends) if ends else None)


def parse_date_param(raw: str) -> DateRange:
    """A FHIR ``date`` search value (``ge2026-01-01``, ``lt2026-02``, ``2026-01-05T10:00Z``).

    A value stands for the whole period its precision implies (a day, a month, a year); the
    prefixes ``eq``, ``gt``, ``ge``, ``lt``, ``le`` compare against that period. Values without
    a time zone are read as UTC.
    """
    match = _DATE_RE.match(raw.strip())
    if not match:
        raise DateParamError(
            f"date value {raw!r} is not a FHIR date search value "
            "(e.g. ge2026-01-01, le2026-01-31T23:59:59Z)"
        )
    prefix = match.group("prefix") or "eq"
    if prefix not in ("eq", "gt", "ge", "lt", "le"):
        raise DateParamError(f"date prefix {prefix!r} is not supported (use eq, gt, ge, lt, le)")
    try:
        low, high = _period(match.group("value"))  # [low, high)
        if prefix == "eq":
            return DateRange(low, high - _ONE_US)
        if prefix == "ge":
            return DateRange(start=low)
        if prefix == "gt":
            return DateRange(start=high)
        if prefix == "le":
            return DateRange(end=high - _ONE_US)
        return DateRange(end=low - _ONE_US)  # lt
    except (ValueError, OverflowError) as exc:  # overflow: the period passes year 1 or 9999
        raise DateParamError(f"date value {raw!r} is not a valid date: {exc}") from exc


def _period(value: str) -> tuple[datetime, datetime]:
    if len(value) == 4:
        low = datetime(int(value), 1, 1, tzinfo=UTC)
        return low, low.replace(year=low.year + 1)
    if len(value) == 7:
        year, month = int(value[:4]), int(value[5:7])
        low = datetime(year, month, 1, tzinfo=UTC)
        high = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        return low, high
    if len(value) == 10:
        low = datetime.fromisoformat(value).replace(tzinfo=UTC)
        return low, low + timedelta(days=1)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    clock = re.sub(r"(Z|[+-]\d{2}:\d{2})$", "", value.split("T", 1)[1])
    if clock.count(":") == 1:
        step = timedelta(minutes=1)
    elif "." in clock:
        step = _ONE_US
    else:
        step = timedelta(seconds=1)
    return parsed, parsed + step
