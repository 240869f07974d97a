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
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.provenance import Provenance

from models.results import ClassificationResult, Code, LabelScore, Measurement

LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
UCUM: Final = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_REASON: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
PROVENANCE_AGENT_TYPE: Final = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION: Final = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
#: The AI Transparency "AI asserted" security label.
AIAST: Final = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "AIAST",
    "display": "artificial intelligence asserted",
}
#: Identifier systems for what this service writes (stable across deployments).
MODEL_IDENTIFIER_SYSTEM: Final = "urn:ecg-cds:model"
RESULT_IDENTIFIER_SYSTEM: Final = "urn:ecg-cds:result"
#: The service's ECG ids (the same system the audit AuditEvent entities use).
ECG_IDENTIFIER_SYSTEM: Final = "urn:ecg-cds:ecg"
#: Extension carrying a finding's calibrated probability (0..1) on its component.
PROBABILITY_EXTENSION: Final = "https://ecg-cds.github.io/fhir/StructureDefinition/probability"
#: Extension carrying one measured evidence line of a finding ("PR 232 ms > 200 ms").
EVIDENCE_EXTENSION: Final = "https://ecg-cds.github.io/fhir/StructureDefinition/evidence"

IMPRESSION_CODE: Final = {"system": LOINC, "code": "8601-7", "display": "EKG impression"}
STUDY_CODE: Final = {"system": LOINC, "code": "11524-6", "display": "EKG study"}
CARDIOLOGY_CATEGORY: Final = {"system": LOINC, "code": "LP29708-2", "display": "Cardiology"}

#: LOINC codes of the measurements (by ``Measurement.name``) and their LOINC displays.
MEASUREMENT_LOINC: Final[Mapping[str, str]] = {
    "heart_rate": "8867-4",
    "pr": "8625-6",
    "qrs": "8633-0",
    "qt": "8634-8",
    "qtc": "8636-3",
    "axis": "8632-2",
}
LOINC_DISPLAY: Final[Mapping[str, str]] = {
    "8867-4": "Heart rate",
    "8625-6": "P-R Interval",
    "8633-0": "QRS duration",
    "8634-8": "Q-T interval",
    "8636-3": "Q-T interval corrected",
    "8632-2": "QRS axis",
    "8626-4": "P wave axis",
    "8638-9": "T wave axis",
}


@dataclass(frozen=True)
class ResultResources:
    """The resources for one result, and the transaction Bundle that writes them together."""

    device: dict[str, Any]
    observation: dict[str, Any]
    diagnostic_report: dict[str, Any]
    provenance: dict[str, Any]
    bundle: dict[str, Any]


def findings(result: ClassificationResult, threshold: float) -> list[LabelScore]:
    """Labels the model asserts: probability at or above ``threshold``, most likely first.

    A result the quality gate rejected asserts nothing.
    """
    if not result.quality.acceptable:
        return []
    return sorted(
        (s for s in result.scores if s.probability >= threshold),
        key=lambda s: s.probability,
        reverse=True,
    )


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
        "issued": _instant(issued or datetime.now(UTC)),
        "device": _device_ref(result.model_version, device_reference),
        "method": {"text": _method_text(result.model_version, findings_threshold)},
    }
    if identifier:
        observation["identifier"] = [{"system": RESULT_IDENTIFIER_SYSTEM, "value": identifier}]
    if patient_reference:
        observation["subject"] = {"reference": patient_reference}
    if effective:
        observation["effectiveDateTime"] = _instant(effective)
    source = ecg_source_reference(ecg_reference, ecg_id)
    if source:
        observation["derivedFrom"] = [source]

    if not result.quality.acceptable:
        observation["dataAbsentReason"] = {
            "coding": [{"system": DATA_ABSENT_REASON, "code": "not-performed"}],
            "text": "ECG not interpreted: " + _quality_text(result),
        }
    elif asserted:
        observation["valueCodeableConcept"] = finding_concept(asserted[0])
    else:
        observation["valueCodeableConcept"] = {
            "text": f"No finding reached the reporting threshold (p >= {findings_threshold:.2f})"
        }

    components = [_finding_component(s) for s in asserted]
    components += [c for c in map(_measurement_component, result.measurements.values()) if c]
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
        "issued": _instant(issued or datetime.now(UTC)),
        "conclusion": summary_text(result, findings_threshold),
    }
    if identifier:
        report["identifier"] = [{"system": RESULT_IDENTIFIER_SYSTEM, "value": identifier}]
    if patient_reference:
        report["subject"] = {"reference": patient_reference}
    if effective:
        report["effectiveDateTime"] = _instant(effective)
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
        "recorded": _instant(recorded),
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


