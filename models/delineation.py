"""Median beats and global wave boundaries (P onset/offset, QRS onset/offset, T end).

Works on any set of leads (12 standard leads, or the two leads of a Holter record): the
boundaries are global, from all usable leads together, the way interpretive carts and
cardiologists report intervals (earliest onset, latest offset).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.order_stats import median_of_arrays, percentile
from models.rpeak_detect import prominent_peaks
from models.t_wave import WORK_FS, t_wave

__all__ = [
    "BEAT_AFTER_S",
    "BEAT_BEFORE_S",
    "WORK_FS",
    "MedianBeats",
    "Waves",
    "delineate",
    "median_beats",
]

#: Median beat window around each R peak (s): long enough for a PR of 350 ms before and a QT
#: of 650 ms after.
BEAT_BEFORE_S, BEAT_AFTER_S = 0.45, 0.7
#: Beats whose QRS correlates less than this with the dominant QRS are left out of the median
#: beat (premature ventricular beats, aberrant conduction, artefacts).
MIN_QRS_CORRELATION = 0.9
#: At least this share of the beats must share the dominant QRS shape, or the intervals are
#: not measured (the "beats" are then more likely noise than a rhythm with ectopics).
MIN_DOMINANT_SHARE = 0.3
#: QRS boundaries: spatial velocity above floor + QRS_THRESHOLD x (peak - floor). The spatial
#: velocity must stay below it for QRS_QUIET_S to count as outside the QRS.
QRS_THRESHOLD = 0.06
QRS_QUIET_S = 0.012
#: ... and its RMS amplitude must be below this share of the QRS peak, unless it stays up
#: (ST elevation).
QRS_END_SHARE = 0.4
#: Where a wide QRS runs straight into a steep ST-T (paced beats, some bundle branch blocks)
#: the spatial velocity never falls to the threshold: the QRS end is then looked for again at
#: these multiples of it (the first that finds one wins; narrow QRS complexes end at 1x).
QRS_END_RELAX = (1.0, 2.0, 4.0)
#: A short QT (s, times sqrt(RR)) that the previous beat's T wave certainly reaches, to keep
#: it out of the P-wave search.
QT_LOW_S = 0.33
#: The P wave is the hump nearest the QRS among those at least this share as prominent as
#: the most prominent one before it.
P_NEAREST_SHARE = 0.3
#: P onset is looked for at most this long before the P peak (onset to peak is 40-80 ms).
P_RISE_S = 0.1
#: A "P wave" longer than this is a merged T-P or baseline drift, not a P wave (P mitrale
#: reaches 160-180 ms).
MAX_P_DURATION_S = 0.2
#: A P wave is present when its RMS amplitude over the leads exceeds this (mV) in the median beat.
MIN_P_AMPLITUDE_MV = 0.015
#: P wave on the preceding T wave. With a long PR (first-degree AV block: PR > 200 ms,
#: AHA/ACCF/HRS 2009 part II; normal 120-200 ms) and/or a fast rate the P wave starts before
#: the previous T wave has ended and rides on its downslope: the search after the T end then
#: finds none, or the T end measured is the P wave's. Where no P wave was found, it is looked
#: for again from the previous T peak on, as a hump on the T downslope: each lead less its
#: moving mean over P_ON_T_DETREND_S (about the width of a P wave plus its flanks: the
#: slower T wave is mostly taken out, a P wave of 80-120 ms stays a hump)...
P_ON_T_DETREND_S = 0.16
#: ... only in a regular rhythm (RR coefficient of variation below the catalog's rr_regular
#: limit): a P wave in a fixed relation to each QRS is what sits on every T wave alike, while
#: the fibrillatory waves of an irregular rhythm would pass for one...
P_ON_T_MAX_RR_CV = 0.08
#: ... at a ventricular rate up to 130/min: a regular rhythm near 150/min is atrial flutter
#: with 2:1 conduction until shown otherwise (atrial rate 250-350/min), whose flutter waves
#: sit on every T wave too...
P_ON_T_MIN_RR_S = 60.0 / 130.0
#: ... and only as a P wave that begins before the previous T wave ends (else the ordinary
#: search would have had it), at least P_ON_T_EDGE_S inside the PR window (PR at most 400 ms,
#: and after the previous T peak; a hump at the window's edge is the T wave's own tail).
P_ON_T_EDGE_S = 0.02

R_INDEX = round(BEAT_BEFORE_S * WORK_FS)


def _n(seconds: float) -> int:
    return round(seconds * WORK_FS)


@dataclass(frozen=True)
class MedianBeats:
    """Median beats of the dominant beat shape, R peak at index :data:`R_INDEX`."""

    filtered: np.ndarray  # (leads, L) from the band-passed signal: for delineation
    wide: np.ndarray  # (leads, L) from the unfiltered signal, each beat's PR level removed later
    beats: np.ndarray  # (kept,) R-peak indices of the beats in the median


def median_beats(
    filtered: np.ndarray, wide: np.ndarray, usable: np.ndarray, peaks: np.ndarray
) -> MedianBeats | None:
    """Median beats over the beats whose QRS matches the dominant morphology."""
    before, after = _n(BEAT_BEFORE_S), _n(BEAT_AFTER_S)
    n = filtered.shape[1]
    inside = peaks[(peaks - before >= 0) & (peaks + after < n)]
    if inside.size < 2:
        return None
    offsets = np.arange(-before, after)
    index = inside[:, None] + offsets[None, :]  # (beats, L)
    starts = inside - before
    length = before + after
    # Keep the beats whose QRS (R +- 60 ms, all usable leads) matches the dominant one:
    # each beat's QRS of every usable lead, lead after lead, as one row.
    qrs_rows = filtered if usable.all() else filtered[usable]
    shapes = _windows(qrs_rows, inside - _n(0.06), 2 * _n(0.06)).reshape(inside.size, -1)
    shapes = shapes - shapes.mean(axis=1, keepdims=True)
    template = median_of_arrays(list(shapes))  # np.median(shapes, axis=0)
    norms = np.linalg.norm(shapes, axis=1) * np.linalg.norm(template)
    correlation = shapes @ template / np.maximum(norms, 1e-12)
    keep = correlation >= MIN_QRS_CORRELATION
    if keep.sum() < max(2, MIN_DOMINANT_SHARE * inside.size):
        return None  # no dominant beat shape: noise or chaos, nothing to delineate
    kept_starts = starts[keep]
    level = _pr_level(wide, index[keep])  # (leads, kept, 1)
    # The kept beats' windows gathered by one call each, every beat's window (leads, L)
    # contiguous: the medians' comparisons (models.order_stats.median_of_arrays) run faster
    # on contiguous arrays than on the record's slices, and the PR level comes off all beats
    # by one subtraction. The same values, the same elementwise operations.
    wide_beats = _windows(wide, kept_starts, length)
    wide_beats -= np.transpose(level, (1, 0, 2))
    return MedianBeats(
        filtered=median_of_arrays(list(_windows(filtered, kept_starts, length))),
        wide=median_of_arrays(list(wide_beats)),
        beats=inside[keep],
    )


def _windows(x: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """``x[:, s : s + length]`` for each ``s`` of ``starts`` (all inside ``x``), as one new
    C-ordered (starts, rows, length) array gathered by one call."""
    view = np.lib.stride_tricks.as_strided(
        x,
        shape=(x.shape[1] - length + 1, x.shape[0], length),
        strides=(x.strides[1], x.strides[0], x.strides[1]),
        writeable=False,
    )
    return np.asarray(view[starts])


def _pr_level(signal: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(leads, beats, 1): each beat's level just before its QRS (R - 80 ms to R - 50 ms).

    A fixed window at this stage; :func:`wave_levels` later re-references the median beat
    to the level just before the measured QRS onset.
    """
    window = signal[:, index[:, R_INDEX - _n(0.08) : R_INDEX - _n(0.05)]]
    return np.asarray(window.mean(axis=2, keepdims=True))


