"""Where the ECGs are in FHIR resources: Observations, DocumentReferences, ImagingStudies.

Pure functions from a resource to :class:`EcgCandidate` s; fetching happens elsewhere.

* An ``Observation`` with ``SampledData`` (the FHIR "ekg" shape, MDC 131328) *is* an ECG:
  its JSON goes to the FHIR Observation reader.
* A ``DocumentReference`` (or R4 ``Media``) carries the native file as an attachment:
  inline ``data``, a ``Binary`` URL, or a WADO-RS URL.
* An ``ImagingStudy`` with modality ECG names DICOM instances reachable through its
  DICOMweb ``Endpoint``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adapters.record import utc_representable
from cds_service.fhir_client import DicomwebRef

#: Attachment types that can hold an ECG file (anything else is skipped, not fetched).
ECG_CONTENT_TYPES = (
    "application/dicom",
    "application/xml",
    "text/xml",
    "application/hl7-v3+xml",
    "application/x-hl7-aecg+xml",
    "application/fhir+json",
    "application/json",
    "application/octet-stream",
)
ECG_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.9."
#: At most this many instances per ImagingStudy are retrieved.
MAX_INSTANCES_PER_STUDY = 4


@dataclass(frozen=True)
class EcgCandidate:
    """One ECG to load: inline bytes, an attachment to fetch, or a DICOMweb instance."""

    origin: str  # e.g. "Observation/12", "DocumentReference/3 (attachment 1)"
    reference: str | None  # relative FHIR reference for derivedFrom
    acquired: datetime | None
    #: An Observation that *is* the ECG; serialised only once it is among the newest.
    resource: dict[str, Any] | None = None
    format: str | None = None
    attachment: dict[str, Any] | None = None
    dicomweb: DicomwebRef | None = None
    content_type: str | None = None


def _object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one: a field of the wrong type
    (``"search": "match"``, ``"period": "2024"``) is read as absent, never called on."""
    return value if isinstance(value, dict) else {}


def _array(value: Any) -> list[Any]:
    """``value`` when it is a JSON array, else an empty one (see :func:`_object`)."""
    return value if isinstance(value, list) else []


