"""One part of a classification batch, from score arrays to :class:`ClassificationResult`.

:meth:`models.classifier.ZeroShotClassifier.classify` computes every label's scores at once
as (accepted ECGs x labels) arrays; this turns them into each ECG's result, rejected ECGs
(quality gate) included in their place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from models.catalog import Label
from models.results import ClassificationResult, LabelScore
from models.scoring import LabelEvidence
from models.signal_work import SignalWork


@dataclass(frozen=True)
class LabelSet:
    """What scoring needs of a label set, made once per batch."""

    labels: list[Label]
    embeddings: np.ndarray  # (labels, embed_dim)
    slopes: np.ndarray  # (labels,) float32: each label's Platt map
    intercepts: np.ndarray
    calibrated: list[bool]
    stamp: str  # the calibration in use, named on every result


@dataclass(frozen=True)
class PartScores:
    """Scores of a part's accepted ECGs: (accepted, labels) arrays, one evidence per label."""

    cosine: np.ndarray
    p_embedding: np.ndarray
    fused: np.ndarray
    evidences: Sequence[LabelEvidence]


def part_results(
    works: Sequence[SignalWork],
    label_set: LabelSet,
    scores: PartScores,
    out_of_distribution: np.ndarray | None,
    model_version: str,
) -> list[ClassificationResult]:
    """One result per ECG of ``works``, in order; ``out_of_distribution`` per accepted ECG."""
    labels, evidences = label_set.labels, scores.evidences
    unmeasured = (
        np.isnan(np.stack([ev.margins for ev in evidences], axis=1))
        if evidences
        else np.zeros(scores.cosine.shape, dtype=bool)
    )
    # Python floats once per part: numpy scalar indexing per ECG and label was a tenth of
    # the classification's own time.
    rows = zip(
        scores.cosine.tolist(),
        np.asarray(scores.p_embedding, dtype=np.float64).tolist(),
        np.asarray(scores.fused, dtype=np.float64).tolist(),
        unmeasured.tolist(),
        strict=True,
    )
    results: list[ClassificationResult] = []
    r = 0
    for work in works:
        quality = work.quality
        ranked: tuple[LabelScore, ...] = ()
        if work.acceptable:
            similarity, p_row, fused_row, unmeasured_row = next(rows)
            if out_of_distribution is not None and out_of_distribution[r]:
                quality = replace(quality, out_of_distribution=True)
            items = [
                LabelScore(
                    label_id=label.id,
                    text=label.text,
                    probability=fused_row[j],
                    similarity=similarity[j],
                    severity=label.severity,
                    codes=label.codes,
                    calibrated=label_set.calibrated[j],
                    evidence=ev.evidence[r],
                    criteria=ev.resolution.criteria,
                    embedding_probability=None if unmeasured_row[j] else p_row[j],
                )
                for j, (label, ev) in enumerate(zip(labels, evidences, strict=True))
            ]
            ranked = tuple(sorted(items, key=lambda s: -s.probability))
            r += 1
        results.append(
            ClassificationResult(
                model_version=model_version,
                quality=quality,
                measurements=work.measurements,
                scores=ranked,
                calibration=label_set.stamp,
            )
        )
    return results
