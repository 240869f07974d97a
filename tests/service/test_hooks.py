"""Conformance with CDS Hooks 2.0.1 (https://cds-hooks.hl7.org/2.0.1/), acting as the EHR.

Real ECG files go in as prefetch (DICOM and aECG as DocumentReference attachments, a PTB-XL
record as a FHIR Observation from our writer); the real runtime classifies them.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.servicerequest import ServiceRequest

from tests.service.conftest import Ehr
from tests.service.ehr import (
    ALL_NULL,
    document_reference,
    find_empty,
    hook_body,
    outcome_diagnostics,
    searchset,
)

R4B_MODELS: dict[str, Any] = {
    "Observation": Observation,
    "DiagnosticReport": DiagnosticReport,
    "ServiceRequest": ServiceRequest,
}


def _prefetch(**present: Any) -> dict[str, Any]:
    return {**ALL_NULL, **present}


def _check_card(card: dict[str, Any]) -> None:
    """The spec's card rules, checked field by field."""
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140
    assert card["indicator"] in ("info", "warning", "critical")
    assert card["source"]["label"]
    uuid.UUID(card["uuid"])
    if "suggestions" in card:
        assert card["selectionBehavior"] in ("at-most-one", "any")
        for suggestion in card["suggestions"]:
            assert suggestion["label"]
            uuid.UUID(suggestion["uuid"])
            for action in suggestion["actions"]:
                assert action["type"] in ("create", "update", "delete")
                assert action["description"]
                if action["type"] in ("create", "update"):
                    resource = action["resource"]
                    R4B_MODELS[resource["resourceType"]].model_validate(resource)
                else:
                    assert "/" in action["resourceId"]
    for reason in card.get("overrideReasons", []):
        assert reason["system"] and reason["code"] and reason["display"]
    for link in card.get("links", []):
        assert link["label"] and link["url"] and link["type"] in ("absolute", "smart")


