"""FHIR R4 resources for one classification: the report annotation written back to the EHR.

From a :class:`~models.results.ClassificationResult` this builds

* a **Device** for the model (name + ``version`` = the model version),
* an impression **Observation** (LOINC 8601-7 "EKG impression"): the top finding as its
  SNOMED-coded ``valueCodeableConcept``, every finding at or above the reporting threshold as a
  component (with its calibrated probability), and the measurements as LOINC-coded components
  with UCUM quantities,
* a **DiagnosticReport** (LOINC 11524-6 "EKG study", category LOINC part LP29708-2 Cardiology)
  whose ``result`` references the Observation,
* a **Provenance** naming the model Device as author of both, with the source ECG as entity,

all labelled ``meta.security`` AIAST ("AI asserted", HL7 AI Transparency on FHIR), and puts
them in one transaction Bundle with ``urn:uuid:`` fullUrls so the server writes all or nothing.
Device, Observation and DiagnosticReport carry identifiers and are created with
``ifNoneExist``, so a retried write-back does not duplicate them.

Resources are plain dicts (JSON-ready) validated against ``fhir.resources.R4B``. The CDS Hooks
cards reuse :func:`build_impression_observation` and :func:`build_diagnostic_report` (without
ids) as suggestion ``create`` actions.

What goes inside the resources (code systems and codes, the finding and measurement
elements, the summary texts) is :mod:`cds_service.fhir_result_elements`; this module
assembles the resources and the Bundle.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.provenance import Provenance

from cds_service.fhir_result_elements import (
    AIAST,
    CARDIOLOGY_CATEGORY,
    DATA_ABSENT_REASON,
    DATA_OPERATION,
    IMPRESSION_CODE,
    MODEL_IDENTIFIER_SYSTEM,
    OBSERVATION_CATEGORY,
    PROVENANCE_AGENT_TYPE,
    RESULT_IDENTIFIER_SYSTEM,
    STUDY_CODE,
    device_ref,
    ecg_source_reference,
    finding_component,
    finding_concept,
    findings,
    instant,
    measurement_component,
    method_text,
    quality_text,
    summary_text,
)
from models.results import ClassificationResult


@dataclass(frozen=True)
class ResultResources:
    """The resources for one result, and the transaction Bundle that writes them together."""

    device: dict[str, Any]
    observation: dict[str, Any]
    diagnostic_report: dict[str, Any]
    provenance: dict[str, Any]
    bundle: dict[str, Any]


def build_device(model_version: str, *, model_card_url: str | None = None) -> dict[str, Any]:
    """The model as a Device: name, version, and where its model card is."""
    device: dict[str, Any] = {
        "resourceType": "Device",
        "meta": {"security": [AIAST]},
        "identifier": [{"system": MODEL_IDENTIFIER_SYSTEM, "value": model_version}],
        "status": "active",
        "deviceName": [{"name": "ECG CDS zero-shot ECG-text model", "type": "model-name"}],
        "modelNumber": model_version,
        "type": {"text": "Artificial intelligence model (software)"},
        "version": [{"value": model_version}],
    }
    if model_card_url:
        device["note"] = [{"text": f"Model card: {model_card_url}"}]
    return _validated(Device, device)


def build_impression_observation(
    result: ClassificationResult,
    *,
    patient_reference: str | None,
    ecg_reference: str | None,
    effective: datetime | None,
    device_reference: str | None = None,
    findings_threshold: float,
    identifier: str | None = None,
    issued: datetime | None = None,
    ecg_id: str | None = None,
) -> dict[str, Any]:
    """The AI impression of one ECG (LOINC 8601-7), status ``preliminary`` until a clinician signs.

    ``device_reference`` (e.g. ``urn:uuid:...`` in a Bundle) points at the model Device; without
    it the device is named by display only, which suits a card suggestion on a server that
    does not hold the Device. Without an ``ecg_reference`` the source ECG is referenced
    logically by this service's ``ecg_id``.
    """
    asserted = findings(result, findings_threshold)
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": {"security": [AIAST]},
        "status": "preliminary",
        "category": [
            {"coding": [{"system": OBSERVATION_CATEGORY, "code": "procedure"}]},
        ],
        "code": {"coding": [IMPRESSION_CODE], "text": "ECG impression (AI)"},
        "issued": instant(issued or datetime.now(UTC)),
        "device": device_ref(result.model_version, device_reference),
        "method": {"text": method_text(result.model_version, findings_threshold)},
    }
    if identifier:
        observation["identifier"] = [{"system": RESULT_IDENTIFIER_SYSTEM, "value": identifier}]
    if patient_reference:
        observation["subject"] = {"reference": patient_reference}
    if effective:
        observation["effectiveDateTime"] = instant(effective)
    source = ecg_source_reference(ecg_reference, ecg_id)
    if source:
        observation["derivedFrom"] = [source]

    if not result.quality.acceptable:
        observation["dataAbsentReason"] = {
            "coding": [{"system": DATA_ABSENT_REASON, "code": "not-performed"}],
            "text": "ECG not interpreted: " + quality_text(result),
        }
    elif asserted:
        observation["valueCodeableConcept"] = finding_concept(asserted[0])
    else:
        observation["valueCodeableConcept"] = {
            "text": f"No finding reached the reporting threshold (p >= {findings_threshold:.2f})"
        }

    components = [finding_component(s) for s in asserted]
    components += [c for c in map(measurement_component, result.measurements.values()) if c]
    if components:
        observation["component"] = components
    observation["note"] = [{"text": summary_text(result, findings_threshold)}]
    return _validated(Observation, observation)


def build_diagnostic_report(
    result: ClassificationResult,
    *,
    observation_references: Sequence[str],
    patient_reference: str | None,
    effective: datetime | None,
    findings_threshold: float,
    identifier: str | None = None,
    issued: datetime | None = None,
) -> dict[str, Any]:
    """An EKG study report (LOINC 11524-6, category Cardiology) grouping the impression."""
    asserted = findings(result, findings_threshold)
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "meta": {"security": [AIAST]},
        "status": "preliminary",
        "category": [{"coding": [CARDIOLOGY_CATEGORY]}],
        "code": {"coding": [STUDY_CODE], "text": "ECG study (AI interpretation)"},
        "issued": instant(issued or datetime.now(UTC)),
        "conclusion": summary_text(result, findings_threshold),
    }
    if identifier:
        report["identifier"] = [{"system": RESULT_IDENTIFIER_SYSTEM, "value": identifier}]
    if patient_reference:
        report["subject"] = {"reference": patient_reference}
    if effective:
        report["effectiveDateTime"] = instant(effective)
    if observation_references:
        report["result"] = [{"reference": r} for r in observation_references]
    coded = [finding_concept(s) for s in asserted if s.codes]
    if coded:
        report["conclusionCode"] = coded
    return _validated(DiagnosticReport, report)


def build_provenance(
    *,
    target_references: Sequence[str],
    device_reference: str,
    recorded: datetime,
    ecg_reference: str | None,
    model_card_url: str | None = None,
    ecg_id: str | None = None,
) -> dict[str, Any]:
    """AI Provenance: the model Device authored the targets, from the source ECG."""
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "meta": {"security": [AIAST]},
        "target": [{"reference": r} for r in target_references],
        "recorded": instant(recorded),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": "CREATE", "display": "create"}]},
        "agent": [
            {
                "type": {"coding": [{"system": PROVENANCE_AGENT_TYPE, "code": "author"}]},
                "who": {"reference": device_reference},
            }
        ],
    }
    if model_card_url:
        provenance["policy"] = [model_card_url]
    source = ecg_source_reference(ecg_reference, ecg_id)
    if source:
        provenance["entity"] = [{"role": "source", "what": source}]
    return _validated(Provenance, provenance)


def build_result_bundle(
    result: ClassificationResult,
    *,
    ecg_reference: str | None,
    patient_reference: str | None,
    effective: datetime | None,
    model_card_url: str,
    findings_threshold: float,
    ecg_id: str | None = None,
    now: datetime | None = None,
) -> ResultResources:
    """All resources for one result in a transaction Bundle (``urn:uuid:`` cross-references).

    ``ecg_id`` (the service's id for the ECG) makes the identifiers that let a retried
    write-back find what an earlier attempt created instead of creating it again.
    """
    now = now or datetime.now(UTC)
    urls = {k: f"urn:uuid:{uuid.uuid4()}" for k in ("dev", "obs", "rep", "prov")}
    result_id = f"{ecg_id}:{result.model_version}" if ecg_id else None

    device = build_device(result.model_version, model_card_url=model_card_url)
    observation = build_impression_observation(
        result,
        patient_reference=patient_reference,
        ecg_reference=ecg_reference,
        effective=effective,
        device_reference=urls["dev"],
        findings_threshold=findings_threshold,
        identifier=f"{result_id}:impression" if result_id else None,
        issued=now,
        ecg_id=ecg_id,
    )
    report = build_diagnostic_report(
        result,
        observation_references=[urls["obs"]],
        patient_reference=patient_reference,
        effective=effective,
        findings_threshold=findings_threshold,
        identifier=f"{result_id}:report" if result_id else None,
        issued=now,
    )
    provenance = build_provenance(
        target_references=[urls["obs"], urls["rep"]],
        device_reference=urls["dev"],
        recorded=now,
        ecg_reference=ecg_reference,
        model_card_url=model_card_url,
        ecg_id=ecg_id,
    )
    entries = [
        _entry(urls["dev"], device, _if_none_exist(device)),
        _entry(urls["obs"], observation, _if_none_exist(observation)),
        _entry(urls["rep"], report, _if_none_exist(report)),
        _entry(urls["prov"], provenance, None),
    ]
    bundle = _validated(Bundle, {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    return ResultResources(device, observation, report, provenance, bundle)


def _if_none_exist(resource: Mapping[str, Any]) -> str | None:
    identifiers = resource.get("identifier") or []
    if not identifiers:
        return None
    first = identifiers[0]
    # A query string: '+' would read as a space (model versions carry one), so encode.
    system, value = (quote(first[k], safe=":/-._~") for k in ("system", "value"))
    return f"identifier={system}|{value}"


def _entry(full_url: str, resource: dict[str, Any], if_none_exist: str | None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": full_url, "resource": resource, "request": request}


def _validated(model: Any, resource: dict[str, Any]) -> dict[str, Any]:
    """Validate against the R4B model (raises pydantic ValidationError) and return the dict."""
    model.model_validate(resource)
    return resource
