"""Report annotation: write one ECG's AI result back to the EHR's FHIR server.

One transaction Bundle (Device, impression Observation, DiagnosticReport, Provenance; see
:mod:`cds_service.fhir_results`) is POSTed to ``settings.fhir.writeback_server``, which must be
on ``settings.fhir.allowed_servers``. The outcome is audited as a ``writeback`` event.

Errors say whether trying again can help: :class:`WriteBackUnavailable` (connection failure,
timeout, 5xx, 429) is ``retryable`` and the ``annotate_report`` job retries it with backoff;
:class:`WriteBackRejected` (4xx, not allow-listed, nothing to write) is not. The bearer token
(``settings.fhir.writeback_token``) is sent on this one request and never logged, audited or
put in an error message; redirects are not followed, so it cannot leak to another host.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from cds_service.allow_list import (
    OutboundRefused,
    UrlMalformed,
    check_url,
    normalise_url,
    redact_url,
)
from cds_service.audit import Actor, AuditTrail
from cds_service.fhir_result_elements import FHIR_ID
from cds_service.fhir_results import build_result_bundle
from cds_service.settings import Settings
from cds_service.storage.records import EcgInfo, StoredResult

log = logging.getLogger(__name__)

FHIR_JSON: Final = "application/fhir+json"
WRITEBACK_ACTOR: Final = Actor(client="ecg-cds report annotation")
#: A source ECG on the FHIR server (Observation.derivedFrom): ``Type/id`` of the resource types
#: that hold ECGs, ids as R4 defines them, optionally a version, and then, as a hook records
#: its origin, the part that held the ECG: ``DocumentReference/7 (attachment 1)``,
#: ``ImagingStudy/5 (series 1.2.3)``.
_ECG_TYPES: Final = "Observation|DocumentReference|ImagingStudy|Media"
_ECG_SOURCE: Final = re.compile(
    rf"(?P<type>{_ECG_TYPES})/(?P<id>{FHIR_ID})"
    rf"(?:/_history/{FHIR_ID})?(?: \((?:attachment [0-9]+|series [^()]*)\))?"
)

#: Where a hook's origin begins in what it stored (``{fhirServer}/`` and then the origin:
#: ``Observation/7``, ``Observation (prefetched, no id)``, ``DocumentReference/3 (attachment
#: 1)``...). The id after the type is the caller's text, checked against nothing: the server
#: is what comes before the first such origin, whatever follows.
_HOOK_ORIGIN: Final = re.compile(rf"(?:^|/)(?:{_ECG_TYPES})(?:/| \()")


class WriteBackError(RuntimeError):
    """Write-back failed. ``retryable`` says whether the same call may succeed later."""

    retryable: bool = False

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class WriteBackUnavailable(WriteBackError):
    """The FHIR server could not be reached or failed (timeout, 5xx, 429): try again later."""

    retryable = True


class WriteBackRejected(WriteBackError):
    """The write-back cannot succeed as is (refused by the server with 4xx, server not
    allow-listed, no result or no patient): retrying will not help."""


@dataclass(frozen=True)
class WriteBackOutcome:
    """What the server created (relative references ``Type/id``)."""

    server: str
    ecg_id: str
    model_version: str
    status_code: int
    references: dict[str, str] = field(default_factory=dict)

    @property
    def observation(self) -> str | None:
        return self.references.get("Observation")

    @property
    def diagnostic_report(self) -> str | None:
        return self.references.get("DiagnosticReport")

    @property
    def provenance(self) -> str | None:
        return self.references.get("Provenance")

    @property
    def device(self) -> str | None:
        return self.references.get("Device")


def write_back(
    settings: Settings,
    audit: AuditTrail,
    ecg_id: str,
    info: EcgInfo | None,
    stored: StoredResult | None,
) -> WriteBackOutcome:
    """Write ``stored`` (the result for ECG ``ecg_id``, stored as ``info``) to the write-back
    FHIR server; audit the outcome. None for either says it is missing (a refusal)."""
    server = (settings.fhir.writeback_server or "").rstrip("/")
    patient = _patient_reference(info.patient_ref if info else None, server)
    audit_keys: dict[str, Any] = {"ecg_id": ecg_id, "patient": patient}

    def refuse(message: str, model_version: str | None = None) -> WriteBackRejected:
        audit.record(
            "writeback",
            outcome="failure",
            actor=WRITEBACK_ACTOR,
            model_version=model_version,
            detail={"server": server or None, "reason": message},
            **audit_keys,
        )
        return WriteBackRejected(message)

    if not server:
        raise refuse("no write-back server is configured (settings.fhir.writeback_server)")
    try:
        server = check_url(server, settings.fhir.allowed_servers, kind="write-back server")
    except OutboundRefused as exc:
        raise refuse(
            f"write-back server {exc.url} {exc.problem} (settings.fhir.allowed_servers); add it "
            "there to allow this service to write to it"
        ) from None
    if info is None:
        raise refuse(f"no ECG with id {ecg_id} is stored")
    if patient is None:
        raise refuse(f"ECG {ecg_id} is not linked to a patient; a report annotation needs one")
    elsewhere = _origin_problem(info.source_uri, server)
    if elsewhere is not None:
        raise refuse(
            f"ECG {ecg_id} came from {elsewhere}: its {patient} names a patient there, so it "
            "is not written to the write-back server's records"
        )
    if stored is None:
        raise refuse(f"ECG {ecg_id} has no classification result yet")
    version = stored.model_version

    resources = build_result_bundle(
        stored.result,
        ecg_reference=_ecg_reference(info.source_uri, server),
        patient_reference=patient,
        effective=info.acquired_at,
        model_card_url=settings.public_base_url.rstrip("/") + "/model-card",
        ecg_id=ecg_id,
        findings_threshold=settings.cards.finding_threshold,
    )
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    if settings.fhir.writeback_token:
        headers["Authorization"] = f"Bearer {settings.fhir.writeback_token}"

    try:
        with httpx.Client(timeout=settings.fhir.timeout_s, follow_redirects=False) as client:
            response = client.post(server, json=resources.bundle, headers=headers)
    except httpx.TransportError as exc:
        message = f"FHIR server {server} unreachable ({type(exc).__name__})"
        _audit_failure(audit, "error", server, message, None, version, audit_keys)
        raise WriteBackUnavailable(message) from None

    status = response.status_code
    if status >= 500 or status == 429:
        message = f"FHIR server {server} answered HTTP {status}"
        _audit_failure(audit, "error", server, message, status, version, audit_keys)
        raise WriteBackUnavailable(message, status_code=status)
    if status >= 300:
        message = f"FHIR server {server} refused the transaction: HTTP {status}" + _issues(response)
        _audit_failure(audit, "failure", server, message, status, version, audit_keys)
        raise WriteBackRejected(message, status_code=status)

    references = _created_references(response)
    audit.record(
        "writeback",
        outcome="success",
        actor=WRITEBACK_ACTOR,
        model_version=version,
        detail={"server": server, "status": status, "created": references},
        **audit_keys,
    )
    log.info("wrote report annotation for ECG %s to %s", ecg_id, server)
    return WriteBackOutcome(server, ecg_id, version, status, references)


def _patient_reference(patient_ref: str | None, server: str) -> str | None:
    """``Patient/<id>``; a bare id gets the type, an absolute URL on the server is made relative."""
    if not patient_ref:
        return None
    if server and patient_ref.startswith(server + "/"):
        patient_ref = patient_ref[len(server) + 1 :]
    return patient_ref if "/" in patient_ref else f"Patient/{patient_ref}"


def _origin_problem(source_uri: str | None, server: str) -> str | None:
    """Where a hook's ECG came from (stored as ``{fhirServer}/<origin>``, or the origin alone
    when the call named no fhirServer), where that is not ``server``; None where it is, or
    the source is no hook's (a file, a DICOMweb instance, an upload: their patient is the
    one the operator gave)."""
    if not source_uri:
        return None
    found = _HOOK_ORIGIN.search(source_uri)
    if found is None:
        return None
    if found.start() == 0:
        # A call with prefetch alone: its Patient/<id> is an id on a server it never named.
        return "a hook call that named no usable fhirServer"
    origin = source_uri[: found.start()]
    if not origin.startswith(("http://", "https://")):
        return None
    try:
        if normalise_url(origin).url.rstrip("/") == normalise_url(server).url.rstrip("/"):
            return None
    except UrlMalformed:
        pass
    return f"the FHIR server {redact_url(origin)}, not the write-back server"


def _ecg_reference(source_uri: str | None, server: str) -> str | None:
    """A literal reference when the ECG came from this FHIR server, else None (logical ref)."""
    if not source_uri:
        return None
    relative = source_uri
    if source_uri.startswith(server + "/"):
        relative = source_uri[len(server) + 1 :]
    elif "://" in source_uri:
        return None
    source = _ECG_SOURCE.fullmatch(relative)
    # Anything else (a prefetched resource's id is not checked) gets the logical reference.
    return f"{source['type']}/{source['id']}" if source else None


def _created_references(response: httpx.Response) -> dict[str, str]:
    """``{resourceType: "Type/id"}`` from a transaction-response's ``response.location``s."""
    try:
        body = response.json()
    except ValueError:
        return {}
    found: dict[str, str] = {}
    for entry in body.get("entry", []) if isinstance(body, dict) else []:
        location = (entry.get("response") or {}).get("location") or ""
        path = urlsplit(location).path if "://" in location else location
        parts = [p for p in path.split("/") if p]
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) >= 2:
            found.setdefault(parts[-2], f"{parts[-2]}/{parts[-1]}")
    return found


def _issues(response: httpx.Response) -> str:
    """The OperationOutcome's issue codes (not its free text, which may echo patient data)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    codes = sorted({str(i.get("code")) for i in body.get("issue", []) if i.get("code")})
    return f" ({', '.join(codes)})" if codes else ""


def _audit_failure(
    audit: AuditTrail,
    outcome: str,
    server: str,
    message: str,
    status: int | None,
    version: str,
    keys: dict[str, Any],
) -> None:
    audit.record(
        "writeback",
        outcome=outcome,
        actor=WRITEBACK_ACTOR,
        model_version=version,
        detail={"server": server, "status": status, "reason": message},
        **keys,
    )
