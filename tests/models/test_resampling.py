"""The FFT down-sampling equals ``scipy.signal.resample_poly``; one shared spectrum changes
nothing in what the signal work computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import scipy.signal

from adapters import load_ecg
from models.config import EcgClipConfig
from models.measurements import measure
from models.preprocessing import _resampling_filter, preprocess
from models.resampling import Spectra, decimate
from models.signal_work import analyse

RECORD = "records500/00000/00001_hr.hea"


@pytest.mark.parametrize("down", [2, 3, 4, 5, 10])
@pytest.mark.parametrize("samples", [5000, 4999, 137])
def test_decimate_equals_resample_poly(ptbxl_dir: Path, down: int, samples: int) -> None:
    x = load_ecg(ptbxl_dir / RECORD).signal.astype(np.float64)[:, :samples]
    for cutoff in (None, 40.0):
        taps = _resampling_filter(1, down, 500.0, cutoff)
        expected = scipy.signal.resample_poly(x, 1, down, axis=1, window=taps)
        actual = decimate(x, 1, down, taps)
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-14 * np.abs(x).max())


def test_a_spectrum_is_reused_only_for_equal_values(ptbxl_dir: Path) -> None:
    x = load_ecg(ptbxl_dir / RECORD).signal.astype(np.float64)
    taps = _resampling_filter(1, 5, 500.0, 40.0)
    spectra = Spectra()
    first = decimate(x, 1, 5, taps, spectra)
    np.testing.assert_array_equal(decimate(x.copy(), 1, 5, taps, spectra), first)
    other = x[::-1].copy()
    np.testing.assert_array_equal(decimate(other, 1, 5, taps, spectra), decimate(other, 1, 5, taps))


def test_analyse_equals_the_separate_steps(
    ptbxl_dir: Path, classifier_config: EcgClipConfig
) -> None:
    ecg = load_ecg(ptbxl_dir / RECORD)
    work = analyse(ecg, classifier_config)
    assert work.measurements == measure(ecg)
    assert work.windows is not None
    np.testing.assert_array_equal(work.windows, preprocess(ecg, classifier_config).windows)


@pytest.fixture(scope="module")
def classifier_config() -> EcgClipConfig:
    from models.classifier import DEFAULT_WEIGHTS_DIR

    return EcgClipConfig.load(DEFAULT_WEIGHTS_DIR)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fold_equals_the_inverse_fft_kept_every_down_th(dtype: type) -> None:
    """fold() keeps every down-th sample of the inverse FFT; with ``low``, of the spectrum
    with its bins below low set to zero (bins that reach into the mirrored segments too)."""
    from models.resampling import fold

    rng = np.random.default_rng(4)
    for length, down in ((5120, 2), (5120, 5), (5000, 2), (2400, 3), (1000, 10)):
        x = rng.standard_normal((3, length)).astype(dtype)
        spectrum = scipy.fft.rfft(x, axis=1)
        full = scipy.fft.irfft(spectrum, length, axis=1)[:, ::down]
        np.testing.assert_allclose(fold(spectrum, length, down), full, atol=1e-4, rtol=0)
        for low in (1, 400, length // down, length // 2 - 3):
            masked = spectrum.copy()
            masked[:, :low] = 0.0
            np.testing.assert_array_equal(
                fold(spectrum, length, down, low), fold(masked, length, down)
            )
