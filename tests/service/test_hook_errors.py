"""CDS Hooks 2.0.1 error answers, acting as the EHR: OperationOutcome bodies with the status
the specification gives (400, 401, 404, 412, 413), never a traceback or FastAPI's 422, and
the refusals the audit trail records. Split from test_hooks.py (cards, order hooks, feedback).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import BASE, SANDBOX_ISS, Ehr
from tests.service.ehr import (
    ALL_NULL,
    RecordingServer,
    fhir_authorization,
    hook_body,
    outcome_diagnostics,
)


def test_missing_prefetch_without_fhir_server_is_412(ehr: Ehr) -> None:
    message = outcome_diagnostics(ehr.call("ecg-review", hook_body()), 412)
    assert "prefetch.ecgObservations" in message and "fhirServer" in message


def test_operation_outcome_prefetch_without_fhir_server_is_412(ehr: Ehr) -> None:
    failed = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout", "diagnostics": "search timed out"}],
    }
    message = outcome_diagnostics(
        ehr.call("ecg-review", hook_body(prefetch={**ALL_NULL, "ecgObservations": failed})), 412
    )
    assert "search timed out" in message


def test_fhir_server_not_on_the_allow_list_is_never_contacted(ehr: Ehr) -> None:
    server = RecordingServer({"resourceType": "Bundle", "type": "searchset"}).start()
    try:
        body = hook_body(
            fhirServer=f"{server.url}/fhir",
            fhirAuthorization={
                "access_token": "secret-access-token-123",
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "patient/*.read",
                "subject": "cds-service",
            },
        )
        message = outcome_diagnostics(ehr.call("ecg-review", body), 412)
        assert "allow-list" in message
        assert "secret-access-token-123" not in message
        assert server.requests == []
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda b: b.pop("hookInstance"), "hookInstance"),
        (lambda b: b.update(hookInstance="not-a-uuid"), "hookInstance"),
        (lambda b: b.pop("context"), "context"),
        (lambda b: b["context"].pop("patientId"), "patientId"),
        (lambda b: b.update(hook="order-select"), "patient-view"),
        (lambda b: b.update(prefetch={"ecgObservations": "not a resource"}), "ecgObservations"),
        (
            lambda b: b.update(
                fhirAuthorization={
                    "access_token": "t",
                    "token_type": "Bearer",
                    "expires_in": 60,
                    "scope": "patient/*.read",
                    "subject": "s",
                }
            ),
            "fhirServer",
        ),
        (lambda b: b.update(fhirServer="ftp://ehr.example/fhir"), "fhirServer"),
        # ids of megabytes went into the append-only audit trail of every call
        (lambda b: b["context"].update(patientId="p" * 257), "patientId is 257 characters"),
        (lambda b: b["context"].update(userId="Practitioner/" + "u" * 10**6), "userId is"),
    ],
)
def test_malformed_hook_requests_are_400_saying_what_is_wrong(
    ehr: Ehr, change: Any, expected: str
) -> None:
    body = hook_body(prefetch=ALL_NULL)
    change(body)
    assert expected in outcome_diagnostics(ehr.call("ecg-review", body), 400)


def test_long_but_possible_ids_are_answered(ehr: Ehr) -> None:
    """FHIR ids have at most 64 characters; up to 256 are taken from servers that exceed it."""
    for patient_id in ("p" * 64, "p" * 256):
        body = hook_body(patient_id, prefetch=ALL_NULL)
        body["context"]["userId"] = "Practitioner/" + "u" * 200
        assert ehr.call("ecg-review", body).status_code == 200


@pytest.mark.parametrize(
    ("service_id", "body", "status"),
    [
        ("ecg-review", {"hook": "patient-view", "context": {"patientId": "p"}}, 400),
        ("ecg-review", "missing-prefetch", 412),
        ("no-such-service", "all-null", 404),
    ],
)
def test_refused_hook_requests_are_audited(
    ehr: Ehr, service_id: str, body: Any, status: int
) -> None:
    """Bad input gets an audit entry naming who sent it, the route, the status and why."""
    from cds_service.audit import AuditFilter

    if body == "missing-prefetch":
        body = hook_body()
    elif body == "all-null":
        body = hook_body(prefetch=ALL_NULL)
    trail = ehr.runtime.audit
    before = trail.query(AuditFilter(events=["hook-call"]), limit=1).total
    message = outcome_diagnostics(ehr.call(service_id, body), status)
    page = trail.query(AuditFilter(events=["hook-call"]), limit=1)
    assert page.total == before + 1
    entry = page.entries[0]
    assert entry.outcome == "failure"
    assert entry.actor.iss == SANDBOX_ISS
    assert entry.detail["status"] == status
    assert entry.detail["path"] == f"/cds-services/{service_id}"
    assert entry.detail["problems"] and entry.detail["problems"][0] in message


def test_body_that_is_not_json_is_400(ehr: Ehr) -> None:
    path = "/cds-services/ecg-review"
    response = ehr.client.post(
        path,
        content=b"{not json",
        headers={"Authorization": f"Bearer {ehr.token(path)}", "Content-Type": "application/json"},
    )
    outcome_diagnostics(response, 400)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream"])
def test_a_json_body_without_a_json_content_type_is_400_naming_the_header(
    ehr: Ehr, content_type: str | None
) -> None:
    """It was 400 "request body: Input should be a valid dictionary", which says nothing of
    the header that is wrong."""
    import json

    path = "/cds-services/ecg-review"
    headers = {"Authorization": f"Bearer {ehr.token(path)}"}
    if content_type:
        headers["Content-Type"] = content_type
    body = json.dumps(hook_body(prefetch=ALL_NULL)).encode()
    response = ehr.client.post(path, content=body, headers=headers)
    assert "Content-Type: application/json" in outcome_diagnostics(response, 400)


def test_fhir_authorization_token_type_is_case_insensitive(
    ehr: Ehr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 6749 section 5.1: "BEARER" is the Bearer type (was 400); the token is sent."""
    server = RecordingServer({"resourceType": "Bundle", "type": "searchset"}).start()
    try:
        fhir = ehr.client.app.state.settings.fhir  # type: ignore[attr-defined]
        monkeypatch.setattr(fhir, "allowed_servers", [f"{server.url}/fhir"])
        body = hook_body(
            fhirServer=f"{server.url}/fhir",
            fhirAuthorization=fhir_authorization("ehr-token-1", token_type="BEARER"),
        )
        response = ehr.call("ecg-review", body)
        assert response.status_code == 200, response.text[:300]
        assert server.requests
        assert all(h.get("Authorization") == "Bearer ehr-token-1" for _, _, h in server.requests)
        body["fhirAuthorization"]["token_type"] = "DPoP"  # another scheme: still refused
        body["hookInstance"] = str(uuid.uuid4())
        assert "token_type" in outcome_diagnostics(ehr.call("ecg-review", body), 400)
    finally:
        server.stop()


