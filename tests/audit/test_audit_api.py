"""``GET /audit`` and ``GET /fhir/AuditEvent`` on the real app: auth, filters, paging, FHIR."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from cds_service.app import create_app
from cds_service.audit import Actor, AuditFilter, AuditTrail
from cds_service.settings import AuthSettings, Settings

PLAIN_TOKEN = "audit-reader-plain-" + "x" * 24
HASHED_TOKEN = "audit-reader-hashed-" + "y" * 24
EHR = Actor(iss="https://ehr.example.org", sub="clinician-7", user="Practitioner/123")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path,
        public_base_url="https://cds.example.org",
        auth=AuthSettings(
            audit_tokens=[
                PLAIN_TOKEN,
                "sha256:" + hashlib.sha256(HASHED_TOKEN.encode()).hexdigest(),
            ]
        ),
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _trail(client: TestClient) -> AuditTrail:
    trail: AuditTrail = client.app.state.runtime.audit  # type: ignore[attr-defined]
    return trail


def _auth(token: str = PLAIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


#: The events :func:`_seed` writes: every answered read appends an ``audit-read`` entry after
#: it, so the filter and paging checks ask for these events only.
SEEDED = ["hook-call", "fetch", "classification", "card", "writeback"]


def _seed(trail: AuditTrail) -> None:
    trail.record("hook-call", actor=EHR, patient="p1", detail={"hook": "patient-view"})
    trail.record("fetch", actor=EHR, patient="p1", outcome="failure", detail={"reason": "HTTP 404"})
    trail.record("classification", patient="p1", ecg_id="ecg-a", model_version="m-1")
    trail.record("card", actor=EHR, patient="p1", ecg_id="ecg-a", model_version="m-1")
    trail.record("writeback", patient="p2", ecg_id="ecg-b", model_version="m-2", outcome="error")


def _hook_jwt() -> str:
    """A correctly signed CDS Hooks JWT (ES384), as an EHR sends to the hook endpoints."""
    key = ec.generate_private_key(ec.SECP384R1())
    now = int(time.time())
    return jwt.encode(
        {
            "iss": "https://ehr.example.org",
            "aud": "https://cds.example.org/cds-services/ecg-review",
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        },
        key,
        algorithm="ES384",
        headers={"kid": "k1", "typ": "JWT"},
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {PLAIN_TOKEN}"},
        {"Authorization": f"Bearer sha256:{hashlib.sha256(HASHED_TOKEN.encode()).hexdigest()}"},
    ],
    ids=["none", "empty", "wrong", "basic-scheme", "the-stored-hash-itself"],
)
def test_audit_endpoints_need_the_audit_credential(
    client: TestClient, headers: dict[str, str]
) -> None:
    for path in ("/audit", "/fhir/AuditEvent", "/fhir/AuditEvent/1"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"detail": "Unauthorized"}


def test_hook_jwt_is_not_an_audit_credential(client: TestClient) -> None:
    token = _hook_jwt()
    assert client.get("/audit", headers=_auth(token)).status_code == 401
    failures = client.get("/audit", params={"event": "auth-failure"}, headers=_auth()).json()
    assert failures["total"] == 1
    entry = failures["entries"][0]
    assert entry["outcome"] == "failure"
    assert entry["detail"] == {"endpoint": "/audit", "reason": "credential not accepted"}
    # The presented credential is never stored.
    assert token not in str(failures)


def test_plain_and_hashed_tokens_both_work(client: TestClient) -> None:
    assert client.get("/audit", headers=_auth(PLAIN_TOKEN)).status_code == 200
    assert client.get("/audit", headers=_auth(HASHED_TOKEN)).status_code == 200


def test_audit_endpoints_are_closed_without_configured_tokens(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path))) as c:
        assert c.get("/audit", headers=_auth()).status_code == 401
        trail: AuditTrail = c.app.state.runtime.audit  # type: ignore[attr-defined]
        entry = trail.query().entries[0]
        assert entry.event == "auth-failure"
        assert "no credential configured" in entry.detail["reason"]


def test_filters_and_paging(client: TestClient) -> None:
    _seed(_trail(client))

    def seqs(**params: Any) -> list[int]:
        params.setdefault("event", SEEDED)
        response = client.get("/audit", params=params, headers=_auth())
        assert response.status_code == 200, response.text
        return [e["seq"] for e in response.json()["entries"]]

    assert seqs() == [5, 4, 3, 2, 1]
    assert seqs(patient="p1") == [4, 3, 2, 1]
    assert seqs(patient="Patient/p2") == [5]
    assert seqs(user="Practitioner/123") == [4, 2, 1]
    assert seqs(iss="https://ehr.example.org", outcome="failure") == [2]
    assert seqs(event=["card", "fetch"]) == [4, 2]
    assert seqs(model_version="m-1") == [4, 3]
    assert seqs(ecg_id="ecg-b") == [5]

    third = client.get(
        "/audit", params={"ecg_id": "ecg-a", "event": "classification"}, headers=_auth()
    ).json()["entries"][0]
    assert seqs(**{"from": third["ts"]}) == [5, 4, 3]
    assert seqs(to=third["ts"]) == [3, 2, 1]

    first_page = client.get("/audit", params={"limit": 2, "event": SEEDED}, headers=_auth()).json()
    assert first_page["total"] == 5 and first_page["next_offset"] == 2
    assert [e["seq"] for e in first_page["entries"]] == [5, 4]
    last_page = client.get(
        "/audit", params={"limit": 2, "offset": 4, "event": SEEDED}, headers=_auth()
    ).json()
    assert [e["seq"] for e in last_page["entries"]] == [1] and last_page["next_offset"] is None

    entry = first_page["entries"][1]
    assert entry["actor"] == {
        "iss": "https://ehr.example.org",
        "sub": "clinician-7",
        "user": "Practitioner/123",
        "client": None,
    }
    assert len(entry["hash"]) == 64 and len(entry["prev_hash"]) == 64


@pytest.mark.parametrize(
    "params",
    [
        {"event": "not-an-event"},
        {"limit": 0},
        {"limit": 10_000},
        {"from": "yesterday"},
        {"outcome": "ok"},
        {"from": "9999-12-31T23:59:59-05:00"},  # year 10000 in UTC (was a 500)
        {"to": "0001-01-01T00:00:00+14:00"},  # year 0 in UTC
        {"patient": "p" * 257},  # wider than the patient column: its audit-read was a 500
    ],
)
def test_bad_filters_are_422(client: TestClient, params: dict[str, Any]) -> None:
    response = client.get("/audit", params=params, headers=_auth())
    assert response.status_code == 422
    assert response.json()["detail"]


def test_fhir_auditevent_searchset_validates(client: TestClient) -> None:
    _seed(_trail(client))
    response = client.get(
        "/fhir/AuditEvent", params={"patient": "p1", "date": "ge2020-01-01"}, headers=_auth()
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    bundle = Bundle.model_validate(body)
    assert bundle.type == "searchset" and bundle.total == 4
    resources = [AuditEvent.model_validate(e["resource"]) for e in body["entry"]]
    assert [r.id for r in resources] == ["4", "3", "2", "1"]

    by_id = {e["resource"]["id"]: e["resource"] for e in body["entry"]}
    fetch = by_id["2"]
    assert fetch["type"] == {
        "system": "http://dicom.nema.org/resources/ontology/DCM",
        "code": "110107",
        "display": "Import",
    }
    assert {"system": "urn:ecg-cds:audit-event", "code": "fetch", "display": "fetch"} in fetch[
        "subtype"
    ]
    assert fetch["outcome"] == "4" and fetch["outcomeDesc"] == "HTTP 404"
    requestor = next(a for a in fetch["agent"] if a["requestor"])
    assert requestor["who"]["reference"] == "Practitioner/123"
    assert requestor["who"]["identifier"] == {
        "system": "https://ehr.example.org",
        "value": "clinician-7",
    }
    patient_entity = next(e for e in fetch["entity"] if e["role"]["code"] == "1")
    assert patient_entity["what"] == {"reference": "Patient/p1"}

    card = by_id["4"]
    assert card["outcome"] == "0" and card["action"] == "E"
    ecg_entity = next(e for e in card["entity"] if "identifier" in e.get("what", {}))
    assert ecg_entity["what"]["identifier"] == {"system": "urn:ecg-cds:ecg", "value": "ecg-a"}
    assert {"type": "model_version", "valueString": "m-1"} in ecg_entity["detail"]

    error = client.get("/fhir/AuditEvent/5", headers=_auth()).json()
    AuditEvent.model_validate(error)
    assert error["outcome"] == "8"
    assert client.get("/fhir/AuditEvent/999", headers=_auth()).status_code == 404


def test_fhir_date_search_and_paging(client: TestClient) -> None:
    _seed(_trail(client))

    def search(params: list[tuple[str, str]]) -> dict[str, Any]:
        if not any(k == "subtype" for k, _ in params):
            params = [*params, *(("subtype", event) for event in SEEDED)]
        query = "&".join(f"{k}={v}" for k, v in params)
        response = client.get(f"/fhir/AuditEvent?{query}", headers=_auth())
        assert response.status_code == 200, response.text
        return dict(response.json())

    assert search([("date", "lt2000-01-01")])["total"] == 0
    assert "entry" not in search([("date", "lt2000-01-01")])
    assert search([("date", "ge2000-01-01"), ("date", "le2999-12-31")])["total"] == 5
    today = _trail(client).get(1).ts.strftime("%Y-%m-%d")  # type: ignore[union-attr]
    assert search([("date", today)])["total"] == 5  # a day means the whole day
    assert search([("date", f"gt{today}")])["total"] == 0
    assert search([("subtype", "card")])["total"] == 1
    assert search([("outcome", "8")])["total"] == 1
    assert search([("entity-id", "ecg-a")])["total"] == 2

    page = search([("patient", "p1"), ("_count", "3")])
    assert [e["resource"]["id"] for e in page["entry"]] == ["4", "3", "2"]
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    assert next_url.startswith("https://cds.example.org/fhir/AuditEvent?")
    assert "patient=p1" in next_url and "_offset=3" in next_url
    rest = client.get(next_url.replace("https://cds.example.org", ""), headers=_auth()).json()
    assert [e["resource"]["id"] for e in rest["entry"]] == ["1"]
    assert not any(link["relation"] == "next" for link in rest["link"])


@pytest.mark.parametrize(
    "params",
    [
        {"date": "ge01-01-2026"},
        {"date": "sa2026-01-01"},
        {"date": "2026-13-01"},
        {"_count": "many"},
        {"_count": "0"},
        {"outcome": "3"},
        {"subtype": "nonsense"},
        {"user": "Practitioner/1"},  # not a supported search parameter: refused, not ignored
        {"date": "ge9999-12-31T23:59:59-05:00"},  # past year 9999 in UTC (these were a 500)
        {"date": "eq9999-12-31"},  # the day's end is in year 10000
        {"date": "lt0001-01-01"},  # before year 1
        {"patient": "Patient/" + "p" * 257},  # wider than the patient column (was a 500)
    ],
)
def test_bad_fhir_search_is_an_operation_outcome(
    client: TestClient, params: dict[str, str]
) -> None:
    response = client.get("/fhir/AuditEvent", params=params, headers=_auth())
    assert response.status_code == 400
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "error" and body["issue"][0]["diagnostics"]


def test_every_answered_read_is_itself_audited(client: TestClient) -> None:
    """Reading the trail is access to the patient references in it: each answered query is
    an ``audit-read`` entry (DICOM 110101 "Audit Log Used") naming the reader, the endpoint,
    the filters and how many entries went out; a page never holds its own read, and a
    refused read is an ``auth-failure``, not a read."""
    _seed(_trail(client))
    page = client.get("/audit", params={"patient": "Patient/p1"}, headers=_auth()).json()
    assert page["total"] == 4 and all(e["event"] != "audit-read" for e in page["entries"])
    client.get("/fhir/AuditEvent", params={"subtype": "card"}, headers=_auth())
    client.get("/fhir/AuditEvent/5", headers=_auth())
    assert client.get("/audit", headers=_auth("wrong-token")).status_code == 401
    assert client.get("/fhir/AuditEvent/999", headers=_auth()).status_code == 404

    reads = _trail(client).query(AuditFilter(events=["audit-read"])).entries[::-1]
    assert [(r.detail["endpoint"], r.detail["returned"], r.patient) for r in reads] == [
        ("/audit", 4, "p1"),
        ("/fhir/AuditEvent", 1, None),
        ("/fhir/AuditEvent/{seq}", 1, "p2"),
    ]
    assert reads[0].detail["query"] == [["patient", "Patient/p1"]]
    assert reads[2].detail["seq"] == 5
    assert all(r.actor.client and PLAIN_TOKEN not in str(r.detail) for r in reads)
    event = AuditEvent.model_validate(
        client.get(f"/fhir/AuditEvent/{reads[0].seq}", headers=_auth()).json()
    )
    assert event.type.code == "110101" and event.type.display == "Audit Log Used"
    assert event.action == "R"
    interactions = {}
    for read in (reads[0], reads[2]):
        shown = client.get(f"/fhir/AuditEvent/{read.seq}", headers=_auth()).json()
        interactions[read.detail["endpoint"]] = [
            s["code"] for s in shown["subtype"] if s["system"].endswith("restful-interaction")
        ]
    assert interactions == {"/audit": ["search-type"], "/fhir/AuditEvent/{seq}": ["read"]}


def test_a_patient_filter_as_wide_as_the_column_is_read_and_audited(
    tmp_path: Path, db_url: str
) -> None:
    """On PostgreSQL the audit-read entry of a query whose patient filter was wider than the
    patient column could not be stored: the read was a 500. The widest that fits is read
    and audited; one character more is refused before anything is read."""
    settings = Settings(
        data_dir=tmp_path, database_url=db_url, auth=AuthSettings(audit_tokens=[PLAIN_TOKEN])
    )
    widest = "Patient/" + "p" * 256
    with TestClient(create_app(settings)) as client:
        for path in ("/audit", "/fhir/AuditEvent"):
            assert client.get(path, params={"patient": widest}, headers=_auth()).status_code == 200
            refused = client.get(path, params={"patient": widest + "p"}, headers=_auth())
            assert refused.status_code in (400, 422) and "256" in refused.text
        reads = _trail(client).query(AuditFilter(events=["audit-read"])).entries
        assert [r.patient for r in reads] == ["p" * 256] * 2
