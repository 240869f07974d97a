"""Through a real hook call: an ECG is written back only when it came from the write-back
server itself.

With two trusted EHRs and one write-back server, d75fc65 refused an ECG stored under the
*other* EHR's fhirServer. Three calls still had their ECG written to the write-back server,
with the call's ``Patient/<id>`` (an id on the caller's own server) as its subject:

* a call that names no fhirServer (prefetch alone, as CDS Hooks allows): the source was
  stored as ``Observation/7``, which write-back took for a file or an upload;
* an Observation without an id from another server: ``Observation (prefetched, no id)``;
* an Observation whose id is no FHIR id (``ecg 1``) from another server: the stored
  ``{server}/Observation/ecg 1`` did not parse, so no other server was found.

Each is now refused and audited, naming why; the call's own cards are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.audit import AuditEntry
from tests.audit.writeback_support import patient_view, reports, write_back_entry
from tests.servers import FhirServer
from tests.service.conftest import Ehr
from tests.service.ehr import EhrKey

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OTHER_EHR = "https://other-ehr.example/fhir"


@pytest.fixture(scope="module")
def ehr(
    service_with: Callable[..., AbstractContextManager[TestClient]],
    sandbox_key: EhrKey,
    jwks_url: str,
    fhir_server: FhirServer,
) -> Iterator[Ehr]:
    fhir = {
        "allowed_servers": [fhir_server.base_url, OTHER_EHR],
        "writeback_server": fhir_server.base_url,
    }
    with service_with("writeback-hooks", fhir=fhir) as client:
        yield Ehr(client, sandbox_key, jwks_url)


def _call(
    ehr: Ehr, fhir: FhirServer, observation: dict[str, Any], **body: Any
) -> tuple[str, AuditEntry]:
    patient, response = patient_view(ehr, fhir, observation, **body)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["cards"]  # the call itself is answered as before
    return patient, write_back_entry(ehr.runtime, patient)


@pytest.mark.parametrize(
    ("case", "observation_id", "fhir_server_of_call", "reason"),
    [
        ("no fhirServer", "ecg-1", None, "named no usable fhirServer"),
        ("no id, another server", None, OTHER_EHR, "other-ehr.example/fhir"),
        ("an id that is no FHIR id", "ecg 1", OTHER_EHR, "other-ehr.example/fhir"),
    ],
)
def test_an_ecg_of_a_call_not_from_the_write_back_server_is_not_written(
    ehr: Ehr,
    fhir_server: FhirServer,
    ptbxl_observation: dict[str, Any],
    case: str,
    observation_id: str | None,
    fhir_server_of_call: str | None,
    reason: str,
) -> None:
    observation = {k: v for k, v in ptbxl_observation.items() if k != "id"}
    if observation_id is not None:
        observation["id"] = observation_id
    extra = {"fhirServer": fhir_server_of_call} if fhir_server_of_call else {}
    patient, entry = _call(ehr, fhir_server, observation, **extra)
    assert entry.outcome == "failure", (case, entry.detail)
    assert reason in str(entry.detail["reason"])
    assert reports(fhir_server, patient) == 0


@pytest.mark.parametrize("observation_id", ["ecg-2", None])
def test_an_ecg_of_a_call_from_the_write_back_server_is_written(
    ehr: Ehr,
    fhir_server: FhirServer,
    ptbxl_observation: dict[str, Any],
    observation_id: str | None,
) -> None:
    observation = {k: v for k, v in ptbxl_observation.items() if k != "id"}
    if observation_id is not None:
        observation["id"] = observation_id
    patient, entry = _call(ehr, fhir_server, observation, fhirServer=fhir_server.base_url)
    assert entry.outcome == "success", entry.detail
    assert reports(fhir_server, patient) == 1
