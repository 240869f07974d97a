"""What the pages show, computed from stored records: plain view models for the templates.

Templates only lay out what is here; every rule (which labels count as findings, how a
measurement is written, which override reasons exist) lives in this module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from cds_service.hooks.cards import OVERRIDE_REASONS, OVERRIDE_SYSTEM
from models.results import ClassificationResult, LabelScore, Measurement

log = logging.getLogger(__name__)

__all__ = ["OVERRIDE_REASONS", "OVERRIDE_REASON_SYSTEM", "ResultView", "result_view"]

#: A label is shown as a finding at or above this calibrated probability; the rest are
#: listed under "other labels scored".
#: Measurements in the order a reader expects them; any others follow.
MEASUREMENT_ORDER = ("heart_rate", "pr", "qrs", "qt", "qtc", "axis")
MEASUREMENT_LABELS = {
    "heart_rate": "Heart rate",
    "pr": "PR",
    "qrs": "QRS",
    "qt": "QT",
    "qtc": "QTc",
    "axis": "QRS axis",
}
UNIT_TEXT = {"/min": "bpm", "ms": "ms", "deg": "°", "1": ""}

#: Why a clinician overrides the AI read: the same Codings the cards offer as
#: ``overrideReasons``, so feedback from the viewer and from the EHR counts alike.
OVERRIDE_REASON_SYSTEM = OVERRIDE_SYSTEM


@dataclass(frozen=True)
class FindingView:
    label_id: str
    name: str
    text: str
    probability: float
    percent: str
    severity: str
    calibrated: bool
    codes: tuple[str, ...]
    #: The measurements the score rests on ("PR 232 ms > 200 ms"), measured lines only.
    evidence: tuple[str, ...] = ()

    @property
    def bar_width(self) -> float:
        """Bar length (0-100) for the probability bar."""
        return round(max(0.0, min(1.0, self.probability)) * 100, 1)


@dataclass(frozen=True)
class MeasurementView:
    key: str
    label: str
    value: str
    unit: str
    loinc: str | None
    title: str


@dataclass(frozen=True)
class ResultView:
    model_version: str
    findings: tuple[FindingView, ...]
    others: tuple[FindingView, ...]
    measurements: tuple[MeasurementView, ...]
    acceptable: bool
    quality_reasons: tuple[str, ...]
    out_of_distribution: bool
    unusable_leads: tuple[str, ...] = ()
    #: The calibration in use (shipped, or a site's), as stamped on the result.
    calibration: str = ""

    @property
    def all_calibrated(self) -> bool:
        return all(f.calibrated for f in (*self.findings, *self.others))

    @property
    def top(self) -> FindingView | None:
        return (self.findings or self.others or (None,))[0]


def percent(probability: float) -> str:
    """``0.834`` -> ``"83 %"``; the extremes say "<1 %" / ">99 %" rather than 0 or 100."""
    value = probability * 100
    if value < 1:
        return "<1 %"
    if value > 99:
        return ">99 %"
    return f"{value:.0f} %"


def label_names(catalog_file: Path | None) -> dict[str, str]:
    """Catalog id -> the name a clinician reads; empty if the catalog cannot be read."""
    return dict(_label_names(str(catalog_file) if catalog_file else None))


@lru_cache(maxsize=4)
def _label_names(catalog_file: str | None) -> tuple[tuple[str, str], ...]:
    try:
        from models.catalog import load_catalog

        catalog = load_catalog(catalog_file)
    except Exception as exc:  # the page still works with the scored texts
        log.warning("label catalog unavailable for the viewer: %s", exc)
        return ()
    return tuple((label.id, label.name) for label in catalog)


def finding_view(score: LabelScore, names: dict[str, str]) -> FindingView:
    return FindingView(
        label_id=score.label_id,
        name=names.get(score.label_id) or score.text,
        text=score.text,
        probability=float(score.probability),
        percent=percent(float(score.probability)),
        severity=score.severity,
        calibrated=score.calibrated,
        codes=tuple(f"{c.display or c.code} ({c.code})" for c in score.codes),
        evidence=tuple(getattr(score, "measured_evidence", ())),
    )


def measurement_view(key: str, m: Measurement) -> MeasurementView:
    if m.value is None:
        value = "—"
    elif m.unit == "1":
        value = f"{m.value:.2f}"
    else:
        value = f"{m.value:.0f}"
    unit = UNIT_TEXT.get(m.unit, m.unit) if m.value is not None else ""
    title = m.display + (f" · LOINC {m.loinc}" if m.loinc else "")
    return MeasurementView(
        key=key,
        label=MEASUREMENT_LABELS.get(key, m.display),
        value=value,
        unit=unit,
        loinc=m.loinc,
        title=title,
    )


def result_view(
    result: ClassificationResult, model_version: str, names: dict[str, str], threshold: float
) -> ResultView:
    """What the page shows of a result; findings are scores at or above ``threshold``
    (``settings.cards.finding_threshold``, the cards' threshold)."""
    scores = sorted(result.scores, key=lambda s: s.probability, reverse=True)
    views = [finding_view(s, names) for s in scores]
    ordered = [k for k in MEASUREMENT_ORDER if k in result.measurements] + sorted(
        k for k in result.measurements if k not in MEASUREMENT_ORDER
    )
    return ResultView(
        model_version=model_version,
        findings=tuple(v for v in views if v.probability >= threshold),
        others=tuple(v for v in views if v.probability < threshold),
        measurements=tuple(measurement_view(k, result.measurements[k]) for k in ordered),
        acceptable=result.quality.acceptable,
        quality_reasons=tuple(result.quality.reasons),
        out_of_distribution=result.quality.out_of_distribution,
        unusable_leads=tuple(getattr(result.quality, "unusable_leads", ())),
        calibration=getattr(result, "calibration", ""),
    )


def format_time(value: datetime | None) -> str:
    """ISO-like, to the minute, with the zone when known ("2026-11-25 12:30 UTC")."""
    if value is None:
        return "—"
    zone = value.tzname() or ""
    return value.strftime("%Y-%m-%d %H:%M") + (f" {zone}" if zone else "")


def override_reason_display(code: str) -> str | None:
    return dict(OVERRIDE_REASONS).get(code)