@dataclass(frozen=True)
class Waves:
    """Sample indices in the median beat (None: not found)."""

    p_on: int | None = None
    p_off: int | None = None
    qrs_on: int | None = None
    qrs_off: int | None = None
    t_peak: int | None = None
    t_end: int | None = None


def _first_quiet(below: np.ndarray, start: int, stop: int, step: int, quiet: int) -> int | None:
    """First index from ``start`` towards ``stop`` where ``below`` holds for ``quiet`` samples."""
    run = 0
    for i in range(start, stop, step):
        run = run + 1 if below[i] else 0
        if run >= quiet:
            return i - step * (quiet - 1)
    return None


def _tangent_crossing(curve: np.ndarray, lo: int, hi: int, level: float, falling: bool) -> int:
    """Tangent method: where the tangent at the steepest point of curve[lo:hi] hits ``level``."""
    part = curve[lo:hi]
    slope = part[1:] - part[:-1]  # np.diff's own subtraction, without its argument handling
    i = int(slope.argmin() if falling else slope.argmax()) + lo
    s = float(curve[i + 1] - curve[i])
    if (falling and s >= 0) or (not falling and s <= 0):
        return hi if falling else lo
    crossing = i + (level - float(curve[i])) / s
    return round(min(max(crossing, float(lo)), float(hi)))


