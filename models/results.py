"""What one classification returns. Plain data: the service stores and renders it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["critical", "warning", "info", "normal"]


@dataclass(frozen=True)
class Code:
    """A coded concept, e.g. ``Code("http://snomed.info/sct", "164889003", "AF")``."""

    system: str
    code: str
    display: str | None = None


@dataclass(frozen=True)
class Measurement:
    """One interval or rate, with its unit (UCUM) and LOINC code."""

    name: str  # e.g. "heart_rate", "pr", "qrs", "qt", "qtc", "axis", "rr_irregularity"
    value: float | None  # None when it could not be measured
    unit: str  # UCUM: "/min", "ms", "deg", "1", "mV", "mV.ms"
    loinc: str | None
    display: str  # e.g. "QTc (Bazett)"
    #: Per-lead values (same unit) for lead-wise measurements such as ST level or R amplitude,
    #: keyed by standard lead name; only the leads that were recorded and usable appear.
    #: None for global measurements. ``value`` is then the documented summary of the leads
    #: (see ``models.measurement_specs.SPECS``).
    per_lead: dict[str, float] | None = None


@dataclass(frozen=True)
class QualityReport:
    """The signal-quality gate's verdict. A rejected ECG gets reasons, not scores."""

    acceptable: bool
    reasons: tuple[str, ...] = ()
    #: True when the ECG looks unlike anything the model was trained on.
    out_of_distribution: bool = False
    #: Standard leads the gate found unusable (flat or drowned in noise), e.g. to mask them.
    unusable_leads: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelScore:
    """The model's calibrated belief that the ECG shows one label."""

    label_id: str  # catalog id, or a slug of the free text for ad-hoc labels
    text: str  # the text the label was scored with (its first prompt for catalog labels)
    probability: float  # calibrated, 0..1
    similarity: float  # raw cosine similarity (ensemble mean)
    severity: Severity
    codes: tuple[Code, ...] = ()
    calibrated: bool = False  # False: the documented default mapping for new text labels
    #: What the measurements say about the label's criteria, one line each ("PR 232 ms >
    #: 200 ms", "axis -48 deg < -30 deg"); empty when the label rests on no criterion.
    evidence: tuple[str, ...] = ()
    #: Ids of the measurable criteria the label was resolved to (models.criteria).
    criteria: tuple[str, ...] = ()
    #: The embedding-only probability before fusion with the criteria (None: not fused).
    embedding_probability: float | None = None

    @property
    def measured_evidence(self) -> tuple[str, ...]:
        """The evidence lines with a measured value (what a reader checks on the tracing)."""
        return tuple(e for e in self.evidence if not e.endswith(" not measured"))


@dataclass(frozen=True)
class ClassificationResult:
    """Everything the model says about one ECG, stamped with the model version."""

    model_version: str
    quality: QualityReport
    measurements: dict[str, Measurement] = field(default_factory=dict)
    #: Sorted by probability, highest first. Empty when the quality gate rejected the ECG.
    scores: tuple[LabelScore, ...] = ()
    #: The calibration in use: the shipped one (named by what it was fitted on) or a site's.
    calibration: str = ""

    def to_dict(self) -> dict[str, Any]:
        """``dataclasses.asdict(self)``, written out: the generic deep copy was most of the
        cost of storing a result (1.2 ms of ~1.5 ms for a catalog-wide result)."""
        q = self.quality
        return {
            "model_version": self.model_version,
            "quality": {
                "acceptable": q.acceptable,
                "reasons": tuple(q.reasons),
                "out_of_distribution": q.out_of_distribution,
                "unusable_leads": tuple(q.unusable_leads),
            },
            "measurements": {
                key: {
                    "name": m.name,
                    "value": m.value,
                    "unit": m.unit,
                    "loinc": m.loinc,
                    "display": m.display,
                    "per_lead": None if m.per_lead is None else dict(m.per_lead),
                }
                for key, m in self.measurements.items()
            },
            "scores": tuple(
                {
                    "label_id": s.label_id,
                    "text": s.text,
                    "probability": s.probability,
                    "similarity": s.similarity,
                    "severity": s.severity,
                    "codes": tuple(
                        {"system": c.system, "code": c.code, "display": c.display} for c in s.codes
                    ),
                    "calibrated": s.calibrated,
                    "evidence": tuple(s.evidence),
                    "criteria": tuple(s.criteria),
                    "embedding_probability": s.embedding_probability,
                }
                for s in self.scores
            ),
            "calibration": self.calibration,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassificationResult:
        quality = QualityReport(
            acceptable=data["quality"]["acceptable"],
            reasons=tuple(data["quality"].get("reasons", ())),
            out_of_distribution=data["quality"].get("out_of_distribution", False),
            unusable_leads=tuple(data["quality"].get("unusable_leads", ())),
        )
        measurements = {k: Measurement(**v) for k, v in data.get("measurements", {}).items()}
        tuples = ("evidence", "criteria")
        scores = tuple(
            LabelScore(
                **{k: v for k, v in s.items() if k != "codes" and k not in tuples},
                codes=tuple(Code(**c) for c in s.get("codes", ())),
                evidence=tuple(s.get("evidence", ())),
                criteria=tuple(s.get("criteria", ())),
            )
            for s in data.get("scores", ())
        )
        return cls(
            model_version=data["model_version"],
            quality=quality,
            measurements=measurements,
            scores=scores,
            calibration=data.get("calibration", ""),
        )
