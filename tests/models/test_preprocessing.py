"""Model-owned preprocessing on real recordings of different rates, lengths and lead sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adapters import load_ecg
from models.config import EcgClipConfig
from models.preprocessing import preprocess

CONFIG = EcgClipConfig(extra={"lead_scale_mv": [0.2] * 12})


def test_ptbxl_500hz_and_100hz_give_one_matching_window(ptbxl_dir: Path) -> None:
    hi = preprocess(load_ecg(ptbxl_dir / "records500/00000/00001_hr.hea"), CONFIG)
    lo = preprocess(load_ecg(ptbxl_dir / "records100/00000/00001_lr.hea"), CONFIG)
    assert hi.windows.shape == lo.windows.shape == (1, 12, 1000)
    assert hi.missing_leads == frozenset()
    # The same recording at two rates lands on nearly the same model input.
    corr = np.corrcoef(hi.windows[0, 1, 50:-50], lo.windows[0, 1, 50:-50])[0, 1]
    assert corr > 0.95


def test_long_two_lead_holter_becomes_windows_with_missing_leads(formats_dir: Path) -> None:
    ecg = load_ecg(formats_dir / "wfdb" / "100.hea")  # MIT-BIH: MLII + V5, 360 Hz, 30 min
    out = preprocess(ecg, CONFIG)
    assert out.windows.shape == (CONFIG.max_windows, 12, 1000)
    assert "V1" in out.missing_leads and "V5" not in out.missing_leads
    missing_rows = [i for i, n in enumerate(("I", "II", "III", "aVR", "aVL", "aVF",
                    "V1", "V2", "V3", "V4", "V5", "V6")) if n in out.missing_leads]  # fmt: skip
    assert np.all(out.windows[:, missing_rows] == 0.0)
    assert np.abs(out.windows[:, 10]).max() > 0.5  # V5 carries signal


def test_baseline_is_removed(ptbxl_dir: Path) -> None:
    ecg = load_ecg(ptbxl_dir / "records500/00000/00001_hr.hea")
    drift = np.linspace(0, 2.0, ecg.n_samples, dtype=np.float32)  # a 2 mV ramp
    shifted = ecg.with_signal(ecg.signal + drift, ecg.leads)
    a = preprocess(ecg, CONFIG).windows[0, :, 100:-100]
    b = preprocess(shifted, CONFIG).windows[0, :, 100:-100]
    assert np.abs(a - b).mean() < 0.1 * np.abs(a).mean()


def test_the_cached_filter_equals_scipys_sosfiltfilt(ptbxl_dir: Path, formats_dir: Path) -> None:
    """``_filtfilt`` re-implements ``scipy.signal.sosfiltfilt`` to reuse the filter design;
    it must give the same samples (same odd padding, same initial conditions) on real ECGs
    at the rates the readers produce, for both the low-pass and the high-pass stage."""
    import scipy.signal as sps

    from models.preprocessing import _filtfilt

    recordings = [
        load_ecg(ptbxl_dir / "records500/00000/00001_hr.hea"),  # 500 Hz, 10 s
        load_ecg(ptbxl_dir / "records100/00000/00001_lr.hea"),  # 100 Hz, 10 s
        load_ecg(formats_dir / "wfdb" / "100.hea"),  # 360 Hz, 30 min
    ]
    for ecg in recordings:
        x = ecg.signal[:, : int(ecg.fs * 20)].astype(np.float64)
        stages = ((4, CONFIG.lowpass_hz, "lowpass"), (2, CONFIG.highpass_hz, "highpass"))
        for order, cutoff, kind in stages:
            if kind == "lowpass" and ecg.fs <= 2 * cutoff + 1:
                continue  # the preprocessing skips the low-pass below this rate
            sos = sps.butter(order, cutoff, btype=kind, fs=ecg.fs, output="sos")
            expected = sps.sosfiltfilt(sos, x, axis=1)
            got = _filtfilt(order, cutoff, kind, float(ecg.fs), x)
            assert got.shape == expected.shape
            scale = float(np.abs(expected).max())
            assert np.abs(got - expected).max() <= 1e-9 * max(scale, 1.0), (ecg.fs, kind)