def parse_datetime(value: Any) -> datetime | None:
    """FHIR date/dateTime/instant -> aware datetime (dates at midnight UTC); None if absent."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    for candidate in (text, text + "-01", text + "-01-01"):
        try:
            parsed = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        return utc_representable(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    return None


def _reference(resource: dict[str, Any]) -> str | None:
    rid = resource.get("id")
    return f"{resource['resourceType']}/{rid}" if isinstance(rid, str) and rid else None


def has_waveform(observation: dict[str, Any]) -> bool:
    if isinstance(observation.get("valueSampledData"), dict):
        return True
    return any(
        isinstance(c, dict) and isinstance(c.get("valueSampledData"), dict)
        for c in _array(observation.get("component"))
    )


def canonical_json(resource: dict[str, Any]) -> bytes:
    """Stable bytes for a JSON resource, so the same Observation always hashes the same."""
    stable = {k: v for k, v in resource.items() if k != "meta"}
    return json.dumps(stable, sort_keys=True, separators=(",", ":")).encode("utf-8")


def from_observation(resource: dict[str, Any]) -> list[EcgCandidate]:
    if not has_waveform(resource):
        return []
    acquired = parse_datetime(
        resource.get("effectiveDateTime")
        or _object(resource.get("effectivePeriod")).get("start")
        or resource.get("effectiveInstant")
        or resource.get("issued")
    )
    reference = _reference(resource)
    return [
        EcgCandidate(
            origin=reference or "Observation (prefetched, no id)",
            reference=reference,
            acquired=acquired,
            resource=resource,
            format="fhir-observation",
        )
    ]


def from_document(resource: dict[str, Any]) -> list[EcgCandidate]:
    reference = _reference(resource)
    acquired = parse_datetime(
        _object(_object(resource.get("context")).get("period")).get("start")
        or resource.get("date")
        or resource.get("createdDateTime")
    )
    candidates = []
    contents = _array(resource.get("content"))
    if resource.get("resourceType") == "Media":
        contents = [{"attachment": resource.get("content")}]
    for index, content in enumerate(contents, start=1):
        attachment = content.get("attachment") if isinstance(content, dict) else None
        if not isinstance(attachment, dict):
            continue
        content_type = str(attachment.get("contentType") or "").split(";")[0].strip().lower()
        if content_type and content_type not in ECG_CONTENT_TYPES:
            continue
        created = parse_datetime(attachment.get("creation"))
        candidates.append(
            EcgCandidate(
                origin=f"{reference or resource['resourceType']} (attachment {index})",
                reference=reference,
                acquired=acquired or created,
                attachment=attachment,
                content_type=content_type or None,
            )
        )
    return candidates


def _uid(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value[len("urn:oid:") :] if value.startswith("urn:oid:") else value


def _endpoint_address(
    refs: Any, resource: dict[str, Any], endpoints: dict[str, dict[str, Any]]
) -> str | None:
    contained = {
        f"#{c.get('id')}": c
        for c in _array(resource.get("contained"))
        if isinstance(c, dict) and c.get("resourceType") == "Endpoint"
    }
    for ref in _array(refs):
        target = ref.get("reference") if isinstance(ref, dict) else None
        if not isinstance(target, str):
            continue  # a list or object here is unhashable: not a reference
        endpoint = contained.get(target) or endpoints.get(target)
        if endpoint and isinstance(endpoint.get("address"), str):
            return str(endpoint["address"])
    return None


def endpoint_references(resource: dict[str, Any]) -> list[str]:
    """``Endpoint/x`` references an ImagingStudy makes (to read when not contained)."""
    refs = list(_array(resource.get("endpoint")))
    for series in _array(resource.get("series")):
        if isinstance(series, dict):
            refs += _array(series.get("endpoint"))
    out = []
    for ref in refs:
        target = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(target, str) and target.startswith("Endpoint/"):
            out.append(target)
    return list(dict.fromkeys(out))


def from_imaging_study(
    resource: dict[str, Any], endpoints: dict[str, dict[str, Any]] | None = None
) -> list[EcgCandidate]:
    """DICOM ECG instances of a study (series with modality ECG or an ECG SOP class)."""
    endpoints = endpoints or {}
    reference = _reference(resource)
    study_uid = None
    for identifier in _array(resource.get("identifier")):
        if isinstance(identifier, dict) and identifier.get("system") == "urn:dicom:uid":
            study_uid = _uid(identifier.get("value"))
    if study_uid is None:
        return []
    acquired = parse_datetime(resource.get("started"))
    study_endpoint = _endpoint_address(resource.get("endpoint"), resource, endpoints)
    candidates: list[EcgCandidate] = []
    for series in _array(resource.get("series")):
        if not isinstance(series, dict):
            continue
        modality = _object(series.get("modality")).get("code")
        instances = [i for i in _array(series.get("instance")) if isinstance(i, dict)]
        is_ecg = modality == "ECG" or any(
            str(_object(i.get("sopClass")).get("code", "")).startswith(ECG_SOP_CLASS_PREFIX)
            for i in instances
        )
        series_uid = _uid(series.get("uid"))
        if not is_ecg or series_uid is None:
            continue
        base = _endpoint_address(series.get("endpoint"), resource, endpoints) or study_endpoint
        if base is None:
            continue
        series_acquired = parse_datetime(series.get("started")) or acquired
        for instance in instances or [{}]:
            instance_uid = _uid(instance.get("uid"))
            candidates.append(
                EcgCandidate(
                    origin=f"{reference or 'ImagingStudy'} (series {series_uid})",
                    reference=reference,
                    acquired=series_acquired,
                    dicomweb=DicomwebRef(base, study_uid, series_uid, instance_uid),
                    format=None,
                )
            )
            if len(candidates) >= MAX_INSTANCES_PER_STUDY:
                return candidates
    return candidates


def candidates_from(
    resource: dict[str, Any], endpoints: dict[str, dict[str, Any]] | None = None
) -> list[EcgCandidate]:
    kind = resource.get("resourceType")
    if kind == "Observation":
        return from_observation(resource)
    if kind in ("DocumentReference", "Media"):
        return from_document(resource)
    if kind == "ImagingStudy":
        return from_imaging_study(resource, endpoints)
    return []


def newest_first(candidates: list[EcgCandidate]) -> list[EcgCandidate]:
    floor = datetime.min.replace(tzinfo=UTC)
    return sorted(candidates, key=lambda c: c.acquired or floor, reverse=True)
