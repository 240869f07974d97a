"""FHIR JSON of the wrong shape from the EHR (prefetch) or its FHIR server: an answer that
names the problem, or the resource skipped, never a 500. In-process (``ehr``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.security.conftest import Ehr
from tests.service.ehr import ALL_NULL, RecordingServer, hook_body

SUBJECT = {"reference": "Patient/test-patient"}


def _bundle(resource: dict[str, Any], **entry: Any) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": resource, **entry}],
    }


def _study(**fields: Any) -> dict[str, Any]:
    study = {"resourceType": "ImagingStudy", "id": "s", "subject": SUBJECT}
    return {**study, **fields}


_OBSERVATION = {"resourceType": "Observation", "id": "o", "status": "final", "subject": SUBJECT}

# Each of these was a 500 (AttributeError / TypeError on a value that was not a dict or list).
SHAPES = {
    "entry.search is a string": _bundle(_OBSERVATION, search="match"),
    "entry.search is a list": _bundle(_OBSERVATION, search=["match"]),
    "OperationOutcome issue.details is a string": {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "details": "x"}],
    },
    "ImagingStudy.identifier is a number": _bundle(_study(identifier=5)),
    "ImagingStudy.series is a number": _bundle(_study(series=5)),
    "ImagingStudy.endpoint is a number": _bundle(_study(endpoint=5)),
    "ImagingStudy.series[].modality is a string": _bundle(
        _study(
            identifier=[{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
            series=[{"uid": "1.2.3.4", "modality": "ECG", "instance": 5, "endpoint": "x"}],
        )
    ),
    "ImagingStudy.endpoint[].reference is a list": _bundle(
        _study(
            identifier=[{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
            series=[{"uid": "1.2.3.4", "modality": {"code": "ECG"}}],
            endpoint=[{"reference": ["#ep"]}],
        )
    ),
    "Observation.component is a number": _bundle({**_OBSERVATION, "component": 5}),
    "Observation.effectivePeriod is a string": _bundle(
        {**_OBSERVATION, "valueSampledData": {}, "effectivePeriod": "2024"}
    ),
    "DocumentReference.context is a string": _bundle(
        {"resourceType": "DocumentReference", "id": "d", "subject": SUBJECT, "context": "x"}
    ),
    "DocumentReference.context.period is a string": _bundle(
        {
            "resourceType": "DocumentReference",
            "id": "d",
            "subject": SUBJECT,
            "context": {"period": "x"},
            "content": 5,
        }
    ),
}


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
@pytest.mark.parametrize("key", list(ALL_NULL))
def test_wrong_shapes_in_prefetch_are_not_500(ehr: Ehr, key: str, shape: str) -> None:
    response = ehr.call("ecg-review", hook_body(prefetch={**ALL_NULL, key: SHAPES[shape]}))
    assert response.status_code in (200, 400, 412), response.text[:300]


def test_a_link_that_is_not_a_list_is_400_naming_it(ehr: Ehr) -> None:
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [], "link": 5}
    response = ehr.call("ecg-review", hook_body(prefetch={**ALL_NULL, "ecgDocuments": bundle}))
    assert response.status_code == 400, response.text[:300]
    assert "ecgDocuments: Bundle.link must be a list" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("bundle", [{"entry": {"a": 1}}, {"entry": [], "link": 5}, {"entry": [5]}])
def test_a_malformed_bundle_from_the_fhir_server_is_412_naming_it(
    ehr: Ehr, monkeypatch: pytest.MonkeyPatch, bundle: dict[str, Any]
) -> None:
    """The same shapes answered by the EHR's FHIR server to our own search (prefetch not
    sent): the search failed, so 412 saying so, as for any failed search."""
    server = RecordingServer({"resourceType": "Bundle", "type": "searchset", **bundle}).start()
    try:
        fhir = ehr.client.app.state.settings.fhir  # type: ignore[attr-defined]
        monkeypatch.setattr(fhir, "allowed_servers", [f"{server.url}/fhir"])
        response = ehr.call("ecg-review", hook_body(fhirServer=f"{server.url}/fhir"))
        assert response.status_code == 412, response.text[:300]
        assert "Bundle." in response.json()["issue"][0]["diagnostics"]
    finally:
        server.stop()
