"""Conformance with CDS Hooks 2.0.1 (https://cds-hooks.hl7.org/2.0.1/), acting as the EHR.

Real ECG files go in as prefetch (DICOM and aECG as DocumentReference attachments, a PTB-XL
record as a FHIR Observation from our writer); the real runtime classifies them.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from tests.service.cards import cards_of, ecg_cards, prefetch_with
from tests.service.conftest import Ehr
from tests.service.ehr import document_reference, find_empty, hook_body, searchset

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


def test_patient_view_gives_one_card_per_ecg(review_response: dict[str, Any]) -> None:
    cards = ecg_cards(review_response["cards"])
    assert len(cards) == 3
    summaries = " ".join(c["summary"] for c in cards)
    for date in ("2024-05-01", "2023-03-14", "2022-01-02"):  # each card names its ECG date
        assert date in summaries


def test_cards_carry_detail_source_and_links(review_response: dict[str, Any]) -> None:
    for card in ecg_cards(review_response["cards"]):
        detail = card["detail"]
        assert "Measurements" in detail and "Signal quality" in detail
        assert "ecg-clip" in detail  # the model version
        assert card["source"]["url"].endswith("/model-card")
        assert card["overrideReasons"]
        assert any("/viewer/ecg/" in link["url"] for link in card.get("links", []))


def test_suggestions_create_ai_labelled_observation_and_report(
    review_response: dict[str, Any],
) -> None:
    by_date = {c["summary"].split(":")[0]: c for c in ecg_cards(review_response["cards"])}
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
    card = next(c for c in ecg_cards(review_response["cards"]) if "2023-03-14" in c["summary"])
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
    prefetch = prefetch_with(
        ecgDocuments=searchset(document_reference("dicom-1", dicom_bytes, "application/dicom"))
    )
    cards = ecg_cards(cards_of(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
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

    prefetch = prefetch_with(
        ecgObservations=searchset(ptbxl_observation),
        ecgDocuments=searchset(
            document_reference("dicom-1", dicom_bytes, "application/dicom", "2024-05-01T10:00:00Z"),
            document_reference("aecg-1", aecg_bytes, "application/xml", "2022-01-02T08:00:00Z"),
        ),
    )
    first = ecg_cards(cards_of(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
    again = ecg_cards(cards_of(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
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

    card = ecg_cards(review_response["cards"])[0]
    assert ehr.runtime.cards.get_card(card["uuid"])["summary"] == card["summary"]
    page = ehr.runtime.audit.query(AuditFilter(events=("card",)), limit=200)
    assert any(card["uuid"] in str(e.to_dict()) for e in page.entries)


def test_unreadable_attachment_is_named_in_an_info_card(ehr: Ehr) -> None:
    garbage = document_reference("junk-1", b"this is not an ECG at all", "application/dicom")
    cards = cards_of(
        ehr.call("ecg-review", hook_body(prefetch=prefetch_with(ecgDocuments=searchset(garbage))))
    )
    [card] = cards
    assert card["indicator"] == "info"
    assert "could not be read" in card["summary"]
    assert "DocumentReference/junk-1" in card["detail"]


def test_no_ecgs_gives_no_cards(ehr: Ehr) -> None:
    empty = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    cards = cards_of(
        ehr.call("ecg-review", hook_body(prefetch=prefetch_with(ecgObservations=empty)))
    )
    assert cards == []


def test_access_token_in_a_call_is_not_stored(ehr: Ehr, dicom_bytes: bytes) -> None:
    """fhirAuthorization is transient: never in the database (cards, audit, anything)."""
    secret = f"tok-{uuid.uuid4().hex}"
    body = hook_body(
        prefetch=prefetch_with(
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
    cards_of(ehr.call("ecg-review", body))
    db = ehr.runtime.settings.data_dir / "ecg-cds.db"
    for path in db.parent.glob("ecg-cds.db*"):
        assert secret.encode() not in path.read_bytes()
        assert base64.b64encode(secret.encode()) not in path.read_bytes()


def test_ecgs_of_another_patient_are_never_shown(
    ehr: Ehr, dicom_bytes: bytes, review_response: dict[str, Any]
) -> None:
    other = document_reference("dicom-other", dicom_bytes, "application/dicom")
    other["subject"] = {"reference": "Patient/someone-else"}
    cards = cards_of(
        ehr.call("ecg-review", hook_body(prefetch=prefetch_with(ecgDocuments=searchset(other))))
    )
    assert ecg_cards(cards) == []
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
    prefetch = prefetch_with(ecgObservations=searchset(observation))
    jobs = ehr.runtime.settings.jobs
    monkeypatch.setattr(jobs, "hook_wait_budget_s", 0.0)
    [pending] = cards_of(ehr.call("ecg-review", hook_body(prefetch=prefetch)))
    assert pending["indicator"] == "info"
    assert pending["summary"].startswith("AI analysis pending")
    assert "suggestions" not in pending
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        cards = ecg_cards(cards_of(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
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
    prefetch = prefetch_with(ecgObservations=searchset(ptbxl_observation))
    settings = ehr.runtime.settings
    plain = ecg_cards(cards_of(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
    assert plain and all([link["type"] for link in card["links"]] == ["absolute"] for card in plain)

    monkeypatch.setattr(settings, "smart_client_id", "ecg-viewer-test")
    cards = ecg_cards(cards_of(ehr.call("ecg-review", hook_body(prefetch=prefetch))))
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
