"""Premature beats: ventricular (another QRS shape, early) and supraventricular (same shape,
early), counted over the beats of a recording.

Definitions (AHA/ACCF/HRS 2007 part II statement list; the counting rules are the usual ones
of Holter beat classification):

* a beat is **premature** when the interval into it (its coupling interval) is shorter than
  :data:`PREMATURE_SHARE` of the reference cycle, the median RR between beats of the dominant
  QRS shape: the sinus cycle the ectopic beat interrupts;
* a **ventricular premature beat** is premature and has a QRS that does not match the
  dominant shape (:data:`models.delineation.MIN_QRS_CORRELATION`): a ventricular origin, or
  an aberrantly conducted supraventricular beat, which a QRS alone cannot tell apart;
* a **supraventricular premature beat** keeps the dominant QRS shape, is premature by
  :data:`SUPRAVENTRICULAR_SHARE` against the reference cycle *and* against the cycle before it
  (sinus arrhythmia shortens cycles gradually, a premature atrial beat suddenly), and is
  followed by a longer interval than its coupling (the pause that resets the sinus node).

Only beats whose whole median-beat window lies inside the recording are judged (their shape
was compared); the counts are per recording, as the criteria read them ("one or more").
"""

from __future__ import annotations

import numpy as np

from models.delineation import BEAT_AFTER_S, BEAT_BEFORE_S, WORK_FS
from models.order_stats import median

#: A beat whose coupling interval is below this share of the reference cycle is premature.
PREMATURE_SHARE = 0.9
#: A dominant-shape (supraventricular) beat must be this premature: sinus arrhythmia alone
#: moves consecutive cycles by a few per cent, rarely by 20 %.
SUPRAVENTRICULAR_SHARE = 0.8


def premature_beats(
    peaks: np.ndarray, dominant: np.ndarray, n_samples: int
) -> tuple[float | None, float | None]:
    """(ventricular, supraventricular) premature beat counts; None where not judged.

    ``peaks`` are all R peaks (samples at :data:`WORK_FS`), ``dominant`` those whose QRS
    matched the dominant shape, ``n_samples`` the recording's length at that rate.
    """
    before, after = round(BEAT_BEFORE_S * WORK_FS), round(BEAT_AFTER_S * WORK_FS)
    judged = (peaks - before >= 0) & (peaks + after < n_samples)
    same_shape = members(peaks, dominant)
    rr = np.diff(peaks).astype(np.float64)
    # The reference cycle: intervals between two dominant-shape beats.
    between_dominant = rr[same_shape[:-1] & same_shape[1:]]
    if between_dominant.size < 2:  # bigeminy: every dominant beat follows an ectopic one
        between_dominant = rr[same_shape[1:]]
    if between_dominant.size < 2:
        return None, None
    reference = median(between_dominant)
    ventricular = supraventricular = 0
    # Python lists for the loop over beats: the same floats, without a numpy scalar per step.
    judged_list, same_list, rr_list = judged.tolist(), same_shape.tolist(), rr.tolist()
    for i in range(1, peaks.size):
        if not judged_list[i]:
            continue
        coupling = rr_list[i - 1]
        if coupling >= PREMATURE_SHARE * reference:
            continue
        if not same_list[i]:
            ventricular += 1
            continue
        previous = rr_list[i - 2] if i >= 2 else reference
        following = rr_list[i] if i < len(rr_list) else None
        if (
            coupling < SUPRAVENTRICULAR_SHARE * reference
            and coupling < SUPRAVENTRICULAR_SHARE * previous
            and following is not None
            and following > coupling
        ):
            supraventricular += 1
    return float(ventricular), float(supraventricular)


def members(values: np.ndarray, of: np.ndarray) -> np.ndarray:
    """``np.isin(values, of)`` for integer arrays (R-peak indices): a binary search of each
    value in ``of`` sorted, a fifth of np.isin's cost on a record's dozen beats."""
    if of.size == 0:
        return np.zeros(values.shape, dtype=bool)
    ordered = np.sort(of)
    found = ordered[np.minimum(np.searchsorted(ordered, values), ordered.size - 1)]
    return np.asarray(found == values)
