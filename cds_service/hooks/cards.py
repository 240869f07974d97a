"""CDS Hooks cards from classification results: pure functions, no I/O.

One card per ECG; how alarming it is comes from :func:`cds_service.hooks.assess.assess`, its
words from :mod:`cds_service.hooks.card_text`. Suggestions carry FHIR R4 resources built by
:mod:`cds_service.fhir_results` (the same builders the write-back uses), plus a
cardiology-review ServiceRequest where it fits. QT-drug cards are in
:mod:`cds_service.hooks.qt_cards`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service.fhir_results import (
    build_diagnostic_report,
    build_impression_observation,
)
from cds_service.hooks.assess import CardPolicy, EcgRef, assess, model_card_url, policy_for
from cds_service.hooks.card_text import detail_markdown, ecg_date, escape, fit_summary
from cds_service.hooks.schemas import Card, Link, prune
from cds_service.settings import Settings
from models.catalog import LabelCatalog
from models.results import ClassificationResult

OVERRIDE_SYSTEM = "urn:ecg-cds:cds-override-reason"
OVERRIDE_REASONS: tuple[tuple[str, str], ...] = (
    ("disagree", "Disagree with the AI finding after reviewing the tracing"),
    ("already-addressed", "Already aware; finding addressed"),
    ("poor-quality", "ECG quality too poor to rely on"),
    ("not-relevant", "Not relevant to this patient now"),
)


def cardiology_review_request(
    *, patient_ref: str | None, ecg: EcgRef, reason: str
) -> dict[str, Any]:
    """A draft ServiceRequest for a cardiologist to over-read the ECG (R4B-validated)."""
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "priority": "urgent",
        "code": {"text": "Cardiology review of ECG"},
        "reasonCode": [{"text": reason}],
        "note": [{"text": "Suggested by the ECG CDS service (AI); clinician to confirm."}],
    }
    if patient_ref:
        request["subject"] = {"reference": patient_ref}
    if ecg.reference:
        request["supportingInfo"] = [{"reference": ecg.reference}]
    ServiceRequest.model_validate(request)
    return request


def override_reasons() -> list[dict[str, str]]:
    return [{"system": OVERRIDE_SYSTEM, "code": c, "display": d} for c, d in OVERRIDE_REASONS]


def card_source(settings: Settings, model_version: str) -> dict[str, Any]:
    return {
        "label": f"ECG CDS zero-shot ECG model {model_version}",
        "url": model_card_url(settings),
    }


def finish(card: dict[str, Any]) -> dict[str, Any]:
    """Prune empty values and validate against the wire schema (a bug here must not ship)."""
    card = prune(card)
    Card.model_validate(card)
    return card


def impression_resources(
    ecg: EcgRef, result: ClassificationResult, patient_ref: str | None, policy: CardPolicy
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The impression Observation and its DiagnosticReport (R4B-validated). Building them is
    most of a card's cost: hook calls keep the card of a stored result (``hooks.cache``)."""
    observation = build_impression_observation(
        result,
        patient_reference=patient_ref,
        ecg_reference=ecg.reference,
        effective=ecg.acquired,
        findings_threshold=policy.finding_threshold,
    )
    report = build_diagnostic_report(
        result,
        observation_references=["Observation/placeholder"],
        patient_reference=patient_ref,
        effective=ecg.acquired,
        findings_threshold=policy.finding_threshold,
    )
    return observation, report


def review_card(
    ecg: EcgRef,
    result: ClassificationResult,
    *,
    catalog: LabelCatalog,
    settings: Settings,
    patient_ref: str | None,
    policy: CardPolicy | None = None,
    links: Sequence[dict[str, Any]] = (),
    card_uuid: str | None = None,
) -> dict[str, Any] | None:
    """The patient-view card for one classified ECG; None for a normal ECG when not shown."""
    template = review_card_template(
        ecg, result, catalog=catalog, settings=settings, patient_ref=patient_ref, policy=policy
    )
    if template is None:
        return None
    return issue_card(template, card_uuid=card_uuid, links=links)


#: Stands for the ids a card gets when it is issued (:func:`issue_card`), in a template.
_TEMPLATE_ID = "00000000-0000-4000-8000-000000000000"


