"""Pacemaker spikes, found on the raw signal at the source rate.

A pacing spike is a deflection of 0.5-2 ms: narrower than any cardiac wave, so it is found
where the signal departs from the mean of its neighbours ``SPIKE_HALF_WIDTH_S`` away on both
sides (a second difference at that lag), summed over the recorded leads. Any low-pass filter
(the model's, or the 40 Hz band of the delineation) would smear it into the QRS, and a
250 Hz resampling would miss it, so this runs first, on ``Ecg.signal`` as read.

The threshold is absolute (per-lead average, mV) and relative to the record's own
high-frequency floor, so muscle noise does not count as spikes. Records sampled below
:data:`MIN_FS_HZ` (400 Hz), or stored by a cart whose low-pass filter (as the file states
it) is below :data:`MIN_LOW_PASS_HZ`, cannot show a spike reliably and get None, never
"no spikes".
"""

from __future__ import annotations

import math

import numpy as np

#: Below this rate a 1 ms spike falls between samples or is smeared by the recorder's own
#: anti-aliasing filter, and sharp QRS apexes look as narrow as spikes: on the QT Database
#: (250 Hz Holter; 2 of its 104 annotated records are paced) the detector found "spikes" in 51.
#: Resting carts record at 500 or 1000 Hz (PTB-XL 500 Hz: 6/6 paced, 0/73 unpaced records).
MIN_FS_HZ = 400.0
#: A stated low-pass below this erases the spikes before they were stored. AHA/ACCF/HRS
#: (2007, part I) asks for 150 Hz in adults; on the 6 paced PTB-XL records a one-pass
#: 4th-order 150 Hz low-pass left 7-9 of each record's 10-12 spikes, 100 Hz none
#: (benchmarks/eval_site_shift.py's filter). A record that does not state its filter is
#: read as it is.
MIN_LOW_PASS_HZ = 150.0
#: Half the width of the second difference: a spike is narrower than twice this.
SPIKE_HALF_WIDTH_S = 0.002
#: Spike strength (mean over leads of |x - mean of neighbours|, mV) must exceed this, and
#: SPIKE_FLOOR_RATIO times the record's median strength. PTB-XL at 500 Hz: normal records
#: peak at 0.04-0.09 mV, paced records at 0.4-0.8 mV.
MIN_SPIKE_MV = 0.2
SPIKE_FLOOR_RATIO = 20.0
#: A floor up to this (float32, below MIN_SPIKE_MV / SPIKE_FLOOR_RATIO with a margin for the
#: float products) leaves the threshold at MIN_SPIKE_MV.
_QUIET_FLOOR = np.float32(0.9 * MIN_SPIKE_MV / SPIKE_FLOOR_RATIO)
#: Two spikes closer than this are one (a biphasic spike, or its overshoot).
REFRACTORY_S = 0.05


def pacing_spikes(
    signal: np.ndarray, fs: float, low_pass_hz: float | None = None
) -> np.ndarray | None:
    """Sample indices (at ``fs``) of the pacing spikes in a (leads, samples) mV array.

    None when ``fs`` is too low to see one, or the cart's stated ``low_pass_hz`` erased them.
    """
    if not spikes_visible(fs, low_pass_hz) or signal.shape[1] < 3:
        return None
    lag = max(1, round(SPIKE_HALF_WIDTH_S * fs))
    x = signal.astype(np.float32, copy=False)
    # |centre - 0.5 (left + right)| in one buffer: the same float32 steps, no temporaries.
    departure = np.add(x[:, : -2 * lag], x[:, 2 * lag :])
    departure *= 0.5
    np.subtract(x[:, lag:-lag], departure, out=departure)
    np.abs(departure, out=departure)
    strength = departure.mean(axis=0)
    if np.count_nonzero(strength <= _QUIET_FLOOR) > strength.size // 2:
        # The middle value, hence the median, is at most _QUIET_FLOOR: the threshold is
        # MIN_SPIKE_MV whatever the median's exact value (every PTB-XL record; its floor is
        # at most 0.006 mV), which a count finds at a seventh of the selection's cost.
        threshold = MIN_SPIKE_MV
    else:
        threshold = max(MIN_SPIKE_MV, SPIKE_FLOOR_RATIO * _median(strength))
    candidates = np.flatnonzero(strength > threshold)
    if candidates.size == 0:
        return np.zeros(0, dtype=np.int64)
    # One spike per cluster: the strongest sample of each run closer than the refractory time.
    gap = max(1, round(REFRACTORY_S * fs))
    breaks = np.flatnonzero(np.diff(candidates) > gap) + 1
    spikes = [int(run[np.argmax(strength[run])]) + lag for run in np.split(candidates, breaks)]
    return np.asarray(spikes, dtype=np.int64)


def spikes_visible(fs: float, low_pass_hz: float | None = None) -> bool:
    """Whether a record sampled at ``fs`` behind a ``low_pass_hz`` filter can show a spike."""
    return fs >= MIN_FS_HZ and (low_pass_hz is None or low_pass_hz >= MIN_LOW_PASS_HZ)


def _median(values: np.ndarray) -> float:
    """``float(np.median(values))`` of a 1-D float32 array, numpy's own steps without its
    argument handling: a partition at the middle (and at the end, where a NaN would sort),
    the middle value or the float32 mean of the middle two; NaN where there is a NaN."""
    if values.size < 2:
        return float(np.median(values))  # numpy's NaN (and warning) for an empty array
    middle = values.size // 2
    if values.size % 2:
        part = np.partition(values, (middle, -1))
        low = high = part[middle]
    else:
        part = np.partition(values, (middle - 1, middle, -1))
        low, high = part[middle - 1], part[middle]
    if np.isnan(part[-1]):
        return math.nan
    if values.size % 2:
        return float(low)
    return float((low + high) / np.float32(2))  # np.mean of the two: float32 sum, halved


def paced_share(spikes: np.ndarray, r_peaks_s: np.ndarray, fs: float) -> float | None:
    """Share of the beats (R peaks, seconds) with a spike in the 300 ms before (or 30 ms after)."""
    if r_peaks_s.size == 0:
        return None
    if spikes.size == 0:
        return 0.0
    times = np.sort(spikes / fs)
    lo = np.searchsorted(times, r_peaks_s - 0.3)
    hi = np.searchsorted(times, r_peaks_s + 0.03)
    return float(np.mean(hi > lo))
