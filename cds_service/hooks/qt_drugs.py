"""QT-prolonging medications, recognised by name in draft orders.

The list holds generic names from the CredibleMeds "known risk of torsades de pointes"
category (a subset; https://crediblemeds.org keeps the authoritative, licensed list).
Matching is by whole word on the order's ``medicationCodeableConcept`` text and coding
displays, so brand-name-only orders are not recognised: an EHR that codes orders in RxNorm
should add its ingredient names or extend :data:`QT_DRUGS`.
"""

from __future__ import annotations

import re
from typing import Any

from cds_service.hooks.qt_cards import DrugOrder

QT_DRUGS: frozenset[str] = frozenset(
    {
        "amiodarone",
        "azithromycin",
        "chloroquine",
        "chlorpromazine",
        "cilostazol",
        "ciprofloxacin",
        "citalopram",
        "clarithromycin",
        "disopyramide",
        "dofetilide",
        "domperidone",
        "donepezil",
        "dronedarone",
        "droperidol",
        "erythromycin",
        "escitalopram",
        "flecainide",
        "fluconazole",
        "haloperidol",
        "hydroxychloroquine",
        "ibutilide",
        "levofloxacin",
        "methadone",
        "moxifloxacin",
        "ondansetron",
        "pentamidine",
        "pimozide",
        "procainamide",
        "quinidine",
        "sevoflurane",
        "sotalol",
        "sulpiride",
        "thioridazine",
        "vandetanib",
    }
)
_WORD = re.compile(r"[a-z]+")
_MEDICATION_TYPES = ("MedicationRequest", "MedicationOrder", "MedicationStatement")


def _names(resource: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    concept = resource.get("medicationCodeableConcept")
    if isinstance(concept, dict):
        if isinstance(concept.get("text"), str):
            texts.append(concept["text"])
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                texts.append(coding["display"])
    reference = resource.get("medicationReference")
    if isinstance(reference, dict) and isinstance(reference.get("display"), str):
        texts.append(reference["display"])
    for contained in resource.get("contained") or []:
        if isinstance(contained, dict) and contained.get("resourceType") == "Medication":
            texts += _names({"medicationCodeableConcept": contained.get("code")})
    return texts


def qt_drug_in(resource: dict[str, Any]) -> str | None:
    """The QT-prolonging drug a medication order names, if any."""
    if resource.get("resourceType") not in _MEDICATION_TYPES:
        return None
    for text in _names(resource):
        for word in _WORD.findall(text.lower()):
            if word in QT_DRUGS:
                return str(word)
    return None


def qt_drug_orders(
    draft_orders: dict[str, Any] | None, selections: list[str] | None
) -> list[DrugOrder]:
    """QT-prolonging drugs among the draft orders (only the selected ones when given)."""
    if not isinstance(draft_orders, dict):
        return []
    found: list[DrugOrder] = []
    for entry in draft_orders.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        rid = resource.get("id")
        reference = f"{resource.get('resourceType')}/{rid}" if isinstance(rid, str) else None
        if selections is not None and reference not in selections:
            continue
        drug = qt_drug_in(resource)
        if drug:
            found.append(DrugOrder(name=drug, reference=reference))
    return found