def review_card_template(
    ecg: EcgRef,
    result: ClassificationResult,
    *,
    catalog: LabelCatalog,
    settings: Settings,
    patient_ref: str | None,
    policy: CardPolicy | None = None,
) -> dict[str, Any] | None:
    """Everything of :func:`review_card` but its ids and links: pruned and validated once,
    so a caller can keep it for a stored result (results never change) and
    :func:`issue_card` it on every call. None for a normal ECG when not shown."""
    policy = policy or policy_for(settings)
    assessment = assess(result, catalog, policy)
    if assessment.normal and result.quality.acceptable and not policy.show_normal:
        return None
    date = ecg_date(ecg.acquired)
    if not result.quality.acceptable:
        summary = f"ECG {date} could not be interpreted by the AI (signal quality)"
    else:
        extra = len([s for s in assessment.findings if s.severity != "normal"]) - 1
        more = f", +{extra} more" if extra > 0 else ""
        prefix = "AI ECG review" if assessment.normal else "AI ECG finding"
        summary = f"{prefix} {date}: {assessment.key_finding}{more}"

    card: dict[str, Any] = {
        "uuid": _TEMPLATE_ID,
        "summary": fit_summary(summary),
        "indicator": assessment.indicator,
        "detail": detail_markdown(ecg, result, assessment, catalog, policy),
        "source": card_source(settings, result.model_version),
    }
    if result.quality.acceptable:
        observation, report = impression_resources(ecg, result, patient_ref, policy)
        observation["id"] = _TEMPLATE_ID
        report["result"] = [{"reference": f"Observation/{_TEMPLATE_ID}"}]
        suggestions: list[dict[str, Any]] = [
            {
                "label": "File the AI ECG impression (preliminary)",
                "uuid": _TEMPLATE_ID,
                "actions": [
                    {
                        "type": "create",
                        "description": "Create the AI-asserted EKG impression (LOINC 8601-7)",
                        "resource": observation,
                    },
                    {
                        "type": "create",
                        "description": "Create the ECG study report (LOINC 11524-6)",
                        "resource": report,
                    },
                ],
            }
        ]
        if assessment.indicator in ("warning", "critical"):
            suggestions.append(
                {
                    "label": "Request a cardiology review of this ECG",
                    "uuid": _TEMPLATE_ID,
                    "isRecommended": assessment.indicator == "critical",
                    "actions": [
                        {
                            "type": "create",
                            "description": "Create a draft cardiology review request",
                            "resource": cardiology_review_request(
                                patient_ref=patient_ref,
                                ecg=ecg,
                                reason=f"AI ECG finding {date}: {assessment.key_finding}",
                            ),
                        }
                    ],
                }
            )
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "any"
    card["overrideReasons"] = override_reasons()
    return finish(card)


def issue_card(
    template: dict[str, Any] | bytes,
    *,
    card_uuid: str | None = None,
    links: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A card to show, from a :func:`review_card_template` (or its orjson bytes, which a
    cache of templates keeps: then the copy is one parse): its own copy, fresh ids (card,
    suggestions, the impression Observation the report points to) and ``links``."""
    serialised = template if isinstance(template, bytes) else orjson.dumps(template)
    card: dict[str, Any] = orjson.loads(serialised)  # a deep copy, fast
    card["uuid"] = card_uuid or str(uuid.uuid4())
    observation_id = str(uuid.uuid4())
    for suggestion in card.get("suggestions", ()):
        suggestion["uuid"] = str(uuid.uuid4())
        for action in suggestion.get("actions", ()):
            resource = action.get("resource") or {}
            if resource.get("id") == _TEMPLATE_ID:
                resource["id"] = observation_id
            for reference in resource.get("result", ()):
                if reference.get("reference") == f"Observation/{_TEMPLATE_ID}":
                    reference["reference"] = f"Observation/{observation_id}"
    if links:
        for link in links:
            Link.model_validate(link)  # the wire schema, as the template was checked
        card["links"] = [prune(dict(link)) for link in links]
    return card


def pending_card(count: int, settings: Settings, model_version: str) -> dict[str, Any]:
    """Shown when new ECGs are still being analysed after the hook's wait budget."""
    noun = "ECG is" if count == 1 else "ECGs are"
    return finish(
        {
            "uuid": str(uuid.uuid4()),
            "summary": f"AI analysis pending: {count} new {noun} being analysed",
            "indicator": "info",
            "detail": (
                "The service received these ECGs and is classifying them now. Results appear "
                "the next time this view is opened."
            ),
            "source": card_source(settings, model_version),
        }
    )


def unreadable_card(
    problems: Sequence[str], settings: Settings, model_version: str
) -> dict[str, Any]:
    """ECG attachments that could not be fetched or read: say which and why."""
    count = len(problems)
    noun = "ECG" if count == 1 else "ECGs"
    detail = "\n".join(f"- {escape(p)}" for p in problems[:10])
    return finish(
        {
            "uuid": str(uuid.uuid4()),
            "summary": fit_summary(f"{count} {noun} could not be read or analysed for AI review"),
            "indicator": "info",
            "detail": detail,
            "source": card_source(settings, model_version),
        }
    )
