"""``scipy.signal.sosfilt`` along the rows of a 2-D array, its compiled core called directly.

The measurements and the preprocessing run a handful of zero-phase Butterworth filters per
ECG (two passes each). ``sosfilt``'s own argument checks, axis moves and copies cost about
as much as its compiled loop on one 10 s lead at 250 Hz; the callers already hold C-ordered
float64 rows and the initial state in the core's layout, so they call the core directly.
The same routine runs on the same numbers: results are identical.
"""

from __future__ import annotations

import functools

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


def sosfiltfilt_rows(sos: np.ndarray, zi: np.ndarray, edge: int, x: np.ndarray) -> np.ndarray:
    """``scipy.signal.sosfiltfilt(sos, x, axis=-1, padlen=edge)`` of a 2-D float64 ``x``
    (odd padding), ``zi`` the filter's ``sosfilt_zi``: its steps and floats, with the padded
    rows written into one array (no pieces to concatenate) and the filter core called
    directly. ``0 < edge < x.shape[1]``. A new (rows, n) array, a view of the padded one."""
    n = x.shape[1]
    ext = np.empty((x.shape[0], n + 2 * edge))
    np.subtract(2 * x[:, :1], x[:, edge:0:-1], out=ext[:, :edge])
    ext[:, edge : edge + n] = x
    np.subtract(2 * x[:, -1:], x[:, -2 : -edge - 2 : -1], out=ext[:, edge + n :])
    y = sosfilt_rows(sos, ext, zi[None, :, :] * ext[:, None, :1])
    back = np.ascontiguousarray(y[:, ::-1])
    y = sosfilt_rows(sos, back, zi[None, :, :] * back[:, None, :1])
    return np.asarray(y[:, ::-1][:, edge : edge + n])


@functools.lru_cache(maxsize=64)
def butter_sections(
    order: int, cutoff: float | tuple[float, ...], btype: str, fs: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """A Butterworth filter's second-order sections at ``fs``, their ``sosfilt_zi`` and the
    pad length ``scipy.signal.sosfiltfilt`` gives it by default (3 x its ``ntaps``), made once
    per filter: designing it on every call cost as much as filtering a 10 s record.
    ``cutoff``: one frequency, or a (low, high) band."""
    frequencies = list(cutoff) if isinstance(cutoff, tuple) else cutoff
    sos = np.asarray(scipy.signal.butter(order, frequencies, btype=btype, fs=fs, output="sos"))
    ntaps = 2 * sos.shape[0] + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return sos, np.asarray(scipy.signal.sosfilt_zi(sos)), 3 * ntaps
