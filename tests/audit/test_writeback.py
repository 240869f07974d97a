"""Report annotation against a real FHIR server (sekmet-fhir on loopback).

A real GE MUSE ECG is stored through the pipeline and classified by the shipped model; the
write-back's resources are then read back from the server and validated with R4B.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.provenance import Provenance
from sqlalchemy import text

from cds_service.audit import AuditFilter
from cds_service.hooks.accept import source_uri
from cds_service.hooks.sources import from_document
from cds_service.runtime import Runtime
from cds_service.settings import FhirSettings
from cds_service.writeback import WriteBackRejected, WriteBackUnavailable
from models.results import ClassificationResult
from tests.audit.writeback_support import (
    AIAST,
    TOKEN,
    classified,
    create_patient,
    read_resource,
    start_runtime,
    write_back,
)
from tests.servers import FhirServer, free_port

pytestmark = pytest.mark.integration


def test_written_resources_read_back_and_validate(
    runtime: Runtime,
    fhir_server: FhirServer,
    ecg_path: Path,
    result: ClassificationResult,
    caplog: pytest.LogCaptureFixture,
) -> None:
    patient = create_patient(fhir_server)
    ecg_id = classified(runtime, ecg_path, patient, result)
    stored = runtime.jobs.result(ecg_id)
    assert stored is not None

    with caplog.at_level(logging.DEBUG):
        outcome = write_back(runtime, ecg_id)
    assert TOKEN not in caplog.text
    assert outcome.observation and outcome.diagnostic_report and outcome.provenance
    assert outcome.device

    obs = read_resource(fhir_server, outcome.observation)
    report = read_resource(fhir_server, outcome.diagnostic_report)
    prov = read_resource(fhir_server, outcome.provenance)
    device = read_resource(fhir_server, outcome.device)
    Observation.model_validate(obs)
    DiagnosticReport.model_validate(report)
    Provenance.model_validate(prov)
    Device.model_validate(device)

    assert obs["code"]["coding"][0]["code"] == "8601-7"
    assert obs["subject"] == {"reference": patient}
    assert obs["device"]["reference"] == outcome.device
    assert AIAST in obs["meta"]["security"] and AIAST in report["meta"]["security"]
    # The ECG came from a file, not the FHIR server: referenced by the service's ECG id.
    assert obs["derivedFrom"] == [{"identifier": {"system": "urn:ecg-cds:ecg", "value": ecg_id}}]
    assert report["code"]["coding"][0]["code"] == "11524-6"
    assert report["result"] == [{"reference": outcome.observation}]
    assert {t["reference"] for t in prov["target"]} == {
        outcome.observation,
        outcome.diagnostic_report,
    }
    assert prov["agent"][0]["who"]["reference"] == outcome.device
    assert device["version"] == [{"value": stored.model_version}]
    # The ECG's acquisition time is the observation's and the report's effective time.
    assert obs["effectiveDateTime"].startswith("2023-04-29T22:41:16")
    assert report["effectiveDateTime"] == obs["effectiveDateTime"]

    # The server finds them by patient, as an EHR would.
    found = httpx.get(
        f"{fhir_server.base_url}/DiagnosticReport",
        params={"patient": patient, "code": "http://loinc.org|11524-6"},
        timeout=10,
    ).json()
    assert found["total"] == 1

    # Audited without the token; the chain still verifies.
    entries = runtime.audit.query(AuditFilter(events=("writeback",), ecg_id=ecg_id)).entries
    assert [e.outcome for e in entries] == ["success"]
    assert entries[0].model_version == stored.model_version
    assert entries[0].patient == patient.removeprefix("Patient/")
    assert entries[0].detail["created"]["Observation"] == outcome.observation
    with runtime.engine.connect() as conn:
        assert TOKEN not in " ".join(
            conn.execute(text("SELECT detail FROM audit_events")).scalars().all()
        )
    assert runtime.audit.verify().ok


def test_a_retried_write_back_does_not_duplicate(
    runtime: Runtime, fhir_server: FhirServer, ecg_path: Path, result: ClassificationResult
) -> None:
    patient = create_patient(fhir_server)
    ecg_id = classified(runtime, ecg_path, patient, result)
    first = write_back(runtime, ecg_id)
    second = write_back(runtime, ecg_id)
    assert second.observation == first.observation
    assert second.diagnostic_report == first.diagnostic_report
    assert second.device == first.device
    found = httpx.get(
        f"{fhir_server.base_url}/Observation", params={"patient": patient}, timeout=10
    ).json()
    assert found["total"] == 1


def test_an_ecg_from_a_document_reference_is_derived_from_that_resource(
    runtime: Runtime, fhir_server: FhirServer, ecg_path: Path, result: ClassificationResult
) -> None:
    """A hook stores an attachment's ECG with the origin ``DocumentReference/<id> (attachment
    1)``; that whole text was written as the literal reference (``derivedFrom``, Provenance
    ``entity``), a reference no server resolves."""
    patient = create_patient(fhir_server)
    data = ecg_path.read_bytes()
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": patient},
        "content": [
            {
                "attachment": {
                    "contentType": "application/xml",
                    "data": base64.b64encode(data).decode(),
                }
            }
        ],
    }
    created = httpx.post(
        f"{fhir_server.base_url}/DocumentReference",
        json=document,
        headers={"Content-Type": "application/fhir+json"},
        timeout=10,
    )
    created.raise_for_status()
    (candidate,) = from_document(created.json())  # what a patient-view call finds
    # stored as a call from the write-back server's EHR stores it
    stored_as = source_uri(candidate.origin, fhir_server.base_url)
    info = runtime.ecgs.accept_bytes(data, source_uri=stored_as, patient_ref=patient)
    runtime.jobs.store_result(info.id, result)

    outcome = write_back(runtime, info.id)
    source = {"reference": f"DocumentReference/{created.json()['id']}"}
    assert outcome.observation and outcome.provenance
    assert read_resource(fhir_server, outcome.observation)["derivedFrom"] == [source]
    assert read_resource(fhir_server, outcome.provenance)["entity"][0]["what"] == source


def test_a_source_id_that_is_no_fhir_id_is_never_written_as_a_reference(
    runtime: Runtime, fhir_server: FhirServer, ecg_path: Path, result: ClassificationResult
) -> None:
    """Prefetched ids are not checked; one with spaces or slashes must not become a literal
    reference to some other resource on the write-back server."""
    patient = create_patient(fhir_server)
    attachment = {"contentType": "application/xml", "data": "AA=="}
    prefetched: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": "x (attachment 1)/../y",
    }
    prefetched["content"] = [{"attachment": attachment}]
    (candidate,) = from_document(prefetched)
    info = runtime.ecgs.accept_bytes(
        ecg_path.read_bytes(),
        source_uri=source_uri(candidate.origin, fhir_server.base_url),
        patient_ref=patient,
    )
    runtime.jobs.store_result(info.id, result)
    outcome = write_back(runtime, info.id)
    assert outcome.observation
    logical = {"identifier": {"system": "urn:ecg-cds:ecg", "value": info.id}}
    assert read_resource(fhir_server, outcome.observation)["derivedFrom"] == [logical]


def test_unlisted_server_is_refused(
    tmp_path: Path,
    classifier: Any,
    fhir_server: FhirServer,
    ecg_path: Path,
    result: ClassificationResult,
) -> None:
    rt = start_runtime(
        tmp_path,
        classifier,
        FhirSettings(
            allowed_servers=["https://ehr.example.org/fhir"], writeback_server=fhir_server.base_url
        ),
    )
    try:
        ecg_id = classified(rt, ecg_path, "Patient/p1", result)
        with pytest.raises(WriteBackRejected, match="allowed_servers") as caught:
            write_back(rt, ecg_id)
        assert caught.value.retryable is False
        (entry,) = rt.audit.query(AuditFilter(events=("writeback",))).entries
        assert entry.outcome == "failure"
    finally:
        rt.stop()


def test_ecg_without_patient_is_refused(
    runtime: Runtime, ecg_path: Path, result: ClassificationResult
) -> None:
    ecg_id = classified(runtime, ecg_path, None, result)
    with pytest.raises(WriteBackRejected, match="not linked to a patient"):
        write_back(runtime, ecg_id)


def test_unreachable_server_is_retryable(
    tmp_path: Path, classifier: Any, ecg_path: Path, result: ClassificationResult
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/fhir"
    rt = start_runtime(
        tmp_path,
        classifier,
        FhirSettings(allowed_servers=[closed], writeback_server=closed, timeout_s=3),
    )
    try:
        ecg_id = classified(rt, ecg_path, "Patient/p1", result)
        with pytest.raises(WriteBackUnavailable, match="unreachable") as caught:
            write_back(rt, ecg_id)
        assert caught.value.retryable is True
        (entry,) = rt.audit.query(AuditFilter(events=("writeback",))).entries
        assert entry.outcome == "error"
    finally:
        rt.stop()


class _Failing(BaseHTTPRequestHandler):
    """A loopback server that answers every POST with 503 and remembers the headers."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).seen.append(dict(self.headers))
        body = json.dumps({"resourceType": "OperationOutcome", "issue": []}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_server_error_is_retryable_and_token_goes_only_there(
    tmp_path: Path, classifier: Any, ecg_path: Path, result: ClassificationResult
) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    rt = start_runtime(
        tmp_path,
        classifier,
        FhirSettings(allowed_servers=[base], writeback_server=base, writeback_token=TOKEN),
    )
    try:
        ecg_id = classified(rt, ecg_path, "Patient/p1", result)
        with pytest.raises(WriteBackUnavailable) as caught:
            write_back(rt, ecg_id)
        assert caught.value.retryable is True and caught.value.status_code == 503
        assert TOKEN not in str(caught.value)
        assert _Failing.seen[-1]["Authorization"] == f"Bearer {TOKEN}"
    finally:
        rt.stop()
        server.shutdown()
        server.server_close()


def test_client_error_is_not_retryable(
    tmp_path: Path,
    classifier: Any,
    fhir_server: FhirServer,
    ecg_path: Path,
    result: ClassificationResult,
) -> None:
    wrong = fhir_server.base_url + "/Patient"  # a resource endpoint refuses a transaction
    rt = start_runtime(
        tmp_path, classifier, FhirSettings(allowed_servers=[wrong], writeback_server=wrong)
    )
    try:
        ecg_id = classified(rt, ecg_path, "Patient/p1", result)
        with pytest.raises(WriteBackRejected) as caught:
            write_back(rt, ecg_id)
        assert caught.value.retryable is False
        assert caught.value.status_code is not None and 400 <= caught.value.status_code < 500
    finally:
        rt.stop()


@pytest.mark.slow
def test_classification_job_annotates_the_report(
    runtime: Runtime, fhir_server: FhirServer, ecg_path: Path
) -> None:
    """End to end: accept -> classify job -> annotate_report job -> resources on the server."""
    patient = create_patient(fhir_server)
    info = runtime.ecgs.accept_path(ecg_path, patient_ref=patient)
    runtime.jobs.submit(info.id)
    deadline = time.monotonic() + 120
    total = 0
    while time.monotonic() < deadline:
        found = httpx.get(
            f"{fhir_server.base_url}/DiagnosticReport", params={"patient": patient}, timeout=10
        ).json()
        total = found["total"]
        if total:
            break
        time.sleep(0.5)
    assert total == 1
    assert runtime.audit.verify().ok
    events = [e.event for e in runtime.audit.query(AuditFilter(ecg_id=info.id)).entries]
    assert {"ingest", "classification", "writeback"} <= set(events)
