"""T end of a median beat: per lead by Zhang's trapezium area, less a merged U wave, then the
latest of the clear leads.

Called by :func:`models.delineation.delineate` once the QRS and the next beat's P wave are
known; kept apart so each module stays short.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from models.rpeak_detect import prominent_peaks, prominent_tops_of_rows

#: Working sampling rate (Hz) of the median beats (:mod:`models.delineation` works at it too).
WORK_FS = 250.0
#: T end: the trapezium-area method of Zhang et al. 2006 (IEEE Trans Biomed Eng 53:2544), with
#: its published parameters: the area indicator sums the signal over a sliding window of 128 ms
#: (32 samples at 250 Hz) against the mean of +-16 ms around the candidate point...
T_AREA_WINDOW_S = 0.128
T_AREA_CUT_S = 0.016
#: ... an earlier candidate of the opposite polarity wins over a later one only when its area
#: is this many times larger (a biphasic T ends at its second phase)...
T_EARLIER_FACTOR = 6.0
#: ... and the R-peak to T-end search interval is a linear function of RR (samples at 250 Hz:
#: RR < 220: [0.15 RR + 37, 0.7 RR - 9]; else [70, 0.2 RR + 101]).
T_SEARCH_SWITCH_RR_S = 0.88
#: Multi-lead T end: the latest of the leads whose T-wave area is at least this share of the
#: largest (cardiologists and carts report the latest offset; a lead with a flat T has none).
T_LEAD_SHARE = 0.5
#: ... and a lead whose T end is at the window's end is left out where at least this many
#: clear leads end their T inside the window.
T_CONSENSUS_LEADS = 3
#: U wave merged with the T wave: where a lead's terminal wave has two humps of the T wave's
#: polarity, at least U_HUMP_GAP_S apart and parted by a notch at least U_NOTCH_MV deep, the
#: notch marks about the end of T and the later hump is a U wave (Lepeschkin & Surawicz 1952,
#: Circulation 6:378: confusing a U wave with T reads a falsely prolonged QT; "a notch or kink
#: between T and U indicates approximately the end of T"). The lead's T end is then looked for
#: before the notch...
U_NOTCH_MV = 0.005
U_HUMP_GAP_S = 0.08
#: ... only where the reading with the second hump is a prolonged QTc and the one without it is
#: not a short QTc (s, Bazett; AHA/ACCF/HRS 2009 part IV, as `qtc_prolonged` / `qtc_short` in the
#: catalog): a bifid T wave of a normal QT, or one whose first hump alone would make the QT
#: short, stays whole.
QTC_PROLONGED_S = 0.46
QTC_SHORT_S = 0.39
#: A U wave found in one lead bounds the T end in every lead. The T wave ends at about one
#: instant in all leads (the lead-to-lead spread of T ends is mostly the projection of one T
#: loop on the leads: Kors et al. 1999, Circulation 99:1458), and the U wave comes after
#: repolarization is complete (AHA/ACCF/HRS 2009 part IV: "an electromechanical phenomenon that
#: occurs after repolarization is completed"; the QT leaves it out). So where the notch rule
#: ended a lead's T wave before a U wave taller than that T wave (above their notch: a second
#: hump smaller than the first may be the second half of a notched T wave), no lead's T end
#: lies after that U wave's peak: a later one is a T wave merged with the U wave, and Zhang's
#: T end is looked for again before the U peak. Only in a lead whose own T peak lies at least
#: U_HUMP_GAP_S before the U peak (the gap of a T and a U hump in one lead; a "U wave" that
#: peaks with another lead's T wave may be that T wave seen in a third direction), and only
#: where, as for the notch, the later reading is a prolonged QTc and the bounded one not short.


def _n(seconds: float) -> int:
    return round(seconds * WORK_FS)


def t_wave(
    beat: np.ndarray,
    r_index: int,
    qrs: tuple[int, int],
    rr: int,
    next_beat: tuple[int, int],
    rr_s: float,
) -> tuple[int | None, int | None]:
    """T peak and T end by Zhang's trapezium-area method, per lead, then the latest lead.

    ``r_index``: the R peak's sample; ``qrs``: QRS onset and offset; ``rr``: samples to the
    next beat; ``next_beat``: where the next beat's P wave and QRS begin; ``rr_s``: the median
    RR (s), for the QTc of a U wave check. The T wave ends before the next P wave and QRS (a
    long PR brings the next P wave into the published window, and its clean end would
    otherwise be taken for the T end). Per lead, the area indicator A(k) = sum over the 128 ms
    before k of (signal - its mean around k) is largest where an upright T wave has just come
    down to its final level (smallest for an inverted T); it needs no baseline, so an ST
    segment displaced from the PR level does not count as T wave, and a biphasic T ends at its
    second phase. The window is bounded by a physiological R-to-T-end range for the RR, as
    published with the method, per lead by the notch before a merged U wave (see
    U_NOTCH_MV), and in every lead by the peak of a U wave found in one (see
    :func:`_before_u_wave`).
    """
    (qrs_on, qrs_off), (next_p, next_qrs) = qrs, next_beat
    window, cut = _n(T_AREA_WINDOW_S), _n(T_AREA_CUT_S)
    if rr < _n(T_SEARCH_SWITCH_RR_S):
        low, high = math.floor(0.15 * rr + _n(0.148)), math.ceil(0.7 * rr - _n(0.036))
    else:
        low, high = _n(0.28), math.ceil(0.2 * rr + _n(0.404))
    lo = max(r_index + low, qrs_off + _n(0.04), window)
    hi = min(r_index + high, next_qrs, beat.shape[1] - cut - 1)
    if next_p - lo >= cut:  # a "P wave" found inside the QRS-T is no bound
        hi = min(hi, next_p)
    if hi - lo < cut:
        return None, None
    # Running sums over the stretch the candidates k = lo..hi need: total[:, j] is the sum of
    # beat[:, first : first + j].
    first = lo + 1 - window
    total = np.zeros((beat.shape[0], hi + cut + 2 - first))
    np.cumsum(beat[:, first : hi + cut + 1], axis=1, out=total[:, 1:])
    n = hi + 1 - lo
    at = lo - first  # index in total of the sum up to (not including) sample lo
    level = (total[:, at + cut + 1 : at + cut + 1 + n] - total[:, at - cut : at - cut + n]) / (
        2 * cut + 1
    )
    area = total[:, at + 1 : at + 1 + n] - total[:, :n] - window * level  # (leads, candidates)
    rows = np.arange(area.shape[0])
    up, down = np.argmax(area, axis=1), np.argmin(area, axis=1)
    up_size, down_size = area[rows, up], -area[rows, down]
    # Per lead, the later candidate unless the earlier one is far larger.
    up_first = up < down
    earlier_size = np.where(up_first, up_size, down_size)
    later_size = np.where(up_first, down_size, up_size)
    take_up = up_first == (earlier_size > T_EARLIER_FACTOR * later_size)
    ends = lo + np.where(take_up, up, down)
    sizes = np.where(take_up, up_size, down_size)
    signs = np.where(take_up, 1.0, -1.0)
    st = max(qrs_off + _n(0.04), lo - window)  # from the ST segment on
    upright = signs[:, None] * beat  # every lead with its T wave upright
    u_peaks = []  # peaks of the U waves taller than their lead's T wave
    # Every lead's humps at once, before any lead's T end moves (each reads its own end).
    humps = prominent_tops_of_rows(upright, st, ends + 1, U_NOTCH_MV)
    for i in range(ends.size):  # a merged U wave is no part of the lead's T wave
        found = _t_u_notch(upright[i], st, int(ends[i]), humps[i])
        if found is None or found.notch < lo + cut:
            continue
        if _prolonged_not_short(np.array([ends[i], found.notch]), qrs_on, rr_s):
            # Zhang's T end again, in the window closed at the notch.
            ends[i] = lo + int(np.argmax(signs[i] * area[i, : found.notch - lo + 1]))
            wave = upright[i]
            if wave[found.u_peak] - wave[found.notch] > wave[found.t_peak] - wave[found.notch]:
                u_peaks.append(found.u_peak)
    if u_peaks:
        _before_u_wave(
            ends, (upright, signs[:, None] * area), (lo, qrs_off, qrs_on), min(u_peaks), rr_s
        )
    strong = sizes >= T_LEAD_SHARE * sizes.max()
    # A lead whose area still grows at the end of the window found no T end inside it: a flat T
    # on a drifting baseline, or a T wave that outlasts the window (long QT at a fast rate).
    # Where enough other clear leads found their T end inside, they decide (12 leads); with
    # one or two leads (Holter) the window's end is the best answer there is.
    inside = strong & (ends < hi - cut)
    if inside.sum() >= T_CONSENSUS_LEADS:
        strong = inside
    strong = np.flatnonzero(strong)
    lead = int(strong[np.argmax(ends[strong])])
    sign = 1 if take_up[lead] else -1
    t_end = int(ends[lead])
    # T peak: the extreme of that lead's T wave in the 240 ms before its end (Zhang's rule).
    start = max(qrs_off, t_end - _n(0.24))
    t_peak = start + int(np.argmax(sign * beat[lead, start : t_end + 1]))
    return t_peak, t_end


def _prolonged_not_short(ends: np.ndarray, qrs_on: int, rr_s: float) -> bool:
    """Whether T ends (later, earlier) read a prolonged and a not-short QTc (Bazett)."""
    qtc = (ends - qrs_on) / WORK_FS / math.sqrt(rr_s)
    return bool(qtc[0] >= QTC_PROLONGED_S and qtc[1] >= QTC_SHORT_S)


def _before_u_wave(
    ends: np.ndarray,
    waves: tuple[np.ndarray, np.ndarray],
    window: tuple[int, int, int],
    u_peak: int,
    rr_s: float,
) -> None:
    """Every lead's T end no later than the peak of a U wave found in one lead (in place).

    ``waves``: the leads with their T wave upright and their area indicator times the T
    polarity (largest at the T end); ``window``: the first T-end candidate, the QRS offset and
    onset. A lead's T end after ``u_peak`` is found again by Zhang's method in the window closed
    at the U peak, where its own T peak lies at least U_HUMP_GAP_S before it and the readings
    are a prolonged QTc and, bounded, not a short one (see the comment above U_HUMP_GAP_S).
    """
    upright, area = waves
    lo, qrs_off, qrs_on = window
    if u_peak - lo < _n(T_AREA_CUT_S):
        return
    for i in np.flatnonzero(ends > u_peak):
        start = max(qrs_off, int(ends[i]) - _n(0.24))  # the T peak as in Zhang's rule
        t_peak = start + int(np.argmax(upright[i, start : int(ends[i]) + 1]))
        bounded = lo + int(np.argmax(area[i, : u_peak - lo + 1]))
        if u_peak - t_peak >= _n(U_HUMP_GAP_S) and _prolonged_not_short(
            np.array([ends[i], bounded]), qrs_on, rr_s
        ):
            ends[i] = bounded


class _TUNotch(NamedTuple):
    """Samples of a T hump, the notch after it and the U hump after that."""

    t_peak: int
    notch: int
    u_peak: int


def _t_u_notch(
    wave: np.ndarray, start: int, end: int, tops: np.ndarray | None = None
) -> _TUNotch | None:
    """The notch between a T wave and a U wave merged into it, in ``wave[start : end + 1]``.

    ``wave`` is the lead with its T wave upright. The last hump of at least U_NOTCH_MV
    prominence is the U wave candidate, the largest hump before it the T wave; None where
    there are not two such humps U_HUMP_GAP_S apart with a notch U_NOTCH_MV deep between them.
    ``tops``: those humps (indices in the stretch) when already found.
    """
    segment = wave[start : end + 1]
    if tops is None:
        tops, _ = prominent_peaks(segment, U_NOTCH_MV)
    if tops.size < 2:
        return None
    u = int(tops[-1])
    t = int(tops[:-1][np.argmax(segment[tops[:-1]])])
    notch = t + int(np.argmin(segment[t : u + 1]))
    depth = min(segment[t], segment[u]) - segment[notch]
    if u - t < _n(U_HUMP_GAP_S) or depth < U_NOTCH_MV:
        return None
    return _TUNotch(start + t, start + notch, start + u)
