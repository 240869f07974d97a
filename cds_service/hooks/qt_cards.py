"""The QT-drug card: a QT-prolonging drug ordered, judged against the latest ECG."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service.hooks.assess import (
    CardPolicy,
    EcgRef,
    Indicator,
    assess,
    label_name,
    policy_for,
)
from cds_service.hooks.card_text import detail_markdown, ecg_date, escape, fit_summary
from cds_service.hooks.cards import card_source, finish, override_reasons
from cds_service.settings import Settings
from models.catalog import LabelCatalog
from models.results import ClassificationResult


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
    policy = policy or policy_for(settings)
    names = ", ".join(sorted({d.name for d in drugs}))
    if latest is None:
        return finish(
            {
                "uuid": str(uuid.uuid4()),
                "summary": fit_summary(f"QT-prolonging {names} ordered; no ECG on file"),
                "indicator": "info",
                "detail": (
                    f"**{escape(names)}** can prolong the QT interval. No recent ECG was found "
                    "for this patient: consider a baseline 12-lead ECG."
                ),
                "source": card_source(settings, model_version),
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
                "overrideReasons": override_reasons(),
            }
        )
    ecg, result = latest
    assessment = assess(result, catalog, policy)
    risky = [s for s in assessment.findings if s.label_id in policy.qt_risk_labels]
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
        top = f"{label_name(risky[0], catalog)} ({risky[0].probability:.0%})"
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
        f"**{escape(names)}** can prolong the QT interval (torsades de pointes risk).\n\n"
        + detail_markdown(ecg, result, assessment, catalog, policy)
    )
    return finish(
        {
            "uuid": str(uuid.uuid4()),
            "summary": summary,
            "indicator": indicator,
            "detail": detail,
            "source": card_source(settings, result.model_version),
            "suggestions": suggestions,
            "selectionBehavior": "at-most-one",
            "overrideReasons": override_reasons(),
            "links": list(links),
        }
    )


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
