"""Power-line (mains) interference removed from a record before it is measured.

Mains hum passes the delineation's 40 Hz low-pass only in part and the wide-band median beat
(Q, R and S waves, voltages) not at all, and a median of ten beats leaves much of it. On
PTB-XL and CinC records, 50 uV of added 60 Hz turned QS complexes in III and aVF into rS
(Q 92 -> 0 ms) and dropped the fused macro AUROC of the held-out records from 0.862 to 0.845
(``benchmarks/eval_site_shift.py``). Electrocardiographs filter it themselves (an AC filter,
AHA/ACCF/HRS 2007 standardization part I), but a file does not say whether that was done,
nor which mains frequency its site has.

So the hum is measured, and removed only where it is there: a sinusoid at 50 or 60 Hz
(with its second harmonic, where sampled, fitted jointly) whose amplitude reaches
:data:`MAINS_MIN_MV` in some lead is fitted by least squares over the whole record, at the
frequency the spectrum shows, and subtracted from every lead. A fitted sinusoid holds
nothing but the hum and the record's own content in a 1/T-wide band (0.1 Hz for 10 s), so,
unlike a notch filter, it neither rings after sharp QRS complexes nor blunts their peaks
(a 50/60 Hz notch tried first moved R and S amplitudes of most PTB-XL records by 5-30 uV);
a record without hum is returned unchanged (the same array). Of the 661 PTB-XL and CinC
records we hold, 43 carry 10 uV or more (up to 1 mV in one Ningbo lead).
"""

from __future__ import annotations

import functools

import numpy as np

#: Mains frequencies (Hz): 50 in most of the world, 60 in the Americas and parts of Asia.
MAINS_HZ = (50.0, 60.0)
#: The grid's frequency is looked for this far (Hz) from the nominal one.
SEARCH_HZ = 1.0
#: Hum of at least this amplitude (mV) in some lead is removed: half the smallest wave the
#: CSE measurement convention counts (20 uV), a tenth of the waves this product counts.
MAINS_MIN_MV = 0.01
#: A harmonic is fitted only below this share of the sampling rate (clear of the resampling
#: filter's transition band).
HARMONIC_LIMIT = 0.45


@functools.lru_cache(maxsize=16)
def _hann(n: int) -> np.ndarray:
    window = np.hanning(n)
    window.flags.writeable = False
    return window


def hum_bound(spectrum: np.ndarray, n: int, fs: float) -> float:
    """The largest hum amplitude (mV) a lead can carry near the mains frequencies, from the
    record's plain (unwindowed) real spectrum ``spectrum`` (leads, n // 2 + 1) of ``n``
    samples, its mean or trend removed. A sinusoid of amplitude A has |X| >= 0.637 A n / 2
    at its nearest bin (the rectangular window's worst scalloping, half a bin off), so no
    lead carries more than this. The quality gate has that spectrum anyway: where the bound
    is under :data:`MAINS_MIN_MV`, :func:`without_mains` needs no spectrum of its own."""
    peak = 0.0
    for nominal in MAINS_HZ:
        low, high = _search_bins(nominal, fs / n, spectrum.shape[1], margin=0)
        if high >= low:
            peak = max(peak, float(np.abs(spectrum[:, low : high + 1]).max()))
    return 2.0 * peak / n / 0.637


def _search_bins(nominal: float, step: float, bins: int, margin: int) -> tuple[int, int]:
    """First and last bin (of ``bins``, ``step`` Hz apart) within :data:`SEARCH_HZ` of
    ``nominal``, keeping ``margin`` bins clear of either end of the spectrum."""
    low = max(margin, int(np.ceil((nominal - SEARCH_HZ) / step)))
    high = min(bins - 1 - margin, int(np.floor((nominal + SEARCH_HZ) / step)))
    return low, high


def without_mains(x: np.ndarray, fs: float, bound_mv: float | None = None) -> np.ndarray:
    """``x`` (leads, n) with the mains hum it carries subtracted; ``x`` itself when none.

    ``bound_mv``: the most hum any row of ``x`` can carry (:func:`hum_bound`), when known;
    under :data:`MAINS_MIN_MV` nothing is looked for (the spectrum below is the cost here).
    """
    n = x.shape[1]
    if n < int(fs):  # under a second: too short to tell a hum from the signal
        return x
    if bound_mv is not None and bound_mv < MAINS_MIN_MV:
        return x
    centred = x - x.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(centred * _hann(n), axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).sum(axis=0)
    frequencies = []
    for nominal in MAINS_HZ:
        if nominal >= HARMONIC_LIMIT * fs:
            continue
        found = _hum_frequency(spectrum, power, nominal, fs, n)
        if found is not None:
            frequencies.append(found)
    if not frequencies:
        return x
    t = np.arange(n) / fs
    hum = np.zeros_like(centred)
    for f in frequencies:
        columns = [np.cos(2 * np.pi * f * t), np.sin(2 * np.pi * f * t)]
        if 2.0 * f < HARMONIC_LIMIT * fs:
            columns += [np.cos(4 * np.pi * f * t), np.sin(4 * np.pi * f * t)]
        basis = np.column_stack(columns)  # (n, 2 per sinusoid)
        # Least squares by the normal equations: over a second or more (50+ cycles) these
        # sinusoids are all but orthogonal (Gram matrix ~ n/2 times the identity), so the 4 x 4
        # solve is as exact as np.linalg.lstsq's SVD (1e-16 apart) at a thirtieth of its cost.
        coefficients = np.linalg.solve(basis.T @ basis, basis.T @ centred.T)  # (columns, leads)
        if float(np.hypot(coefficients[0], coefficients[1]).max()) >= MAINS_MIN_MV:
            hum += (basis @ coefficients).T  # the fundamental reaches the limit in some lead
    if not hum.any():
        return x
    return np.asarray(x - hum)


def _hum_frequency(
    spectrum: np.ndarray, power: np.ndarray, nominal: float, fs: float, n: int
) -> float | None:
    """The hum's frequency near ``nominal`` (Hz), or None when no lead can carry one of
    :data:`MAINS_MIN_MV` or more. The peak bin of the leads' summed power within
    :data:`SEARCH_HZ`, refined by a parabola through the log power of it and its neighbours
    (a Hann window's peak: a few hundredths of a bin off, a phase drift of a few degrees
    over the record)."""
    step = fs / n
    low, high = _search_bins(nominal, step, len(power), margin=1)  # neighbours for the parabola
    if high <= low:
        return None
    k = low + int(np.argmax(power[low : high + 1]))
    # A sinusoid of amplitude A on a bin has |X| = A n / 4 under a Hann window; between two
    # bins, at least 0.85 of that (the window's scalloping loss). This only skips the fit
    # where no lead can hold enough hum; the fitted amplitude decides.
    amplitude = 4.0 * float(np.abs(spectrum[:, k]).max()) / n
    if amplitude < 0.85 * MAINS_MIN_MV:
        return None
    a, b, c = np.log(np.maximum(power[k - 1 : k + 2], 1e-300))
    curvature = a - 2.0 * b + c
    offset = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
    return (k + float(np.clip(offset, -0.5, 0.5))) * step
