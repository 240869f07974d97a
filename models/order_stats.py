"""``np.median`` and ``np.percentile`` of one small 1-D float array, as plain Python floats.

The measurements take about ten medians and percentiles per ECG of arrays of 5-300 values
(RR intervals, the detections' QRS slopes, a median beat's spatial velocity). numpy's
functions spend far longer on their argument handling (axes, NaN checks, ``out``) than on
the selection itself; these pick the same order statistics and combine them with numpy's
own formulas, so the floats are the same (tests/models/test_order_stats.py compares them
bit for bit with numpy's).
"""

from __future__ import annotations

import math

import numpy as np


def median(values: np.ndarray) -> float:
    """``float(np.median(values))`` of a non-empty 1-D float array without NaN.

    numpy takes the middle value, or the mean of the two middle ones (their sum, halved).
    Where the middle values are zeros of both signs, which sign comes out may differ (the
    callers' values are positive: intervals, slopes).
    """
    ordered = sorted(values.tolist())
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2.0)


def percentile(values: np.ndarray, q: float) -> float:
    """``float(np.percentile(values, q))`` (method "linear") of a non-empty 1-D float64 array
    without NaN, ``0 <= q <= 100``.

    numpy's steps: the virtual index ``(n - 1) * (q / 100)``, the order statistics at its
    floor and the next index, then its ``_lerp``: ``a + (b - a) * t`` for a fraction ``t``
    below one half, else ``b - (b - a) * (1 - t)``.
    """
    n = values.shape[0]
    virtual = (n - 1) * (q / 100.0)
    if virtual >= n - 1:
        return float(np.max(values))
    below = math.floor(virtual)
    # numpy's partition points (its np.unique of [0, -1, floor, floor + 1]): with these the
    # same elements land in the same places, equal values of either sign of zero included.
    part = np.partition(values, sorted({-1, 0, below, below + 1}))
    a, b = float(part[below]), float(part[below + 1])
    t = virtual - below
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t
