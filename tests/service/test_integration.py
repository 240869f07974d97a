"""The service fetches ECGs itself from a real FHIR server and a real PACS.

sekmet-fhir (R4) holds the patient, ECG Observations written by our FHIR writer from
PTB-XL records, and DocumentReferences whose attachments are a Binary (HL7 aECG) and a
WADO-RS URL (a real DICOM ECG); Orthanc holds DICOM ECGs (one real file, one PTB-XL record
through our DICOM writer) behind an ImagingStudy with a DICOMweb Endpoint. The hook call
sends no prefetch: only ``fhirServer`` and ``fhirAuthorization``.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient

from tests.servers import FhirServer, OrthancServer
from tests.service.conftest import BASE, Ehr, make_settings
from tests.service.ehr import EhrKey, fhir_authorization, find_empty, hook_body

pytestmark = pytest.mark.integration

ACCESS_TOKEN = f"integration-secret-{uuid.uuid4().hex}"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _create(fhir: FhirServer, resource: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{fhir.base_url}/{resource['resourceType']}", json=resource, headers=FHIR_JSON, timeout=30
    )
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def _stow(orthanc: OrthancServer, data: bytes) -> pydicom.Dataset:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = httpx.post(
        f"{orthanc.dicomweb_url}/studies",
        content=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    import io

    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


@pytest.fixture(scope="module")
def ehr_data(
    fhir_server: FhirServer, orthanc: OrthancServer, ptbxl_dir: Path, formats_dir: Path
) -> dict[str, Any]:
    from adapters import load_ecg, to_dicom_bytes, to_fhir_observation

    patient = _create(fhir_server, {"resourceType": "Patient", "name": [{"family": "Integration"}]})
    pid = patient["id"]
    subject = {"reference": f"Patient/{pid}"}
    made: dict[str, Any] = {"patient": pid}

    observations = []
    for record, date in (("00002", "2021-06-01T09:00:00Z"), ("00003", "2021-06-02T09:00:00Z")):
        ecg = load_ecg(ptbxl_dir / "records500" / "00000" / f"{record}_hr.hea")
        observation = to_fhir_observation(ecg, patient_ref=f"Patient/{pid}")
        observation.pop("id", None)
        observation["effectiveDateTime"] = date
        observations.append(_create(fhir_server, observation)["id"])
    made["observations"] = observations

    aecg = (formats_dir / "hl7_aecg" / "Example_aECG_HL7_2003-12.xml").read_bytes()
    binary = _create(
        fhir_server,
        {
            "resourceType": "Binary",
            "contentType": "application/xml",
            "data": base64.b64encode(aecg).decode(),
        },
    )
    made["aecg_doc"] = _create(
        fhir_server,
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11524-6"}]},
            "subject": subject,
            "date": "2022-02-02T10:00:00Z",
            "content": [
                {"attachment": {"contentType": "application/xml", "url": f"Binary/{binary['id']}"}}
            ],
        },
    )["id"]

    real_dicom = (formats_dir / "dicom" / "pydicom_waveform_ecg.dcm").read_bytes()
    ds = _stow(orthanc, real_dicom)
    wado = (
        f"{orthanc.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    made["dicom_doc"] = _create(
        fhir_server,
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11524-6"}]},
            "subject": subject,
            "date": "2023-03-03T10:00:00Z",
            "content": [{"attachment": {"contentType": "application/dicom", "url": wado}}],
        },
    )["id"]

    written = to_dicom_bytes(load_ecg(ptbxl_dir / "records500" / "00000" / "00004_hr.hea"))
    ds2 = _stow(orthanc, written)
    made["study_instance"] = str(ds2.SOPInstanceUID)
    endpoint = _create(
        fhir_server,
        {
            "resourceType": "Endpoint",
            "status": "active",
            "connectionType": {
                "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                "code": "dicom-wado-rs",
            },
            "payloadType": [{"text": "DICOM"}],
            "address": orthanc.dicomweb_url,
        },
    )
    dcm = "http://dicom.nema.org/resources/ontology/DCM"
    made["study"] = _create(
        fhir_server,
        {
            "resourceType": "ImagingStudy",
            "status": "available",
            "subject": subject,
            "started": "2024-04-04T10:00:00Z",
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{ds2.StudyInstanceUID}"}],
            "endpoint": [{"reference": f"Endpoint/{endpoint['id']}"}],
            "modality": [{"system": dcm, "code": "ECG"}],
            "series": [
                {
                    "uid": ds2.SeriesInstanceUID,
                    "modality": {"system": dcm, "code": "ECG"},
                    "instance": [
                        {
                            "uid": ds2.SOPInstanceUID,
                            "sopClass": {
                                "system": "urn:ietf:rfc:3986",
                                "code": f"urn:oid:{ds2.SOPClassUID}",
                            },
                        }
                    ],
                }
            ],
        },
    )["id"]
    return made


@pytest.fixture(scope="module")
def fetching_ehr(
    tmp_path_factory: pytest.TempPathFactory,
    model_dir: Path,
    jwks_url: str,
    epic_jwks_file: Path,
    sandbox_key: EhrKey,
    fhir_server: FhirServer,
    orthanc: OrthancServer,
) -> Iterator[Ehr]:
    from cds_service.app import create_app

    settings = make_settings(
        tmp_path_factory.mktemp("integration"),
        model_dir,
        jwks_url,
        epic_jwks_file,
        fhir={
            "allowed_servers": [fhir_server.base_url],
            "allowed_dicomweb": [orthanc.dicomweb_url],
        },
    )
    with TestClient(create_app(settings), base_url=BASE) as client:
        yield Ehr(client, sandbox_key, jwks_url)


def _authorization(pid: str) -> dict[str, Any]:
    scope = "patient/Observation.read patient/DocumentReference.read"
    return fhir_authorization(ACCESS_TOKEN, scope=scope, subject="ecg-cds", patient=pid)


def test_service_fetches_every_kind_of_ecg_from_fhir_and_dicomweb(
    fetching_ehr: Ehr,
    ehr_data: dict[str, Any],
    fhir_server: FhirServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pid = ehr_data["patient"]
    body = hook_body(pid, fhirServer=fhir_server.base_url, fhirAuthorization=_authorization(pid))
    with caplog.at_level(logging.DEBUG):
        response = fetching_ehr.call("ecg-review", body)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert [p for p in find_empty(response.json()) if p != "$.cards"] == []
    ecg_cards = [c for c in cards if c["summary"].startswith("AI ECG")]
    problems = [c for c in cards if "could not be read" in c["summary"]]
    assert problems == [], problems[0]["detail"] if problems else ""
    assert len(ecg_cards) == 5

    derived = {
        c["suggestions"][0]["actions"][0]["resource"]["derivedFrom"][0]["reference"]
        for c in ecg_cards
    }
    assert derived == {
        *(f"Observation/{o}" for o in ehr_data["observations"]),
        f"DocumentReference/{ehr_data['aecg_doc']}",
        f"DocumentReference/{ehr_data['dicom_doc']}",
        f"ImagingStudy/{ehr_data['study']}",
    }
    for date in ("2021-06-01", "2021-06-02", "2022-02-02", "2023-03-03", "2024-04-04"):
        assert any(date in c["summary"] for c in ecg_cards)
    assert ACCESS_TOKEN not in caplog.text


def test_fetches_are_audited_and_the_token_is_stored_nowhere(
    fetching_ehr: Ehr, ehr_data: dict[str, Any], fhir_server: FhirServer
) -> None:
    from cds_service.audit import AuditFilter

    pid = ehr_data["patient"]
    body = hook_body(pid, fhirServer=fhir_server.base_url, fhirAuthorization=_authorization(pid))
    assert fetching_ehr.call("ecg-review", body).status_code == 200
    page = fetching_ehr.runtime.audit.query(
        AuditFilter(events=("fetch",), patient=f"Patient/{pid}"), limit=10
    )
    assert page.entries
    entry = str(page.entries[0].to_dict())
    assert "DocumentReference" in entry and "ImagingStudy" in entry
    data_dir = fetching_ehr.runtime.settings.data_dir
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert ACCESS_TOKEN.encode() not in path.read_bytes(), path


def test_paged_prefetch_bundle_is_followed_on_the_fhir_server(
    fetching_ehr: Ehr, ehr_data: dict[str, Any], fhir_server: FhirServer
) -> None:
    pid = ehr_data["patient"]
    first_page = httpx.get(
        f"{fhir_server.base_url}/Observation",
        params={"patient": pid, "_count": "1", "_sort": "-date"},
        timeout=30,
    ).json()
    if not any(link.get("relation") == "next" for link in first_page.get("link", [])):
        pytest.skip("this FHIR server does not page with next links")
    body = hook_body(
        pid,
        prefetch={"ecgObservations": first_page, "ecgDocuments": None, "ecgImagingStudies": None},
        fhirServer=fhir_server.base_url,
        fhirAuthorization=_authorization(pid),
    )
    response = fetching_ehr.call("ecg-review", body)
    assert response.status_code == 200, response.text
    derived = {
        c["suggestions"][0]["actions"][0]["resource"]["derivedFrom"][0]["reference"]
        for c in response.json()["cards"]
        if c["summary"].startswith("AI ECG")
    }
    assert derived == {f"Observation/{o}" for o in ehr_data["observations"]}


def test_dicomweb_outside_the_allow_list_is_not_fetched(
    fetching_ehr: Ehr, ehr_data: dict[str, Any], fhir_server: FhirServer
) -> None:
    """An attachment URL off the allow-list is refused and named, not fetched."""
    pid = ehr_data["patient"]
    doc = {
        "resourceType": "DocumentReference",
        "id": "elsewhere",
        "status": "current",
        "date": "2020-01-01T00:00:00Z",
        "content": [
            {
                "attachment": {
                    "contentType": "application/dicom",
                    "url": "http://127.0.0.1:9/dicom-web/studies/1/series/2/instances/3",
                }
            }
        ],
    }
    body = hook_body(
        pid,
        prefetch={
            "ecgObservations": None,
            "ecgImagingStudies": None,
            "ecgDocuments": {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": doc}],
            },
        },
        fhirServer=fhir_server.base_url,
        fhirAuthorization=_authorization(pid),
    )
    response = fetching_ehr.call("ecg-review", body)
    assert response.status_code == 200
    [card] = response.json()["cards"]
    assert "could not be read" in card["summary"]
    assert "allow-list" in card["detail"]


def test_a_dicomweb_instance_has_one_sha256_through_hook_and_ingest(
    fetching_ehr: Ehr, ehr_data: dict[str, Any], fhir_server: FhirServer, orthanc: OrthancServer
) -> None:
    """The ImagingStudy's instance, fetched by a hook call and then polled from the PACS by
    ``ecg-cds ingest``, is the same bytes both times: one SHA-256, one stored ECG."""
    from adapters import sha256_hex
    from cds_service.audit import Actor
    from cds_service.commands.dicomweb_poll import poll_dicomweb
    from cds_service.dicomweb import DicomwebClient

    pid = ehr_data["patient"]
    body = hook_body(pid, fhirServer=fhir_server.base_url, fhirAuthorization=_authorization(pid))
    assert fetching_ehr.call("ecg-review", body).status_code == 200
    runtime = fetching_ehr.runtime
    [from_hook] = [
        info
        for info, _ in runtime.ecgs.list_ecgs(patient_ref=f"Patient/{pid}", limit=100)
        # stored under the call's fhirServer (a write-back checks it is the same server)
        if (info.source_uri or "").startswith(
            f"{fhir_server.base_url}/ImagingStudy/{ehr_data['study']} "
        )
    ]
    assert from_hook.format == "dicom"

    with DicomwebClient(runtime.settings, orthanc.dicomweb_url) as client:
        [series] = [
            s
            for s in client.search_series({"Modality": "ECG"})
            if any(
                i["00080018"]["Value"][0] == ehr_data["study_instance"]
                for i in client.search_instances(
                    s["0020000D"]["Value"][0], s["0020000E"]["Value"][0]
                )
            )
        ]
        study, series_uid = series["0020000D"]["Value"][0], series["0020000E"]["Value"][0]
        retrieved = client.retrieve_instance(study, series_uid, ehr_data["study_instance"])
    assert sha256_hex(retrieved) == from_hook.sha256

    new_ids, problems = poll_dicomweb(
        runtime, orthanc.dicomweb_url, True, "", Actor(client="test-ingest"), False
    )
    assert problems == []
    polled = runtime.ecgs.find_by_source(
        f"{orthanc.dicomweb_url}/studies/{study}/series/{series_uid}"
        f"/instances/{ehr_data['study_instance']}"
    )
    # The poll found the bytes already stored (by the hook): no second ECG for them.
    assert polled is None or polled.id == from_hook.id
    assert from_hook.id not in new_ids
    same = [i for i, _ in runtime.ecgs.list_ecgs(limit=1000) if i.sha256 == from_hook.sha256]
    assert [i.id for i in same] == [from_hook.id]