def ecg_source_reference(ecg_reference: str | None, ecg_id: str | None) -> dict[str, Any] | None:
    """The source ECG: a literal reference when it lives on the FHIR server (``Observation/1``,
    ``DocumentReference/2``, ``ImagingStudy/3``, ``Media/4``), else a logical reference by
    this service's ECG id (files and PACS studies have no FHIR id here)."""
    if ecg_reference:
        return {"reference": ecg_reference}
    if ecg_id:
        return {"identifier": {"system": ECG_IDENTIFIER_SYSTEM, "value": ecg_id}}
    return None


def finding_concept(score: LabelScore) -> dict[str, Any]:
    """A finding as a CodeableConcept: its codes (SNOMED CT first) and the label's text."""
    codings = [_coding(c) for c in sorted(score.codes, key=lambda c: c.system != SNOMED)]
    concept: dict[str, Any] = {"text": score.text}
    if codings:
        concept["coding"] = codings
    return concept


def summary_text(result: ClassificationResult, threshold: float) -> str:
    """One human-readable sentence block: the findings with probabilities, or why there are none."""
    lead = f"AI interpretation (model {result.model_version}, not reviewed by a clinician). "
    if not result.quality.acceptable:
        return lead + "ECG not interpreted: " + _quality_text(result) + "."
    asserted = findings(result, threshold)
    if not asserted:
        return lead + f"No finding reached the reporting threshold (p >= {threshold:.2f})."
    listed = "; ".join(_finding_text(s) for s in asserted)
    text = lead + "Findings: " + listed + "."
    if result.quality.out_of_distribution:
        text += " Caution: this ECG looks unlike the model's training data."
    if result.calibration:
        text += f" Calibration: {result.calibration}."
    return text


def _finding_text(score: LabelScore) -> str:
    """``"First degree AV block (p=0.83; measured: PR 232 ms > 200 ms)"``."""
    evidence = score.measured_evidence[:3]
    measured = f"; measured: {', '.join(evidence)}" if evidence else ""
    return f"{score.text} (p={score.probability:.2f}{measured})"


# -- helpers -----------------------------------------------------------------------------------


def _finding_component(score: LabelScore) -> dict[str, Any]:
    evidence = [{"url": EVIDENCE_EXTENSION, "valueString": e} for e in score.measured_evidence]
    return {
        "extension": [
            {"url": PROBABILITY_EXTENSION, "valueDecimal": round(score.probability, 4)},
            *evidence,
        ],
        "code": {"coding": [IMPRESSION_CODE]},
        "valueCodeableConcept": finding_concept(score),
    }


def _measurement_component(m: Measurement) -> dict[str, Any] | None:
    """A LOINC-coded quantity; measurements without a LOINC code or a value are left out."""
    loinc = m.loinc or MEASUREMENT_LOINC.get(m.name)
    if not loinc or m.value is None:
        return None
    coding = {"system": LOINC, "code": loinc}
    if loinc in LOINC_DISPLAY:
        coding["display"] = LOINC_DISPLAY[loinc]
    return {
        "code": {"coding": [coding], "text": m.display},
        "valueQuantity": {
            "value": round(float(m.value), 2),
            "unit": m.unit,
            "system": UCUM,
            "code": m.unit,
        },
    }


def _coding(code: Code) -> dict[str, Any]:
    coding = {"system": code.system, "code": code.code}
    if code.display:
        coding["display"] = code.display
    return coding


def _device_ref(model_version: str, device_reference: str | None) -> dict[str, Any]:
    display = f"ECG CDS zero-shot ECG-text model {model_version}"
    if device_reference:
        return {"reference": device_reference, "display": display}
    return {"display": display}


def _method_text(model_version: str, threshold: float) -> str:
    return (
        f"Zero-shot ECG-text model {model_version}: the ECG is scored against text descriptions "
        f"of each condition; findings are labels with calibrated probability >= {threshold:.2f}."
    )


def _quality_text(result: ClassificationResult) -> str:
    return "; ".join(result.quality.reasons) or "signal quality not acceptable"


def _instant(ts: datetime) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
