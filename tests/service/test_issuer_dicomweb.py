"""One trusted EHR cannot have another hospital's PACS read for it.

``fhir.allowed_dicomweb`` is one list for every trusted EHR, and a call names its studies by
UID (an attachment's WADO-RS URL, an ImagingStudy's Endpoint): an EHR could have any
allow-listed PACS read, which answers the service without credentials as it answers
``ecg-cds ingest``, and see another hospital's patient's ECG in its own chart. With the
EHR's own PACS listed (``auth.trusted_issuers[].dicomweb_servers``) another one is
refused, named on the card and never contacted; an EHR that lists none reads as before.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.servers import OrthancServer
from tests.service.conftest import SANDBOX_ISS, Ehr
from tests.service.ehr import hook_body, searchset
from tests.service.test_integration import _stow

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OWN_FHIR = "https://ehr-a.example/fhir"
OWN_PACS = "https://pacs-a.example/dicom-web"
OTHER_FHIR = "https://ehr-b.example/fhir"


@pytest.fixture(scope="module")
def ehrs(
    two_ehrs: Callable[..., AbstractContextManager[tuple[Ehr, Ehr]]], orthanc: OrthancServer
) -> Iterator[tuple[Ehr, Ehr]]:
    """The sandbox-like EHR bound to its own servers; the Epic-like one bound to none."""
    own = {"fhir_servers": [OWN_FHIR], "dicomweb_servers": [OWN_PACS]}
    fhir = {
        "allowed_servers": [OWN_FHIR, OTHER_FHIR],
        "allowed_dicomweb": [OWN_PACS, orthanc.dicomweb_url],
    }
    with two_ehrs("issuer-dicomweb", sandbox=own, epic={}, fhir=fhir) as pair:
        yield pair


@pytest.fixture(scope="module")
def other_hospitals_ecg(orthanc: OrthancServer, formats_dir: Path) -> dict[str, str]:
    """A DICOM ECG on the other hospital's PACS: its WADO-RS URL and UIDs."""
    ds = _stow(orthanc, (formats_dir / "dicom" / "pydicom_waveform_ecg.dcm").read_bytes())
    study, series, instance = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    wado = f"{orthanc.dicomweb_url}/studies/{study}/series/{series}/instances/{instance}"
    return {"wado": wado, "study": study, "series": series, "instance": instance}


def _document(wado: str) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": "wado-1",
        "status": "current",
        "date": "2024-01-01T00:00:00Z",
        "content": [{"attachment": {"contentType": "application/dicom", "url": wado}}],
    }


def _study(orthanc: OrthancServer, uids: dict[str, str]) -> dict[str, Any]:
    endpoint = {"resourceType": "Endpoint", "id": "pacs", "address": orthanc.dicomweb_url}
    return {
        "resourceType": "ImagingStudy",
        "id": "study-1",
        "status": "available",
        "started": "2024-01-02T00:00:00Z",
        "contained": [endpoint],
        "endpoint": [{"reference": "#pacs"}],
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uids['study']}"}],
        "series": [
            {"uid": uids["series"], "modality": {"code": "ECG"}, "instance": [
                {"uid": uids["instance"]}
            ]}
        ],
    }  # fmt: skip


def _cards(ehr: Ehr, key: str, resource: dict[str, Any]) -> list[dict[str, Any]]:
    prefetch: dict[str, Any] = {"ecgObservations": None, "ecgDocuments": None}
    prefetch["ecgImagingStudies"] = None
    prefetch[key] = searchset(resource)
    body = hook_body("p-1", prefetch, fhirServer=OWN_FHIR)
    response = ehr.call("ecg-review", body)
    assert response.status_code == 200, response.text[:500]
    return list(response.json()["cards"])


@pytest.mark.parametrize("key", ["ecgDocuments", "ecgImagingStudies"])
def test_another_hospitals_pacs_is_not_read_for_a_bound_ehr(
    ehrs: tuple[Ehr, Ehr],
    orthanc: OrthancServer,
    other_hospitals_ecg: dict[str, str],
    key: str,
) -> None:
    bound, _ = ehrs
    resource = (
        _document(other_hospitals_ecg["wado"])
        if key == "ecgDocuments"
        else _study(orthanc, other_hospitals_ecg)
    )
    [card] = _cards(bound, key, resource)
    assert "could not be read" in card["summary"]
    detail = card["detail"].replace("\\", "")  # Markdown escapes
    assert f"issuer {SANDBOX_ISS!r}" in detail
    assert "auth.trusted_issuers[].dicomweb_servers" in detail and "it was not contacted" in detail


def test_another_ehrs_fhir_server_is_not_read_for_a_bound_ehr(ehrs: tuple[Ehr, Ehr]) -> None:
    """The same for an attachment on another allow-listed FHIR server (a Binary there)."""
    bound, _ = ehrs
    document = _document(f"{OTHER_FHIR}/Binary/ecg-1")
    document["content"][0]["attachment"]["contentType"] = "application/xml"
    [card] = _cards(bound, "ecgDocuments", document)
    assert "could not be read" in card["summary"]
    detail = card["detail"].replace("\\", "")  # Markdown escapes
    assert "auth.trusted_issuers[].fhir_servers" in detail and "ehr-b.example" in detail


def test_an_ehr_bound_to_no_pacs_reads_as_before(
    ehrs: tuple[Ehr, Ehr], other_hospitals_ecg: dict[str, str]
) -> None:
    _, unbound = ehrs
    cards = _cards(unbound, "ecgDocuments", _document(other_hospitals_ecg["wado"]))
    assert not [c for c in cards if "could not be read" in c["summary"]], cards
    assert "DocumentReference/wado-1" in " ".join(c["detail"] for c in cards)


def test_inline_data_needs_no_pacs(ehrs: tuple[Ehr, Ehr], formats_dir: Path) -> None:
    """Bound or not, an ECG sent inline is read: only what the service fetches is bound."""
    bound, _ = ehrs
    data = (formats_dir / "hl7_aecg" / "Example_aECG_HL7_2003-12.xml").read_bytes()
    document = _document("")
    document["content"] = [
        {"attachment": {"contentType": "application/xml", "data": base64.b64encode(data).decode()}}
    ]
    cards = _cards(bound, "ecgDocuments", document)
    assert not [c for c in cards if "could not be read" in c["summary"]], cards
