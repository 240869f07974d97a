"""The pieces of the FHIR result resources: code systems and codes, and the elements built
from a :class:`~models.results.ClassificationResult`.

* the systems, codes and extensions the result resources use (LOINC, SNOMED CT, UCUM, the
  AI-asserted label, this service's identifier systems), the measurements' LOINC codes, and
  :data:`FHIR_ID` (the R4 ``id`` datatype, which references are checked against);
* :func:`findings` (what the model asserts at a threshold) and the elements that show them:
  :func:`finding_concept`, :func:`finding_component`, :func:`measurement_component`,
  :func:`ecg_source_reference`, :func:`device_ref`;
* the texts: :func:`summary_text`, :func:`method_text`, :func:`quality_text`, and
  :func:`instant` (a FHIR instant in UTC).

Split from :mod:`cds_service.fhir_results`, which assembles these into the Device,
Observation, DiagnosticReport, Provenance and their transaction Bundle, so that module reads
as the resources and this one as what goes inside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from models.results import ClassificationResult, Code, LabelScore, Measurement

#: The FHIR R4 ``id`` datatype as a regular expression (1-64 of A-Z, a-z, 0-9, "-", ".").
FHIR_ID: Final = r"[A-Za-z0-9\-.]{1,64}"
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
        return lead + "ECG not interpreted: " + quality_text(result) + "."
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


def finding_component(score: LabelScore) -> dict[str, Any]:
    evidence = [{"url": EVIDENCE_EXTENSION, "valueString": e} for e in score.measured_evidence]
    return {
        "extension": [
            {"url": PROBABILITY_EXTENSION, "valueDecimal": round(score.probability, 4)},
            *evidence,
        ],
        "code": {"coding": [IMPRESSION_CODE]},
        "valueCodeableConcept": finding_concept(score),
    }


def measurement_component(m: Measurement) -> dict[str, Any] | None:
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


def device_ref(model_version: str, device_reference: str | None) -> dict[str, Any]:
    display = f"ECG CDS zero-shot ECG-text model {model_version}"
    if device_reference:
        return {"reference": device_reference, "display": display}
    return {"display": display}


def method_text(model_version: str, threshold: float) -> str:
    return (
        f"Zero-shot ECG-text model {model_version}: the ECG is scored against text descriptions "
        f"of each condition; findings are labels with calibrated probability >= {threshold:.2f}."
    )


def quality_text(result: ClassificationResult) -> str:
    return "; ".join(result.quality.reasons) or "signal quality not acceptable"


def instant(ts: datetime) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