def test_urls_registered_with_a_trailing_slash_are_answered_without_a_redirect(
    ehr: Ehr,
) -> None:
    """An EHR that registered ".../cds-services/ecg-review/" got a 307 to the URL without the
    slash (built from the Host header); following it re-sent the single-use JWT, refused as
    a replay (401). Now the call is answered where it was made, the token signed for either
    spelling."""
    for path in ("/cds-services/", "/cds-services/ecg-review/"):
        for aud_path in (path, path.rstrip("/")):
            headers = {"Authorization": f"Bearer {ehr.token(aud_path)}"}
            if path == "/cds-services/":
                response = ehr.client.get(path, headers=headers, follow_redirects=False)
                assert response.status_code == 200, response.text[:200]
                assert response.json()["services"]
            else:
                body = hook_body(prefetch=ALL_NULL)
                response = ehr.client.post(path, json=body, headers=headers, follow_redirects=False)
                assert response.status_code == 200, response.text[:200]
                assert response.json() == {"cards": []}


def test_unknown_service_is_404_operationoutcome_diagnostics(ehr: Ehr) -> None:
    assert "no-such" in outcome_diagnostics(ehr.call("no-such", hook_body(prefetch=ALL_NULL)), 404)


def _small_limit_app(tmp_path: Any, model_dir: Any, jwks_url: str, epic_jwks_file: Any) -> Any:
    from cds_service.app import create_app
    from tests.service.conftest import make_settings

    settings = make_settings(
        tmp_path, model_dir, jwks_url, epic_jwks_file, max_request_bytes=10_000
    )
    return create_app(settings)


