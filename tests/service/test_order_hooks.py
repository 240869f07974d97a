"""CDS Hooks order-select and order-sign (a QT-prolonging drug ordered), acting as the EHR."""

from __future__ import annotations

from typing import Any

from cds_service.commands.ehr import draft_orders
from tests.service.cards import cards_of, prefetch_with
from tests.service.conftest import Ehr
from tests.service.ehr import ALL_NULL, document_reference, hook_body, searchset


def _orders(drug: str) -> tuple[dict[str, Any], list[str]]:
    """A draft order for the test patient, as ``ecg-cds ehr`` (the project's EHR tool) sends it."""
    return draft_orders(drug, "Patient/test-patient")


def test_order_select_without_a_qt_drug_gives_no_cards(ehr: Ehr) -> None:
    orders, selections = _orders("paracetamol 500 mg tablet")
    body = hook_body(prefetch=ALL_NULL, hook="order-select")
    body["context"].update(draftOrders=orders, selections=selections)
    assert cards_of(ehr.call("ecg-qt-drug-check", body)) == []


def test_order_select_qt_drug_without_ecg_suggests_a_baseline_ecg(ehr: Ehr) -> None:
    orders, selections = _orders("Sotalol hydrochloride 80 mg oral tablet")
    body = hook_body(prefetch=ALL_NULL, hook="order-select")
    body["context"].update(draftOrders=orders, selections=selections)
    [card] = cards_of(ehr.call("ecg-qt-drug-check", body))
    assert "sotalol" in card["summary"] and "no ECG" in card["summary"]
    request = card["suggestions"][0]["actions"][0]["resource"]
    assert request["resourceType"] == "ServiceRequest"
    assert request["code"]["coding"][0]["code"] == "11524-6"


def test_order_sign_with_qt_drug_and_ecg_answers_conformant_cards(
    ehr: Ehr, dicom_bytes: bytes, review_response: dict[str, Any]
) -> None:
    orders, _ = _orders("haloperidol 5 mg injection")
    prefetch = prefetch_with(
        ecgDocuments=searchset(document_reference("dicom-1", dicom_bytes, "application/dicom"))
    )
    body = hook_body(prefetch=prefetch, hook="order-sign")
    body["context"]["draftOrders"] = orders
    for card in cards_of(ehr.call("ecg-qt-drug-sign", body)):
        assert "haloperidol" in card["summary"]
        assert card["indicator"] in ("warning", "critical")
