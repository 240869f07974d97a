"""One trusted EHR cannot name another EHR's FHIR server as its own.

Every trusted EHR could send any allow-listed server as its call's ``fhirServer``. A call's
patient ids are ids on the server it names, and its ECGs are stored under that server: an
EHR naming the write-back server (another EHR's) had the ECGs it sent, under patient ids
of its choosing, written into that server's charts as AI-labelled reports. With each
EHR's servers listed (``auth.trusted_issuers[].fhir_servers``), such a call is refused
(403, audited) and nothing is stored; each EHR's own calls go on as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from cds_service.audit import AuditFilter
from tests.audit.writeback_support import patient_view, reports, write_back_entry
from tests.servers import FhirServer
from tests.service.conftest import SANDBOX_ISS, Ehr
from tests.service.ehr import outcome_diagnostics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The sandbox-like EHR's own server; the write-back server is the Epic-like EHR's.
SANDBOX_FHIR = "https://sandbox-ehr.example/fhir"


@pytest.fixture(scope="module")
def ehrs(
    two_ehrs: Callable[..., AbstractContextManager[tuple[Ehr, Ehr]]], fhir_server: FhirServer
) -> Iterator[tuple[Ehr, Ehr]]:
    """The sandbox-like EHR (bound to its own server) and the Epic-like one (bound to the
    write-back server), calling one service."""
    fhir = {
        "allowed_servers": [fhir_server.base_url, SANDBOX_FHIR],
        "writeback_server": fhir_server.base_url,
    }
    own = {"fhir_servers": [fhir_server.base_url + "/"]}  # compared in normal form
    with two_ehrs(
        "writeback-issuers", sandbox={"fhir_servers": [SANDBOX_FHIR]}, epic=own, fhir=fhir
    ) as pair:
        yield pair


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
