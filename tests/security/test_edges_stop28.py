"""A stop-28 review's findings: times outside years 1-9999 once taken to UTC, trailing-slash
redirects (their Location from the Host header, each path its own metrics series), a bearer
token httpx cannot put in a header, and date filters at the calendar's end. Each was a 500
or worse before; each is now a 4xx or an answer."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from adapters.record import utc_representable
from cds_service.hooks.card_text import ecg_date
from cds_service.hooks.sources import parse_datetime
from tests.security.conftest import Ehr
from tests.service.ehr import ALL_NULL, fhir_authorization, hook_body, searchset

EDGE_TIMES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00"]


@pytest.mark.parametrize("text", EDGE_TIMES)
def test_a_time_outside_the_utc_calendar_reads_as_no_time(text: str) -> None:
    assert parse_datetime(text) is None
    moment = datetime.fromisoformat(text)
    assert utc_representable(moment) is None
    assert ecg_date(moment) == moment.date().isoformat()  # its own date, no OverflowError
    fine = datetime(2024, 5, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert utc_representable(fine) is fine and ecg_date(fine) == "2024-05-02"


def test_an_ecg_dated_outside_the_utc_calendar_still_gets_its_cards(
    ehr: Ehr, ptbxl_observation: dict[str, Any]
) -> None:
    """It had been stored and classified, then every call that carried it was a 500 while
    its card was written: one bad date silenced every AI card of the patient."""
    for index, when in enumerate(EDGE_TIMES):
        observation = copy.deepcopy(ptbxl_observation)
        observation["id"] = f"edge-time-{index}"
        observation["effectiveDateTime"] = when
        body = hook_body(prefetch={**ALL_NULL, "ecgObservations": searchset(observation)})
        response = ehr.call("ecg-review", body)
        assert response.status_code == 200, response.text
        cards = response.json()["cards"]
        assert cards and all("date unknown" in card["summary"] for card in cards), cards


def test_feedback_timestamped_outside_the_utc_calendar_is_400(ehr: Ehr) -> None:
    item = {
        "card": str(uuid.uuid4()),
        "outcome": "overridden",
        "overrideReason": {"userComment": "clinician text that must not reach the log"},
        "outcomeTimestamp": "0001-01-01T00:00:00+14:00",
    }
    response = ehr.post("/cds-services/ecg-review/feedback", {"feedback": [item]})
    assert response.status_code == 400, response.text
    assert "outcomeTimestamp" in response.text


def test_a_bearer_token_outside_visible_ascii_is_400_not_500(ehr: Ehr) -> None:
    body = hook_body(
        fhirServer="http://127.0.0.1:9/fhir",
        fhirAuthorization=fhir_authorization("TOKEN-\u00e9-MARK"),
    )
    response = ehr.call("ecg-review", body)
    assert response.status_code == 400, response.text
    assert "access_token" in response.text and "TOKEN" not in response.text


@pytest.mark.parametrize(
    "path", ["/viewer/ecg/PATIENT-SECRET-7/", "/ecgs/abc/", "/audit/", "/docs/"]
)
def test_trailing_slashes_are_404_with_no_location_and_no_metrics_series(
    ehr: Ehr, path: str
) -> None:
    client = ehr.client
    response = client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404 and "location" not in response.headers
    metrics = client.get("/metrics").text
    assert path not in metrics and "PATIENT-SECRET" not in metrics


def test_the_viewer_folder_redirect_is_relative(ehr: Ehr) -> None:
    response = ehr.client.get(
        "/viewer", params={"page": "2"}, headers={"Host": "evil.example"}, follow_redirects=False
    )
    assert response.status_code == 307
    assert response.headers["location"] == "viewer/?page=2"
