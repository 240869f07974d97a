"""What a CDS Hooks answer must look like (CDS Hooks 2.0.1, "CDS Service Response"), checked
field by field.

Cards' suggested resources are validated against FHIR R4B with fhir.resources.
"""

from __future__ import annotations

import uuid
from typing import Any

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.servicerequest import ServiceRequest

from tests.service.ehr import ALL_NULL, find_empty

R4B_MODELS: dict[str, Any] = {
    "Observation": Observation,
    "DiagnosticReport": DiagnosticReport,
    "ServiceRequest": ServiceRequest,
}


def prefetch_with(**present: Any) -> dict[str, Any]:
    return {**ALL_NULL, **present}


def check_card(card: dict[str, Any]) -> None:
    """The spec's card rules, checked field by field."""
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140
    assert card["indicator"] in ("info", "warning", "critical")
    assert card["source"]["label"]
    uuid.UUID(card["uuid"])
    if "suggestions" in card:
        assert card["selectionBehavior"] in ("at-most-one", "any")
        for suggestion in card["suggestions"]:
            assert suggestion["label"]
            uuid.UUID(suggestion["uuid"])
            for action in suggestion["actions"]:
                assert action["type"] in ("create", "update", "delete")
                assert action["description"]
                if action["type"] in ("create", "update"):
                    resource = action["resource"]
                    R4B_MODELS[resource["resourceType"]].model_validate(resource)
                else:
                    assert "/" in action["resourceId"]
    for reason in card.get("overrideReasons", []):
        assert reason["system"] and reason["code"] and reason["display"]
    for link in card.get("links", []):
        assert link["label"] and link["url"] and link["type"] in ("absolute", "smart")


def cards_of(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    # "cards" is required even when empty (the one list the spec wants present and empty)
    assert [p for p in find_empty(body) if p != "$.cards"] == []
    assert set(body) <= {"cards", "systemActions"}
    for card in body["cards"]:
        check_card(card)
    return list(body["cards"])


def ecg_cards(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in cards if c["summary"].startswith("AI ECG")]