def _cards(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    # "cards" is required even when empty (the one list the spec wants present and empty)
    assert [p for p in find_empty(body) if p != "$.cards"] == []
    assert set(body) <= {"cards", "systemActions"}
    for card in body["cards"]:
        _check_card(card)
    return list(body["cards"])


def _ecg_cards(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in cards if c["summary"].startswith("AI ECG")]


# ---------------------------------------------------------------------------- discovery


def test_discovery_lists_the_services_with_prefetch_templates(ehr: Ehr) -> None:
    response = ehr.get("/cds-services")
    assert response.status_code == 200
    body = response.json()
    assert find_empty(body) == []
    services = {s["id"]: s for s in body["services"]}
    hooks = {s["hook"] for s in services.values()}
    assert {"patient-view", "order-select", "order-sign"} <= hooks
    assert services["ecg-review"]["hook"] == "patient-view"
    for service in services.values():
        assert service["id"] and service["description"] and service["title"]
        prefetch = service["prefetch"]
        assert "{{context.patientId}}" in prefetch["ecgObservations"]
        assert "131328" in prefetch["ecgObservations"]
        assert "11524-6" in prefetch["ecgObservations"]
        assert "34534-8" in prefetch["ecgObservations"]
        assert prefetch["ecgDocuments"].startswith("DocumentReference?")
        assert "modality=" in prefetch["ecgImagingStudies"]
        assert "ECG" in prefetch["ecgImagingStudies"]


# ---------------------------------------------------------------------------- cards


@pytest.fixture(scope="module")
def review_response(
    ehr: Ehr, dicom_bytes: bytes, aecg_bytes: bytes, ptbxl_observation: dict[str, Any]
) -> dict[str, Any]:
    prefetch = _prefetch(
        ecgObservations=searchset(ptbxl_observation),
        ecgDocuments=searchset(
            document_reference("dicom-1", dicom_bytes, "application/dicom", "2024-05-01T10:00:00Z"),
            document_reference("aecg-1", aecg_bytes, "application/xml", "2022-01-02T08:00:00Z"),
        ),
    )
    response = ehr.call("ecg-review", hook_body(prefetch=prefetch))
    return {"cards": _cards(response)}


def test_patient_view_gives_one_card_per_ecg(review_response: dict[str, Any]) -> None:
    cards = _ecg_cards(review_response["cards"])
    assert len(cards) == 3
    summaries = " ".join(c["summary"] for c in cards)
    for date in ("2024-05-01", "2023-03-14", "2022-01-02"):  # each card names its ECG date
        assert date in summaries


def test_cards_carry_detail_source_and_links(review_response: dict[str, Any]) -> None:
    for card in _ecg_cards(review_response["cards"]):
        detail = card["detail"]
        assert "Measurements" in detail and "Signal quality" in detail
        assert "ecg-clip" in detail  # the model version
        assert card["source"]["url"].endswith("/model-card")
        assert card["overrideReasons"]
        assert any("/viewer/ecg/" in link["url"] for link in card.get("links", []))


def test_suggestions_create_ai_labelled_observation_and_report(
    review_response: dict[str, Any],
) -> None:
    by_date = {c["summary"].split(":")[0]: c for c in _ecg_cards(review_response["cards"])}
    dicom_card = next(c for k, c in by_date.items() if "2024-05-01" in k)
    actions = [a for s in dicom_card["suggestions"] for a in s["actions"]]
    observation = next(
        a["resource"] for a in actions if a["resource"]["resourceType"] == "Observation"
    )
    report = next(
        a["resource"] for a in actions if a["resource"]["resourceType"] == "DiagnosticReport"
    )
    assert observation["code"]["coding"][0]["code"] == "8601-7"
    assert {"code": "AIAST"}.items() <= observation["meta"]["security"][0].items()
    assert observation["derivedFrom"] == [{"reference": "DocumentReference/dicom-1"}]
    assert "ecg-clip" in observation["device"]["display"]
    assert observation["subject"] == {"reference": "Patient/test-patient"}
    assert report["code"]["coding"][0]["code"] == "11524-6"
    assert report["category"][0]["coding"][0]["code"] == "LP29708-2"
    assert report["result"] == [{"reference": f"Observation/{observation['id']}"}]


def test_observation_prefetch_is_derived_from_its_observation(
    review_response: dict[str, Any],
) -> None:
    card = next(c for c in _ecg_cards(review_response["cards"]) if "2023-03-14" in c["summary"])
    observation = card["suggestions"][0]["actions"][0]["resource"]
    assert observation["derivedFrom"] == [{"reference": "Observation/ptbxl-00001"}]


def test_second_call_for_the_same_ecg_reuses_the_cached_result(
    ehr: Ehr, dicom_bytes: bytes, review_response: dict[str, Any]
) -> None:
    import hashlib

    sha = hashlib.sha256(dicom_bytes).hexdigest()
    [(info, stored)] = [
        (i, r)
        for i, r in ehr.runtime.ecgs.list_ecgs(patient_ref="Patient/test-patient")
        if i.sha256 == sha
    ]
    assert stored is not None
    prefetch = _prefetch(
        ecgDocuments=searchset(document_reference("dicom-1", dicom_bytes, "application/dicom"))
    )
    cards = _ecg_cards(_cards(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
    assert len(cards) == 1
    again = ehr.runtime.jobs.result(info.id)
    assert again.created_at == stored.created_at  # the same stored result, not a new run
    assert ehr.runtime.jobs.job_state("classify", info.id, stored.model_version) == "done"
    from sqlalchemy import text

    with ehr.runtime.engine.connect() as conn:
        attempts = conn.execute(
            text("SELECT attempts FROM jobs WHERE ecg_id = :id"), {"id": info.id}
        ).scalar_one()
    assert attempts == 1


def _without_ids(card: dict[str, Any]) -> dict[str, Any]:
    """A card with what must be new on every call (its ids, its signed links) blanked."""
    card = {**card, "uuid": "", "links": [{**link, "url": ""} for link in card.get("links", [])]}
    suggestions = []
    for suggestion in card.get("suggestions", []):
        actions = []
        for action in suggestion["actions"]:
            resource = dict(action["resource"])
            if resource["resourceType"] == "Observation":
                resource["id"] = ""
            if resource["resourceType"] == "DiagnosticReport":
                resource["result"] = []
            actions.append({**action, "resource": resource})
        suggestions.append({**suggestion, "uuid": "", "actions": actions})
    card["suggestions"] = suggestions
    return card


def test_repeated_call_answers_the_same_cards_with_their_own_ids(
    ehr: Ehr, dicom_bytes: bytes, aecg_bytes: bytes, ptbxl_observation: dict[str, Any]
) -> None:
    from cds_service.audit import AuditFilter

    prefetch = _prefetch(
        ecgObservations=searchset(ptbxl_observation),
        ecgDocuments=searchset(
            document_reference("dicom-1", dicom_bytes, "application/dicom", "2024-05-01T10:00:00Z"),
            document_reference("aecg-1", aecg_bytes, "application/xml", "2022-01-02T08:00:00Z"),
        ),
    )
    first = _ecg_cards(_cards(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
    again = _ecg_cards(_cards(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
    assert [_without_ids(c) for c in again] == [_without_ids(c) for c in first]
    for old, new in zip(first, again, strict=True):
        assert _ids(new).isdisjoint(_ids(old))
        observation, report = (a["resource"] for a in new["suggestions"][0]["actions"])
        assert report["result"] == [{"reference": f"Observation/{observation['id']}"}]
        assert new["links"][0]["url"] != old["links"][0]["url"]  # signed for its own card
        # every card shown is remembered (feedback names it) and audited, cached or not
        assert ehr.runtime.cards.get_card(new["uuid"])["summary"] == new["summary"]
        page = ehr.runtime.audit.query(AuditFilter(events=("card",)), limit=50)
        assert any(e.detail.get("card") == new["uuid"] for e in page.entries)


def _ids(card: dict[str, Any]) -> set[str]:
    observation = card["suggestions"][0]["actions"][0]["resource"]
    return {card["uuid"], observation["id"]} | {s["uuid"] for s in card["suggestions"]}


def test_cards_are_remembered_and_audited(ehr: Ehr, review_response: dict[str, Any]) -> None:
    from cds_service.audit import AuditFilter

    card = _ecg_cards(review_response["cards"])[0]
    assert ehr.runtime.cards.get_card(card["uuid"])["summary"] == card["summary"]
    page = ehr.runtime.audit.query(AuditFilter(events=("card",)), limit=200)
    assert any(card["uuid"] in str(e.to_dict()) for e in page.entries)


def test_unreadable_attachment_is_named_in_an_info_card(ehr: Ehr) -> None:
    garbage = document_reference("junk-1", b"this is not an ECG at all", "application/dicom")
    cards = _cards(
        ehr.call("ecg-review", hook_body(prefetch=_prefetch(ecgDocuments=searchset(garbage))))
    )
    [card] = cards
    assert card["indicator"] == "info"
    assert "could not be read" in card["summary"]
    assert "DocumentReference/junk-1" in card["detail"]


def test_no_ecgs_gives_no_cards(ehr: Ehr) -> None:
    empty = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    cards = _cards(ehr.call("ecg-review", hook_body(prefetch=_prefetch(ecgObservations=empty))))
    assert cards == []


# ---------------------------------------------------------------------------- order hooks


def _orders(drug: str) -> tuple[dict[str, Any], list[str]]:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": "draft-1",
                    "status": "draft",
                    "intent": "order",
                    "medicationCodeableConcept": {"text": drug},
                    "subject": {"reference": "Patient/test-patient"},
                }
            }
        ],
    }
    return bundle, ["MedicationRequest/draft-1"]


def test_order_select_without_a_qt_drug_gives_no_cards(ehr: Ehr) -> None:
    orders, selections = _orders("paracetamol 500 mg tablet")
    body = hook_body(prefetch=ALL_NULL, hook="order-select")
    body["context"].update(draftOrders=orders, selections=selections)
    assert _cards(ehr.call("ecg-qt-drug-check", body)) == []


def test_order_select_qt_drug_without_ecg_suggests_a_baseline_ecg(ehr: Ehr) -> None:
    orders, selections = _orders("Sotalol hydrochloride 80 mg oral tablet")
    body = hook_body(prefetch=ALL_NULL, hook="order-select")
    body["context"].update(draftOrders=orders, selections=selections)
    [card] = _cards(ehr.call("ecg-qt-drug-check", body))
    assert "sotalol" in card["summary"] and "no ECG" in card["summary"]
    request = card["suggestions"][0]["actions"][0]["resource"]
    assert request["resourceType"] == "ServiceRequest"
    assert request["code"]["coding"][0]["code"] == "11524-6"


def test_order_sign_with_qt_drug_and_ecg_answers_conformant_cards(
    ehr: Ehr, dicom_bytes: bytes, review_response: dict[str, Any]
) -> None:
    orders, _ = _orders("haloperidol 5 mg injection")
    prefetch = _prefetch(
        ecgDocuments=searchset(document_reference("dicom-1", dicom_bytes, "application/dicom"))
    )
    body = hook_body(prefetch=prefetch, hook="order-sign")
    body["context"]["draftOrders"] = orders
    for card in _cards(ehr.call("ecg-qt-drug-sign", body)):
        assert "haloperidol" in card["summary"]
        assert card["indicator"] in ("warning", "critical")


# ---------------------------------------------------------------------------- feedback


def _feedback_path(service: str = "ecg-review") -> str:
    return f"/cds-services/{service}/feedback"


def test_feedback_accepted_is_stored_against_card_and_ecg(
    ehr: Ehr, review_response: dict[str, Any]
) -> None:
    card = _ecg_cards(review_response["cards"])[0]
    suggestion = card["suggestions"][0]["uuid"]
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": suggestion}],
                "outcomeTimestamp": "2026-11-25T12:00:00Z",
            }
        ]
    }
    response = ehr.post(_feedback_path(), body)
    assert response.status_code == 200, response.text
    assert find_empty(response.json()) == []
    stored_card = ehr.runtime.cards.get_card(card["uuid"])
    assert stored_card is not None
    ecg_ids = [
        i.id for i, _ in ehr.runtime.ecgs.list_ecgs(patient_ref="Patient/test-patient", limit=100)
    ]
    feedback = [f for ecg_id in ecg_ids for f in ehr.runtime.cards.feedback_for(ecg_id)]
    mine = [f for f in feedback if f.card_uuid == card["uuid"]]
    assert mine and mine[0].outcome == "accepted"
    assert mine[0].accepted_suggestions == [suggestion]
    assert mine[0].card_known and mine[0].ecg_id in ecg_ids


