"""``scipy.signal.sosfilt`` along the rows of a 2-D array, its compiled core called directly.

The measurements and the preprocessing run a handful of zero-phase Butterworth filters per
ECG (two passes each). ``sosfilt``'s own argument checks, axis moves and copies cost about
as much as its compiled loop on one 10 s lead at 250 Hz; the callers already hold C-ordered
float64 rows and the initial state in the core's layout, so they call the core directly.
The same routine runs on the same numbers: results are identical.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

try:  # the compiled core of scipy.signal.sosfilt (private; present in scipy >= 1.4)
    from scipy.signal._sosfilt import _sosfilt
except ImportError:  # pragma: no cover - another scipy layout: the public call, same result
    _sosfilt = None


def sosfilt_rows(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> np.ndarray:
    """Filter each row of ``x`` (rows, n) with ``sos`` from the state ``zi`` (rows, sections, 2).

    ``x`` must be a C-ordered float64 array the caller no longer needs: it is filtered in
    place and returned (``scipy.signal.sosfilt(sos, x, axis=-1, zi=...)[0]``, same values).
    """
    if _sosfilt is None or x.dtype != np.float64 or not x.flags.c_contiguous or x.ndim != 2:
        state = np.moveaxis(zi, 1, 0)
        return np.asarray(scipy.signal.sosfilt(sos, x, axis=-1, zi=state)[0])
    _sosfilt(np.ascontiguousarray(sos, dtype=np.float64), x, np.array(zi, dtype=np.float64))
    return x
