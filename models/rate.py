"""Heart rate measured from the model-rate signal, to add rate facts to the training text.

PTB-XL states SBRAD or STACH for a handful of records only, so the model saw too few
examples of "slow" and "fast" to learn rate. The rate itself is in every signal: this simple
R-peak detector (QRS energy over all leads) turns it into two extra facts per record,
"bradycardia" (< 60/min) and "tachycardia" (> 100/min). It runs on the preprocessed signal
(100 Hz, normalised), where its precision is enough for those two thresholds.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import find_peaks

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
