"""CDS Hooks cards from classification results: pure functions, no I/O.

One card per ECG. The ``indicator`` comes from the label catalog's severity and the
calibrated probability: a critical label (STEMI, complete heart block, VT/VF, very long QT)
at or above its ``critical_threshold``, or a measured QTc at or above
:attr:`CardPolicy.critical_qtc_ms`, makes the card ``critical``; other asserted abnormal
findings make it ``warning``; normal ECGs, rejected signals and pending analyses are ``info``.

Suggestions carry FHIR R4 resources built by :mod:`cds_service.fhir_results` (the same
builders the write-back uses), plus a cardiology-review ServiceRequest where it fits.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service.fhir_results import (
    build_diagnostic_report,
    build_impression_observation,
)
from cds_service.hooks.schemas import Card, prune
from cds_service.settings import Settings
from models.catalog import LabelCatalog, load_catalog
from models.results import ClassificationResult, LabelScore

Indicator = Literal["info", "warning", "critical"]

SUMMARY_MAX = 139  # "fewer than 140 characters"
OVERRIDE_SYSTEM = "urn:ecg-cds:cds-override-reason"
OVERRIDE_REASONS: tuple[tuple[str, str], ...] = (
    ("disagree", "Disagree with the AI finding after reviewing the tracing"),
    ("already-addressed", "Already aware; finding addressed"),
    ("poor-quality", "ECG quality too poor to rely on"),
    ("not-relevant", "Not relevant to this patient now"),
)
_SEVERITY_RANK = {"critical": 3, "warning": 2, "info": 1, "normal": 0}


@dataclass(frozen=True)
class CardPolicy:
    """Thresholds that turn scores into alerts (calibrated probabilities, milliseconds)."""

    finding_threshold: float = 0.5
    critical_qtc_ms: float = 500.0
    warning_qtc_ms: float = 480.0
    max_findings: int = 5
    #: Whether a normal ECG still gets an (info) card on patient-view.
    show_normal: bool = True


@dataclass(frozen=True)
class EcgRef:
    """One ECG as the hook knows it: our id, its FHIR reference and date."""

    ecg_id: str
    acquired: datetime | None
    #: Relative FHIR reference on the EHR (``Observation/12``), for ``derivedFrom``.
    reference: str | None = None
    #: Human description of where it came from (``Observation/12``, ``DocumentReference/3``).
    origin: str | None = None


@lru_cache(maxsize=4)
def _catalog(path: str | None) -> LabelCatalog:
    return load_catalog(Path(path) if path else None)


def catalog_for(settings: Settings) -> LabelCatalog:
    return _catalog(str(settings.catalog_file) if settings.catalog_file else None)


def model_card_url(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/") + "/model-card"


# ---------------------------------------------------------------------------- assessment


@dataclass(frozen=True)
class Assessment:
    indicator: Indicator
    key_finding: str
    findings: tuple[LabelScore, ...]
    qtc_ms: float | None
    normal: bool


def _label_name(score: LabelScore, catalog: LabelCatalog) -> str:
    if score.label_id in catalog:
        return catalog.get(score.label_id).name
    return score.text


def assess(result: ClassificationResult, catalog: LabelCatalog, policy: CardPolicy) -> Assessment:
    """How alarming one result is, and what to name as its key finding."""
    qtc = result.measurements.get("qtc")
    qtc_ms = float(qtc.value) if qtc is not None and qtc.value is not None else None
    if not result.quality.acceptable:
        return Assessment("info", "not interpretable", (), qtc_ms, normal=False)
    asserted = [s for s in result.scores if s.probability >= policy.finding_threshold]
    asserted.sort(key=lambda s: (_SEVERITY_RANK.get(s.severity, 0), s.probability), reverse=True)
    abnormal = [s for s in asserted if s.severity != "normal"]

    indicator: Indicator = "info"
    for score in abnormal:
        if score.severity == "critical":
            label = catalog.get(score.label_id) if score.label_id in catalog else None
            critical_at = (label.critical_threshold if label else None) or policy.finding_threshold
            if score.probability >= critical_at:
                indicator = "critical"
                break
            indicator = "warning"
        elif score.severity == "warning":
            indicator = "warning"
    if qtc_ms is not None and qtc_ms >= policy.critical_qtc_ms:
        indicator = "critical"
    elif qtc_ms is not None and qtc_ms >= policy.warning_qtc_ms and indicator == "info":
        indicator = "warning"

    if abnormal:
        top = abnormal[0]
        key = f"{_label_name(top, catalog)} ({top.probability:.0%})"
        if qtc_ms is not None and qtc_ms >= policy.critical_qtc_ms and top.severity != "critical":
            key = f"QTc {qtc_ms:.0f} ms; {key}"
    elif qtc_ms is not None and qtc_ms >= policy.warning_qtc_ms:
        key = f"QTc {qtc_ms:.0f} ms"
    elif asserted:
        key = f"{_label_name(asserted[0], catalog)} ({asserted[0].probability:.0%})"
    else:
        key = "no finding above the reporting threshold"
    normal = not abnormal and indicator == "info"
    return Assessment(indicator, key, tuple(asserted), qtc_ms, normal)


# ---------------------------------------------------------------------------- text


def ecg_date(acquired: datetime | None) -> str:
    if acquired is None:
        return "date unknown"
    if acquired.tzinfo is not None:
        acquired = acquired.astimezone(UTC)
    return acquired.date().isoformat()


def fit_summary(text: str) -> str:
    """Trim to fewer than 140 characters on a word boundary, with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= SUMMARY_MAX:
        return text
    cut = text[: SUMMARY_MAX - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"


def _fmt_measurement(result: ClassificationResult, name: str, label: str, unit: str) -> str | None:
    m = result.measurements.get(name)
    if m is None or m.value is None:
        return None
    return f"{label} {m.value:.0f} {unit}"


def measurements_line(result: ClassificationResult) -> str:
    parts = [
        _fmt_measurement(result, "heart_rate", "HR", "/min"),
        _fmt_measurement(result, "pr", "PR", "ms"),
        _fmt_measurement(result, "qrs", "QRS", "ms"),
        _fmt_measurement(result, "qt", "QT", "ms"),
        _fmt_measurement(result, "qtc", "QTc", "ms"),
        _fmt_measurement(result, "axis", "axis", "°"),
    ]
    present = [p for p in parts if p]
    return " · ".join(present) if present else "not measurable on this tracing"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def detail_markdown(
    ecg: EcgRef,
    result: ClassificationResult,
    assessment: Assessment,
    catalog: LabelCatalog,
    policy: CardPolicy,
) -> str:
    lines: list[str] = []
    if not result.quality.acceptable:
        reasons = "; ".join(result.quality.reasons) or "signal quality not acceptable"
        lines.append(f"**The ECG could not be interpreted:** {_escape(reasons)}.")
    else:
        shown = list(assessment.findings[: policy.max_findings])
        if shown:
            lines += [
                "**Findings** (calibrated probability)",
                "",
                "| Finding | Probability | Severity |",
                "|---|---|---|",
            ]
            lines += [
                f"| {_escape(_label_name(s, catalog))} | {s.probability:.0%} | {s.severity} |"
                for s in shown
            ]
        else:
            top = result.scores[:3]
            lines.append(
                f"No finding reached the reporting threshold (p ≥ {policy.finding_threshold:.2f})."
            )
            if top:
                listed = ", ".join(f"{_label_name(s, catalog)} {s.probability:.0%}" for s in top)
                lines.append(f"Highest scores: {_escape(listed)}.")
    lines += ["", f"- **Measurements:** {measurements_line(result)}"]
    notes: list[str] = []
    if result.quality.acceptable and result.quality.reasons:
        notes.append("; ".join(result.quality.reasons))
    if result.quality.out_of_distribution:
        notes.append("this ECG looks unlike the model's training data: interpret with care")
    lines.append(f"- **Signal quality:** {_escape('; '.join(notes)) if notes else 'acceptable'}")
    origin = f" · source: {ecg.origin}" if ecg.origin else ""
    lines += [
        "",
        f"*AI interpretation by zero-shot model `{result.model_version}`; not reviewed by a "
        f"clinician. Confirm on the tracing before acting.*{origin}",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- resources


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


def ecg_order_request(*, patient_ref: str, reason: str) -> dict[str, Any]:
    """A draft order for a 12-lead ECG (LOINC 11524-6 EKG study)."""
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "11524-6", "display": "EKG study"}],
            "text": "12-lead ECG",
        },
        "subject": {"reference": patient_ref},
        "reasonCode": [{"text": reason}],
    }
    ServiceRequest.model_validate(request)
    return request


