"""Findings 6 (Markdown injection into cards) and 7 (cross-patient exposure through
content-hash deduplication), through the whole hook pipeline (in-process service)."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pydicom
from markdown_it import MarkdownIt

from tests.security.conftest import Ehr
from tests.service.ehr import ALL_NULL, document_reference, hook_body, searchset

EVIL_ID = "[click me](javascript:alert(5))"


def _unique_dicom(dicom_bytes: bytes) -> bytes:
    """The real DICOM ECG with a fresh patient name: bytes no other test has stored."""
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes))
    ds.PatientName = f"Sec^{uuid.uuid4().hex[:12]}"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _cards(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return list(response.json()["cards"])


def _html(markdown: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(markdown)


def test_ids_from_the_ehr_cannot_become_links_or_html(ehr: Ehr, dicom_bytes: bytes) -> None:
    evil_html = '<img src=x onerror="alert(1)">'
    readable = document_reference(EVIL_ID, _unique_dicom(dicom_bytes), "application/dicom")
    unreadable = document_reference(evil_html + EVIL_ID, b"not an ecg", "application/dicom")
    body = hook_body(prefetch={**ALL_NULL, "ecgDocuments": searchset(readable, unreadable)})
    cards = _cards(ehr.call("ecg-review", body))
    details = [card["detail"] for card in cards]
    assert len(details) == 2
    assert any("click me" in d for d in details)
    for detail in details:
        html = _html(detail)
        assert "<a " not in html and "<img" not in html, html
        assert "href" not in html


def test_the_same_file_for_another_patient_never_shows_the_first_patients_record(
    ehr: Ehr, dicom_bytes: bytes
) -> None:
    data = _unique_dicom(dicom_bytes)
    patient_a, patient_b = f"sec-a-{uuid.uuid4().hex[:8]}", f"sec-b-{uuid.uuid4().hex[:8]}"

    def call(patient: str) -> list[dict[str, Any]]:
        document = document_reference("shared-1", data, "application/dicom")
        document["subject"] = {"reference": f"Patient/{patient}"}
        prefetch = {**ALL_NULL, "ecgDocuments": searchset(document)}
        return _cards(ehr.call("ecg-review", hook_body(patient, prefetch)))

    cards_a = call(patient_a)
    links_a = [link["url"] for card in cards_a for link in card.get("links", [])]
    ecg_links = [url for url in links_a if "/viewer/ecg/" in url]
    assert ecg_links, cards_a
    ecg_id = ecg_links[0].split("/viewer/ecg/")[1].split("?")[0]
    info = ehr.runtime.ecgs.get_info(ecg_id)
    assert info is not None and info.patient_ref == f"Patient/{patient_a}"

    cards_b = call(patient_b)
    text_b = str(cards_b)
    assert ecg_id not in text_b  # no link, suggestion or reference to A's record
    assert patient_a not in text_b
    assert not [c for c in cards_b if c["summary"].startswith("AI ECG")]
    assert any("another patient" in card["detail"] for card in cards_b)
    # and A's record still belongs to A alone
    info = ehr.runtime.ecgs.get_info(ecg_id)
    assert info is not None and info.patient_ref == f"Patient/{patient_a}"