def delineate(
    beat: np.ndarray,
    rr_s: float,
    next_s: float | None = None,
    previous_s: float | None = None,
    rr_cv: float | None = None,
) -> Waves:
    """Global boundaries from the (usable leads, L) median beat.

    ``rr_s``: the median RR; ``next_s`` / ``previous_s``: the median interval (s) from a beat
    of the median to the next / previous detected beat of any shape (an ectopic beat after
    every normal one bounds the T wave sooner than the median RR says); ``rr_cv``: the RR
    coefficient of variation of the dominant beats (the P-on-T search needs a regular rhythm;
    None: not known, no such search).
    """
    r = R_INDEX
    length = beat.shape[1]
    quiet = max(2, _n(QRS_QUIET_S))

    # QRS: spatial velocity (root sum of squared first differences over the usable leads),
    # lightly smoothed so one-sample dips at R and S apexes do not end the QRS.
    velocity = np.sqrt((np.diff(beat, axis=1) ** 2).sum(axis=0))
    velocity = np.convolve(velocity, np.ones(3) / 3, mode="same")
    # Start from the fastest point near the detected peak: the detection lead's peak need not
    # be where the QRS moves fastest in the other leads.
    lo = r - _n(0.08)
    centre = lo + int(np.argmax(velocity[lo : r + _n(0.08)]))
    peak = float(velocity[centre])
    floor = percentile(velocity, 20)
    threshold = floor + QRS_THRESHOLD * (peak - floor)
    onset = _first_quiet(velocity < threshold, centre, max(centre - _n(0.2), quiet), -1, quiet)
    if onset is None:
        return Waves()
    level = np.sqrt(((beat - beat[:, onset : onset + 1]) ** 2).mean(axis=0))
    limit = min(centre + _n(0.25), length - 2)
    offset = None
    for relax in QRS_END_RELAX:
        below = velocity < floor + relax * QRS_THRESHOLD * (peak - floor)
        offset = _first_quiet(below, centre, limit, 1, quiet)
        if offset is None:
            continue
        # A flat-bottomed S wave is quiet too: the QRS has not ended while the signal is
        # still far from the baseline and then falls back a lot within 60 ms.
        qrs_peak = float(level[onset : offset + 1].max())
        while offset is not None and offset + _n(0.06) < length:
            after = float(level[offset : offset + _n(0.06)].min())
            if level[offset] < QRS_END_SHARE * qrs_peak or after > 0.5 * level[offset]:
                break
            offset = _first_quiet(below, offset + quiet, limit, 1, quiet)
        if offset is not None:
            break
    if offset is None:
        return Waves()
    qrs_on, qrs_off = onset, offset

    # Baseline: the PR segment just before the QRS (20 ms), per lead.
    pr_segment = beat[:, max(qrs_on - _n(0.02), 0) : qrs_on + 1]
    corrected = beat - pr_segment.mean(axis=1, keepdims=True)
    rms = np.sqrt((corrected**2).mean(axis=0))

    # The P wave first, so the next beat's P wave (RR later) bounds the T-wave search. Before
    # the T end is known, the previous beat's T wave is kept out by a short QT estimate.
    before = _n(min(rr_s, previous_s or rr_s))
    after = _n(min(rr_s, next_s or rr_s))
    previous_t = qrs_on - before + _n(QT_LOW_S * np.sqrt(rr_s))
    p_on, p_off = _p_wave(rms, qrs_on, previous_t)
    next_qrs = qrs_on + after - _n(0.04)
    next_p = min(p_on + after - _n(0.02), next_qrs) if p_on is not None else next_qrs
    t_peak, t_end = t_wave(beat, r, (qrs_on, qrs_off), after, (next_p, next_qrs), rr_s)
    if t_end is not None and t_end - before + _n(0.02) > previous_t:
        # The previous T wave lasts longer than the estimate: look again after its measured
        # end, so its tail is not taken for a P wave.
        p_on, p_off = _p_wave(rms, qrs_on, t_end - before + _n(0.02))
    regular = rr_cv is not None and rr_cv < P_ON_T_MAX_RR_CV and rr_s >= P_ON_T_MIN_RR_S
    if p_on is None and t_end is not None and t_peak is not None and regular:
        # The T end stays as measured: where the P wave rides on it, the T wave's own end
        # is hidden (the measured one may be the P wave's, a QT read long).
        p_on, p_off = _p_on_t(beat, qrs_on, t_peak - before, t_end - before)
    return Waves(p_on, p_off, qrs_on, qrs_off, t_peak, t_end)


