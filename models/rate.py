"""Facts measured from the signal, added to the training text: rate, rhythm regularity, QRS, PR.

PTB-XL states SBRAD or STACH for a handful of records only, so the model saw too few
examples of "slow" and "fast" to learn rate. The rate itself is in every signal: this simple
R-peak detector (QRS energy over all leads) turns it into two extra facts per record,
"bradycardia" (< 60/min) and "tachycardia" (> 100/min). It runs on the preprocessed signal
(100 Hz, normalised), where its precision is enough for those two thresholds.

:func:`interval_fact_keys` does the same for intervals from :func:`models.measurements.measure`
(RR irregularity, QRS duration, PR interval): "irregular rhythm", "wide QRS", "prolonged PR".
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.signal import find_peaks

from models.results import Measurement

MIN_BEATS = 4


def estimate_heart_rate(x: np.ndarray, fs: float) -> float | None:
    """Median heart rate (/min) of a (leads, samples) array, or None when no rhythm is found."""
    if x.shape[1] < fs * 3:
        return None
    energy = np.abs(np.diff(x, axis=1)).sum(axis=0)
    width = max(1, round(0.05 * fs))
    energy = np.convolve(energy, np.ones(width) / width, mode="same")
    top = float(np.percentile(energy, 99))
    if top <= 0:
        return None
    peaks, _ = find_peaks(energy, distance=max(1, round(0.3 * fs)), height=0.35 * top)
    if len(peaks) < MIN_BEATS:
        return None
    return float(60.0 * fs / np.median(np.diff(peaks)))


def rate_fact_keys(heart_rate: float | None) -> tuple[str, ...]:
    if heart_rate is None:
        return ()
    if heart_rate < 60.0:
        return ("rate:brady",)
    if heart_rate > 100.0:
        return ("rate:tachy",)
    return ("rate:normal",)


#: Thresholds: RR irregularity (relative spread of RR intervals) above which a rhythm is
#: irregular (PTB-XL: SR 0.02-0.06, AFIB 0.11-0.31), below which it is regular; QRS >= 120 ms
#: is wide (bundle branch block); PR > 200 ms is prolonged (first degree AV block).
RR_IRREGULAR = 0.10
RR_REGULAR = 0.05
QRS_WIDE_MS = 120.0
PR_LONG_MS = 200.0


def interval_fact_keys(measurements: Mapping[str, Measurement]) -> tuple[str, ...]:
    def value(name: str) -> float | None:
        m = measurements.get(name)
        return None if m is None or m.value is None else float(m.value)

    keys: list[str] = []
    rr = value("rr_irregularity")
    if rr is not None and rr > RR_IRREGULAR:
        keys.append("rr:irregular")
    elif rr is not None and rr < RR_REGULAR:
        keys.append("rr:regular")
    qrs = value("qrs")
    if qrs is not None and qrs >= QRS_WIDE_MS:
        keys.append("qrs:wide")
    pr = value("pr")
    if pr is not None and pr > PR_LONG_MS:
        keys.append("pr:long")
    return tuple(keys)
