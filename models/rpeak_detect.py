"""neurokit2's R-peak detector (``ecg_findpeaks``, method "neurokit"), same steps, less overhead.

The detector (neurokit2 0.2-0.3, ``_ecg_findpeaks_neurokit``, MIT licence): QRS complexes are
where the smoothed absolute gradient exceeds 1.5 times its 0.75 s moving average; in each
complex long enough, the R peak is the most prominent local maximum; peaks closer than
0.3 s to the previous one are dropped.

neurokit2 runs ``scipy.signal.find_peaks(segment, prominence=(None, None))`` once per
complex, and that call's argument checks cost more than its work on a 25-sample segment:
about half of the R-peak detection. Here the two compiled routines ``find_peaks`` itself
calls (local maxima, then prominences) are called directly, so every result is identical
(tests/models/test_rpeak_detect.py compares with ``neurokit2.ecg_findpeaks``).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage
import scipy.signal

try:  # the compiled cores of scipy.signal.find_peaks (private; present in scipy >= 1.1)
    from scipy.signal._peak_finding_utils import _local_maxima_1d, _peak_prominences
except ImportError:  # pragma: no cover - another scipy layout: the public call, same result
    _local_maxima_1d = None
    _peak_prominences = None

SMOOTH_S = 0.1
AVERAGE_S = 0.75
GRADIENT_THRESHOLD = 1.5
MIN_LENGTH_SHARE = 0.4
MIN_DELAY_S = 0.3


def _most_prominent(segment: np.ndarray, maxima: np.ndarray | None = None) -> int | None:
    """Index of the most prominent local maximum (the first of equals), None when none.

    ``maxima``: the segment's local maxima when already found (:func:`_maxima_by_segment`).
    """
    if _local_maxima_1d is None or _peak_prominences is None:
        maxima, props = scipy.signal.find_peaks(segment, prominence=(None, None))
        prominences = props["prominences"]
    else:
        if maxima is None:
            maxima, _, _ = _local_maxima_1d(segment)
        if maxima.size < 2:  # one maximum is the most prominent whatever its prominence
            return int(maxima[0]) if maxima.size else None
        prominences, _, _ = _peak_prominences(segment, maxima, -1)
    if maxima.size == 0:
        return None
    return int(maxima[prominences.argmax()])


def prominent_peaks(x: np.ndarray, min_prominence: float) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.signal.find_peaks(x, prominence=min_prominence)``: the peaks and their prominences.

    The same two compiled steps (local maxima, then prominences over the whole signal) and
    the same selection (``min_prominence <= prominence``), without the public call's
    argument handling, which costs more than the work on the short stretches of a median
    beat (the delineation's P-wave and T/U-wave searches).
    """
    signal = np.asarray(x, dtype=np.float64, order="C")
    if _local_maxima_1d is None or _peak_prominences is None:
        tops, props = scipy.signal.find_peaks(signal, prominence=min_prominence)
        return tops, props["prominences"]
    tops, _, _ = _local_maxima_1d(signal)
    if tops.size == 0:
        return tops, np.zeros(0)
    prominences, _, _ = _peak_prominences(signal, tops, -1)
    keep = min_prominence <= prominences
    return tops[keep], prominences[keep]


def prominent_tops_of_rows(
    x: np.ndarray, start: int, stops: np.ndarray, min_prominence: float
) -> list[np.ndarray]:
    """Per row ``i``, ``prominent_peaks(x[i, start : stops[i]], min_prominence)[0]``.

    The rows' stretches are laid end to end, each followed by +inf, and scanned by one call
    of each compiled step instead of two calls per row (the T/U-wave search of every lead).
    The same peaks and prominences: a peak is decided by its plateau's neighbours, and +inf
    is never a neighbour that makes one (nor lower than a stretch's first or last sample,
    where a stretch can have no peak either); a prominence's bases are searched outwards
    until a higher sample, which +inf is, so no search leaves its own stretch. The +inf
    runs' own "peaks" are dropped before the prominences.
    """
    rows = x.shape[0]
    lengths = np.clip(np.minimum(stops, x.shape[1]) - start, 0, None)
    if _local_maxima_1d is None or _peak_prominences is None or rows == 0:
        return [
            prominent_peaks(x[i, start : start + int(lengths[i])], min_prominence)[0]
            for i in range(rows)
        ]
    width = int(lengths.max()) + 1  # at least one +inf after every stretch
    block = np.full((rows, width), np.inf)
    available = min(width, x.shape[1] - start)
    block[:, :available] = x[:, start : start + available]
    block[np.arange(width)[None, :] >= lengths[:, None]] = np.inf
    flat = block.ravel()
    tops, _, _ = _local_maxima_1d(flat)
    tops = tops[np.isfinite(flat[tops])]
    if tops.size:
        prominences, _, _ = _peak_prominences(flat, tops, -1)
        tops = tops[min_prominence <= prominences]
    bounds = np.searchsorted(tops, np.arange(rows + 1) * width).tolist()
    return [tops[bounds[i] : bounds[i + 1]] - i * width for i in range(rows)]


