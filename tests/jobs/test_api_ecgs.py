"""``POST /ecgs`` and friends through the real app: real files in, clear errors for garbage."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.audit import AuditEntry
from cds_service.settings import Settings

TOKEN = "test-ingest-token-7c1f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("api")
    settings = Settings(
        data_dir=folder,
        database_url=f"sqlite:///{folder / 'ecg-cds.db'}",
        max_request_bytes=4 * 1024 * 1024,
        auth={"ingest_tokens": [TOKEN]},
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _issue(response: object) -> str:
    body = response.json()  # type: ignore[attr-defined]
    assert body["resourceType"] == "OperationOutcome"
    return str(body["issue"][0]["diagnostics"])


@pytest.mark.parametrize(
    ("relative", "content_type", "expected_format"),
    [
        ("hl7_aecg/Example_aECG_HL7_2003-12.xml", "application/xml", "hl7-aecg"),
        ("ge_muse_xml/muse-sinus.xml", "application/xml", "ge-muse-xml"),
        ("philips_xml/129DYPRG.XML", "application/xml", "philips-xml"),
        ("dicom/pydicom_waveform_ecg.dcm", "application/dicom", "dicom"),
    ],
)
def test_upload_real_files_raw_and_multipart(
    client: TestClient, formats_dir: Path, relative: str, content_type: str, expected_format: str
) -> None:
    data = (formats_dir / relative).read_bytes()
    first = client.post(
        "/ecgs", files={"file": (Path(relative).name, data, content_type)}, headers=AUTH
    )
    assert first.status_code in (200, 201), first.text
    body = first.json()
    assert body["format"] == expected_format and body["n_leads"] >= 8
    again = client.post("/ecgs", content=data, headers={**AUTH, "Content-Type": content_type})
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["id"] == body["id"]
    assert first.headers["location"] == f"/ecgs/{body['id']}"


def test_upload_waits_for_the_result_when_asked(client: TestClient, ptbxl_dir: Path) -> None:
    record = ptbxl_dir / "records100" / "00000" / "00010_lr"
    files = [
        ("file", ("00010_lr.hea", record.with_suffix(".hea").read_bytes())),
        ("file", ("00010_lr.dat", record.with_suffix(".dat").read_bytes())),
    ]
    response = client.post(
        "/ecgs", params={"wait_s": 10, "patient": "Patient/p-17"}, files=files, headers=AUTH
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == "wfdb" and body["n_leads"] == 12 and body["fs"] == 100.0
    assert body["patient_ref"] == "Patient/p-17"
    assert body["status"] in ("done", "rejected") and "model_version" in body["result"]
    result = client.get(f"/ecgs/{body['id']}/result", headers=AUTH)
    assert result.status_code == 200
    assert result.json()["result"] == body["result"]
    assert client.get(f"/ecgs/{body['id']}", headers=AUTH).json()["id"] == body["id"]


def test_fhir_document_reference_with_an_ecg_attachment(
    client: TestClient, formats_dir: Path
) -> None:
    data = (formats_dir / "hl7_aecg" / "minimum_aecg.xml").read_bytes()
    resource = {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [
            {
                "attachment": {
                    "contentType": "application/xml",
                    "data": base64.b64encode(data).decode(),
                }
            }
        ],
    }
    response = client.post(
        "/ecgs", json=resource, headers={**AUTH, "Content-Type": "application/fhir+json"}
    )
    assert response.status_code in (200, 201), response.text
    assert response.json()["format"] == "hl7-aecg"


def _ingest_refusals(client: TestClient) -> list[AuditEntry]:
    """The audit trail's refused ingests, newest first."""
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    entries = runtime.audit.query().entries
    return [e for e in entries if e.event == "ingest" and e.outcome == "failure"]


