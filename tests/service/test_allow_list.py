"""The outbound allow-list and prefetch parsing: security-relevant pure functions."""

from __future__ import annotations

import pytest

from cds_service.fhir_client import (
    FhirFetcher,
    OutboundRefused,
    redact_url,
    split_multipart,
    url_allowed,
)
from cds_service.hooks.prefetch import PrefetchError, read_prefetch, render_template
from cds_service.settings import Settings

ALLOWED = ["https://ehr.example.org/fhir/R4", "http://127.0.0.1:8081/fhir"]


@pytest.mark.parametrize(
    "url",
    [
        "https://ehr.example.org/fhir/R4",
        "https://ehr.example.org/fhir/R4/",
        "https://ehr.example.org/fhir/R4/Observation?patient=1",
        "https://EHR.example.org:443/fhir/R4/Binary/7",
        "http://127.0.0.1:8081/fhir/Patient/1",
    ],
)
def test_urls_under_an_allowed_base_pass(url: str) -> None:
    assert url_allowed(url, ALLOWED)


@pytest.mark.parametrize(
    "url",
    [
        "https://ehr.example.org/fhir/R4evil/Patient/1",  # not a whole path segment
        "https://ehr.example.org/fhir/R4/../../admin",  # dot segments
        "https://ehr.example.org/fhir/R4/%2e%2e/admin",  # encoded dot segments
        "http://ehr.example.org/fhir/R4/Patient/1",  # scheme differs
        "https://ehr.example.org:8443/fhir/R4/Patient/1",  # port differs
        "https://user:pw@ehr.example.org/fhir/R4/Patient/1",  # user info
        "https://ehr.example.org.evil.com/fhir/R4/Patient/1",
        "http://127.0.0.1:8082/fhir/Patient/1",
        "ftp://ehr.example.org/fhir/R4",
        "/fhir/R4/Patient/1",
    ],
)
def test_urls_off_the_allow_list_are_refused(url: str) -> None:
    assert not url_allowed(url, ALLOWED)


def test_fetcher_refuses_an_unlisted_server_before_any_connection() -> None:
    settings = Settings(fhir={"allowed_servers": ALLOWED})
    with pytest.raises(OutboundRefused) as info:
        FhirFetcher(settings, "https://attacker.example/fhir", "secret-token")
    assert "secret-token" not in str(info.value)
    assert "attacker.example" in str(info.value)


def test_redacted_urls_drop_query_and_user_info() -> None:
    assert redact_url("https://u:p@h.example:8443/fhir/Patient?name=Smith") == (
        "https://h.example:8443/fhir/Patient"
    )


def test_multipart_related_parts_are_split() -> None:
    body = (
        b"--b1\r\nContent-Type: application/dicom\r\n\r\nFIRST\r\n"
        b"--b1\r\nContent-Type: application/dicom\r\n\r\nSECOND\r\n--b1--\r\n"
    )
    content_type = 'multipart/related; type="application/dicom"; boundary=b1'
    assert split_multipart(body, content_type) == [b"FIRST", b"SECOND"]


def test_prefetch_states() -> None:
    assert read_prefetch(None, "k").state == "missing"
    assert read_prefetch({"other": None}, "k").state == "missing"
    assert read_prefetch({"k": None}, "k").state == "null"
    outcome = {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "timeout"}]}
    item = read_prefetch({"k": outcome}, "k")
    assert item.state == "error" and item.problem == "timeout"
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {"resourceType": "Observation", "id": "1"}, "search": {"mode": "match"}},
            {"resource": {"resourceType": "Patient", "id": "p"}, "search": {"mode": "include"}},
        ],
        "link": [{"relation": "next", "url": "https://ehr/fhir?page=2"}],
    }
    item = read_prefetch({"k": bundle}, "k")
    assert [r["id"] for r in item.resources] == ["1"]
    assert item.next_url == "https://ehr/fhir?page=2"
    with pytest.raises(PrefetchError, match=r"prefetch\.k"):
        read_prefetch({"k": "a string"}, "k")


def test_templates_fill_only_primitive_context_fields() -> None:
    context = {"patientId": "123", "userId": "Practitioner/9", "draftOrders": {"x": 1}}
    assert render_template("Observation?patient={{context.patientId}}", context) == (
        "Observation?patient=123"
    )
    assert render_template("Practitioner/{{userPractitionerId}}", context) == "Practitioner/9"
    assert render_template("X?y={{context.draftOrders}}", context) is None
    assert render_template("X?y={{context.missing}}", context) is None
