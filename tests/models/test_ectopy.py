"""Premature beat counts (models.ectopy) on real records and on beat trains with known ectopy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters import load_ecg
from models.delineation import WORK_FS
from models.ectopy import members, premature_beats
from models.measurements import measure


def _train(rr_s: list[float]) -> np.ndarray:
    """R peaks (samples at WORK_FS) of a beat train starting 1 s in."""
    return np.round((1.0 + np.concatenate([[0.0], np.cumsum(rr_s)])) * WORK_FS).astype(int)


def test_a_wide_early_beat_is_ventricular_and_a_sudden_early_one_supraventricular() -> None:
    rr = [0.8] * 4 + [0.5, 1.1] + [0.8] * 4 + [0.55, 0.9] + [0.8] * 3
    peaks = _train(rr)
    n = int(peaks[-1] + 2 * WORK_FS)
    ectopic = peaks[5]  # after the 0.5 s coupling: another QRS shape
    dominant = np.setdiff1d(peaks, [ectopic])
    assert premature_beats(peaks, dominant, n) == (1.0, 1.0)  # beat 11: same shape, early


def test_sinus_arrhythmia_is_not_counted_as_premature_beats() -> None:
    # A respiratory cycle: RR up to 15 % either side of its mean, changing gradually.
    rr = [0.8 * (1 + 0.15 * np.sin(2 * np.pi * k / 8)) for k in range(16)]
    peaks = _train(rr)
    n = int(peaks[-1] + 2 * WORK_FS)
    assert premature_beats(peaks, peaks, n) == (0.0, 0.0)


def test_bigeminy_has_a_reference_cycle() -> None:
    rr = [0.55, 1.05] * 6
    peaks = _train(rr)
    n = int(peaks[-1] + 2 * WORK_FS)
    dominant = peaks[::2]  # every other beat is ectopic
    ventricular, _ = premature_beats(peaks, dominant, n)
    assert ventricular is not None and ventricular >= 5


@pytest.mark.parametrize(
    ("record", "ventricular", "supraventricular"),
    [
        (1, 0, 0),  # cardiologists: normal ECG, sinus rhythm
        (219, 1, None),  # normal ECG with a premature ventricular complex
        (421, None, 1),  # sinus rhythm with a premature atrial complex
    ],
)
def test_premature_beats_on_ptbxl_records(
    ptbxl_dir: Path, record: int, ventricular: int | None, supraventricular: int | None
) -> None:
    """PTB-XL folds 1-9 records with the cardiologists' PVC / PAC statements."""
    measured = measure(load_ecg(ptbxl_dir / f"records500/00000/{record:05d}_hr.hea"))
    v = measured["ventricular_premature_beats"].value
    s = measured["supraventricular_premature_beats"].value
    assert v is not None and s is not None
    if ventricular is not None:
        assert (v >= 1) == (ventricular >= 1), v
    if supraventricular is not None:
        assert (s >= 1) == (supraventricular >= 1), s


def test_members_equals_numpys_isin() -> None:
    rng = np.random.default_rng(3)
    for size in (0, 1, 2, 5, 12, 40):
        peaks = np.sort(rng.choice(2500, 40, replace=False))
        dominant = rng.choice(peaks, size, replace=False)
        for values in (peaks, peaks[::-1], np.array([-1, 0, 2499, 3000])):
            np.testing.assert_array_equal(members(values, dominant), np.isin(values, dominant))
