"""The R-peak detector gives exactly neurokit2's ``ecg_findpeaks`` (method "neurokit")."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from adapters import load_ecg
from models.measurements import WORK_FS, _nk_clean, _prepare
from models.rpeak_detect import neurokit_peaks


def test_peaks_equal_neurokits(ptbxl_dir: Path, formats_dir: Path) -> None:
    import neurokit2 as nk

    records = sorted((ptbxl_dir / "records500").rglob("*_hr.hea"))[:12]
    records += sorted((ptbxl_dir / "records100").rglob("*_lr.hea"))[:4]
    records += [formats_dir / "wfdb" / "100.hea"]
    compared = 0
    for path in records:
        prepared = _prepare(load_ecg(path))
        assert prepared is not None
        for lead in np.nonzero(prepared.usable)[0]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cleaned = _nk_clean(prepared.raw[lead])
                expected = nk.ecg_findpeaks(cleaned, sampling_rate=int(WORK_FS), method="neurokit")
            np.testing.assert_array_equal(
                neurokit_peaks(cleaned, int(WORK_FS)), expected["ECG_R_Peaks"]
            )
            compared += 1
    assert compared > 150


def test_no_complex_no_peaks() -> None:
    assert neurokit_peaks(np.zeros(2500), int(WORK_FS)).size == 0


def test_prominent_peaks_equal_scipys_find_peaks() -> None:
    import scipy.signal

    from models.rpeak_detect import prominent_peaks

    rng = np.random.default_rng(3)
    for size in (0, 1, 2, 5, 40, 300):
        for step in (rng.normal(size=size), np.round(rng.normal(size=size), 1)):  # plateaus too
            x = np.cumsum(step) * 0.01
            for least in (0.0, 0.005, 0.02):
                tops, props = scipy.signal.find_peaks(x, prominence=least)
                found, prominences = prominent_peaks(x, least)
                np.testing.assert_array_equal(found, tops)
                np.testing.assert_array_equal(prominences, props["prominences"])
