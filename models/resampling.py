"""``scipy.signal.resample_poly`` by integer down-sampling, computed with FFTs.

The model input (to 100 Hz) and the measurements (to 250 Hz) both resample every record
with ``resample_poly``; its direct polyphase loop was the largest single cost of a
classification's signal work (0.7-0.8 ms per 500 Hz 12-lead record each). The same FIR
filter applied as a product of spectra costs a third of that, and one spectrum of the
record serves both rates: :class:`Spectra` keeps it for the ECG being analysed.

The arithmetic is the same convolution (zero padding outside the record, the filter
centred on each kept sample), evaluated in another order: results agree with
``resample_poly`` to about 1e-15 of the signal's amplitude (tests/models/test_resampling.py).
Up-sampling ratios (``up > 1``) still go to ``resample_poly``.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np
import scipy.fft
from scipy import signal as sps

#: Spectrum lengths are multiples of this (every integer down-sampling factor used from the
#: usual source rates, 500 and 1000 Hz to 100 and 250 Hz, divides it), so that one spectrum
#: can be folded to each output rate.
_BLOCK = 20
#: Zero padding kept after the record at least (the half length of a 1000 -> 100 Hz filter),
#: so one spectrum length serves every filter up to that length.
_MIN_PAD = 100


def fft_length(n: int, half: int) -> int:
    """Smallest multiple of _BLOCK, with a 2-3-5-smooth quotient, holding ``n + pad``."""
    need = n + max(half, _MIN_PAD)
    return _BLOCK * int(scipy.fft.next_fast_len(-(-need // _BLOCK), real=True))


@lru_cache(maxsize=64)
def rational_ratio(target_fs: float, fs: float) -> tuple[int, int]:
    """``(up, down)``: ``target_fs / fs`` as the nearest fraction with a denominator up to
    1000 (``Fraction.limit_denominator``, a tenth of a millisecond, made once per rate)."""
    ratio = Fraction(target_fs / fs).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


@lru_cache(maxsize=32)
def _kernel_spectrum(taps: bytes, length: int) -> np.ndarray:
    """Spectrum of the filter centred at sample 0 (its first half wrapped to the end)."""
    h = np.frombuffer(taps, dtype=np.float64)
    half = (h.size - 1) // 2
    kernel = np.zeros(length)
    kernel[: half + 1] = h[half:]
    kernel[length - half :] = h[:half]
    return np.asarray(scipy.fft.rfft(kernel))


class Spectra:
    """Spectra of the arrays one ECG's analysis resamples, each computed once.

    A later request for the same values (the model input and the measurements both start
    from the 12-lead view of the record) finds the spectrum already there. Arrays are
    compared by value, so a caller cannot get another array's spectrum by mistake.
    """

    def __init__(self) -> None:
        self._items: list[tuple[np.ndarray, int, np.ndarray]] = []
        self._wide: list[tuple[np.ndarray, np.ndarray]] = []
        #: The most mains hum (mV) any standard lead of the record can carry, read off the
        #: quality gate's spectrum (:func:`models.mains.hum_bound`); None: not known.
        self.hum_bound_mv: float | None = None

    def float64(self, x: np.ndarray) -> np.ndarray:
        """``x`` as float64, read-only, converted once per array: the model input and the
        measurements resample the same record array (:func:`adapters.record.standard_signal`
        hands both the record's own), and the same copy then finds its spectrum by identity."""
        for source, wide in self._wide:
            if source is x:
                return wide
        wide = np.array(x, dtype=np.float64)
        wide.flags.writeable = False
        self._wide.append((x, wide))
        return wide

    def of(self, x: np.ndarray, length: int) -> np.ndarray:
        for values, size, spectrum in self._items:
            if size == length and (
                values is x or (values.shape == x.shape and np.array_equal(values, x))
            ):
                return spectrum
        spectrum = np.asarray(scipy.fft.rfft(x, length, axis=1))
        self._items.append((x, length, spectrum))
        return spectrum


def decimate(
    x: np.ndarray, up: int, down: int, taps: np.ndarray, spectra: Spectra | None = None
) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, down, axis=1, window=taps)`` for float64 (leads, n).

    ``taps``: an odd-length linear-phase FIR (as ``resample_poly`` takes it).
    """
    if up != 1 or taps.size % 2 == 0 or x.shape[1] == 0:
        return np.asarray(sps.resample_poly(x, up, down, axis=1, window=taps))
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[1]
    half = (taps.size - 1) // 2
    length = fft_length(n, half)
    spectrum = (spectra or Spectra()).of(x, length)
    product = spectrum * _kernel_spectrum(np.asarray(taps, np.float64).tobytes(), length)
    n_out = -(-n // down)
    if length % down:
        return np.asarray(scipy.fft.irfft(product, length, axis=1)[:, : n_out * down : down])
    return fold(product, length, down)[:, :n_out]


def fold(spectrum: np.ndarray, length: int, down: int, low: int = 0) -> np.ndarray:
    """Every ``down``-th sample of ``irfft(spectrum, length, axis=1)``, computed at the short
    length (``length`` a multiple of ``down``).

    Keeping every down-th sample folds the spectrum: the spectrum of the kept samples is the
    mean of the ``down`` segments of the full (two-sided) spectrum. Each segment's first
    half is a slice of the one-sided spectrum, or the conjugate of a reversed slice (the
    two-sided spectrum's upper half mirrors the lower one).

    ``low``: the bins below it count as zeros (the quality gate's high-pass), as if they had
    been set to zero in a copy of ``spectrum``, without the copy.
    """
    short = length // down
    bins = short // 2 + 1
    folded: np.ndarray | None = None
    for r in range(down):
        start = r * short
        if start + bins - 1 <= length // 2:
            segment = spectrum[:, start : start + bins]
            if start < low:
                segment = np.array(segment)
                segment[:, : low - start] = 0.0
        else:
            stop = length - start - bins
            segment = np.conj(spectrum[:, length - start : stop if stop >= 0 else None : -1])
            if stop + 1 < low:  # its last entries come from bins below low: conj(0)
                segment[:, max(0, length - start - low + 1) :] = complex(0.0, -0.0)
        if folded is None:  # the first segment itself (a copy): no zeros to add it to
            folded = segment if start < low else np.array(segment)
        else:
            folded += segment
    assert folded is not None
    # numpy divides a complex array by the scalar ``down`` as ``z * (1 / down)`` on both
    # parts (its complex division's scale factor); on the float view the same products,
    # without the complex division loop, which took as long as the inverse FFT.
    folded.view(folded.real.dtype)[...] *= folded.real.dtype.type(1.0) / down
    return np.asarray(scipy.fft.irfft(folded, short, axis=1))
