"""What the write-back tests share: the call the annotate_report job makes, a runtime on a
real FHIR server, and small helpers to create and read resources there."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import httpx

from cds_service import writeback
from cds_service.audit import AuditEntry, AuditFilter
from cds_service.runtime import Runtime
from cds_service.settings import FhirSettings, Settings
from cds_service.writeback import WriteBackOutcome
from models.results import ClassificationResult
from tests.servers import FhirServer
from tests.service.conftest import Ehr
from tests.service.ehr import hook_body, searchset


def write_back(runtime: Runtime, ecg_id: str) -> WriteBackOutcome:
    """What the annotate_report job hands the write-back: the stored ECG and its result."""
    return writeback.write_back(
        runtime.settings,
        runtime.audit,
        ecg_id,
        runtime.ecgs.get_info(ecg_id),
        runtime.jobs.result(ecg_id),
    )


TOKEN = "writeback-secret-token-3f9a7c"
AIAST = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "AIAST",
    "display": "artificial intelligence asserted",
}


def create_patient(fhir: FhirServer) -> str:
    response = httpx.post(
        f"{fhir.base_url}/Patient",
        json={"resourceType": "Patient", "name": [{"family": "Testpatient"}]},
        headers={"Content-Type": "application/fhir+json"},
        timeout=10,
    )
    response.raise_for_status()
    return f"Patient/{response.json()['id']}"


def start_runtime(tmp_path: Path, classifier: Any, fhir: FhirSettings) -> Runtime:
    settings = Settings(
        data_dir=tmp_path / "var",
        public_base_url="https://cds.example.org",
        fhir=fhir,
    )
    return Runtime.start(settings, classifier=classifier, resume=False)


def classified(
    runtime: Runtime, path: Path, patient: str | None, result: ClassificationResult
) -> str:
    """Store the ECG through the pipeline with the model's result for it."""
    info = runtime.ecgs.accept_path(path, patient_ref=patient)
    assert result.model_version == runtime.model_version
    runtime.jobs.store_result(info.id, result)
    return info.id


def read_resource(fhir: FhirServer, reference: str) -> dict[str, Any]:
    response = httpx.get(f"{fhir.base_url}/{reference}", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


# -- hook calls whose ECG the annotate job then writes back (or refuses) ---------------------


def patient_view(
    ehr: Ehr, fhir: FhirServer, observation: dict[str, Any], **body: Any
) -> tuple[str, httpx.Response]:
    """A patient-view call about a new patient of ``fhir`` with ``observation`` prefetched
    (made distinct per call: the same bytes would be the ECG already stored): the patient
    and the answer."""
    patient = create_patient(fhir)
    resource = copy.deepcopy(observation)
    resource["subject"] = {"reference": patient}
    resource["note"] = [{"text": f"call for {patient}"}]
    prefetch = {
        "ecgObservations": searchset(resource),
        "ecgDocuments": None,
        "ecgImagingStudies": None,
    }
    call = hook_body(patient.removeprefix("Patient/"), prefetch, **body)
    return patient, ehr.call("ecg-review", call)


def write_back_entry(runtime: Runtime, patient: str) -> AuditEntry:
    """The write-back audit entry of the patient's ECG, once the annotate job has run."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = runtime.audit.query(AuditFilter(events=["writeback"], patient=patient)).entries
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no write-back entry for {patient}")


def reports(fhir: FhirServer, patient: str) -> int:
    """DiagnosticReports about ``patient`` on ``fhir``."""
    found = httpx.get(
        f"{fhir.base_url}/DiagnosticReport", params={"patient": patient}, timeout=10
    ).json()
    return int(found["total"])
