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


def test_prominent_tops_of_rows_equal_each_rows_find_peaks() -> None:
    """One scan of the rows' stretches end to end finds each stretch's own peaks."""
    import scipy.signal

    from models.rpeak_detect import prominent_tops_of_rows

    rng = np.random.default_rng(5)
    for trial in range(300):
        rows, n = int(rng.integers(1, 13)), int(rng.integers(5, 200))
        x = np.cumsum(rng.normal(size=(rows, n)), axis=1) * 0.01
        if trial % 3 == 0:
            x = np.round(x, 2)  # plateaus, also at a stretch's ends
        start = int(rng.integers(0, n))
        stops = start + rng.integers(0, n - start + 3, size=rows)  # empty and past the end too
        for least in (0.0, 0.005, 0.02):
            found = prominent_tops_of_rows(x, start, stops, least)
            for i in range(rows):
                tops, _ = scipy.signal.find_peaks(x[i, start : stops[i]], prominence=least)
                np.testing.assert_array_equal(found[i], tops)


def test_maxima_by_segment_equal_each_segments_own() -> None:
    from scipy.signal._peak_finding_utils import _local_maxima_1d

    from models.rpeak_detect import _maxima_by_segment

    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(3, 300))
        x = np.cumsum(rng.normal(size=n))
        if trial % 2:
            x = np.round(x)  # plateaus
        begs = np.sort(rng.integers(0, n, size=int(rng.integers(1, 15))))
        ends = np.minimum(begs + rng.integers(1, 60, size=begs.size), n)
        for beg, end, maxima in zip(begs, ends, _maxima_by_segment(x, begs, ends), strict=True):
            np.testing.assert_array_equal(maxima, _local_maxima_1d(x[beg:end])[0])
