"""How alarming one classification result is: the card policy and the assessment.

The ``indicator`` comes from the label catalog's severity and the calibrated probability: a
critical label (STEMI, complete heart block, VT/VF, very long QT) at or above its
``critical_threshold``, or a measured QTc at or above :attr:`CardPolicy.critical_qtc_ms`,
makes the card ``critical``; other asserted abnormal findings make it ``warning``; normal
ECGs, rejected signals and pending analyses are ``info``. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

from cds_service.settings import CardSettings, Settings
from models.catalog import LabelCatalog, load_catalog
from models.results import ClassificationResult, LabelScore

Indicator = Literal["info", "warning", "critical"]

_SEVERITY_RANK = {"critical": 3, "warning": 2, "info": 1, "normal": 0}


@dataclass(frozen=True)
class CardPolicy:
    """Thresholds that turn scores into alerts (calibrated probabilities, milliseconds).

    Policy is data: the numbers are ``settings.cards`` (:class:`CardSettings`), the labels
    that count as QT risk are the catalog's ``qt_risk`` labels; :func:`policy_for` reads
    them once per settings and catalog.
    """

    finding_threshold: float
    critical_qtc_ms: float
    warning_qtc_ms: float
    max_findings: int
    #: Whether a normal ECG still gets an (info) card on patient-view.
    show_normal: bool
    #: Label ids whose finding on the latest ECG makes a QT-prolonging order a risk.
    qt_risk_labels: frozenset[str] = frozenset()

    @classmethod
    def of(cls, cards: CardSettings, catalog: LabelCatalog) -> CardPolicy:
        return cls(
            finding_threshold=cards.finding_threshold,
            critical_qtc_ms=cards.critical_qtc_ms,
            warning_qtc_ms=cards.warning_qtc_ms,
            max_findings=cards.max_findings,
            show_normal=cards.show_normal,
            qt_risk_labels=frozenset(label.id for label in catalog if label.qt_risk),
        )


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


@lru_cache(maxsize=8)
def _policy(catalog_path: str | None, cards: CardSettings) -> CardPolicy:
    return CardPolicy.of(cards, _catalog(catalog_path))


def policy_for(settings: Settings) -> CardPolicy:
    """The card policy of these settings and their catalog (built once, then cached)."""
    return _policy(str(settings.catalog_file) if settings.catalog_file else None, settings.cards)


def model_card_url(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/") + "/model-card"


@dataclass(frozen=True)
class Assessment:
    indicator: Indicator
    key_finding: str
    findings: tuple[LabelScore, ...]
    qtc_ms: float | None
    normal: bool


def label_name(score: LabelScore, catalog: LabelCatalog) -> str:
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
        key = f"{label_name(top, catalog)} ({top.probability:.0%})"
        if qtc_ms is not None and qtc_ms >= policy.critical_qtc_ms and top.severity != "critical":
            key = f"QTc {qtc_ms:.0f} ms; {key}"
    elif qtc_ms is not None and qtc_ms >= policy.warning_qtc_ms:
        key = f"QTc {qtc_ms:.0f} ms"
    elif asserted:
        key = f"{label_name(asserted[0], catalog)} ({asserted[0].probability:.0%})"
    else:
        key = "no finding above the reporting threshold"
    normal = not abnormal and indicator == "info"
    return Assessment(indicator, key, tuple(asserted), qtc_ms, normal)
