"""The EHR sandbox: off by default, its key trusted only while on, loopback only, and calls
that reach the hooks exactly as an EHR's do (prefetch and FHIR-server mode)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.sandbox import SANDBOX_ISS, sandbox_keys
from cds_service.settings import SandboxSettings, Settings, SettingsError
from tests.operations.sandbox_service import SandboxService, sandbox_service  # noqa: F401

OBSERVATION_CALL = {
    "hook": "patient-view",
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "context": {"userId": "Practitioner/1", "patientId": "p1"},
}


def test_off_by_default_and_its_key_is_not_trusted_when_off(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, preload_model=False)
    keys = sandbox_keys(settings)  # a key pair left over from an earlier run with it on
    with TestClient(create_app(settings)) as client:
        assert client.get("/sandbox/").status_code == 404
        url = "http://testserver/cds-services/ecg-review"
        token = keys.sign(iss=SANDBOX_ISS, aud=url)
        response = client.post(
            url, json=OBSERVATION_CALL, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401


def test_refuses_a_non_loopback_host_unless_allowed(tmp_path: Path) -> None:
    on = SandboxSettings(enabled=True)
    with pytest.raises(SettingsError, match=r"sandbox\.enabled: .*loopback"):
        create_app(Settings(data_dir=tmp_path, host="0.0.0.0", sandbox=on))
    allowed = SandboxSettings(enabled=True, allow_non_loopback=True)
    create_app(Settings(data_dir=tmp_path, host="0.0.0.0", sandbox=allowed))
    original = Settings(data_dir=tmp_path, sandbox=on)
    app = create_app(original)
    assert [i.iss for i in app.state.settings.auth.trusted_issuers] == [SANDBOX_ISS]
    assert original.auth.trusted_issuers == []  # the caller's settings are left alone


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["prefetch", "fhir-server"])
def test_calls_reach_the_hooks_signed_like_an_ehrs(
    sandbox_service: SandboxService,  # noqa: F811
    mode: str,
) -> None:
    base = sandbox_service.base_url
    form = {"hook": "order-select", "mode": mode, "ecg_id": sandbox_service.ecgs["qt"]}
    refused = httpx.post(f"{base}/sandbox/call", data=form, timeout=120)
    assert refused.status_code == 403  # a cross-site form cannot send the X-Sandbox header
    answer = httpx.post(
        f"{base}/sandbox/call", data=form, headers={"X-Sandbox": "1"}, timeout=180
    ).json()
    assert answer["status"] == 200, answer
    cards = answer["response"]["cards"]
    assert cards and "sotalol" in cards[0]["summary"]
    # the Markdown detail comes back rendered (bold, lists, tables as the card has them)
    assert len(answer["detail_html"]) == len(cards) and "<strong>" in answer["detail_html"][0]
    assert "**" not in answer["detail_html"][0]
    if mode == "fhir-server":
        assert answer["request"]["fhirServer"] == f"{base}/sandbox/fhir"
        assert "prefetch" not in answer["request"]
        assert answer["request"]["fhirAuthorization"]["access_token"] == "(sent; not shown)"
    else:
        assert "ecgObservations" in answer["request"]["prefetch"]


def test_sandbox_fhir_endpoint_needs_its_token(
    sandbox_service: SandboxService,  # noqa: F811
) -> None:
    response = httpx.get(f"{sandbox_service.base_url}/sandbox/fhir/Observation?patient=p1")
    assert response.status_code == 401
