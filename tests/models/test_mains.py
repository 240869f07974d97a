"""Mains hum is removed before measuring, and only where a record carries it (real records)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters import Ecg, load_ecg
from adapters.record import standard_signal
from models.delineation import WORK_FS
from models.mains import MAINS_MIN_MV, without_mains
from models.measurements import measure
from models.resampling import rational_ratio

#: PTB-XL 00210: old inferior infarction, QS complexes in III and aVF (Q 92 ms); it carries
#: under 10 uV of hum itself.
INFERIOR_MI = "records500/00000/00210_hr.hea"


def _rows_at_work_rate(ecg: Ecg) -> np.ndarray:
    import scipy.signal

    rows, _, _ = standard_signal(ecg)
    up, down = rational_ratio(WORK_FS, float(ecg.fs))
    return np.asarray(scipy.signal.resample_poly(rows.astype(np.float64), up, down, axis=1))


def _hum(n: int, fs: float, hz: float, mv: float) -> np.ndarray:
    return mv * np.sin(2 * np.pi * hz * np.arange(n) / fs + 0.7)


@pytest.fixture(scope="module")
def clean(ptbxl_dir: Path) -> Ecg:
    return load_ecg(ptbxl_dir / INFERIOR_MI)


def test_a_record_without_hum_is_left_as_it_is(clean: Ecg) -> None:
    rows = _rows_at_work_rate(clean)
    assert without_mains(rows, WORK_FS) is rows


@pytest.mark.parametrize(("hz", "mv"), [(60.0, 0.05), (50.0, 0.1), (50.04, 0.2), (59.93, 0.03)])
def test_hum_is_subtracted_at_the_frequency_the_record_shows(
    clean: Ecg, hz: float, mv: float
) -> None:
    """On the grid's nominal frequency or a few hundredths of a hertz off it, what is left
    of the hum is under 5 % of it (the record's own samples are not touched beyond that)."""
    rows = _rows_at_work_rate(clean)
    hum = _hum(rows.shape[1], WORK_FS, hz, mv)
    cleaned = without_mains(rows + hum[None, :], WORK_FS)
    left = cleaned - rows
    assert float(np.sqrt((left**2).mean())) < 0.05 * mv / np.sqrt(2)


def test_hum_below_the_limit_is_not_touched(clean: Ecg) -> None:
    rows = _rows_at_work_rate(clean) + _hum(5000 // 2, WORK_FS, 50.0, MAINS_MIN_MV / 3)[None, :]
    assert without_mains(rows, WORK_FS) is rows


def test_q_waves_are_measured_through_60_hz_hum(clean: Ecg) -> None:
    """50 uV of 60 Hz (a common amount in a cart without its AC filter) turned the QS
    complexes of III into rS before the hum was removed (Q 92 -> 0 ms)."""
    hummed = clean.with_signal(
        (clean.signal + _hum(clean.n_samples, float(clean.fs), 60.0, 0.05)[None, :]).astype(
            np.float32
        ),
        clean.leads,
    )
    expected = measure(clean)["q_duration"].per_lead
    actual = measure(hummed)["q_duration"].per_lead
    assert expected is not None and actual is not None
    assert expected["III"] >= 80 and expected["aVF"] >= 80
    assert (actual["III"], actual["aVF"]) == (expected["III"], expected["aVF"])


def test_the_steady_hum_of_a_ningbo_lead_is_removed(data_dir: Path) -> None:
    """CinC JS20007 (Ningbo, 500 Hz) carries about 1 mV of 50 Hz in V6 and under 10 uV in
    the other leads. The steady part goes (the 50 Hz bin of V6 falls by more than 75 %; a
    modulated part in the neighbouring bins stays: a sinusoid fit removes only what is
    steady over the record), and the other leads move by less than 10 uV."""
    [path] = list((data_dir / "cinc").rglob("JS20007.hea"))
    rows = _rows_at_work_rate(load_ecg(path))
    cleaned = without_mains(rows, WORK_FS)
    v6 = 11
    n = rows.shape[1]
    k = round(50.0 * n / WORK_FS)
    before = abs(np.fft.rfft(rows[v6])[k]) * 2 / n
    after = abs(np.fft.rfft(cleaned[v6])[k]) * 2 / n
    assert before > 0.5 and after < 0.25 * before
    assert float(np.abs(cleaned[:v6] - rows[:v6]).max()) < 0.01


@pytest.mark.parametrize("hz", [50.0, 60.0, 50.05])
def test_the_quality_gates_bound_holds_the_hum(clean: Ecg, hz: float) -> None:
    """The quality gate's spectrum bounds the hum from above (a sinusoid half a bin off
    included), so skipping the search below the limit never skips hum that is there."""
    from models.quality import assess_quality
    from models.resampling import Spectra

    amplitude = 0.012
    hummed = clean.with_signal(
        (clean.signal + _hum(clean.n_samples, float(clean.fs), hz, amplitude)[None, :]).astype(
            np.float32
        ),
        clean.leads,
    )
    spectra = Spectra()
    assess_quality(hummed, spectra)
    assert spectra.hum_bound_mv is not None and spectra.hum_bound_mv >= amplitude


@pytest.mark.parametrize("record", ["ptbxl/" + INFERIOR_MI, "cinc/cinc2021/JS20007.hea"])
def test_measurements_with_and_without_the_bound_are_the_same(data_dir: Path, record: str) -> None:
    from models.config import EcgClipConfig
    from models.signal_work import analyse

    paths = list(data_dir.glob(record)) or list((data_dir / "cinc").rglob(Path(record).name))
    ecg = load_ecg(paths[0])
    shared = analyse(ecg, EcgClipConfig()).measurements  # the gate's bound, as served
    alone = measure(ecg)  # no bound: the hum is looked for
    assert {k: (m.value, m.per_lead) for k, m in shared.items()} == {
        k: (m.value, m.per_lead) for k, m in alone.items()
    }