def _gradient(x: np.ndarray) -> np.ndarray:
    """``np.gradient(x)`` of a 1-D array (unit spacing, first-order edges), numpy's own steps:
    the interior central difference over 2.0, the edges one-sided (over 1.0)."""
    if x.size < 2:
        return np.gradient(x)  # numpy's error for too short an array
    out = np.empty_like(x)
    np.subtract(x[2:], x[:-2], out=out[1:-1])
    out[1:-1] /= 2.0
    out[0] = x[1] - x[0]
    out[-1] = x[-1] - x[-2]
    return out


def neurokit_peaks(cleaned: np.ndarray, sampling_rate: int) -> np.ndarray:
    """R-peak indices of a cleaned (0.5 Hz high-passed) 1-D ECG, as neurokit2 finds them."""
    signal = np.asarray(cleaned, dtype=np.float64, order="C")
    absgrad = np.abs(_gradient(signal))
    smooth = int(np.rint(SMOOTH_S * sampling_rate))
    average = int(np.rint(AVERAGE_S * sampling_rate))
    smoothgrad = scipy.ndimage.uniform_filter1d(absgrad, smooth, mode="nearest")
    avggrad = scipy.ndimage.uniform_filter1d(smoothgrad, average, mode="nearest")
    mindelay = int(np.rint(sampling_rate * MIN_DELAY_S))
    qrs = smoothgrad > GRADIENT_THRESHOLD * avggrad
    beg_qrs = np.where(~qrs[:-1] & qrs[1:])[0]
    end_qrs = np.where(qrs[:-1] & ~qrs[1:])[0]
    if len(beg_qrs) == 0:
        return np.array([], dtype=int)
    end_qrs = end_qrs[end_qrs > beg_qrs[0]]
    num_qrs = min(beg_qrs.size, end_qrs.size)
    lengths = (end_qrs[:num_qrs] - beg_qrs[:num_qrs]).tolist()
    # np.mean of the integer lengths: their (exact) sum over the count, correctly rounded.
    min_len = sum(lengths) / num_qrs * MIN_LENGTH_SHARE if num_qrs else math.nan
    begs, ends = beg_qrs[:num_qrs], end_qrs[:num_qrs]
    found = _maxima_by_segment(signal, begs, ends)
    peaks = [0]
    for beg, end, maxima in zip(begs.tolist(), ends.tolist(), found, strict=True):
        if end - beg < min_len:
            continue
        top = _most_prominent(signal[beg:end], maxima)
        if top is not None and beg + top - peaks[-1] > mindelay:
            peaks.append(beg + top)
    return np.asarray(peaks[1:], dtype=int)


def _maxima_by_segment(
    signal: np.ndarray, begs: np.ndarray, ends: np.ndarray
) -> list[np.ndarray | None]:
    """Per segment ``signal[beg:end]``, the local maxima ``_local_maxima_1d`` finds in it
    (indices in the segment), from one scan of the whole signal; None: call it per segment.

    The scan decides each maximum from its plateau's neighbours alone (the sample before its
    first sample, the first unequal one after it), so a segment's maxima are the signal's
    maxima whose plateau and both neighbours lie inside the segment: edges from ``beg + 1``
    to ``end - 2``. One compiled call instead of one per QRS complex (about half of
    the detector's time, the calls' overhead, not their work).
    """
    if _local_maxima_1d is None or begs.size == 0:
        return [None] * begs.size
    midpoints, left_edges, right_edges = _local_maxima_1d(signal)
    # Maxima are disjoint and in order, so both edge arrays ascend and each segment's
    # maxima are one run of them.
    first = np.searchsorted(left_edges, begs + 1, side="left").tolist()
    stop = np.searchsorted(right_edges, ends - 2, side="right").tolist()
    return [midpoints[a:b] - beg for a, b, beg in zip(first, stop, begs.tolist(), strict=True)]