def _override_reasons() -> list[dict[str, str]]:
    return [{"system": OVERRIDE_SYSTEM, "code": c, "display": d} for c, d in OVERRIDE_REASONS]


def _source(settings: Settings, model_version: str) -> dict[str, Any]:
    return {
        "label": f"ECG CDS zero-shot ECG model {model_version}",
        "url": model_card_url(settings),
    }


def _finish(card: dict[str, Any]) -> dict[str, Any]:
    """Prune empty values and validate against the wire schema (a bug here must not ship)."""
    card = prune(card)
    Card.model_validate(card)
    return card


# ---------------------------------------------------------------------------- cards

#: Validated suggestion resources per (ECG, model version, patient, reference, date): building
#: and R4B-validating them costs more than the rest of a cached hook call.
_RESOURCE_CACHE: OrderedDict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]] = OrderedDict()
_RESOURCE_CACHE_SIZE = 2048
_RESOURCE_LOCK = threading.Lock()


def _fingerprint(result: ClassificationResult) -> str:
    """Identifies a result's content (not just its ECG and model version)."""
    raw = json.dumps(result.to_dict(), sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()


def impression_resources(
    ecg: EcgRef, result: ClassificationResult, patient_ref: str | None, policy: CardPolicy
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The impression Observation and its DiagnosticReport (fresh ids on every call)."""
    key = (
        ecg.ecg_id,
        _fingerprint(result),
        patient_ref,
        ecg.reference,
        ecg.acquired,
        policy.finding_threshold,
    )
    with _RESOURCE_LOCK:
        cached = _RESOURCE_CACHE.get(key)
        if cached is not None:
            _RESOURCE_CACHE.move_to_end(key)
    if cached is None:
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
        cached = (observation, report)
        with _RESOURCE_LOCK:
            _RESOURCE_CACHE[key] = cached
            while len(_RESOURCE_CACHE) > _RESOURCE_CACHE_SIZE:
                _RESOURCE_CACHE.popitem(last=False)
    observation, report = copy.deepcopy(cached)
    observation["id"] = str(uuid.uuid4())
    report["result"] = [{"reference": f"Observation/{observation['id']}"}]
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
    policy = policy or CardPolicy()
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
        "uuid": card_uuid or str(uuid.uuid4()),
        "summary": fit_summary(summary),
        "indicator": assessment.indicator,
        "detail": detail_markdown(ecg, result, assessment, catalog, policy),
        "source": _source(settings, result.model_version),
        "links": list(links),
    }
    if result.quality.acceptable:
        observation, report = impression_resources(ecg, result, patient_ref, policy)
        suggestions: list[dict[str, Any]] = [
            {
                "label": "File the AI ECG impression (preliminary)",
                "uuid": str(uuid.uuid4()),
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
                    "uuid": str(uuid.uuid4()),
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
    card["overrideReasons"] = _override_reasons()
    return _finish(card)


def pending_card(count: int, settings: Settings, model_version: str) -> dict[str, Any]:
    """Shown when new ECGs are still being analysed after the hook's wait budget."""
    noun = "ECG is" if count == 1 else "ECGs are"
    return _finish(
        {
            "uuid": str(uuid.uuid4()),
            "summary": f"AI analysis pending: {count} new {noun} being analysed",
            "indicator": "info",
            "detail": (
                "The service received these ECGs and is classifying them now. Results appear "
                "the next time this view is opened."
            ),
            "source": _source(settings, model_version),
        }
    )


def unreadable_card(
    problems: Sequence[str], settings: Settings, model_version: str
) -> dict[str, Any]:
    """ECG attachments that could not be fetched or read: say which and why."""
    count = len(problems)
    noun = "ECG" if count == 1 else "ECGs"
    detail = "\n".join(f"- {_escape(p)}" for p in problems[:10])
    return _finish(
        {
            "uuid": str(uuid.uuid4()),
            "summary": fit_summary(f"{count} {noun} could not be read or analysed for AI review"),
            "indicator": "info",
            "detail": detail,
            "source": _source(settings, model_version),
        }
    )


# ---------------------------------------------------------------------------- QT drugs


@dataclass(frozen=True)
class DrugOrder:
    name: str
    #: ``MedicationRequest/123`` when the draft order has an id (for a delete suggestion).
    reference: str | None


def qt_drug_card(
    drugs: Sequence[DrugOrder],
    latest: tuple[EcgRef, ClassificationResult] | None,
    *,
    catalog: LabelCatalog,
    settings: Settings,
    patient_ref: str,
    model_version: str,
    policy: CardPolicy | None = None,
    links: Sequence[dict[str, Any]] = (),
) -> dict[str, Any] | None:
    """Warn when a QT-prolonging drug is ordered and the latest ECG shows long QTc or a
    risky rhythm; suggest a baseline ECG when there is none; no card when the ECG is fine."""
    policy = policy or CardPolicy()
    names = ", ".join(sorted({d.name for d in drugs}))
    if latest is None:
        return _finish(
            {
                "uuid": str(uuid.uuid4()),
                "summary": fit_summary(f"QT-prolonging {names} ordered; no ECG on file"),
                "indicator": "info",
                "detail": (
                    f"**{_escape(names)}** can prolong the QT interval. No recent ECG was found "
                    "for this patient: consider a baseline 12-lead ECG."
                ),
                "source": _source(settings, model_version),
                "suggestions": [
                    {
                        "label": "Order a baseline 12-lead ECG",
                        "uuid": str(uuid.uuid4()),
                        "actions": [
                            {
                                "type": "create",
                                "description": "Create a draft order for a 12-lead ECG",
                                "resource": ecg_order_request(
                                    patient_ref=patient_ref,
                                    reason=f"Baseline QTc before {names}",
                                ),
                            }
                        ],
                    }
                ],
                "selectionBehavior": "at-most-one",
                "overrideReasons": _override_reasons(),
            }
        )
    ecg, result = latest
    assessment = assess(result, catalog, policy)
    risky_ids = {
        "prolonged_qt",
        "very_prolonged_qt",
        "ventricular_tachycardia",
        "ventricular_fibrillation",
        "complete_heart_block",
        "second_degree_av_block",
        "sinus_bradycardia",
    }
    risky = [s for s in assessment.findings if s.label_id in risky_ids]
    qtc = assessment.qtc_ms
    if qtc is not None and qtc >= policy.critical_qtc_ms:
        indicator: Indicator = "critical"
    elif any(s.severity == "critical" and s.probability >= policy.finding_threshold for s in risky):
        indicator = "critical"
    elif risky or (qtc is not None and qtc >= policy.warning_qtc_ms):
        indicator = "warning"
    else:
        return None
    date = ecg_date(ecg.acquired)
    what = f"QTc {qtc:.0f} ms" if qtc is not None else ""
    if risky:
        top = f"{_label_name(risky[0], catalog)} ({risky[0].probability:.0%})"
        what = f"{what}, {top}" if what else top
    summary = fit_summary(f"QT-prolonging {names} ordered; ECG {date}: {what}")
    suggestions: list[dict[str, Any]] = [
        {
            "label": f"Cancel the {d.name} order",
            "uuid": str(uuid.uuid4()),
            "actions": [
                {
                    "type": "delete",
                    "description": f"Remove the draft {d.name} order",
                    "resourceId": d.reference,
                }
            ],
        }
        for d in drugs
        if d.reference
    ]
    suggestions.append(
        {
            "label": "Order a repeat 12-lead ECG",
            "uuid": str(uuid.uuid4()),
            "actions": [
                {
                    "type": "create",
                    "description": "Create a draft order for a 12-lead ECG",
                    "resource": ecg_order_request(
                        patient_ref=patient_ref, reason=f"QTc monitoring on {names}"
                    ),
                }
            ],
        }
    )
    detail = (
        f"**{_escape(names)}** can prolong the QT interval (torsades de pointes risk).\n\n"
        + detail_markdown(ecg, result, assessment, catalog, policy)
    )
    return _finish(
        {
            "uuid": str(uuid.uuid4()),
            "summary": summary,
            "indicator": indicator,
            "detail": detail,
            "source": _source(settings, result.model_version),
            "suggestions": suggestions,
            "selectionBehavior": "at-most-one",
            "overrideReasons": _override_reasons(),
            "links": list(links),
        }
    )
