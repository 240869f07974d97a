"""Per-lead amplitudes and shapes of the median beat: P, QRS waves, ST level, T, voltages.

Input: the wide-band median beat (no low-pass beyond the 125 Hz of the working rate) of the
standard leads, re-referenced to the PR segment just before QRS onset, and the global wave
boundaries from :mod:`models.delineation`. Wave naming follows the AHA/ACCF/HRS 2009
recommendations (part II): Q is an initial negative deflection, R any positive deflection,
S a negative deflection after an R, R' a second positive deflection; deflections smaller
than :data:`MIN_WAVE_MV` are not counted as waves (the CSE convention uses 20-30 uV).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from models.delineation import WORK_FS, Waves

#: Smallest deflection counted as a QRS wave (mV).
MIN_WAVE_MV = 0.05
#: A notch: a dip of at least this (mV), and this share of the smaller peak, between two
#: peaks of the same polarity inside the QRS.
NOTCH_MIN_MV = 0.05
NOTCH_MIN_SHARE = 0.1
#: ... and the smaller peak at least this share of the larger one.
NOTCH_PEAK_SHARE = 0.3
#: A last QRS deflection that is still at this share of its peak at the QRS end is the ST
#: segment, not a wave.
TERMINAL_SHARE = 0.8
#: ST level is read at J and J + 60 ms, averaged over +-8 ms (4 samples) against noise.
ST_OFFSET_S = 0.06
ST_HALF_WINDOW_S = 0.008
PRECORDIAL = ("V1", "V2", "V3", "V4", "V5", "V6")

MS = 1000.0 / WORK_FS

Values = dict[str, float | None]
PerLead = dict[str, dict[str, float]]


class _Wave(NamedTuple):
    # A named tuple, not a frozen dataclass: about a dozen are made per lead and ECG, and a
    # frozen dataclass's __init__ (one object.__setattr__ per field) cost a third of that.
    sign: int  # +1 positive, -1 negative
    start: int  # first sample (relative to QRS onset)
    stop: int  # one past the last sample
    peak: float  # signed extreme


def qrs_waves(qrs: Sequence[float]) -> list[_Wave]:
    """Positive and negative deflections of one lead's QRS (baseline 0), small ones merged.

    ``qrs`` is a plain list (or array) of about 10-60 samples: on so few, Python's own loops
    are several times faster than a numpy call per step, and give the same floats.
    """
    n = len(qrs)
    waves: list[_Wave] = []
    a = 0
    while a < n:
        b = a + 1
        if qrs[a] > 0:
            while b < n and qrs[b] > 0:
                b += 1
            s, peak = 1, float(max(qrs[a:b]))
        else:
            while b < n and not qrs[b] > 0:
                b += 1
            s, peak = -1, float(min(qrs[a:b]))
        if abs(peak) >= MIN_WAVE_MV:
            if waves and waves[-1].sign == s:  # a small opposite wiggle between: one wave
                last = waves[-1]
                better = peak if abs(peak) > abs(last.peak) else last.peak
                waves[-1] = _Wave(s, last.start, b, better)
            else:
                waves.append(_Wave(s, a, b, peak))
        a = b
    # A last deflection still growing at the QRS end is the ST segment leaving the baseline
    # (ST elevation or depression at J), not a wave: the global QRS end is the latest over
    # all leads, so in some leads the ST segment has begun before it.
    if len(waves) > 1:
        last = waves[-1]
        if abs(float(qrs[-1])) >= TERMINAL_SHARE * abs(last.peak):
            waves.pop()
    return waves


def _local_maxima(part: Sequence[float]) -> list[int]:
    """Indices of the inner samples above their left and not below their right neighbour."""
    # Neighbours paired by zip rather than indexed: the same comparisons, half the time.
    triples = zip(part, part[1:], part[2:], strict=False)  # the shorter slices end it
    return [i for i, (left, v, right) in enumerate(triples, 1) if v > left and v >= right]


def _notched(
    qrs: Sequence[float], waves: list[_Wave], maxima: Mapping[int, list[int]] | None = None
) -> bool:
    """Two peaks of one polarity inside the QRS, with a real dip between them.

    ``maxima``: the local maxima of positive waves already found, by the wave's start.
    """
    same = [w for w in waves if w.sign > 0]
    if len(same) >= 2:
        return True  # R and R'
    for w in waves:
        part = qrs[w.start : w.stop] if w.sign > 0 else [-v for v in qrs[w.start : w.stop]]
        if len(part) < 5:
            continue
        # Local maxima of |deflection| within this wave.
        known = maxima.get(w.start) if maxima is not None and w.sign > 0 else None
        inner = _local_maxima(part) if known is None else known
        if len(inner) < 2:
            continue
        # The two tallest (ties: the later one first, as a stable ascending sort reversed).
        ranked = sorted(range(len(inner)), key=lambda k: part[inner[k]])[::-1][:2]
        a, b = sorted(inner[k] for k in ranked)
        dip = min(part[a : b + 1])
        smaller = min(part[a], part[b])
        if smaller < NOTCH_PEAK_SHARE * max(part[a], part[b]):
            continue  # a bump on the slope (or on the ST segment), not a second peak
        if smaller - dip >= max(NOTCH_MIN_MV, NOTCH_MIN_SHARE * smaller):
            return True
    return False


class QrsShape(NamedTuple):
    r: float  # mV, >= 0
    s: float  # mV depth, >= 0
    q_ms: float
    r_peak_ms: float | None  # None without an R wave
    terminal_s_ms: float
    notched: bool
    rsr_prime: bool


def qrs_shape(qrs: np.ndarray | Sequence[float]) -> QrsShape:
    samples: list[float] = qrs.tolist() if isinstance(qrs, np.ndarray) else list(qrs)
    waves = qrs_waves(samples)
    positive = [w for w in waves if w.sign > 0]
    r = max((w.peak for w in positive), default=0.0)
    if positive:
        first_r = waves.index(positive[0])
        after = [w for w in waves[first_r + 1 :] if w.sign < 0]
        s = -min((w.peak for w in after), default=0.0)
        q_ms = (positive[0].start * MS) if first_r > 0 else 0.0
        last_r = positive[-1]
        top = samples[last_r.start : last_r.stop]
        r_peak_ms: float | None = (last_r.start + top.index(max(top))) * MS
    else:  # QS complex: the whole QRS is negative
        s = -float(min(samples)) if samples else 0.0
        q_ms = len(samples) * MS if waves else 0.0
        r_peak_ms = None
    terminal = waves[-1] if waves else None
    terminal_s_ms = (
        (len(samples) - terminal.start) * MS
        if terminal is not None and terminal.sign < 0 and positive
        else 0.0
    )
    signs = [w.sign for w in waves]
    rsr = any(signs[i : i + 3] == [1, -1, 1] for i in range(len(signs) - 2))
    maxima: dict[int, list[int]] = {}  # a positive wave's local maxima, found once
    for w in positive if not rsr else ():
        part = samples[w.start : w.stop]
        if len(part) >= 5:
            maxima[w.start] = _local_maxima(part)
            if _r_prime_notch(part, maxima[w.start]):
                rsr = True
                break
    notched = _notched(samples, waves, maxima)
    return QrsShape(r, s, q_ms, r_peak_ms, terminal_s_ms, notched, rsr)


def _r_prime_notch(part: Sequence[float], inner: list[int] | None = None) -> bool:
    """An M-shaped R (rR'): a later, taller peak after a dip that does not reach the baseline.

    ``inner``: the part's local maxima, when already found.
    """
    if len(part) < 5:
        return False
    if inner is None:
        inner = _local_maxima(part)
    if len(inner) < 2:
        return False
    tallest = max(inner, key=part.__getitem__)  # the first of equal maxima, as np.argmax
    earlier = [i for i in inner if i < tallest]
    if not earlier:
        return False
    first = max(earlier, key=part.__getitem__)
    dip = min(part[first : tallest + 1])
    return float(part[first]) >= MIN_WAVE_MV and float(part[first]) - dip >= NOTCH_MIN_MV


def _levels(beat: np.ndarray, at: int) -> np.ndarray:
    """Per lead, the mean over +-ST_HALF_WINDOW_S around sample ``at`` (one call, all leads)."""
    h = max(1, round(ST_HALF_WINDOW_S * WORK_FS))
    lo, hi = max(0, at - h), min(beat.shape[1], at + h + 1)
    return np.asarray(beat[:, lo:hi].mean(axis=1))


def _extremes(part: np.ndarray) -> np.ndarray:
    """Per lead (row), the signed value of largest magnitude (the first of equal ones)."""
    at = np.argmax(np.abs(part), axis=1)
    return np.asarray(part[np.arange(part.shape[0]), at])


def _terminal_negative_force(p: np.ndarray) -> float:
    """Depth (mV) x duration (ms) of the negative part that ends the P wave; 0 if none."""
    if p.size < 3:
        return 0.0
    negative = p < 0
    half = p.size // 2
    if not negative[half:].any():
        return 0.0
    # The last negative stretch that reaches into the second half of the P wave.
    end = half + int(np.flatnonzero(negative[half:])[-1]) + 1
    start = end
    while start > 0 and negative[start - 1]:
        start -= 1
    return float(-p[start:end].min() * (end - start) * MS)


def _axis(lead_i: float, lead_avf: float) -> float | None:
    """Frontal axis from net areas in I and aVF: a = atan2(2 aVF / sqrt(3), I)."""
    if abs(lead_i) + abs(lead_avf) < 1e-9:
        return None
    return float(round(math.degrees(math.atan2(2.0 * lead_avf / math.sqrt(3.0), lead_i))))


def lead_features(wide: np.ndarray, leads: Sequence[str], waves: Waves) -> tuple[Values, PerLead]:
    """Per-lead values and the global values derived from them (voltages, axes, transition).

    ``wide``: (leads, L) median beats of the usable standard leads named by ``leads``.
    """
    values: Values = {}
    per: PerLead = {}
    if waves.qrs_on is None or waves.qrs_off is None or not leads:
        return values, per
    on, off = waves.qrs_on, waves.qrs_off
    # Re-reference every lead to its PR segment: the 20 ms just before QRS onset.
    beat = wide - wide[:, max(0, on - round(0.02 * WORK_FS)) : on + 1].mean(axis=1, keepdims=True)
    index = {name: i for i, name in enumerate(leads)}
    qrs_rows = beat[:, on : off + 1].tolist()
    shapes = {name: qrs_shape(qrs_rows[i]) for name, i in index.items()}

    # Every per-lead level below is one numpy call over all leads, not one per lead.
    j60 = off + round(ST_OFFSET_S * WORK_FS)
    st60_ok = waves.t_end is None or j60 < waves.t_end
    st_j = _levels(beat, off).tolist()
    st_j60 = _levels(beat, j60).tolist() if st60_ok and j60 < beat.shape[1] else None
    t_amplitude = (
        _extremes(beat[:, off + 4 : waves.t_end + 1]).tolist()
        if waves.t_end is not None and waves.t_end - off > 4
        else None
    )
    p_amplitude = (
        _extremes(beat[:, waves.p_on : waves.p_off + 1]).tolist()
        if waves.p_on is not None and waves.p_off is not None and waves.p_off > waves.p_on
        else None
    )
    names = list(index)
    columns: list[tuple[str, Sequence[float | None], int]] = [
        ("r_amplitude", [shapes[n].r for n in names], 3),
        ("s_amplitude", [shapes[n].s for n in names], 3),
        ("q_duration", [shapes[n].q_ms for n in names], 0),
        ("r_peak_time", [shapes[n].r_peak_ms for n in names], 0),
        ("terminal_s_duration", [shapes[n].terminal_s_ms for n in names], 0),
        ("qrs_notched", [float(shapes[n].notched) for n in names], 0),
    ]
    levels = (("st_j", st_j), ("st_j60", st_j60), ("t_amplitude", t_amplitude))
    for key, level in (*levels, ("p_amplitude", p_amplitude)):
        if level is not None:
            columns.append((key, [level[index[n]] for n in names], 3))
    # One dict per key, leads in order ("+ 0.0": no -0.0), keys without a value left out.
    for key, column, digits in columns:
        lead_values = {
            n: round(float(v), digits) + 0.0
            for n, v in zip(names, column, strict=True)
            if v is not None
        }
        if lead_values:
            per[key] = lead_values

    def r(lead: str) -> float | None:
        return shapes[lead].r if lead in shapes else None

    def s(lead: str) -> float | None:
        return shapes[lead].s if lead in shapes else None

    s_v1, r_v5, r_v6 = s("V1"), r("V5"), r("V6")
    if s_v1 is not None and (r_v5 is not None or r_v6 is not None):
        values["sokolow_lyon"] = round(s_v1 + max(v for v in (r_v5, r_v6) if v is not None), 3)
    r_avl, s_v3 = r("aVL"), s("V3")
    if r_avl is not None and s_v3 is not None:
        values["cornell_voltage"] = round(r_avl + s_v3, 3)
    if all(v in shapes for v in PRECORDIAL):
        transition = next((n for n, v in enumerate(PRECORDIAL, 1) if shapes[v].r >= shapes[v].s), 7)
        values["r_wave_transition"] = float(transition)
    if "V1" in shapes or "V2" in shapes:
        values["rsr_prime_v1"] = float(
            any(shapes[v].rsr_prime for v in ("V1", "V2") if v in shapes)
        )

    if waves.p_on is not None and waves.p_off is not None:
        values["p_duration"] = float(round((waves.p_off - waves.p_on) * MS))
        if "V1" in index:
            p_v1 = beat[index["V1"], waves.p_on : waves.p_off + 1]
            values["p_terminal_force_v1"] = round(_terminal_negative_force(p_v1), 1)
    if "I" in index and "aVF" in index:
        i, f = index["I"], index["aVF"]
        if waves.p_on is not None and waves.p_off is not None:
            p = slice(waves.p_on, waves.p_off + 1)
            values["p_axis"] = _axis(float(beat[i, p].sum()), float(beat[f, p].sum()))
        if waves.t_end is not None:
            t = slice(off, waves.t_end + 1)
            values["t_axis"] = _axis(float(beat[i, t].sum()), float(beat[f, t].sum()))
    return values, per


def summarise(per: PerLead, summaries: Mapping[str, str]) -> Values:
    """The scalar ``value`` of each lead-wise key from its per-lead values (see SPECS)."""
    values: Values = {}
    for key, how in summaries.items():
        leads = per.get(key)
        if not leads:
            continue
        items = list(leads.values())
        if how == "max":
            values[key] = max(items)
        elif how == "any":
            values[key] = float(max(items) > 0)
        elif how == "extreme":
            values[key] = max(items, key=abs)
        else:  # a named pair of leads, e.g. "V5V6", "IV6"
            pair = ("V5", "V6") if how == "V5V6" else ("I", "V6")
            chosen = [leads[v] for v in pair if v in leads]
            if chosen:
                values[key] = max(chosen)
    return values
