"""Embedding-only, measurement-only and fused figures side by side, with bootstrap intervals.

For labelled records (:mod:`models.labelled`) and catalog labels, every label reports the
AUROC of three scores: the **embedding** (cosine), the **measurement** (its criteria's soft
margin; 0 where not measured) and the **fused** probability the service returns, each with
a bootstrap 95 % interval over records (:data:`BOOTSTRAP` resamples, fixed seed), its
number of positives and records. A criterion-backed label also reports fused minus
measurement AUROC with a **paired** bootstrap 95 % interval (the same resamples for both),
and each table counts the labels at or above their criterion, below it, and below it with
the whole interval under 0: with 3-12 held-out positives a label, "not worse than its
criterion" is a statement about that interval, the strict comparison is reported beside
it. Macro figures average over labels with at least ``min_positives`` positives;
"criterion-backed" macros use only labels resting on criteria.

Tasks:

* ``heldout``: PTB-XL fold 10 plus the CinC test sources (never used for any fit or choice),
  pooled; the CinC test sources alone, pooled; then the same per source ("leave-source-out":
  each CinC source alone, none of them in any fit);
* ``sources``: every CinC source separately, validation sources marked as such;
* ``validation``: PTB-XL fold 9 plus the CinC validation sources (the data the fusion was
  fitted on and every choice was made on), pooled: the figures to decide by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from models.calibration import expected_calibration_error
from models.catalog import LabelCatalog
from models.classifier import ZeroShotClassifier
from models.evaluation import score_cell
from models.fusion import criterion_score
from models.fusion_fit import TEST_SOURCES, VALIDATION_SOURCES, ChannelScores, channel_scores
from models.labelled import LabelledRecord
from models.metrics import (
    BOOTSTRAP,
    _auc,
    bootstrap_ci,
    macro_bootstrap,
    paired_delta_ci,
    percentile_interval,
    resampled_records,
)

CHANNELS = ("embedding", "measurement", "fused")


@dataclass
class ChannelClass:
    label_id: str
    positives: int
    n: int
    criteria: list[str]
    auroc: dict[str, float | None]
    ci: dict[str, list[float] | None]
    #: Fused minus measurement AUROC and its paired bootstrap 95 % interval (None: no criteria).
    fused_minus_measurement: float | None = None
    delta_ci: list[float] | None = None
    #: Calibration of the served (fused) probability: its mean against the share of
    #: positives, and the expected calibration error (10 equal-width bins).
    mean_fused: float | None = None
    prevalence: float | None = None
    ece_fused: float | None = None


@dataclass
class ChannelTask:
    task: str
    data: str
    split: str
    metric: str
    n_records: int
    min_positives: int
    classes: list[ChannelClass] = field(default_factory=list)
    macro: dict[str, float | None] = field(default_factory=dict)
    macro_ci: dict[str, list[float] | None] = field(default_factory=dict)
    macro_criteria: dict[str, float | None] = field(default_factory=dict)
    n_criteria_classes: int = 0
    #: Criterion-backed labels whose fused AUROC is at or above / below the measurement's,
    #: and below with the whole paired 95 % interval under 0.
    vs_criterion: dict[str, int] = field(default_factory=dict)
    #: ECE of the served probabilities over every assessed (record, label) pair of the
    #: labels in the table, with a bootstrap 95 % interval over records.
    ece_fused: float | None = None
    ece_fused_ci: list[float] | None = None
    model_version: str = ""
    calibration: str = ""
    notes: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def table(self) -> str:
        def ci(v: list[float] | None) -> str:
            return "" if v is None else f"[{v[0]:.2f}-{v[1]:.2f}]"

        lines = [
            f"{self.task}: {self.data} [{self.split}] n={self.n_records} "
            f"({self.model_version}; {self.metric})",
            f"  macro over {len(self.classes)} labels with >= {self.min_positives} positives: "
            + ", ".join(
                f"{c} {score_cell(self.macro.get(c))} {ci(self.macro_ci.get(c))}" for c in CHANNELS
            ),
            f"  macro over the {self.n_criteria_classes} criterion-backed labels: "
            + ", ".join(f"{c} {score_cell(self.macro_criteria.get(c))}" for c in CHANNELS),
            "  fused vs criterion alone: "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.vs_criterion.items()),
            f"  served probabilities: ECE {score_cell(self.ece_fused)} {ci(self.ece_fused_ci)}",
            f"  {'label':<36} {'pos':>4} {'n':>4} {'embed':>6} {'meas':>6} {'fused':>6} "
            "fused 95% CI  fused-meas [paired 95% CI]  mean p / share, ECE",
        ]
        for c in self.classes:
            delta = c.fused_minus_measurement
            lines.append(
                f"  {c.label_id[:36]:<36} {c.positives:>4} {c.n:>4} "
                f"{score_cell(c.auroc['embedding'])} {score_cell(c.auroc['measurement'])} "
                f"{score_cell(c.auroc['fused'])} {ci(c.ci['fused']):<11}"
                + ("" if delta is None else f"  {delta:+.3f} {ci(c.delta_ci)}")
                + f"  {c.mean_fused:.2f} / {c.prevalence:.2f}, {c.ece_fused:.3f}"
            )
        return "\n".join(lines)


def summarise(
    scores: ChannelScores,
    labels: LabelCatalog,
    *,
    task: str,
    data: str,
    split: str,
    min_positives: int = 3,
    rows: np.ndarray | None = None,
    clf: ZeroShotClassifier | None = None,
) -> ChannelTask:
    rows = np.arange(len(scores.sources)) if rows is None else rows
    result = ChannelTask(
        task=task, data=data, split=split, n_records=len(rows), min_positives=min_positives,
        metric="AUROC per label; embedding = cosine, measurement = criteria margin (0 where not "
        "measured), fused = served probability; bootstrap 95% CI over records",
        model_version=clf.model_version if clf else "",
        calibration=clf.calibration_in_use if clf else "",
    )  # fmt: skip
    per_channel: dict[str, tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]] = {
        c: ([], [], []) for c in CHANNELS
    }
    macro_rows: dict[str, list[float]] = {c: [] for c in CHANNELS}
    crit_rows: dict[str, list[float]] = {c: [] for c in CHANNELS}
    pooled_p: list[np.ndarray] = []
    pooled_y: list[np.ndarray] = []
    pooled_rows: list[np.ndarray] = []
    for j, label in enumerate(labels):
        y_all = scores.y[rows, j]
        assessed = ~np.isnan(y_all)
        y = y_all[assessed].astype(int)
        pos = int(y.sum())
        if pos < min_positives or pos == len(y):
            continue
        sel = rows[assessed]
        backed = bool(clf.scorer.resolve(label).criteria) if clf else bool(label.criteria)
        channel_scores_ = {
            "embedding": scores.cosine[sel, j],
            "measurement": criterion_score(scores.margin[sel, j]) if backed else None,
            "fused": scores.fused[sel, j],
        }
        auroc: dict[str, float | None] = {}
        ci: dict[str, list[float] | None] = {}
        for c, s in channel_scores_.items():
            auroc[c] = None if s is None else _auc(y, s)
            ci[c] = None if s is None else bootstrap_ci(y, s)
            if s is not None and auroc[c] is not None:
                macro_rows[c].append(auroc[c])  # type: ignore[arg-type]
                ys, ss, rs = per_channel[c]
                ys.append(y)
                ss.append(s)
                rs.append(np.searchsorted(rows, sel))
                if backed:
                    crit_rows[c].append(auroc[c])  # type: ignore[arg-type]
        entry = ChannelClass(
            label.id, pos, len(y), list(clf.scorer.resolve(label).criteria) if clf else [],
            auroc, ci,
        )  # fmt: skip
        fused_p = scores.fused[sel, j]
        entry.mean_fused = round(float(fused_p.mean()), 4)
        entry.prevalence = round(pos / len(y), 4)
        entry.ece_fused = round(expected_calibration_error(fused_p, y), 4)
        pooled_p.append(fused_p)
        pooled_y.append(y)
        pooled_rows.append(np.searchsorted(rows, sel))
        a_f, a_m, meas = auroc["fused"], auroc["measurement"], channel_scores_["measurement"]
        if a_f is not None and a_m is not None and meas is not None:
            entry.fused_minus_measurement = round(a_f - a_m, 6)
            entry.delta_ci = paired_delta_ci(y, scores.fused[sel, j], meas)
        result.classes.append(entry)
    result.n_criteria_classes = sum(1 for c in result.classes if c.criteria)
    deltas = [c for c in result.classes if c.fused_minus_measurement is not None]
    result.vs_criterion = {
        "at_or_above": sum(1 for c in deltas if (c.fused_minus_measurement or 0.0) >= 0),
        "below": sum(1 for c in deltas if (c.fused_minus_measurement or 0.0) < 0),
        "below_with_ci_under_0": sum(1 for c in deltas if c.delta_ci and c.delta_ci[1] < 0),
    }
    if pooled_p:
        result.ece_fused, result.ece_fused_ci = pooled_ece(
            pooled_p, pooled_y, pooled_rows, len(rows)
        )
    for c in CHANNELS:
        result.macro[c] = float(np.mean(macro_rows[c])) if macro_rows[c] else None
        result.macro_criteria[c] = float(np.mean(crit_rows[c])) if crit_rows[c] else None
        ys, ss, rs = per_channel[c]
        result.macro_ci[c] = macro_bootstrap(ys, ss, rs, len(rows)) if c != "measurement" else None
    return result


def pooled_ece(
    probabilities: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    rows: Sequence[np.ndarray],
    n_records: int,
    resamples: int = BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, list[float]]:
    """ECE over every (record, label) pair of the given labels, and a bootstrap 95 %
    interval that resamples records (each label's pairs of a drawn record come along)."""
    value = round(
        expected_calibration_error(np.concatenate(probabilities), np.concatenate(labels)), 4
    )
    draws = [
        expected_calibration_error(
            np.concatenate([p[t] for p, t in zip(probabilities, takes, strict=True)]),
            np.concatenate([y[t] for y, t in zip(labels, takes, strict=True)]),
        )
        for takes in resampled_records(list(rows), n_records, resamples, seed)
    ]
    return value, percentile_interval(draws)


def evaluate_heldout(
    clf: ZeroShotClassifier,
    records: Sequence[LabelledRecord],
    *,
    data: str,
    min_positives: int = 3,
) -> list[ChannelTask]:
    """Pooled held-out figures (PTB-XL test records + CinC test sources), then one table per
    source; pass PTB-XL records of the test split only."""
    catalog = clf.catalog
    labels = LabelCatalog(catalog.labels, catalog.criteria)
    scores = channel_scores(clf, records, labels)
    sources = np.array(scores.sources)
    held = np.flatnonzero(np.isin(sources, [*TEST_SOURCES, "PTB-XL"]))
    out = [
        summarise(scores, labels, task="heldout", data=data, clf=clf, rows=held,
                  split="held out of every fit: PTB-XL fold 10 + CinC " + ", ".join(TEST_SOURCES),
                  min_positives=min_positives)
    ]  # fmt: skip
    cinc_held = np.flatnonzero(np.isin(sources, TEST_SOURCES))
    if len(cinc_held):  # the CinC target: the held-out CinC sources pooled
        out.append(
            summarise(scores, labels, task="heldout:CinC", data=data, clf=clf, rows=cinc_held,
                      split="held out of every fit: CinC " + ", ".join(TEST_SOURCES),
                      min_positives=min_positives)
        )  # fmt: skip
    for source in sorted(set(scores.sources)):
        rows = np.flatnonzero(sources == source)
        role = "validation source (fusion fit)" if source in VALIDATION_SOURCES else "held out"
        out.append(
            summarise(scores, labels, task=f"source:{source}", data=source, split=role, clf=clf,
                      rows=rows, min_positives=min_positives)
        )  # fmt: skip
    return out


def evaluate_validation(
    clf: ZeroShotClassifier,
    records: Sequence[LabelledRecord],
    *,
    data: str,
    min_positives: int = 3,
) -> ChannelTask:
    """Pooled validation figures (PTB-XL fold 9 + CinC validation sources); pass PTB-XL
    records of the validation split only. Never test data: this is what choices rest on."""
    catalog = clf.catalog
    labels = LabelCatalog(catalog.labels, catalog.criteria)
    kept = [r for r in records if r.source in (*VALIDATION_SOURCES, "PTB-XL")]
    scores = channel_scores(clf, kept, labels)
    return summarise(
        scores, labels, task="validation", data=data, clf=clf, min_positives=min_positives,
        split="validation (fusion fit and choices): PTB-XL fold 9 + CinC "
        + ", ".join(VALIDATION_SOURCES),
    )  # fmt: skip