def test_feedback_overridden_keeps_the_reason_and_repeats_are_allowed(
    ehr: Ehr, review_response: dict[str, Any]
) -> None:
    card = _ecg_cards(review_response["cards"])[1]
    reason = card["overrideReasons"][0]
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": reason, "userComment": "artefact in V1"},
                "outcomeTimestamp": "2026-11-25T12:01:00Z",
            }
        ]
    }
    for _ in range(2):  # the same card may get feedback more than once
        assert ehr.post(_feedback_path(), body).status_code == 200
    ecg_id = next(
        i.id
        for i, _ in ehr.runtime.ecgs.list_ecgs(patient_ref="Patient/test-patient", limit=100)
        if any(f.card_uuid == card["uuid"] for f in ehr.runtime.cards.feedback_for(i.id))
    )
    mine = [f for f in ehr.runtime.cards.feedback_for(ecg_id) if f.card_uuid == card["uuid"]]
    assert len(mine) == 2
    assert mine[0].override_reason["code"] == reason["code"]
    assert mine[0].user_comment == "artefact in V1"


@pytest.mark.parametrize(
    "item",
    [
        {"card": "x", "outcome": "accepted", "outcomeTimestamp": "2026-11-25T12:00:00Z"},
        {"card": "x", "outcome": "maybe", "outcomeTimestamp": "2026-11-25T12:00:00Z"},
        {"card": "x", "outcome": "overridden"},
    ],
)
def test_malformed_feedback_is_400(ehr: Ehr, item: dict[str, Any]) -> None:
    outcome_diagnostics(ehr.post(_feedback_path(), {"feedback": [item]}), 400)


