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
from models.results import ClassificationResult, Code, LabelScore, Severity
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
    fused = np.asarray(scores.fused, dtype=np.float64)
    # Python floats once per part: numpy scalar indexing per ECG and label was a tenth of
    # the classification's own time.
    rows = zip(
        scores.cosine.tolist(),
        np.asarray(scores.p_embedding, dtype=np.float64).tolist(),
        fused.tolist(),
        unmeasured.tolist(),
        _ranking(fused),
        strict=True,
    )
    # What a label's score says whatever the ECG, once per part.
    fixed = [
        (label.id, label.text, label.severity, label.codes, calibrated, ev.resolution.criteria)
        for label, calibrated, ev in zip(labels, label_set.calibrated, evidences, strict=True)
    ]
    lines = [ev.evidence for ev in evidences]
    results: list[ClassificationResult] = []
    r = 0
    for work in works:
        quality = work.quality
        ranked: tuple[LabelScore, ...] = ()
        if work.acceptable:
            similarity, p_row, fused_row, unmeasured_row, order = next(rows)
            if out_of_distribution is not None and out_of_distribution[r]:
                quality = replace(quality, out_of_distribution=True)
            ranked = tuple(
                _label_score(
                    fixed[j],
                    fused_row[j],
                    similarity[j],
                    lines[j][r],
                    None if unmeasured_row[j] else p_row[j],
                )
                for j in order
            )
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


def _ranking(fused: np.ndarray) -> list[list[int]]:
    """Each row's labels by probability, highest first, equal ones in label order: what
    ``sorted(scores, key=lambda s: -s.probability)`` gives (a stable sort), for every ECG
    at once; a row holding a NaN (which such a sort places by comparison failures) is
    sorted as that would."""
    order = np.argsort(-fused, axis=1, kind="stable").tolist()
    for i in np.flatnonzero(np.isnan(fused).any(axis=1)).tolist():
        row = fused[i].tolist()
        order[i] = sorted(range(len(row)), key=lambda j: -row[j])
    return order


_new = object.__new__
_set = object.__setattr__


def _label_score(
    fixed: tuple[str, str, Severity, tuple[Code, ...], bool, tuple[str, ...]],
    probability: float,
    similarity: float,
    evidence: tuple[str, ...],
    embedding_probability: float | None,
) -> LabelScore:
    """``LabelScore(...)`` made from its field map: the frozen dataclass's ``__init__`` sets
    ten fields one guarded ``object.__setattr__`` at a time, 1.7 us of the 2 us a score
    took (47 per ECG of the catalog). LabelScore has no ``__post_init__`` and no slots, so
    the object is the same (``tests/models/test_batch_results`` checks it)."""
    label_id, text, severity, codes, calibrated, criteria = fixed
    score: LabelScore = _new(LabelScore)
    _set(
        score,
        "__dict__",
        {
            "label_id": label_id,
            "text": text,
            "probability": probability,
            "similarity": similarity,
            "severity": severity,
            "codes": codes,
            "calibrated": calibrated,
            "evidence": evidence,
            "criteria": criteria,
            "embedding_probability": embedding_probability,
        },
    )
    return score
