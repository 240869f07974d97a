"""The signal-measured rate facts agree with the cardiologists' SBRAD/STACH statements."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters import load_ecg
from models.config import EcgClipConfig
from models.preprocessing import standardise_signal
from models.rate import estimate_heart_rate, rate_fact_keys

CONFIG = EcgClipConfig(extra={"lead_scale_mv": [0.2] * 12})
SBRAD = (2, 12, 69, 78, 225)  # PTB-XL records stating sinus bradycardia
STACH = (103, 108, 263, 270, 279)  # ... sinus tachycardia


def _rate(ptbxl_dir: Path, ecg_id: int) -> float | None:
    ecg = load_ecg(ptbxl_dir / f"records500/00000/{ecg_id:05d}_hr.hea")
    x, _, _ = standardise_signal(ecg, CONFIG)
    return estimate_heart_rate(x, CONFIG.sample_rate)


@pytest.mark.parametrize("ecg_id", SBRAD)
def test_bradycardia_records_measure_below_60(ptbxl_dir: Path, ecg_id: int) -> None:
    assert rate_fact_keys(_rate(ptbxl_dir, ecg_id)) == ("rate:brady",)


@pytest.mark.parametrize("ecg_id", STACH)
def test_tachycardia_records_measure_above_100(ptbxl_dir: Path, ecg_id: int) -> None:
    assert rate_fact_keys(_rate(ptbxl_dir, ecg_id)) == ("rate:tachy",)


def test_no_rhythm_in_a_flat_signal() -> None:
    import numpy as np

    assert estimate_heart_rate(np.zeros((12, 1000), dtype=np.float32), 100.0) is None
    assert rate_fact_keys(None) == ()


def test_interval_facts_from_measurements_of_real_records(ptbxl_dir: Path) -> None:
    """The first AF record is irregular, the first LBBB wide, a normal sinus record regular.

    AF without flutter: the first record stating AFIB (17) is atrial flutter (AFLT 100) with
    variable block and aberrant beats, whose intervals the dominant-beat RR leaves out.
    """
    from models.measurements import measure
    from models.rate import interval_fact_keys

    def keys(ecg_id: int) -> tuple[str, ...]:
        ecg = load_ecg(ptbxl_dir / f"records500/00000/{ecg_id:05d}_hr.hea")
        return interval_fact_keys(measure(ecg))

    assert "rr:irregular" in keys(_first(ptbxl_dir, "AFIB", without="AFLT"))
    assert "qrs:wide" in keys(_first(ptbxl_dir, "CLBBB"))
    assert "rr:regular" in keys(9)  # fold 10, NORM, sinus rhythm


def _first(ptbxl_dir: Path, code: str, without: str | None = None) -> int:
    import csv

    with (ptbxl_dir / "ptbxl_database.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if without is not None and f"'{without}'" in row["scp_codes"]:
                continue
            if f"'{code}'" in row["scp_codes"]:
                return int(float(row["ecg_id"]))
    raise AssertionError(f"no {code} record")