def _hook_calls(client: TestClient) -> list[int]:
    from cds_service.audit import AuditFilter

    calls = client.app.state.runtime.audit.query(  # type: ignore[attr-defined]
        AuditFilter(events=["hook-call"]), limit=5
    )
    return [e.detail["status"] for e in calls.entries]


def test_oversized_request_is_413(
    sandbox_key: Any, jwks_url: str, epic_jwks_file: Any, model_dir: Any, tmp_path: Any
) -> None:
    big = hook_body(prefetch={"ecgObservations": {"resourceType": "Bundle", "x": "a" * 20_000}})
    ehr = Ehr(TestClient(_small_limit_app(tmp_path, model_dir, jwks_url, epic_jwks_file),
                         base_url=BASE), sandbox_key, jwks_url)  # fmt: skip
    with ehr.client as client:
        assert "limit" in outcome_diagnostics(ehr.call("ecg-review", big), 413)
        assert _hook_calls(client) == [413]


def test_an_oversized_content_length_without_a_valid_jwt_is_401_and_writes_no_audit_row(
    sandbox_key: Any, jwks_url: str, epic_jwks_file: Any, model_dir: Any, tmp_path: Any
) -> None:
    """The size limit answered a declared Content-Length over the limit 413, and audited it,
    before the JWT was checked: a stranger could write an audit row per request. The body
    is now refused where it would be read, after the authentication."""
    path = "/cds-services/ecg-review"
    oversized = {"Content-Type": "application/json", "Content-Length": "50000000"}
    ehr = Ehr(TestClient(_small_limit_app(tmp_path, model_dir, jwks_url, epic_jwks_file),
                         base_url=BASE), sandbox_key, jwks_url)  # fmt: skip
    with ehr.client as client:
        other_audience = ehr.token("/cds-services/other-service")
        for headers in ({}, {"Authorization": f"Bearer {other_audience}"}):
            response = client.post(path, content=b"{}", headers={**oversized, **headers})
            assert response.status_code == 401, response.text[:200]
        assert 413 not in _hook_calls(client)
        valid = {"Authorization": f"Bearer {ehr.token(path)}"}
        response = client.post(path, content=b"{}", headers={**oversized, **valid})
        assert "max_request_bytes" in outcome_diagnostics(response, 413)
        assert _hook_calls(client)[0] == 413


def test_an_oversized_body_fastapi_reads_itself_is_413_not_a_parse_error(
    sandbox_key: Any, jwks_url: str, epic_jwks_file: Any, model_dir: Any, tmp_path: Any
) -> None:
    """A body that is not JSON (no Content-Type, text/plain) is read by FastAPI, not by the
    input guard, and FastAPI turns any exception of the read into 400 "There was an error
    parsing the body": an over-limit body, declared or counted, was answered and audited
    as malformed instead of 413."""
    path = "/cds-services/ecg-review"
    ehr = Ehr(TestClient(_small_limit_app(tmp_path, model_dir, jwks_url, epic_jwks_file),
                         base_url=BASE), sandbox_key, jwks_url)  # fmt: skip
    with ehr.client as client:
        for content_type in ({"Content-Type": "text/plain"}, {}):
            for body, declared in ((b"{}", {"Content-Length": "50000000"}), (b"x" * 20_000, {})):
                headers = {"Authorization": f"Bearer {ehr.token(path)}", **content_type}
                response = client.post(path, content=body, headers={**headers, **declared})
                assert "max_request_bytes" in outcome_diagnostics(response, 413)
        assert _hook_calls(client) == [413] * 4


def test_cors_preflight_allows_browser_ehrs(tmp_path: Any) -> None:
    from cds_service.app import create_app
    from cds_service.settings import Settings

    origin = "https://sandbox.cds-hooks.org"
    client = TestClient(create_app(Settings(data_dir=tmp_path, cors_origins=[origin])))
    response = client.options(
        "/cds-services/ecg-review",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    refused = client.options(
        "/cds-services",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in refused.headers
