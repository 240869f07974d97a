"""Finding 4 (one normalising allow-list, malformed URLs are 4xx), the access token kept
to its own fhirServer, and the SSRF spellings,
redirects and schemes that already held. Loopback listeners prove "no request was made"."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cds_service.allow_list import OutboundRefused, check_url, redact_url, url_allowed
from tests.security.conftest import Ehr
from tests.security.listener import Listener
from tests.service.ehr import ALL_NULL, RecordingServer, fhir_authorization, hook_body, searchset

# -- the one check ----------------------------------------------------------------------------

BASES = ["https://ehr.example.org/fhir/R4", "http://127.0.0.1:8042/dicom-web"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8042/dicom-web/../admin",  # the ingest poller's old hole
        "http://127.0.0.1:8042/dicom-web/%2e%2e/admin",
        "http://127.0.0.1:8042/dicom-web/studies/%2F..%2Fadmin",  # encoded slash
        # "..;" climbs on Tomcat, Jetty and Spring (HAPI FHIR's hosts), not by RFC 3986
        "http://127.0.0.1:8042/dicom-web/..;/admin",
        "http://127.0.0.1:8042/dicom-web/studies/..;x=1/../admin",
        "http://127.0.0.1:8042/dicom-web/..%3B/admin",
        "http://127.0.0.1:8042/dicom-web/.;/../admin",
        "http://127.0.0.1:8042/dicom-web/%252e%252e/admin",  # double-encoded dot segment
        "http://127.1:8042/dicom-web/studies",  # short IPv4
        "http://2130706433:8042/dicom-web/studies",  # decimal IPv4
        "http://0x7f.0.0.1:8042/dicom-web/studies",  # hex IPv4
        "http://0177.0.0.1:8042/dicom-web/studies",  # octal IPv4
        "http://[::1]:8042/dicom-web/studies",
        "http://[::ffff:127.0.0.1]:8042/dicom-web/studies",
        "http://user@127.0.0.1:8042/dicom-web/studies",  # userinfo
        "http://ehr.example.org@127.0.0.1:8042/dicom-web/studies",
        "https://ehr.example.org/fhir/R4@evil.example/x",
        "https://ehr.example.org\\@evil.example/fhir/R4",
        "file:///etc/passwd",
        "gopher://127.0.0.1:8042/_GET%20/dicom-web",
        "ftp://ehr.example.org/fhir/R4",
        "https://ehr.example.org:99999/fhir/R4",
        "http://127.0.0.1:abc/dicom-web",
        "http://127.0.0.1:8042/dicom-web\x00/studies",
        "https://ehr.example.org/fhir/R4evil",
        "//ehr.example.org/fhir/R4",
    ],
)
def test_forbidden_spellings_are_refused(url: str) -> None:
    assert not url_allowed(url, BASES)
    with pytest.raises(OutboundRefused) as info:
        check_url(url, BASES, kind="test URL")
    assert "\x00" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "contacted"),
    [
        (
            "https://EHR.example.org:443/fhir/R4/Binary/1",
            "https://ehr.example.org/fhir/R4/Binary/1",
        ),
        (
            "https://ehr.example.org/fhir/R4/x/../Binary/1",
            "https://ehr.example.org/fhir/R4/Binary/1",
        ),
        (
            "http://127.0.0.1:8042/dicom-web/studies/1.2",
            "http://127.0.0.1:8042/dicom-web/studies/1.2",
        ),
    ],
)
def test_what_is_checked_is_what_is_contacted(url: str, contacted: str) -> None:
    assert check_url(url, BASES) == contacted


@pytest.mark.parametrize("url", ["http://127.0.0.1:abc/fhir", "http://h:99999/x", "http://[::1"])
def test_redaction_never_raises(url: str) -> None:
    assert "?" not in redact_url(url + "?patient=secret")


# -- every outbound caller uses it: malformed URLs from the EHR are 4xx or a named problem ---


@pytest.mark.parametrize("server", ["http://127.0.0.1:abc/fhir", "http://127.0.0.1:99999/fhir"])
def test_malformed_fhir_server_port_is_412_not_500(ehr: Ehr, server: str) -> None:
    response = ehr.call("ecg-review", hook_body(fhirServer=server))
    assert response.status_code == 412, response.text
    assert "fhirServer" in response.json()["issue"][0]["diagnostics"]


@pytest.fixture()
def allowed_listener(ehr: Ehr, monkeypatch: pytest.MonkeyPatch) -> Any:
    listener = Listener(status=200)
    fhir = ehr.client.app.state.settings.fhir  # type: ignore[attr-defined]
    monkeypatch.setattr(fhir, "allowed_servers", [f"{listener.url}/fhir"])
    monkeypatch.setattr(fhir, "allowed_dicomweb", [f"{listener.url}/dicom-web"])
    yield listener
    listener.close()


def _document(url: str) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": "doc-1",
        "status": "current",
        "subject": {"reference": "Patient/test-patient"},
        "content": [{"attachment": {"contentType": "application/dicom", "url": url}}],
    }


def test_attachment_urls_off_the_list_are_named_and_never_fetched(
    ehr: Ehr, allowed_listener: Listener
) -> None:
    port = allowed_listener.port
    urls = [
        "http://127.0.0.1:abc/fhir/Binary/1",
        "http://127.0.0.1:99999/fhir/Binary/1",
        f"http://127.1:{port}/fhir/Binary/1",
        f"http://2130706433:{port}/fhir/Binary/1",
        f"http://[::1]:{port}/fhir/Binary/1",
        f"http://user@127.0.0.1:{port}/fhir/Binary/1",
        f"http://127.0.0.1:{port}/fhir/../admin/Binary/1",
        "file:///etc/passwd",
        f"gopher://127.0.0.1:{port}/_x",
    ]
    documents = [dict(_document(url), id=f"doc-{i}") for i, url in enumerate(urls)]
    body = hook_body(
        prefetch={**ALL_NULL, "ecgDocuments": searchset(*documents)},
        fhirServer=f"{allowed_listener.url}/fhir",
    )
    response = ehr.call("ecg-review", body)
    assert response.status_code == 200, response.text
    assert allowed_listener.requests == []


def test_malformed_next_link_and_endpoint_are_not_500(ehr: Ehr, allowed_listener: Listener) -> None:
    paged = searchset()
    paged["link"] = [{"relation": "next", "url": "http://127.0.0.1:abc/fhir?page=2"}]
    study = {
        "resourceType": "ImagingStudy",
        "id": "study-1",
        "status": "available",
        "subject": {"reference": "Patient/test-patient"},
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "ECG"}],
        "contained": [
            {
                "resourceType": "Endpoint",
                "id": "ep",
                "status": "active",
                "address": "http://127.0.0.1:99999/dicom-web",
            }
        ],
        "endpoint": [{"reference": "#ep"}],
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
        "series": [{"uid": "1.2.3.4", "modality": {"code": "ECG"}}],
    }
    body = hook_body(
        prefetch={**ALL_NULL, "ecgObservations": paged, "ecgImagingStudies": searchset(study)},
        fhirServer=f"{allowed_listener.url}/fhir",
    )
    response = ehr.call("ecg-review", body)
    assert response.status_code < 500, response.text


def test_redirects_are_not_followed(ehr: Ehr, monkeypatch: pytest.MonkeyPatch) -> None:
    """An allow-listed server answering 302 to somewhere else: the target sees nothing."""
    target = Listener(status=200)
    redirector = Listener(status=302, location=f"{target.url}/fhir/Binary/stolen")
    try:
        fhir = ehr.client.app.state.settings.fhir  # type: ignore[attr-defined]
        monkeypatch.setattr(fhir, "allowed_servers", [f"{redirector.url}/fhir"])
        body = hook_body(
            prefetch={
                **ALL_NULL,
                "ecgDocuments": searchset(_document(f"{redirector.url}/fhir/Binary/1")),
            },
            fhirServer=f"{redirector.url}/fhir",
        )
        response = ehr.call("ecg-review", body)
        assert response.status_code == 200, response.text
        assert redirector.requests  # the allowed server was asked
        assert target.requests == []  # its redirect was not followed
    finally:
        target.close()
        redirector.close()


def test_the_access_token_goes_only_to_the_calls_fhir_server(
    ehr: Ehr, monkeypatch: pytest.MonkeyPatch, dicom_bytes: bytes
) -> None:
    """An attachment URL on another allow-listed server (a second EHR, the PACS): fetched
    if allowed, but without the Authorization header this EHR granted for its fhirServer."""
    import base64

    own = RecordingServer({"resourceType": "Bundle", "type": "searchset"}).start()
    other = RecordingServer(
        {"resourceType": "Binary", "data": base64.b64encode(dicom_bytes).decode()}
    ).start()
    try:
        fhir = ehr.client.app.state.settings.fhir  # type: ignore[attr-defined]
        monkeypatch.setattr(fhir, "allowed_servers", [f"{own.url}/fhir", f"{other.url}/fhir"])
        body = hook_body(
            prefetch={
                **ALL_NULL,
                "ecgDocuments": searchset(_document(f"{other.url}/fhir/Binary/1")),
            },
            fhirServer=f"{own.url}/fhir",
            fhirAuthorization=fhir_authorization("token-for-own-server-only"),
        )
        response = ehr.call("ecg-review", body)
        assert response.status_code == 200, response.text[:300]
        assert other.requests, "the allowed attachment was not fetched"
        for _method, _path, headers in other.requests:
            assert "token-for-own-server-only" not in json.dumps(headers)
    finally:
        own.stop()
        other.stop()


def test_studies_naming_thousands_of_endpoints_make_a_bounded_number_of_reads(
    ehr: Ehr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prefetch of 2,000 ImagingStudies, each naming its own Endpoint, made one request
    per Endpoint to fhirServer, one after another, before answering. Now at most
    MAX_ENDPOINT_READS are read, the rest named on the card; another patient's studies
    cause none."""
    from cds_service.hooks.problems import MAX_ENDPOINT_READS

    server = RecordingServer({"resourceType": "Endpoint", "status": "active"}).start()
    try:
        fhir = ehr.client.app.state.settings.fhir  # type: ignore[attr-defined]
        monkeypatch.setattr(fhir, "allowed_servers", [f"{server.url}/fhir"])

        def study(n: int, patient: str) -> dict[str, Any]:
            return {
                "resourceType": "ImagingStudy",
                "id": f"s{n}",
                "status": "available",
                "subject": {"reference": f"Patient/{patient}"},
                "endpoint": [{"reference": f"Endpoint/e{n}"}],
            }

        studies = [study(n, "test-patient") for n in range(2000)]
        studies += [study(n, "someone-else") for n in range(2000, 2003)]
        body = hook_body(
            prefetch={**ALL_NULL, "ecgImagingStudies": searchset(*studies)},
            fhirServer=f"{server.url}/fhir",
        )
        response = ehr.call("ecg-review", body)
        assert response.status_code == 200, response.text[:300]
        read = [path for _method, path, _headers in server.requests]
        assert len(read) == MAX_ENDPOINT_READS
        assert all(int(path.rsplit("/e", 1)[1]) < 2000 for path in read)
        assert "1990 more Endpoint references not read" in response.text
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>Please sign in</body></html>", "text/html"),  # a proxy's login page
        (b"not json", "application/fhir+json"),
        (b"", None),
        (b"[" * 100_000 + b"]" * 100_000, "application/fhir+json"),  # nested past the stack
    ],
)
def test_a_fhir_server_answering_other_than_json_is_412_not_500(
    ehr: Ehr, monkeypatch: pytest.MonkeyPatch, body: bytes, content_type: str | None
) -> None:
    """The EHR's FHIR server answering a search with 200 and a body that is not JSON was an
    unhandled JSONDecodeError/RecursionError (500); now the call is 412 naming it."""
    server = Listener(200, body=body, content_type=content_type)
    try:
        fhir = ehr.client.app.state.settings.fhir  # type: ignore[attr-defined]
        monkeypatch.setattr(fhir, "allowed_servers", [f"{server.url}/fhir"])
        response = ehr.call("ecg-review", hook_body(fhirServer=f"{server.url}/fhir"))
        assert response.status_code == 412, response.text[:300]
        assert "the FHIR server answered something that is not JSON" in response.text
        assert server.requests
    finally:
        server.close()


def test_a_binary_nested_past_the_stack_is_named_not_500(
    ehr: Ehr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An allow-listed server answering a Binary read with JSON nested 50,000 deep (100 KB):
    the parser's RecursionError escaped the attachment read and the hook call was a 500,
    without the cards of the patient's other ECGs. It is now one unreadable attachment."""
    nested = b"[" * 50_000 + b"]" * 50_000
    listener = Listener(status=200, body=nested, content_type="application/fhir+json")
    fhir = ehr.client.app.state.settings.fhir  # type: ignore[attr-defined]
    monkeypatch.setattr(fhir, "allowed_servers", [f"{listener.url}/fhir"])
    try:
        document = dict(_document("Binary/deep"), id="doc-deep")
        document["content"][0]["attachment"]["contentType"] = "application/xml"
        body = hook_body(
            prefetch={**ALL_NULL, "ecgDocuments": searchset(document)},
            fhirServer=f"{listener.url}/fhir",
        )
        response = ehr.call("ecg-review", body)
    finally:
        listener.close()
    assert response.status_code == 200, response.text[:300]
    [card] = response.json()["cards"]
    assert "could not be read" in card["summary"]
    assert "DocumentReference/doc-deep" in card["detail"] and "nested too deep" in card["detail"]
