"""Signal preprocessing owned by the model: the same steps in training and at inference.

Any :class:`adapters.Ecg` goes in (any rate, any lead set, any length); fixed-size windows
in standard 12-lead order at the model's rate come out:

1. standard 12-lead order (limb leads derived from I and II when absent; leads that are
   neither recorded nor derivable become zero rows and are reported as missing);
2. a 40 Hz low-pass against muscle noise and 50/60 Hz powerline interference;
3. resampling to the model's rate (polyphase, exact rational ratio). Steps 2 and 3 are one
   FIR filter applied as ``resample_poly`` would (:mod:`models.resampling`: by FFT);
   at the model's own rate step 2 is a zero-phase Butterworth;
4. a 0.5 Hz high-pass (zero-phase) against baseline wander;
5. per-lead normalisation: each lead divided by a fixed per-lead scale learnt on the
   training data, then clipped. Fixed (not per-record) scales keep the absolute voltage the
   hypertrophy and low-voltage statements depend on, and missing leads stay exactly zero;
6. windows of ``window_s`` seconds: short records are zero-padded, long ones are cut into up
   to ``max_windows`` evenly spaced windows whose embeddings the model averages.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import signal as sps

from adapters import Ecg
from adapters.record import STANDARD_LEADS, standard_signal
from models.config import EcgClipConfig
from models.filtering import butter_sections, sosfiltfilt_rows
from models.resampling import Spectra, decimate, rational_ratio

#: Default per-lead scale (mV) when a config carries none: about one standard deviation
#: of filtered PTB-XL leads.
DEFAULT_LEAD_SCALE_MV = 0.2
CLIP = 20.0


@dataclass(frozen=True)
class Preprocessed:
    """Model-ready windows for one ECG."""

    windows: np.ndarray  # float32, (n_windows, 12, window_samples)
    missing_leads: frozenset[str]
    derived_leads: frozenset[str]


@lru_cache(maxsize=64)
def _resampling_filter(up: int, down: int, fs: float, cutoff_hz: float | None) -> np.ndarray:
    """The polyphase FIR: ``resample_poly``'s own design (Kaiser, beta 5, 20 taps per rate
    step), with its cutoff lowered to ``cutoff_hz`` when given: then this one filter is both
    the anti-alias filter and the low-pass, and no sample is filtered at the source rate."""
    rate = max(up, down)
    nyquist = fs * up / 2.0
    cutoff = 1.0 / rate if cutoff_hz is None else min(1.0 / rate, cutoff_hz / nyquist)
    return np.asarray(sps.firwin(2 * 10 * rate + 1, cutoff, window=("kaiser", 5.0)))


def _filtfilt(order: int, cutoff: float, kind: str, fs: float, x: np.ndarray) -> np.ndarray:
    """``scipy.signal.sosfiltfilt(sos, x, axis=1)`` (same padding and initial conditions), with
    the filter design cached: designing it was a third of the preprocessing time."""
    sos, zi, padlen = butter_sections(order, cutoff, kind, fs)
    edge = min(padlen, x.shape[1] - 1)
    return np.ascontiguousarray(sosfiltfilt_rows(sos, zi, edge, x))


def filter_and_resample(
    x: np.ndarray, fs: float, config: EcgClipConfig, spectra: Spectra | None = None
) -> np.ndarray:
    """Band-limit and resample a (leads, samples) array in mV to the model's rate.

    At the model's rate the low-pass is a zero-phase Butterworth (order 4, run both ways).
    From any other rate it is folded into the resampling FIR (linear phase, -6 dB at the
    cutoff like the Butterworth run both ways), so a 500 Hz record is filtered once, on the
    samples kept: half the cost of filtering all 5000 samples first, the same pass band.
    ``spectra``: where the record's spectrum is kept for the measurements' resampling.
    """
    target = float(config.sample_rate)
    x = spectra.float64(x) if spectra is not None else x.astype(np.float64, copy=False)
    lowpass = fs > 2.0 * config.lowpass_hz + 1.0 and x.shape[1] > 30
    if abs(fs - target) > 1e-6:
        up, down = rational_ratio(target, float(fs))
        taps = _resampling_filter(up, down, float(fs), config.lowpass_hz if lowpass else None)
        x = decimate(x, up, down, taps, spectra)
    elif lowpass:
        x = _filtfilt(4, config.lowpass_hz, "lowpass", float(fs), x)
    if x.shape[1] > 30:
        x = _filtfilt(2, config.highpass_hz, "highpass", target, x)
    return x.astype(np.float32)


def lead_scales(config: EcgClipConfig) -> np.ndarray:
    scales = config.extra.get("lead_scale_mv")
    if scales is None:
        return np.full((config.in_leads, 1), DEFAULT_LEAD_SCALE_MV, dtype=np.float32)
    return np.asarray(scales, dtype=np.float32).reshape(-1, 1)


def normalise(x: np.ndarray, config: EcgClipConfig) -> np.ndarray:
    return np.clip(x / lead_scales(config), -CLIP, CLIP).astype(np.float32, copy=False)


def windows_of(x: np.ndarray, length: int, max_windows: int) -> np.ndarray:
    """Cut (leads, samples) into evenly spaced windows of ``length`` (zero-padded if short)."""
    n = x.shape[1]
    if n <= length:
        out = np.zeros((1, x.shape[0], length), dtype=np.float32)
        out[0, :, :n] = x
        return out
    count = min(max_windows, int(np.ceil(n / length)))
    starts = np.linspace(0, n - length, count).round().astype(int)
    return np.stack([x[:, s : s + length] for s in starts]).astype(np.float32, copy=False)


def standardise_signal(
    ecg: Ecg, config: EcgClipConfig, spectra: Spectra | None = None
) -> tuple[np.ndarray, frozenset[str], frozenset[str]]:
    """Steps 1-5: the whole normalised signal at the model rate, in standard lead order."""
    signal, derived, missing = standard_signal(ecg)
    x = filter_and_resample(signal, float(ecg.fs), config, spectra)
    x = normalise(x, config)
    for i, name in enumerate(STANDARD_LEADS):
        if name in missing:
            x[i] = 0.0
    return x, missing, derived


def preprocess(ecg: Ecg, config: EcgClipConfig, spectra: Spectra | None = None) -> Preprocessed:
    """All six steps for one ECG (``spectra``: see :func:`filter_and_resample`)."""
    x, missing, derived = standardise_signal(ecg, config, spectra)
    windows = windows_of(x, config.window_samples, config.max_windows)
    return Preprocessed(windows=windows, missing_leads=missing, derived_leads=derived)