def test_garbage_gets_400_with_a_clear_message_and_an_audit_entry(client: TestClient) -> None:
    response = client.post(
        "/ecgs",
        content=b"%PDF-1.4 not an ECG",
        headers={**AUTH, "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 400
    assert "not a recognised ECG format" in _issue(response)
    assert "supported:" in _issue(response)
    refusals = _ingest_refusals(client)
    assert refusals and refusals[0].detail["status"] == 400


def test_a_header_without_its_signal_file_is_refused(client: TestClient, ptbxl_dir: Path) -> None:
    header = ptbxl_dir / "records100" / "00000" / "00011_lr.hea"
    response = client.post(
        "/ecgs", files={"file": ("00011_lr.hea", header.read_bytes())}, headers=AUTH
    )
    assert response.status_code == 400
    assert "00011_lr" in _issue(response) or ".dat" in _issue(response)


@pytest.mark.parametrize(
    ("headers", "content", "status", "phrase"),
    [
        ({"Content-Type": "text/plain"}, b"hello", 415, "not accepted"),
        ({"Content-Type": "application/fhir+json"}, b'{"resourceType": "Patient"}', 422, "Patient"),
        ({"Content-Type": "application/json"}, b"{not json", 400, "not valid JSON"),
        ({"Content-Type": "application/octet-stream"}, b"", 400, "empty"),
        ({"Content-Type": "application/octet-stream"}, b"x" * (4 * 1024 * 1024 + 1), 413, "limit"),
    ],
)
def test_bad_requests_get_the_right_status(
    client: TestClient, headers: dict[str, str], content: bytes, status: int, phrase: str
) -> None:
    response = client.post("/ecgs", content=content, headers={**AUTH, **headers})
    assert response.status_code == status
    assert phrase in _issue(response)


def test_no_anonymous_or_wrong_token_access(client: TestClient, formats_dir: Path) -> None:
    data = (formats_dir / "philips_xml" / "129DYPRG.XML").read_bytes()
    plain = {"Content-Type": "application/xml"}
    assert client.post("/ecgs", content=data, headers=plain).status_code == 401
    wrong = {**plain, "Authorization": "Bearer not-the-token"}
    assert client.post("/ecgs", content=data, headers=wrong).status_code == 401
    assert client.get("/ecgs/anything").status_code == 401
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    assert any(e.event == "auth-failure" for e in runtime.audit.query().entries)


def test_unknown_ids_are_404(client: TestClient) -> None:
    assert client.get("/ecgs/no-such-id", headers=AUTH).status_code == 404
    assert client.get("/ecgs/no-such-id/result", headers=AUTH).status_code == 404
    assert client.post("/ecgs/no-such-id/classify", headers=AUTH).status_code == 404


def test_two_parts_with_the_same_file_name_are_refused_not_one_dropped(
    client: TestClient, formats_dir: Path
) -> None:
    """Two different ECGs under one name (folders are stripped: ``a/ecg.xml``, ``b/ecg.xml``)
    were one dict key: the first was silently dropped and the second stored as the upload."""
    first = (formats_dir / "ge_muse_xml" / "muse-sinus.xml").read_bytes()
    second = (formats_dir / "philips_xml" / "129DYPRG.XML").read_bytes()
    response = client.post(
        "/ecgs",
        files=[("file", ("a/ecg.xml", first)), ("file", ("b\\ecg.xml", second))],
        headers=AUTH,
    )
    assert response.status_code == 400, response.text
    assert "ecg.xml" in _issue(response) and "more than once" in _issue(response)
    assert "ecg.xml" in _ingest_refusals(client)[0].detail["reason"]


def test_an_uncalibrated_wfdb_record_is_kept_with_its_scale_named(
    client: TestClient, data_dir: Path
) -> None:
    # A QT Database excerpt whose header gives ADC gain 0 on both channels (WFDB header(5):
    # uncalibrated, "a value of 200 ... may be assumed"). Stored and analysed at that default,
    # and the result says the scale is assumed (stop 25 refused it: the QT Database's own
    # records could then not be measured at all).
    files = [
        ("file", (name, (data_dir / "qtdb" / name).read_bytes()))
        for name in ("sel820.hea", "sel820.dat")
    ]
    response = client.post("/ecgs", params={"wait_s": 10}, files=files, headers=AUTH)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == "wfdb" and body["n_leads"] == 2
    reasons = " ".join(body["result"]["quality"]["reasons"])
    assert "amplitude uncalibrated: the header gives no ADC gain" in reasons
    assert not any("sel820" in str(e.detail) for e in _ingest_refusals(client))
