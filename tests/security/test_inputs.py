"""Findings 5 (bad input was a 500; JSON not in UTF-8), 10 (unbounded feedback) and 11
(file modes), and the XML attacks that already held; against the real service process
unless noted."""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters import EcgFormatError, load_ecg
from tests.security.conftest import AUDIT_SECRET, INGEST_TOKEN, MB, LiveService
from tests.security.listener import Listener
from tests.service.ehr import document_reference, hook_body, searchset

HOOK = "/cds-services/ecg-review"


def _outcome(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return str(body["issue"][0]["diagnostics"])


def _raw_hook(live: LiveService, body: bytes, path: str = HOOK) -> httpx.Response:
    headers = {"Authorization": f"Bearer {live.token(path)}", "Content-Type": "application/json"}
    return httpx.post(live.base_url + path, content=body, headers=headers, timeout=60)


# -- finding 5 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("patient_json", [r'"p\u0000x"', r'"p\ud800x"', r'"p\udc00"', r'"\ud83d"'])
def test_nul_and_lone_surrogates_in_ids_are_400(live: LiveService, patient_json: str) -> None:
    body = json.dumps(hook_body()).replace('"test-patient"', patient_json).encode()
    message = _outcome(_raw_hook(live, body), 400)
    assert "NUL" in message or "surrogate" in message


def test_a_paired_surrogate_is_fine(live: LiveService) -> None:
    empty = {"ecgObservations": searchset(), "ecgDocuments": None, "ecgImagingStudies": None}
    body = json.dumps(hook_body("pat-\U0001f600", empty)).encode()  # as \ud83d\ude00
    assert _raw_hook(live, body).status_code == 200


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32-be"])
@pytest.mark.parametrize("patient_json", [r'"p\ud800x"', r'"p\u0000x"', '"test-patient"'])
def test_json_in_utf16_or_utf32_is_400_naming_utf8(
    live: LiveService, encoding: str, patient_json: str
) -> None:
    """The stdlib parser detects UTF-16 and UTF-32 on its own, but the guard scans bytes
    as UTF-8: a lone surrogate so encoded reached the handlers (500, UnicodeEncodeError)
    and a NUL was accepted (200). RFC 8259 section 8.1: JSON between systems is UTF-8."""
    empty = {"ecgObservations": None, "ecgDocuments": None, "ecgImagingStudies": None}
    text = json.dumps(hook_body(prefetch=empty)).replace('"test-patient"', patient_json)
    message = _outcome(_raw_hook(live, text.encode(encoding)), 400)
    assert "UTF-8" in message
    upload = live.upload(
        content='{"resourceType": "Observation"}'.encode(encoding),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert "UTF-8" in _outcome(upload, 400)


def _observation_file(patient_json: str) -> bytes:
    """A small FHIR ECG Observation file (one lead), its subject reference as given."""
    mdc = "urn:oid:2.16.840.1.113883.6.24"
    lead = {"system": mdc, "code": "131329", "display": "MDC_ECG_ELEC_POTL_I"}
    observation = {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "code": {"coding": [{"system": mdc, "code": "131328"}]},
        "subject": {"reference": "Patient/x"},
        "component": [
            {
                "code": {"coding": [lead]},
                "valueSampledData": {
                    "origin": {"value": 0},
                    "period": 2,
                    "dimensions": 1,
                    "data": " ".join(str(i % 7) for i in range(2500)),
                },
            }
        ],
    }
    text = json.dumps(observation).replace('"Patient/x"', patient_json)
    return text.encode("ascii")


def test_a_lone_surrogate_inside_an_ecg_file_is_named_not_500(live: LiveService) -> None:
    """JSON text in an ECG *file* (not the request) escaping a lone surrogate: the reader
    decodes it, and storing the record raised UnicodeEncodeError: 500 for the upload and
    for every hook call whose chart holds that file."""
    bad = _observation_file(r'"Patient/p\ud800x"')
    upload = live.upload(content=bad, headers={"Content-Type": "application/octet-stream"})
    assert "surrogate" in _outcome(upload, 400)
    document = document_reference("doc-surrogate", bad, "application/fhir+json")
    empty = {"ecgObservations": None, "ecgImagingStudies": None}
    response = live.hook(HOOK, hook_body(prefetch={**empty, "ecgDocuments": searchset(document)}))
    assert response.status_code == 200, response.text[:500]
    assert "surrogate" in json.dumps(response.json()["cards"])
    good = _observation_file('"Patient/p"')
    stored = live.upload(content=good, headers={"Content-Type": "application/octet-stream"})
    assert stored.is_success, stored.text[:300]


def test_deeply_nested_json_is_400_everywhere(live: LiveService) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    upload = live.upload(content=nested, headers={"Content-Type": "application/fhir+json"})
    assert "max_json_depth" in _outcome(upload, 400)
    assert "max_json_depth" in _outcome(_raw_hook(live, nested), 400)


def test_huge_numbers_are_4xx(live: LiveService) -> None:
    audit = {"Authorization": f"Bearer {AUDIT_SECRET}"}
    huge = "9" * 20
    with httpx.Client(base_url=live.base_url, headers=audit, timeout=30) as client:
        assert client.get("/audit", params={"offset": huge}).status_code == 422
        assert client.get("/audit", params={"limit": huge}).status_code == 422
        assert client.get(f"/fhir/AuditEvent/{huge}").status_code in (404, 422)
        assert client.get(f"/fhir/AuditEvent/{'9' * 5000}").status_code in (404, 422)
        _outcome(client.get("/fhir/AuditEvent", params={"_offset": huge}), 400)
        _outcome(client.get("/fhir/AuditEvent", params={"_count": "9" * 5000}), 400)
    body = b'{"hook": "patient-view", "n": 1' + b"0" * 5000 + b"}"
    _outcome(_raw_hook(live, body), 400)


def test_nul_in_a_url_is_400(live: LiveService) -> None:
    audit = {"Authorization": f"Bearer {AUDIT_SECRET}"}
    with httpx.Client(base_url=live.base_url, headers=audit, timeout=30) as client:
        _outcome(client.get("/audit", params={"patient": "a\x00b"}), 400)
        _outcome(client.get("/viewer/ecg/x%00y"), 400)


def test_nul_in_a_form_field_is_400(live: LiveService) -> None:
    with live.client("127.0.0.71") as client:
        response = client.post(
            "/viewer/login",
            content=b"audit_token=a%00b",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert "NUL" in _outcome(response, 400)


def test_a_50_mb_chunked_hook_body_is_413(live: LiveService) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"hook": "patient-view", "pad": "'
        for _ in range(50):
            yield b"a" * (1024 * 1024)
        yield b'"}'

    headers = {"Authorization": f"Bearer {live.token(HOOK)}", "Content-Type": "application/json"}
    response = httpx.post(live.base_url + HOOK, content=chunks(), headers=headers, timeout=60)
    assert "max_request_bytes" in _outcome(response, 413)


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=b0", "application/dicom"])
def test_a_50_mb_chunked_upload_is_413_and_audited(live: LiveService, content_type: str) -> None:
    """Without Content-Length the body is stopped while it streams; a multipart body was
    answered 400 "malformed multipart body: " (the limit's signal read as a parse error)."""
    part = b'--b0\r\nContent-Disposition: form-data; name="file"; filename="big.dcm"\r\n\r\n'

    def chunks() -> Iterator[bytes]:
        yield part if content_type.startswith("multipart") else b"DICM"
        for _ in range(50):
            yield b"a" * MB
        yield b"\r\n--b0--\r\n"

    response = live.upload(content=chunks(), headers={"Content-Type": content_type})
    assert "max_request_bytes" in _outcome(response, 413)
    audit = {"Authorization": f"Bearer {AUDIT_SECRET}"}
    query = {"event": "ingest", "outcome": "failure", "limit": "1"}
    entries = httpx.get(live.base_url + "/audit", params=query, headers=audit).json()["entries"]
    assert entries[0]["detail"]["status"] == 413


# -- finding 10: feedback capped at the edge ----------------------------------------------------


def _feedback(live: LiveService, items: list[dict[str, Any]]) -> httpx.Response:
    return live.hook(f"{HOOK}/feedback", {"feedback": items})


def _item(**extra: Any) -> dict[str, Any]:
    return {
        "card": str(uuid.uuid4()),
        "outcome": "overridden",
        "outcomeTimestamp": "2024-05-01T10:00:00Z",
        **extra,
    }


def test_a_3_mb_comment_is_400(live: LiveService) -> None:
    item = _item(overrideReason={"userComment": "x" * 3_000_000})
    assert "userComment" in _outcome(_feedback(live, [item]), 400)


def test_ten_thousand_feedback_items_are_400_at_once(live: LiveService) -> None:
    started = time.monotonic()
    response = _feedback(live, [_item() for _ in range(10_000)])
    _outcome(response, 400)
    assert time.monotonic() - started < 20  # a hang detector, not a speed test


def test_feedback_within_the_limits_is_stored(live: LiveService) -> None:
    item = _item(overrideReason={"userComment": "disagree: lead reversal"})
    assert _feedback(live, [item]).status_code == 200


# -- finding 11: the database is private ------------------------------------------------------


def test_database_wal_shm_are_0600_and_the_data_dir_0700(tmp_path: Path) -> None:
    from cds_service.runtime import Runtime
    from cds_service.settings import Settings

    data_dir = tmp_path / "new" / "var"
    runtime = Runtime.start(Settings(data_dir=data_dir, preload_model=False), resume=False)
    try:
        runtime.audit.record("auth-failure", outcome="failure", detail={"probe": True})
        files = sorted(data_dir.glob("ecg-cds.db*"))
        assert {f.name for f in files} >= {"ecg-cds.db", "ecg-cds.db-wal", "ecg-cds.db-shm"}
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    finally:
        runtime.stop()


def test_a_world_readable_database_is_tightened(tmp_path: Path) -> None:
    from cds_service.storage.base import make_engine

    database = tmp_path / "old.db"
    database.write_bytes(b"")
    os.chmod(database, 0o644)
    make_engine(f"sqlite:///{database}").dispose()
    assert stat.S_IMODE(database.stat().st_mode) == 0o600


# -- XML attacks that already held -------------------------------------------------------------

_LAUGHS = """<?xml version="1.0" encoding="{encoding}"?>
<!DOCTYPE AnnotatedECG [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
]>
<AnnotatedECG xmlns="urn:hl7-org:v3"><text>&f;</text></AnnotatedECG>
"""


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-8"])
def test_billion_laughs_in_any_encoding_is_refused(encoding: str) -> None:
    data = _LAUGHS.format(encoding=encoding.upper()).encode(encoding)
    started = time.monotonic()
    with pytest.raises(EcgFormatError):
        load_ecg(data)
    assert time.monotonic() - started < 10  # a hang detector


def test_external_entities_are_never_fetched(live: LiveService) -> None:
    listener = Listener(status=200)
    try:
        for encoding in ("utf-8", "utf-16"):
            xml = (
                f'<?xml version="1.0" encoding="{encoding.upper()}"?>\n'
                f'<!DOCTYPE RestingECG [<!ENTITY x SYSTEM "{listener.url}/xxe">]>\n'
                "<RestingECG><PatientDemographics><PatientID>&x;</PatientID>"
                "</PatientDemographics></RestingECG>\n"
            ).encode(encoding)
            response = live.upload(content=xml, headers={"Content-Type": "application/xml"})
            assert 400 <= response.status_code < 500, response.text[:300]
            with pytest.raises(EcgFormatError):
                load_ecg(xml)
        assert listener.requests == []
    finally:
        listener.close()


def test_ingest_token_is_the_only_upload_credential(live: LiveService) -> None:
    refused = httpx.post(
        f"{live.base_url}/ecgs",
        content=b"x",
        headers={"Authorization": f"Bearer {AUDIT_SECRET}"},
        timeout=30,
    )
    assert refused.status_code == 401
    assert INGEST_TOKEN not in refused.text
