"""One trusted EHR cannot name another EHR's FHIR server as its own.

Every trusted EHR could send any allow-listed server as its call's ``fhirServer``. A call's
patient ids are ids on the server it names, and its ECGs are stored under that server: an
EHR naming the write-back server (another EHR's) had the ECGs it sent, under patient ids
of its choosing, written into that server's charts as AI-labelled reports. With each
EHR's servers listed (``auth.trusted_issuers[].fhir_servers``), such a call is refused
(403, audited) and nothing is stored; each EHR's own calls go on as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.audit import AuditFilter
from tests.audit.writeback_support import patient_view, reports, write_back_entry
from tests.servers import FhirServer
from tests.service.conftest import (
    BASE,
    EPIC_ISS,
    SANDBOX_ISS,
    Ehr,
    make_settings,
)
from tests.service.ehr import EhrKey, epic_claims, outcome_diagnostics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The sandbox-like EHR's own server; the write-back server is the Epic-like EHR's.
SANDBOX_FHIR = "https://sandbox-ehr.example/fhir"


@dataclass
class EpicEhr(Ehr):
    """The second trusted EHR: RS384, its keys in a file (no jku)."""

    def token(self, path: str, **claims: Any) -> str:
        return self.key.sign(epic_claims(EPIC_ISS, BASE + path, **claims))


@pytest.fixture(scope="module")
def ehrs(
    tmp_path_factory: pytest.TempPathFactory,
    model_dir: Path,
    jwks_url: str,
    epic_jwks_file: Path,
    sandbox_key: EhrKey,
    epic_key: EhrKey,
    fhir_server: FhirServer,
) -> Iterator[tuple[Ehr, Ehr]]:
    """The sandbox-like EHR (bound to its own server) and the Epic-like one (bound to the
    write-back server), calling one service."""
    from cds_service.app import create_app

    issuers = [
        {"iss": SANDBOX_ISS, "jwks_urls": [jwks_url], "fhir_servers": [SANDBOX_FHIR]},
        {
            "iss": EPIC_ISS,
            "jwks_file": str(epic_jwks_file),
            "fhir_servers": [fhir_server.base_url + "/"],  # compared in normal form
        },
    ]
    auth = {"trusted_issuers": issuers, "failure_window_s": 0}
    fhir = {
        "allowed_servers": [fhir_server.base_url, SANDBOX_FHIR],
        "writeback_server": fhir_server.base_url,
    }
    folder = tmp_path_factory.mktemp("writeback-issuers")
    settings = make_settings(folder, model_dir, jwks_url, epic_jwks_file, auth=auth, fhir=fhir)
    with TestClient(create_app(settings), base_url=BASE) as client:
        yield Ehr(client, sandbox_key, jwks_url), EpicEhr(client, epic_key, "")


def _observation(ptbxl_observation: dict[str, Any], observation_id: str) -> dict[str, Any]:
    return {**ptbxl_observation, "id": observation_id}


def test_an_ehr_naming_another_ehrs_server_is_refused(
    ehrs: tuple[Ehr, Ehr], fhir_server: FhirServer, ptbxl_observation: dict[str, Any]
) -> None:
    sandbox_ehr, _ = ehrs
    observation = _observation(ptbxl_observation, "forged-1")
    patient, response = patient_view(
        sandbox_ehr, fhir_server, observation, fhirServer=fhir_server.base_url
    )
    problem = outcome_diagnostics(response, 403)
    assert f"is not one of the FHIR servers of issuer {SANDBOX_ISS!r}" in problem
    assert "auth.trusted_issuers[].fhir_servers" in problem
    runtime = sandbox_ehr.runtime
    [refused] = runtime.audit.query(AuditFilter(events=["hook-call"], iss=SANDBOX_ISS)).entries
    assert refused.outcome == "failure" and refused.detail["status"] == 403
    # nothing was stored for that patient, so nothing can be written to their chart
    assert not runtime.audit.query(AuditFilter(patient=patient)).entries
    assert reports(fhir_server, patient) == 0


def test_each_ehr_still_calls_with_its_own_server(
    ehrs: tuple[Ehr, Ehr], fhir_server: FhirServer, ptbxl_observation: dict[str, Any]
) -> None:
    sandbox_ehr, epic_ehr = ehrs
    _, own = patient_view(
        sandbox_ehr, fhir_server, _observation(ptbxl_observation, "s-1"), fhirServer=SANDBOX_FHIR
    )
    assert own.status_code == 200, own.text[:500]
    patient, response = patient_view(
        epic_ehr,
        fhir_server,
        _observation(ptbxl_observation, "e-1"),
        fhirServer=fhir_server.base_url,
    )
    assert response.status_code == 200, response.text[:500]
    assert write_back_entry(epic_ehr.runtime, patient).outcome == "success"
    assert reports(fhir_server, patient) == 1
