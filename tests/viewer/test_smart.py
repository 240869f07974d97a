"""SMART EHR launch of the viewer against a SMART authorization server on loopback.

The authorization server here stands in for the EHR's (an external system): it serves the
SMART configuration, redirects back with a code, and checks the PKCE verifier when the
viewer redeems the code. Everything on the viewer's side is the real service.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from cds_service.viewer.smart import card_links
from tests.viewer.conftest import PATIENT, ViewerService

pytestmark = pytest.mark.slow

CLIENT_ID = "ecg-viewer-test-client"


class FakeEhrAuth:
    """What the authorization server saw and what its token response will say."""

    def __init__(self) -> None:
        self.authorize_params: dict[str, str] = {}
        self.token_form: dict[str, str] = {}
        self.app_context: Any = None
        self.patient: str | None = None
        self.requests = 0
        self.base = ""


@pytest.fixture
def ehr_auth() -> Iterator[FakeEhrAuth]:
    seen = FakeEhrAuth()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            seen.requests += 1
            url = urlsplit(self.path)
            if url.path == "/fhir/.well-known/smart-configuration":
                self._json(
                    200,
                    {
                        "authorization_endpoint": f"{seen.base}/auth/authorize",
                        "token_endpoint": f"{seen.base}/auth/token",
                        "capabilities": ["launch-ehr", "client-public"],
                    },
                )
            elif url.path == "/auth/authorize":
                seen.authorize_params = {k: v[0] for k, v in parse_qs(url.query).items()}
                back = seen.authorize_params["redirect_uri"]
                query = urlencode({"code": "code-123", "state": seen.authorize_params["state"]})
                self.send_response(302)
                self.send_header("Location", f"{back}?{query}")
                self.end_headers()
            else:
                self._json(404, {})

        def do_POST(self) -> None:
            seen.requests += 1
            length = int(self.headers.get("Content-Length", 0))
            seen.token_form = {
                k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()
            }
            verifier = seen.token_form.get("code_verifier", "")
            challenge = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                .rstrip(b"=")
                .decode()
            )
            if (
                seen.token_form.get("code") != "code-123"
                or challenge != seen.authorize_params.get("code_challenge")
                or seen.token_form.get("client_id") != CLIENT_ID
            ):
                self._json(400, {"error": "invalid_grant"})
                return
            body: dict[str, Any] = {"access_token": "at-1", "token_type": "Bearer"}
            if seen.patient:
                body["patient"] = seen.patient
            if seen.app_context is not None:
                body["appContext"] = seen.app_context
            self._json(200, body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    seen.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def smart_service(
    viewer_service: ViewerService, ehr_auth: FakeEhrAuth, monkeypatch: pytest.MonkeyPatch
) -> ViewerService:
    """The running service with SMART configured for the loopback EHR (undone after)."""
    monkeypatch.setattr(viewer_service.settings, "smart_client_id", CLIENT_ID)
    monkeypatch.setattr(viewer_service.settings.fhir, "allowed_servers", [f"{ehr_auth.base}/fhir"])
    return viewer_service


def _launch(service: ViewerService, iss: str) -> httpx.Response:
    with httpx.Client(follow_redirects=True, timeout=60) as http:
        return http.get(f"{service.base_url}/viewer/launch", params={"iss": iss, "launch": "L-1"})


def test_ehr_launch_opens_the_ecg_named_in_app_context(
    smart_service: ViewerService, ehr_auth: FakeEhrAuth
) -> None:
    ecg_id = smart_service.ecgs["ptbxl"]
    ehr_auth.app_context, ehr_auth.patient = ecg_id, PATIENT.removeprefix("Patient/")
    response = _launch(smart_service, f"{ehr_auth.base}/fhir")
    assert response.status_code == 200
    assert urlsplit(str(response.url)).path == f"/viewer/ecg/{ecg_id}"
    assert 'class="ecg-paper' in response.text
    params = ehr_auth.authorize_params
    assert params["client_id"] == CLIENT_ID and params["launch"] == "L-1"
    assert params["aud"] == f"{ehr_auth.base}/fhir"
    assert params["code_challenge_method"] == "S256"
    assert params["redirect_uri"] == f"{smart_service.base_url}/viewer/launch/callback"
    assert "launch" in params["scope"].split()
    # The code was redeemed with the matching PKCE verifier (checked by the auth server).
    assert ehr_auth.token_form["grant_type"] == "authorization_code"


def test_an_ehr_not_on_the_allow_list_is_refused_without_calling_it(
    smart_service: ViewerService, ehr_auth: FakeEhrAuth
) -> None:
    response = _launch(smart_service, f"{ehr_auth.base}/other-fhir")
    assert response.status_code == 403
    assert "allow-list" in response.text
    assert ehr_auth.requests == 0


def test_an_ecg_of_another_patient_is_refused(
    smart_service: ViewerService, ehr_auth: FakeEhrAuth
) -> None:
    ehr_auth.app_context = smart_service.ecgs["muse"]
    ehr_auth.patient = "someone-else"
    response = _launch(smart_service, f"{ehr_auth.base}/fhir")
    assert response.status_code == 403
    assert "another patient" in response.text
    assert PATIENT not in response.text


def test_missing_app_context_and_forged_state_are_refused(
    smart_service: ViewerService, ehr_auth: FakeEhrAuth
) -> None:
    ehr_auth.app_context = None
    response = _launch(smart_service, f"{ehr_auth.base}/fhir")
    assert response.status_code == 403 and "appContext" in response.text
    # A callback without the launch's cookie (another browser, or a forged redirect).
    with httpx.Client(timeout=60) as http:
        forged = http.get(
            f"{smart_service.base_url}/viewer/launch/callback",
            params={"code": "code-123", "state": "guess"},
        )
    assert forged.status_code == 403


def test_launch_is_refused_when_smart_is_not_configured(viewer_service: ViewerService) -> None:
    assert viewer_service.settings.smart_client_id is None
    response = _launch(viewer_service, "http://127.0.0.1:9/fhir")
    assert response.status_code == 403 and "not configured" in response.text


def test_card_links_carry_the_smart_variant_only_when_configured(
    viewer_service: ViewerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    ecg_id = viewer_service.ecgs["ptbxl"]
    plain = card_links(viewer_service.settings, ecg_id, card_uuid="c-1", service_id="ecg-review")
    assert [link["type"] for link in plain] == ["absolute"]
    monkeypatch.setattr(viewer_service.settings, "smart_client_id", CLIENT_ID)
    links = card_links(viewer_service.settings, ecg_id)
    smart_link = links[1]
    assert smart_link["type"] == "smart" and smart_link["appContext"] == ecg_id
    assert smart_link["url"] == f"{viewer_service.base_url}/viewer/launch"
