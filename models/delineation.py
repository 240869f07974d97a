"""Median beats and global wave boundaries (P onset/offset, QRS onset/offset, T end).

Works on any set of leads (12 standard leads, or the two leads of a Holter record): the
boundaries are global, from all usable leads together, the way interpretive carts and
cardiologists report intervals (earliest onset, latest offset).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Working sampling rate (Hz) of everything in this module.
WORK_FS = 250.0
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
#: T end search: the T wave's falling limb ends where its RMS has come within this fraction of
#: its amplitude from the floor; the steepest descent is looked for before that point only.
T_END_FRACTION = 0.15
#: A P wave is present when its RMS amplitude over the leads exceeds this (mV) in the median beat.
MIN_P_AMPLITUDE_MV = 0.02

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
    index = inside[:, None] + offsets[None, :]
    beats = filtered[:, index]  # (leads, beats, L)
    # Keep the beats whose QRS (R +- 60 ms, all usable leads) matches the dominant one.
    qrs = slice(before - _n(0.06), before + _n(0.06))
    shapes = beats[usable][:, :, qrs]  # (leads, beats, q)
    shapes = np.transpose(shapes, (1, 0, 2)).reshape(inside.size, -1)
    shapes = shapes - shapes.mean(axis=1, keepdims=True)
    template = np.median(shapes, axis=0)
    norms = np.linalg.norm(shapes, axis=1) * np.linalg.norm(template)
    correlation = shapes @ template / np.maximum(norms, 1e-12)
    keep = correlation >= MIN_QRS_CORRELATION
    if keep.sum() < max(2, MIN_DOMINANT_SHARE * inside.size):
        return None  # no dominant beat shape: noise or chaos, nothing to delineate
    kept = index[keep]
    return MedianBeats(
        filtered=np.median(beats[:, keep], axis=1),
        wide=np.median(wide[:, kept] - _pr_level(wide, kept), axis=1),
        beats=inside[keep],
    )


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
    slope = np.diff(curve[lo:hi])
    i = int(np.argmin(slope) if falling else np.argmax(slope)) + lo
    s = float(curve[i + 1] - curve[i])
    if (falling and s >= 0) or (not falling and s <= 0):
        return hi if falling else lo
    crossing = i + (level - float(curve[i])) / s
    return round(min(max(crossing, float(lo)), float(hi)))


def delineate(beat: np.ndarray, rr_s: float) -> Waves:
    """Global boundaries from the (usable leads, L) median beat."""
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
    floor = float(np.percentile(velocity, 20))
    threshold = floor + QRS_THRESHOLD * (peak - floor)
    below = velocity < threshold
    onset = _first_quiet(below, centre, max(centre - _n(0.2), quiet), -1, quiet)
    offset = _first_quiet(below, centre, min(centre + _n(0.25), length - 2), 1, quiet)
    if onset is None or offset is None:
        return Waves()
    qrs_on, qrs_off = onset, offset

    # Baseline: the PR segment just before the QRS (20 ms), per lead.
    pr_segment = beat[:, max(qrs_on - _n(0.02), 0) : qrs_on + 1]
    corrected = beat - pr_segment.mean(axis=1, keepdims=True)
    rms = np.sqrt((corrected**2).mean(axis=0))

    t_peak, t_end = _t_wave(rms, qrs_off, r, rr_s, length)
    p_on, p_off = _p_wave(rms, qrs_on, t_end, rr_s)
    return Waves(p_on, p_off, qrs_on, qrs_off, t_peak, t_end)


def _t_wave(
    rms: np.ndarray, qrs_off: int, r: int, rr_s: float, length: int
) -> tuple[int | None, int | None]:
    """T peak and T end: tangent on the falling limb of the RMS T wave.

    Searched up to shortly before the next beat could start.
    """
    t_lo = qrs_off + _n(0.06)
    t_hi = min(length - 1, r + _n(min(BEAT_AFTER_S, max(0.3, rr_s - 0.1))))
    if t_hi - t_lo <= _n(0.08):
        return None, None
    t_peak = t_lo + int(np.argmax(rms[t_lo:t_hi]))
    if t_hi - t_peak < 3:
        return t_peak, None
    level = float(rms[t_peak:t_hi].min())
    # The steepest descent must belong to this T wave: search only until the RMS has first
    # come down near its floor, not on into a U wave or the next P wave.
    near_floor = rms[t_peak:t_hi] <= level + T_END_FRACTION * (rms[t_peak] - level)
    t_stop = t_peak + int(np.argmax(near_floor)) + 1
    return t_peak, _tangent_crossing(rms, t_peak, min(t_stop + 1, t_hi), level, falling=True)


def _p_wave(
    rms: np.ndarray, qrs_on: int, t_end: int | None, rr_s: float
) -> tuple[int | None, int | None]:
    """P onset and offset: the P wave lies between the previous T wave and the QRS."""
    p_hi = qrs_on - _n(0.04)
    p_lo = max(qrs_on - _n(0.4), 1)
    if t_end is not None:
        p_lo = max(p_lo, t_end - _n(rr_s) + _n(0.04))
    if p_hi - p_lo <= _n(0.06):
        return None, None
    p_peak = p_lo + int(np.argmax(rms[p_lo:p_hi]))
    level = float(rms[p_lo : p_peak + 1].min())
    if p_peak - p_lo < 3 or float(rms[p_peak]) - level < MIN_P_AMPLITUDE_MV:
        return None, None
    p_on = _tangent_crossing(rms, p_lo, p_peak + 1, level, falling=False)
    after = rms[p_peak : qrs_on + 1]
    stop = p_peak + int(np.argmin(after)) + 1
    if stop - p_peak < 3:
        return p_on, None
    p_off = _tangent_crossing(rms, p_peak, stop, float(after.min()), falling=True)
    return p_on, p_off
