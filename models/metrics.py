"""Rank metrics with bootstrap intervals (small test sets: a single figure misleads)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy.stats import rankdata

#: Bootstrap resamples per interval (fixed seed: the same figures on every run).
BOOTSTRAP = 1000


def auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    """AUROC by the Mann-Whitney U statistic (ties count one half), as sklearn's."""
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def bootstrap_ci(
    y: np.ndarray, s: np.ndarray, n: int = BOOTSTRAP, seed: int = 0
) -> list[float] | None:
    """Percentile 95 % interval of AUROC over record resamples (both outcomes required)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        auc = auroc(y[idx], s[idx])
        if auc is not None:
            values.append(auc)
    if len(values) < n // 2:
        return None
    return percentile_interval(values)


def tie_break_gain(y: np.ndarray, criterion: np.ndarray, tie_break: np.ndarray) -> float:
    """What ordering a criterion's ties by ``tie_break`` adds to the criterion's AUROC:
    the sum over groups of equal criterion scores of (AUROC of ``tie_break`` within the group
    - 0.5) * positives * negatives of the group / (positives * negatives). A score that keeps
    the criterion's order and breaks its ties by ``tie_break`` has exactly the criterion's
    AUROC plus this (negative only where ``tie_break`` orders the ties worse than chance)."""
    y = np.asarray(y)
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return 0.0
    gain = 0.0
    for value in np.unique(criterion):
        group = criterion == value
        within = auroc(y[group], np.asarray(tie_break)[group])
        if within is not None:
            g_pos = int(y[group].sum())
            gain += (within - 0.5) * g_pos * (int(group.sum()) - g_pos)
    return gain / (pos * neg)


def paired_delta_ci(
    y: np.ndarray, s: np.ndarray, reference: np.ndarray, n: int = BOOTSTRAP, seed: int = 0
) -> list[float] | None:
    """Percentile 95 % interval of AUROC(s) - AUROC(reference), both on the same resamples
    (paired: with 3-12 positives the two AUROCs move together, their difference much less)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        a, b = auroc(y[idx], s[idx]), auroc(y[idx], reference[idx])
        if a is not None and b is not None:
            values.append(a - b)
    if len(values) < n // 2:
        return None
    return percentile_interval(values)


def resampled_records(
    rows: list[np.ndarray], n_records: int, n: int = BOOTSTRAP, seed: int = 0
) -> Iterator[list[np.ndarray]]:
    """Bootstrap rounds over records for statistics pooled across labels: each round draws
    ``n_records`` records with replacement and yields, per label, the indices into that
    label's arrays (``rows[j]``: the record of each of its pairs), each pair repeated as
    often as its record was drawn. A drawn record brings all its labels' pairs along."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        counts = np.bincount(rng.integers(0, n_records, n_records), minlength=n_records)
        yield [np.repeat(np.arange(len(r)), counts[r]) for r in rows]


def percentile_interval(values: Sequence[float]) -> list[float]:
    """The 2.5th and 97.5th percentiles of bootstrap values, rounded to 4 places."""
    return [
        round(float(np.percentile(values, 2.5)), 4),
        round(float(np.percentile(values, 97.5)), 4),
    ]


def macro_bootstrap(
    ys: list[np.ndarray], ss: list[np.ndarray], rows: list[np.ndarray], n_records: int,
    n: int = BOOTSTRAP, seed: int = 0,
) -> list[float] | None:  # fmt: skip
    """Macro AUROC interval: resample records once per round, average the labels' AUROCs."""
    if not ys:
        return None
    values = []
    for takes in resampled_records(rows, n_records, n, seed):
        aucs = []
        for y, s, take in zip(ys, ss, takes, strict=True):
            auc = auroc(y[take], s[take]) if len(take) else None
            if auc is not None:
                aucs.append(auc)
        if aucs:
            values.append(float(np.mean(aucs)))
    return percentile_interval(values)


_auc = auroc
