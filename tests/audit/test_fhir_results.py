"""The report-annotation resources: R4B-valid, correctly coded, AI-labelled, cross-referenced.

Results are built from the shipped label catalog's real labels and codes; expected codes are the
LOINC/SNOMED CT values of the FHIR R4 ECG examples and LOINC's EKG panel (11524-6 EKG study,
8601-7 EKG impression, LP29708-2 Cardiology).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.provenance import Provenance

from cds_service.fhir_results import (
    build_diagnostic_report,
    build_impression_observation,
    build_result_bundle,
)
from cds_service.settings import CardSettings
from models import load_catalog
from models.results import ClassificationResult, LabelScore, Measurement, QualityReport

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
AIAST = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "AIAST")
ACQUIRED = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
MODEL_CARD = "https://cds.example.org/model-card"

#: The shipped reporting threshold (settings.cards.finding_threshold).
THRESHOLD = CardSettings().finding_threshold


def _score(label_id: str, probability: float) -> LabelScore:
    label = load_catalog().get(label_id)
    return LabelScore(
        label_id=label.id,
        text=label.text,
        probability=probability,
        similarity=0.2,
        severity=label.severity,
        codes=label.codes,
        calibrated=True,
    )


def _result(acceptable: bool = True) -> ClassificationResult:
    return ClassificationResult(
        model_version="ecgclip-test-1",
        quality=QualityReport(
            acceptable=acceptable, reasons=() if acceptable else ("flat lead II",)
        ),
        measurements={
            "heart_rate": Measurement("heart_rate", 112.4, "/min", "8867-4", "Heart rate"),
            "pr": Measurement("pr", None, "ms", "8625-6", "PR interval"),  # not measurable
            "qrs": Measurement("qrs", 96.0, "ms", None, "QRS duration"),  # code by name
            "qt": Measurement("qt", 340.0, "ms", "8634-8", "QT interval"),
            "qtc": Measurement("qtc", 466.0, "ms", "8636-3", "QTc (Bazett)"),
            "axis": Measurement("axis", -12.0, "deg", "8632-2", "QRS axis"),
            "rr_irregularity": Measurement("rr_irregularity", 0.31, "1", None, "RR irregularity"),
        },
        scores=(
            _score("atrial_fibrillation", 0.91),
            _score("st_t_change", 0.62),
            _score("normal_ecg", 0.08),
        ),
    )


def _codes(concept: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept.get("coding", [])}


def _security(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(s["system"], s["code"]) for s in resource.get("meta", {}).get("security", [])}


@pytest.fixture(scope="module")
def built() -> Any:
    return build_result_bundle(
        _result(),
        ecg_reference="Observation/ecg-waveform-1",
        patient_reference="Patient/p-42",
        effective=ACQUIRED,
        model_card_url=MODEL_CARD,
        ecg_id="ecg-1",
        findings_threshold=THRESHOLD,
    )


def test_every_resource_validates_and_is_ai_labelled(built: Any) -> None:
    Bundle.model_validate(built.bundle)
    Device.model_validate(built.device)
    Observation.model_validate(built.observation)
    DiagnosticReport.model_validate(built.diagnostic_report)
    Provenance.model_validate(built.provenance)
    for resource in (built.device, built.observation, built.diagnostic_report, built.provenance):
        assert AIAST in _security(resource), resource["resourceType"]


def test_transaction_bundle_cross_references_by_urn_uuid(built: Any) -> None:
    bundle = built.bundle
    assert bundle["type"] == "transaction"
    urls = {e["resource"]["resourceType"]: e["fullUrl"] for e in bundle["entry"]}
    assert set(urls) == {"Device", "Observation", "DiagnosticReport", "Provenance"}
    assert all(u.startswith("urn:uuid:") for u in urls.values())
    assert len(set(urls.values())) == 4
    assert all(e["request"]["method"] == "POST" for e in bundle["entry"])

    assert built.observation["device"]["reference"] == urls["Device"]
    assert built.diagnostic_report["result"] == [{"reference": urls["Observation"]}]
    assert {t["reference"] for t in built.provenance["target"]} == {
        urls["Observation"],
        urls["DiagnosticReport"],
    }
    assert built.provenance["agent"][0]["who"] == {"reference": urls["Device"]}


def test_retries_do_not_duplicate(built: Any) -> None:
    """Device, Observation and DiagnosticReport are conditional creates on their identifier."""
    requests = {e["resource"]["resourceType"]: e["request"] for e in built.bundle["entry"]}
    assert requests["Device"]["ifNoneExist"] == "identifier=urn:ecg-cds:model|ecgclip-test-1"
    assert requests["Observation"]["ifNoneExist"].endswith("|ecg-1:ecgclip-test-1:impression")
    assert requests["DiagnosticReport"]["ifNoneExist"].endswith("|ecg-1:ecgclip-test-1:report")


def test_device_names_the_model_and_version(built: Any) -> None:
    device = built.device
    assert device["version"] == [{"value": "ecgclip-test-1"}]
    assert device["deviceName"][0]["type"] == "model-name"
    assert MODEL_CARD in device["note"][0]["text"]


def test_impression_observation_codes(built: Any) -> None:
    obs = built.observation
    assert _codes(obs["code"]) == {(LOINC, "8601-7")}
    assert obs["status"] == "preliminary"
    assert obs["subject"] == {"reference": "Patient/p-42"}
    assert obs["effectiveDateTime"] == "2026-03-14T09:26:53.000Z"
    assert obs["derivedFrom"] == [{"reference": "Observation/ecg-waveform-1"}]
    assert "ecgclip-test-1" in obs["method"]["text"]
    # Top finding: atrial fibrillation, SNOMED CT 164889003.
    assert (SNOMED, "164889003") in _codes(obs["valueCodeableConcept"])

    findings = [c for c in obs["component"] if "valueCodeableConcept" in c]
    assert [(SNOMED, "164889003") in _codes(c["valueCodeableConcept"]) for c in findings] == [
        True,
        False,
    ]
    assert (SNOMED, "428750005") in _codes(findings[1]["valueCodeableConcept"])  # ST-T change
    assert [c["extension"][0]["valueDecimal"] for c in findings] == [0.91, 0.62]
    # Normal ECG (p=0.08) is under the threshold: not asserted.
    assert all((SNOMED, "164854000") not in _codes(c["valueCodeableConcept"]) for c in findings)


def test_measurements_are_loinc_coded_ucum_components(built: Any) -> None:
    quantities = {
        next(iter(_codes(c["code"])))[1]: c["valueQuantity"]
        for c in built.observation["component"]
        if "valueQuantity" in c
    }
    assert set(quantities) == {"8867-4", "8633-0", "8634-8", "8636-3", "8632-2"}
    assert quantities["8867-4"] == {"value": 112.4, "unit": "/min", "system": UCUM, "code": "/min"}
    assert quantities["8636-3"]["value"] == 466.0 and quantities["8636-3"]["code"] == "ms"
    assert quantities["8633-0"]["value"] == 96.0
    assert quantities["8632-2"] == {"value": -12.0, "unit": "deg", "system": UCUM, "code": "deg"}
    # PR was not measurable and RR irregularity has no LOINC code: both left out.
    assert "8625-6" not in quantities


def test_diagnostic_report_codes(built: Any) -> None:
    report = built.diagnostic_report
    assert _codes(report["code"]) == {(LOINC, "11524-6")}
    assert _codes(report["category"][0]) == {(LOINC, "LP29708-2")}
    assert report["subject"] == {"reference": "Patient/p-42"}
    assert "atrial fibrillation" in report["conclusion"] and "0.91" in report["conclusion"]
    assert "normal ECG" not in report["conclusion"]
    assert (SNOMED, "164889003") in _codes(report["conclusionCode"][0])


def test_provenance_names_the_model_and_source(built: Any) -> None:
    prov = built.provenance
    assert prov["activity"]["coding"][0]["code"] == "CREATE"
    assert prov["agent"][0]["type"]["coding"][0]["code"] == "author"
    assert prov["entity"] == [
        {"role": "source", "what": {"reference": "Observation/ecg-waveform-1"}}
    ]
    assert prov["policy"] == [MODEL_CARD]


def test_rejected_ecg_reports_why_and_asserts_nothing() -> None:
    built = build_result_bundle(
        _result(acceptable=False),
        ecg_reference=None,
        patient_reference="Patient/p-42",
        effective=None,
        model_card_url=MODEL_CARD,
        ecg_id="ecg-2",
        findings_threshold=THRESHOLD,
    )
    Bundle.model_validate(built.bundle)
    obs = built.observation
    assert "valueCodeableConcept" not in obs
    assert obs["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
    assert "flat lead II" in obs["dataAbsentReason"]["text"]
    assert not any("valueCodeableConcept" in c for c in obs.get("component", []))
    assert "not interpreted" in built.diagnostic_report["conclusion"]
    assert "conclusionCode" not in built.diagnostic_report
    # An ECG that is not on the FHIR server is referenced by this service's id.
    assert obs["derivedFrom"] == [{"identifier": {"system": "urn:ecg-cds:ecg", "value": "ecg-2"}}]


def test_nothing_above_threshold_says_so() -> None:
    obs = build_impression_observation(
        _result(),
        patient_reference="Patient/p-42",
        ecg_reference=None,
        effective=ACQUIRED,
        findings_threshold=0.95,
    )
    assert "coding" not in obs["valueCodeableConcept"]
    assert "0.95" in obs["valueCodeableConcept"]["text"]


def test_card_suggestion_resources_need_no_ids_or_device() -> None:
    """What the CDS Hooks cards embed as ``create`` actions: no ids, device named by display."""
    obs = build_impression_observation(
        _result(),
        patient_reference="Patient/p-42",
        ecg_reference=None,
        effective=ACQUIRED,
        findings_threshold=THRESHOLD,
    )
    report = build_diagnostic_report(
        _result(),
        observation_references=[],
        patient_reference="Patient/p-42",
        effective=ACQUIRED,
        findings_threshold=THRESHOLD,
    )
    for resource in (obs, report):
        assert "id" not in resource and "identifier" not in resource
        assert AIAST in _security(resource)
    assert obs["device"] == {"display": "ECG CDS zero-shot ECG-text model ecgclip-test-1"}
    assert "result" not in report
    Observation.model_validate(obs)
    DiagnosticReport.model_validate(report)


def test_conditional_create_query_is_url_encoded() -> None:
    """Model versions look like ``ecg-clip-0.1.0+ab12cd34``: a raw '+' would match nothing."""
    result = ClassificationResult(
        model_version="ecg-clip-0.1.0+ab12cd34", quality=QualityReport(acceptable=True)
    )
    built = build_result_bundle(
        result,
        ecg_reference=None,
        patient_reference="Patient/p-42",
        effective=None,
        model_card_url=MODEL_CARD,
        ecg_id="ecg-3",
        findings_threshold=THRESHOLD,
    )
    requests = {e["resource"]["resourceType"]: e["request"] for e in built.bundle["entry"]}
    assert (
        requests["Device"]["ifNoneExist"]
        == "identifier=urn:ecg-cds:model|ecg-clip-0.1.0%2Bab12cd34"
    )
    assert "+" not in requests["Observation"]["ifNoneExist"]
