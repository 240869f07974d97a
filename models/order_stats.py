"""``np.median`` and ``np.percentile`` of small arrays, the same floats with less overhead.

The measurements take about ten medians and percentiles per ECG of arrays of 5-300 values
(RR intervals, the detections' QRS slopes, a median beat's spatial velocity). numpy's
functions spend far longer on their argument handling (axes, NaN checks, ``out``) than on
the selection itself; these pick the same order statistics and combine them with numpy's
own formulas, so the floats are the same (tests/models/test_order_stats.py compares them
bit for bit with numpy's). :func:`median_of_arrays` is the median over a few arrays
elementwise (the median beat).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

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


#: Up to this many arrays, :func:`median_of_arrays` runs a comparator network; beyond it the
#: network's comparators (about n log^2 n) cost more than numpy's per-row selection.
NETWORK_MAX = 20


def median_of_arrays(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``np.median(np.stack(arrays, axis=-1), axis=-1)`` of equal-shape float arrays without NaN.

    For a few arrays (the beats of a median beat: ten or so, each 12 leads x 287 samples)
    numpy selects along thousands of rows of a few values, and the cost is per row. Here
    a sorting network's comparators (elementwise minimum and maximum, one numpy call each
    over whole arrays) bring the middle value(s) into place, which also spares stacking
    the arrays. The same order statistics, and an even count's two middle ones combined as
    ``0.5 * (a + b)``: the same floats as np.median (zeros of both signs aside, see
    :func:`median`). More than :data:`NETWORK_MAX` arrays are stacked and partitioned.
    """
    count = len(arrays)
    middle = count // 2
    if count > NETWORK_MAX:
        stacked = np.stack(arrays, axis=-1)
        if count % 2:
            return np.asarray(np.partition(stacked, middle, axis=-1)[..., middle])
        ordered = np.sort(stacked, axis=-1)
        return np.asarray(0.5 * (ordered[..., middle - 1] + ordered[..., middle]))
    wires = list(arrays)
    for a, b, low, high in _median_network(count):
        u, v = wires[a], wires[b]
        if low:
            wires[a] = np.minimum(u, v)
        if high:
            wires[b] = np.maximum(u, v)
    if count % 2:
        return np.asarray(wires[middle])
    return np.asarray(0.5 * (wires[middle - 1] + wires[middle]))


@functools.cache
def _median_network(count: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """Comparators ``(i, j, keep_min, keep_max)`` that put the median(s) of ``count`` wires
    into their sorted places: Batcher's odd-even merge sort for the next power of two
    (comparators reaching past ``count`` dropped: those wires would hold +inf), without the
    comparators, and the outputs, that no middle wire depends on."""
    size = 1
    while size < count:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    middle = count // 2
    needed = {middle} if count % 2 else {middle - 1, middle}
    kept: list[tuple[int, int, bool, bool]] = []
    for i, j in reversed([(i, j) for i, j in pairs if j < count]):
        low, high = i in needed, j in needed
        if low or high:
            kept.append((i, j, low, high))
            needed |= {i, j}
    return tuple(reversed(kept))
