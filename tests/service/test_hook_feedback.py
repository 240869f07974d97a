"""CDS Hooks feedback (CDS Hooks 2.0.1, "Feedback"): stored against the card and its ECG."""

from __future__ import annotations

from typing import Any

import pytest

from tests.service.cards import ecg_cards
from tests.service.conftest import Ehr
from tests.service.ehr import find_empty, outcome_diagnostics


def _feedback_path(service: str = "ecg-review") -> str:
    return f"/cds-services/{service}/feedback"


def test_feedback_accepted_is_stored_against_card_and_ecg(
    ehr: Ehr, review_response: dict[str, Any]
) -> None:
    card = ecg_cards(review_response["cards"])[0]
    suggestion = card["suggestions"][0]["uuid"]
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": suggestion}],
                "outcomeTimestamp": "2026-11-25T12:00:00Z",
            }
        ]
    }
    response = ehr.post(_feedback_path(), body)
    assert response.status_code == 200, response.text
    assert find_empty(response.json()) == []
    stored_card = ehr.runtime.cards.get_card(card["uuid"])
    assert stored_card is not None
    ecg_ids = [
        i.id for i, _ in ehr.runtime.ecgs.list_ecgs(patient_ref="Patient/test-patient", limit=100)
    ]
    feedback = [f for ecg_id in ecg_ids for f in ehr.runtime.cards.feedback_for(ecg_id)]
    mine = [f for f in feedback if f.card_uuid == card["uuid"]]
    assert mine and mine[0].outcome == "accepted"
    assert mine[0].accepted_suggestions == [suggestion]
    assert mine[0].card_known and mine[0].ecg_id in ecg_ids


def test_feedback_overridden_keeps_the_reason_and_repeats_are_allowed(
    ehr: Ehr, review_response: dict[str, Any]
) -> None:
    card = ecg_cards(review_response["cards"])[1]
    reason = card["overrideReasons"][0]
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": reason, "userComment": "artefact in V1"},
                "outcomeTimestamp": "2026-11-25T12:01:00Z",
            }
        ]
    }
    for _ in range(2):  # the same card may get feedback more than once
        assert ehr.post(_feedback_path(), body).status_code == 200
    ecg_id = next(
        i.id
        for i, _ in ehr.runtime.ecgs.list_ecgs(patient_ref="Patient/test-patient", limit=100)
        if any(f.card_uuid == card["uuid"] for f in ehr.runtime.cards.feedback_for(i.id))
    )
    mine = [f for f in ehr.runtime.cards.feedback_for(ecg_id) if f.card_uuid == card["uuid"]]
    assert len(mine) == 2
    assert mine[0].override_reason["code"] == reason["code"]
    assert mine[0].user_comment == "artefact in V1"


@pytest.mark.parametrize(
    "item",
    [
        {"card": "x", "outcome": "accepted", "outcomeTimestamp": "2026-11-25T12:00:00Z"},
        {"card": "x", "outcome": "maybe", "outcomeTimestamp": "2026-11-25T12:00:00Z"},
        {"card": "x", "outcome": "overridden"},
    ],
)
def test_malformed_feedback_is_400(ehr: Ehr, item: dict[str, Any]) -> None:
    outcome_diagnostics(ehr.post(_feedback_path(), {"feedback": [item]}), 400)
