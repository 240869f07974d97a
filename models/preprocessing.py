"""Signal preprocessing owned by the model: the same steps in training and at inference.

Any :class:`adapters.Ecg` goes in (any rate, any lead set, any length); fixed-size windows
in standard 12-lead order at the model's rate come out:

1. standard 12-lead order (limb leads derived from I and II when absent; leads that are
   neither recorded nor derivable become zero rows and are reported as missing);
2. a 40 Hz low-pass at the original rate: removes muscle noise and 50/60 Hz powerline
   interference, and is the anti-alias filter before resampling;
3. resampling to the model's rate (polyphase, exact rational ratio);
4. a 0.5 Hz high-pass (zero-phase) against baseline wander;
5. per-lead normalisation: each lead divided by a fixed per-lead scale learnt on the
   training data, then clipped. Fixed (not per-record) scales keep the absolute voltage the
   hypertrophy and low-voltage statements depend on, and missing leads stay exactly zero;
6. windows of ``window_s`` seconds: short records are zero-padded, long ones are cut into up
   to ``max_windows`` evenly spaced windows whose embeddings the model averages.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import signal as sps

from adapters import Ecg, standard_12_lead
from models.config import EcgClipConfig

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


@lru_cache(maxsize=32)
def _lowpass(fs: float, cutoff: float) -> np.ndarray:
    return sps.butter(4, cutoff, btype="lowpass", fs=fs, output="sos")


@lru_cache(maxsize=32)
def _highpass(fs: float, cutoff: float) -> np.ndarray:
    return sps.butter(2, cutoff, btype="highpass", fs=fs, output="sos")


def filter_and_resample(x: np.ndarray, fs: float, config: EcgClipConfig) -> np.ndarray:
    """Band-limit and resample a (leads, samples) array in mV to the model's rate."""
    target = float(config.sample_rate)
    x = x.astype(np.float64, copy=False)
    if fs > 2.0 * config.lowpass_hz + 1.0 and x.shape[1] > 30:
        x = sps.sosfiltfilt(_lowpass(float(fs), config.lowpass_hz), x, axis=1)
    if abs(fs - target) > 1e-6:
        ratio = Fraction(target / float(fs)).limit_denominator(1000)
        x = sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=1)
    if x.shape[1] > 30:
        x = sps.sosfiltfilt(_highpass(target, config.highpass_hz), x, axis=1)
    return x.astype(np.float32)


def lead_scales(config: EcgClipConfig) -> np.ndarray:
    scales = config.extra.get("lead_scale_mv")
    if scales is None:
        return np.full((config.in_leads, 1), DEFAULT_LEAD_SCALE_MV, dtype=np.float32)
    return np.asarray(scales, dtype=np.float32).reshape(-1, 1)


def normalise(x: np.ndarray, config: EcgClipConfig) -> np.ndarray:
    return np.clip(x / lead_scales(config), -CLIP, CLIP).astype(np.float32)


def windows_of(x: np.ndarray, length: int, max_windows: int) -> np.ndarray:
    """Cut (leads, samples) into evenly spaced windows of ``length`` (zero-padded if short)."""
    n = x.shape[1]
    if n <= length:
        out = np.zeros((1, x.shape[0], length), dtype=np.float32)
        out[0, :, :n] = x
        return out
    count = min(max_windows, int(np.ceil(n / length)))
    starts = np.linspace(0, n - length, count).round().astype(int)
    return np.stack([x[:, s : s + length] for s in starts]).astype(np.float32)


def standardise_signal(
    ecg: Ecg, config: EcgClipConfig
) -> tuple[np.ndarray, frozenset[str], frozenset[str]]:
    """Steps 1-5: the whole normalised signal at the model rate, in standard lead order."""
    view = standard_12_lead(ecg)
    x = filter_and_resample(view.ecg.signal, float(ecg.fs), config)
    x = normalise(x, config)
    for i, name in enumerate(view.ecg.leads):
        if name in view.missing:
            x[i] = 0.0
    return x, view.missing, view.derived


def preprocess(ecg: Ecg, config: EcgClipConfig) -> Preprocessed:
    """All six steps for one ECG."""
    x, missing, derived = standardise_signal(ecg, config)
    windows = windows_of(x, config.window_samples, config.max_windows)
    return Preprocessed(windows=windows, missing_leads=missing, derived_leads=derived)