def test_access_token_in_a_call_is_not_stored(ehr: Ehr, dicom_bytes: bytes) -> None:
    """fhirAuthorization is transient: never in the database (cards, audit, anything)."""
    secret = f"tok-{uuid.uuid4().hex}"
    body = hook_body(
        prefetch=_prefetch(
            ecgDocuments=searchset(document_reference("dicom-1", dicom_bytes, "application/dicom"))
        ),
        fhirServer="https://not-allowed.example/fhir",
        fhirAuthorization={
            "access_token": secret,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "svc",
        },
    )
    _cards(ehr.call("ecg-review", body))
    db = ehr.runtime.settings.data_dir / "ecg-cds.db"
    for path in db.parent.glob("ecg-cds.db*"):
        assert secret.encode() not in path.read_bytes()
        assert base64.b64encode(secret.encode()) not in path.read_bytes()


def test_ecgs_of_another_patient_are_never_shown(
    ehr: Ehr, dicom_bytes: bytes, review_response: dict[str, Any]
) -> None:
    other = document_reference("dicom-other", dicom_bytes, "application/dicom")
    other["subject"] = {"reference": "Patient/someone-else"}
    cards = _cards(
        ehr.call("ecg-review", hook_body(prefetch=_prefetch(ecgDocuments=searchset(other))))
    )
    assert _ecg_cards(cards) == []
    [card] = cards
    assert "DocumentReference/dicom-other" in card["detail"]
    assert "another patient" in card["detail"]