def _p_on_t(
    beat: np.ndarray, qrs_on: int, previous_t_peak: int, previous_t_end: int
) -> tuple[int | None, int | None]:
    """A P wave riding on the previous T wave's downslope (see P_ON_T_DETREND_S).

    Per lead the moving mean over P_ON_T_DETREND_S is taken off, then the hump nearest the
    QRS after the previous T peak in the RMS over the leads is the P wave, as in
    :func:`_p_wave`; None unless it begins before the previous T end and inside the window.
    """
    width = _n(P_ON_T_DETREND_S) | 1
    padded = np.pad(beat, ((0, 0), (width // 2, width // 2)), mode="edge")
    total = np.cumsum(padded, axis=1)
    total = np.concatenate([np.zeros((beat.shape[0], 1)), total], axis=1)
    moving_mean = (total[:, width:] - total[:, :-width]) / width
    detrended = beat - moving_mean
    rms = np.sqrt((detrended**2).mean(axis=0))
    earliest = max(previous_t_peak + _n(0.04), 1)
    p_on, p_off = _p_wave(rms, qrs_on, earliest)
    window_start = max(qrs_on - _n(0.4), 1, earliest)
    if p_on is None or p_on >= previous_t_end or p_on < window_start + _n(P_ON_T_EDGE_S):
        return None, None
    return p_on, p_off


def _p_wave(rms: np.ndarray, qrs_on: int, earliest: int) -> tuple[int | None, int | None]:
    """P onset and offset: the hump nearest the QRS after ``earliest`` (the previous T).

    The nearest significant hump, not the largest, so the tail of the previous T wave (at a
    fast rate) is not taken for the P wave.
    """
    p_hi = qrs_on - _n(0.04)
    p_lo = max(qrs_on - _n(0.4), 1, earliest)
    if p_hi - p_lo <= _n(0.06):
        return None, None
    window = rms[p_lo : p_hi + 1]
    tops, prominences = prominent_peaks(window, MIN_P_AMPLITUDE_MV)
    tops = tops[tops >= 3]
    if tops.size == 0:
        return None, None
    prominence = prominences[-tops.size :]
    strong = tops[prominence >= P_NEAREST_SHARE * prominence.max()]
    p_peak = p_lo + int(strong[-1])
    start = max(p_lo, p_peak - _n(P_RISE_S))
    level = float(rms[start : p_peak + 1].min())
    lo = start + int(np.argmin(rms[start : p_peak + 1]))
    if p_peak - lo < 2:
        return None, None
    p_on = _tangent_crossing(rms, lo, p_peak + 1, level, falling=False)
    after = rms[p_peak : qrs_on + 1]
    stop = p_peak + int(np.argmin(after)) + 1
    if stop - p_peak < 3:
        return p_on, None
    p_off = _tangent_crossing(rms, p_peak, stop, float(after.min()), falling=True)
    if p_off - p_on > _n(MAX_P_DURATION_S):  # no P wave lasts this long: not a clear P
        return None, None
    return p_on, p_off
