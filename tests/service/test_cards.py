"""Card rules as pure functions: indicator from catalog severity and probability, QTc, summary
length, quality, suggestions. Inputs are results a model could return; the expectations come
from the rules in the issue (critical findings must be ``critical``), not from running the code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from cds_service.hooks.assess import EcgRef, catalog_for
from cds_service.hooks.card_text import fit_summary
from cds_service.hooks.cards import review_card
from cds_service.hooks.qt_cards import DrugOrder, qt_drug_card
from cds_service.hooks.schemas import Card
from cds_service.hooks.services import SERVICES
from cds_service.settings import Settings
from models.catalog import LabelCatalog
from models.results import ClassificationResult, LabelScore, Measurement, QualityReport

SETTINGS = Settings()
ECG = EcgRef(
    "ecg-1", datetime(2025, 3, 4, 10, 30, tzinfo=UTC), "Observation/o-1", "Observation/o-1"
)


@pytest.fixture(scope="module")
def catalog() -> LabelCatalog:
    return catalog_for(SETTINGS)


def _score(catalog: LabelCatalog, label_id: str, probability: float) -> LabelScore:
    label = catalog.get(label_id)
    return LabelScore(
        label_id=label.id,
        text=label.text,
        probability=probability,
        similarity=0.3,
        severity=label.severity,
        codes=label.codes,
        calibrated=True,
    )


def _result(
    catalog: LabelCatalog, scores: dict[str, float], qtc: float | None = 420.0, ok: bool = True
) -> ClassificationResult:
    measurements = {
        "heart_rate": Measurement("heart_rate", 72.0, "/min", "8867-4", "Heart rate"),
        "qtc": Measurement("qtc", qtc, "ms", "8636-3", "QTc (Bazett)"),
    }
    ranked = sorted(
        (_score(catalog, k, p) for k, p in scores.items()), key=lambda s: -s.probability
    )
    return ClassificationResult(
        model_version="ecg-clip-test",
        quality=QualityReport(acceptable=ok, reasons=() if ok else ("lead II is flat",)),
        measurements=measurements,
        scores=tuple(ranked) if ok else (),
    )


def _card(catalog: LabelCatalog, result: ClassificationResult) -> dict[str, Any]:
    card = review_card(ECG, result, catalog=catalog, settings=SETTINGS, patient_ref="Patient/p")
    assert card is not None
    Card.model_validate(card)
    assert len(card["summary"]) < 140
    assert "2025-03-04" in card["summary"]
    return card


@pytest.mark.parametrize(
    "label_id",
    [
        "acute_st_elevation",
        "complete_heart_block",
        "ventricular_tachycardia",
        "ventricular_fibrillation",
        "very_prolonged_qt",
    ],
)
def test_critical_findings_make_critical_cards(catalog: LabelCatalog, label_id: str) -> None:
    result = _result(catalog, {label_id: 0.9, "sinus_rhythm": 0.6})
    card = _card(catalog, result)
    assert card["indicator"] == "critical"
    assert catalog.get(label_id).name.split(" ")[0] in card["summary"]
    labels = [s["label"] for s in card["suggestions"]]
    assert any("cardiology review" in label for label in labels)


def test_very_long_qtc_measurement_alone_is_critical(catalog: LabelCatalog) -> None:
    card = _card(catalog, _result(catalog, {"sinus_rhythm": 0.9}, qtc=530.0))
    assert card["indicator"] == "critical"
    assert "QTc 530 ms" in card["summary"]


def test_warning_finding_makes_a_warning_card(catalog: LabelCatalog) -> None:
    card = _card(catalog, _result(catalog, {"atrial_fibrillation": 0.8}))
    assert card["indicator"] == "warning"
    assert "Atrial fibrillation" in card["summary"] and "80%" in card["summary"]


def test_normal_ecg_is_an_info_card_with_filing_suggestion_only(catalog: LabelCatalog) -> None:
    card = _card(catalog, _result(catalog, {"normal_ecg": 0.9, "sinus_rhythm": 0.95}))
    assert card["indicator"] == "info"
    assert [s["label"] for s in card["suggestions"]] == ["File the AI ECG impression (preliminary)"]


def test_findings_below_threshold_are_not_asserted(catalog: LabelCatalog) -> None:
    card = _card(catalog, _result(catalog, {"atrial_fibrillation": 0.3}))
    assert card["indicator"] == "info"
    assert "no finding" in card["summary"]


def test_rejected_quality_says_why_and_suggests_nothing(catalog: LabelCatalog) -> None:
    card = _card(catalog, _result(catalog, {}, ok=False))
    assert card["indicator"] == "info"
    assert "could not be interpreted" in card["summary"]
    assert "lead II is flat" in card["detail"]
    assert "suggestions" not in card


def test_suggested_resources_validate_and_carry_ai_label(catalog: LabelCatalog) -> None:
    card = _card(catalog, _result(catalog, {"atrial_fibrillation": 0.8}))
    [observation, report] = [a["resource"] for a in card["suggestions"][0]["actions"]]
    Observation.model_validate(observation)
    DiagnosticReport.model_validate(report)
    assert observation["meta"]["security"][0]["code"] == "AIAST"
    assert observation["derivedFrom"] == [{"reference": "Observation/o-1"}]
    snomed = [
        c["code"]
        for c in observation["valueCodeableConcept"]["coding"]
        if c["system"] == "http://snomed.info/sct"
    ]
    assert "164889003" in snomed  # atrial fibrillation
    # a second card for the same ECG gets new ids (no accidental sharing)
    again = _card(catalog, _result(catalog, {"atrial_fibrillation": 0.8}))
    assert again["suggestions"][0]["actions"][0]["resource"]["id"] != observation["id"]


def test_summaries_stay_under_140_characters() -> None:
    long = "AI ECG finding 2025-03-04: " + "very long label name " * 20
    fitted = fit_summary(long)
    assert len(fitted) < 140 and fitted.endswith("…")
    assert fit_summary("short") == "short"


def test_qt_drug_card_levels(catalog: LabelCatalog) -> None:
    drugs = [DrugOrder("sotalol", "MedicationRequest/d1")]
    common: dict[str, Any] = {
        "catalog": catalog,
        "settings": SETTINGS,
        "patient_ref": "Patient/p",
        "model_version": "m",
    }
    fine = qt_drug_card(drugs, (ECG, _result(catalog, {"sinus_rhythm": 0.9})), **common)
    assert fine is None  # nothing to warn about: no card
    long_qt = qt_drug_card(drugs, (ECG, _result(catalog, {"sinus_rhythm": 0.9}, qtc=512)), **common)
    assert long_qt is not None and long_qt["indicator"] == "critical"
    assert "sotalol" in long_qt["summary"] and "QTc 512 ms" in long_qt["summary"]
    actions = [a for s in long_qt["suggestions"] for a in s["actions"]]
    assert {"type": "delete", "resourceId": "MedicationRequest/d1"}.items() <= actions[0].items()
    borderline = qt_drug_card(
        drugs, (ECG, _result(catalog, {"sinus_rhythm": 0.9}, qtc=485)), **common
    )
    assert borderline is not None and borderline["indicator"] == "warning"
    none = qt_drug_card(drugs, None, **common)
    assert none is not None and none["indicator"] == "info"


def test_every_service_description_validates() -> None:
    for service in SERVICES.values():
        described = service.describe()
        assert described.prefetch and described.usageRequirements


def test_the_finding_threshold_is_configuration(
    catalog: LabelCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Policy is data: raising ``cards.finding_threshold`` (here through the environment, as
    a deployment would) turns the same 60% atrial fibrillation from a finding into none."""
    result = _result(catalog, {"atrial_fibrillation": 0.6})
    shipped = _card(catalog, result)
    assert shipped["indicator"] == "warning" and "Atrial fibrillation" in shipped["summary"]

    monkeypatch.setenv("ECG_CDS_CARDS__FINDING_THRESHOLD", "0.7")
    stricter = Settings()
    assert stricter.cards.finding_threshold == 0.7
    card = review_card(ECG, result, catalog=catalog, settings=stricter, patient_ref="Patient/p")
    assert card is not None
    assert card["indicator"] == "info" and "no finding" in card["summary"]
    assert "p ≥ 0.70" in card["detail"]
    observation = card["suggestions"][0]["actions"][0]["resource"]
    assert "0.70" in observation["method"]["text"]  # the filed impression says the same


def test_qt_risk_labels_come_from_the_catalog(catalog: LabelCatalog, tmp_path: Any) -> None:
    """A site that does not count sinus bradycardia as a QT risk says so in its catalog."""
    import yaml

    from models.catalog import DEFAULT_CATALOG_PATH

    drugs = [DrugOrder("sotalol", None)]
    result = _result(catalog, {"sinus_bradycardia": 0.9})
    common: dict[str, Any] = {"patient_ref": "Patient/p", "model_version": "m"}
    shipped = qt_drug_card(drugs, (ECG, result), catalog=catalog, settings=SETTINGS, **common)
    assert shipped is not None and shipped["indicator"] == "warning"
    assert "Sinus bradycardia" in shipped["summary"]

    document = yaml.safe_load(DEFAULT_CATALOG_PATH.read_text(encoding="utf-8"))
    for label in document["labels"]:
        if label["id"] == "sinus_bradycardia":
            label["qt_risk"] = False
    site_file = tmp_path / "labels.yaml"
    site_file.write_text(yaml.safe_dump(document), encoding="utf-8")
    site = Settings(catalog_file=site_file)
    site_catalog = catalog_for(site)
    assert qt_drug_card(drugs, (ECG, result), catalog=site_catalog, settings=site, **common) is None