def test_new_ecg_beyond_the_budget_gets_a_pending_card_then_its_result(
    ehr: Ehr, ptbxl_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook waits only the configured budget; the job finishes anyway and is reused."""
    import time

    from adapters import load_ecg, to_fhir_observation

    ecg = load_ecg(ptbxl_dir / "records500" / "00000" / "00007_hr.hea")
    observation = to_fhir_observation(
        ecg, patient_ref="Patient/test-patient", observation_id="ptbxl-00007"
    )
    observation["effectiveDateTime"] = "2020-07-07T07:00:00Z"
    prefetch = _prefetch(ecgObservations=searchset(observation))
    jobs = ehr.runtime.settings.jobs
    monkeypatch.setattr(jobs, "hook_wait_budget_s", 0.0)
    [pending] = _cards(ehr.call("ecg-review", hook_body(prefetch=prefetch)))
    assert pending["indicator"] == "info"
    assert pending["summary"].startswith("AI analysis pending")
    assert "suggestions" not in pending
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        cards = _ecg_cards(_cards(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
        if cards:
            break
        time.sleep(0.5)
    assert len(cards) == 1 and "2020-07-07" in cards[0]["summary"]


def test_openapi_documents_hook_errors_as_400_not_422(tmp_path: Any) -> None:
    from cds_service.app import create_app
    from cds_service.settings import Settings

    schema = create_app(Settings(data_dir=tmp_path)).openapi()
    call = schema["paths"]["/cds-services/{service_id}"]["post"]["responses"]
    assert "400" in call and "412" in call
    assert "422" not in call
    # other routes keep FastAPI's validation answer
    assert "422" in schema["paths"]["/ecgs"]["post"]["responses"]


def test_cards_carry_a_smart_launch_link_when_smart_is_configured(
    ehr: Ehr, ptbxl_observation: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The running service, asked by the EHR with SMART configured, links each ECG card to
    the SMART launch of the viewer with that ECG as ``appContext`` (and without it, not)."""
    prefetch = _prefetch(ecgObservations=searchset(ptbxl_observation))
    settings = ehr.runtime.settings
    plain = _ecg_cards(_cards(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
    assert plain and all([link["type"] for link in card["links"]] == ["absolute"] for card in plain)

    monkeypatch.setattr(settings, "smart_client_id", "ecg-viewer-test")
    cards = _ecg_cards(_cards(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
    assert cards
    stored = {i.id for i, _ in ehr.runtime.ecgs.list_ecgs(patient_ref="Patient/test-patient")}
    for card in cards:
        kinds = {link["type"]: link for link in card["links"]}
        assert set(kinds) == {"absolute", "smart"}
        smart = kinds["smart"]
        assert smart["url"] == settings.public_base_url.rstrip("/") + "/viewer/launch"
        assert smart["appContext"] in stored
        assert f"/viewer/ecg/{smart['appContext']}" in kinds["absolute"]["url"]
    # The launch URL the card names is served by this service.
    launch = ehr.client.get("/viewer/launch", follow_redirects=False)
    assert launch.status_code == 403 and "not configured" not in launch.text
