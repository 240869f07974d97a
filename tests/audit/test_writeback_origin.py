"""A hook's ECG is written back only to the FHIR server it came from.

A hook stores its ECG under the call's fhirServer (``{fhirServer}/Observation/7``) and its
patient as the call's ``Patient/<id>``, an id on that server. With two EHRs calling and
one write-back server, an ECG from the other EHR was written there with that id as its
subject: another server's patient, or no one. It is now refused (audited), and an ECG from
the write-back server itself keeps its literal source reference.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cds_service.audit import AuditFilter
from cds_service.hooks.accept import source_uri
from cds_service.runtime import Runtime
from cds_service.writeback import WriteBackRejected
from models.results import ClassificationResult
from tests.audit.writeback_support import create_patient, read_resource, write_back
from tests.servers import FhirServer

pytestmark = pytest.mark.integration


def test_a_hook_source_is_stored_under_the_calls_fhir_server() -> None:
    server = "https://ehr.example/fhir/"
    assert source_uri("Observation/7", server) == "https://ehr.example/fhir/Observation/7"
    assert source_uri("DocumentReference/3 (attachment 1)", server) == (
        "https://ehr.example/fhir/DocumentReference/3 (attachment 1)"
    )
    # A resource without an id came from that server too.
    no_id = "Observation (prefetched, no id)"
    assert source_uri(no_id, server) == f"https://ehr.example/fhir/{no_id}"
    # The server in its normal form, never the caller's text: no user info, no query.
    assert source_uri("Observation/7", "https://EHR.example:443/fhir") == (
        "https://ehr.example/fhir/Observation/7"
    )
    for odd in ("https://user:secret@ehr.example/fhir", "https://ehr.example/fhir?x=1"):
        assert source_uri("Observation/7", odd) == "Observation/7"
    # Nothing to say where it came from: as the call gave it (and never written back).
    assert source_uri("Observation/7", None) == "Observation/7"


def _store(runtime: Runtime, ecg_path: Path, source: str, patient: str, result: Any) -> str:
    info = runtime.ecgs.accept_bytes(ecg_path.read_bytes(), source_uri=source, patient_ref=patient)
    runtime.jobs.store_result(info.id, result)
    return info.id


def test_an_ecg_from_another_fhir_server_is_not_written_here(
    runtime: Runtime, fhir_server: FhirServer, ecg_path: Path, result: ClassificationResult
) -> None:
    other = "https://other-ehr.example/fhir"
    ecg_id = _store(runtime, ecg_path, f"{other}/Observation/7", "Patient/42", result)
    refused = re.escape("other-ehr.example/fhir, not the write-back server")
    with pytest.raises(WriteBackRejected, match=refused):
        write_back(runtime, ecg_id)
    [entry] = runtime.audit.query(AuditFilter(events=["writeback"], ecg_id=ecg_id)).entries
    assert entry.outcome == "failure" and "Patient/42 names a patient there" in str(entry.detail)


def test_an_ecg_without_a_patient_is_refused_for_that(
    runtime: Runtime, ecg_path: Path, result: ClassificationResult
) -> None:
    """Checked before the server: the message names the missing patient, not "None"."""
    info = runtime.ecgs.accept_bytes(
        ecg_path.read_bytes(), source_uri="https://other-ehr.example/fhir/Observation/7"
    )
    runtime.jobs.store_result(info.id, result)
    with pytest.raises(WriteBackRejected, match="not linked to a patient"):
        write_back(runtime, info.id)


@pytest.mark.parametrize("slash", ["", "/"])
def test_an_ecg_from_the_write_back_server_keeps_its_literal_source(
    runtime: Runtime,
    fhir_server: FhirServer,
    ecg_path: Path,
    result: ClassificationResult,
    slash: str,
) -> None:
    """The same server whether the call's fhirServer ended in a slash or not."""
    patient = create_patient(fhir_server)
    source = source_uri("Observation/7", fhir_server.base_url + slash)
    ecg_id = _store(runtime, ecg_path, source, patient, result)
    outcome = write_back(runtime, ecg_id)
    assert outcome.observation is not None
    observation = read_resource(fhir_server, outcome.observation)
    assert observation["derivedFrom"] == [{"reference": "Observation/7"}]
    assert observation["subject"] == {"reference": patient}


def test_files_and_uploads_are_written_for_the_patient_given(
    runtime: Runtime, fhir_server: FhirServer, ecg_path: Path, result: ClassificationResult
) -> None:
    """A file or DICOMweb source is no FHIR resource: its patient is the operator's."""
    patient = create_patient(fhir_server)
    for source in (ecg_path.resolve().as_uri(), "https://pacs.example/dicomweb/studies/1"):
        ecg_id = _store(runtime, ecg_path, source, patient, result)
        assert write_back(runtime, ecg_id).observation is not None
