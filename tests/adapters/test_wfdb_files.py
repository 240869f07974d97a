"""WFDB records read from files the caller already holds (``load_ecg(path, files=...)``).

``ecg-cds ingest`` reads a record's files once, stores them, and parses those same bytes:
the ECG must equal the one read from the disk, field for field, in every reader path (the
numpy decoder of formats 16/212, wfdb for the others, the repaired record name), and the
disk must not be read again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from adapters import Ecg, EcgFormatError, load_ecg
from cds_service.storage.bundle import wfdb_record_files

RECORDS = [
    "ptbxl/records100/00000/00001_lr",  # format 16
    "ptbxl/records500/00000/00001_hr",
    "cinc/cpsc2018_a0001_a0010/A0001",  # CinC .mat signal file
    "cinc/cinc2020_more/Q0017",
    "formats/wfdb/100",  # format 212
]
FIELDS = ("fs", "leads", "source", "start_time", "patient_id", "device", "statements",
          "diagnosis_codes", "median_beats", "extra")  # fmt: skip


def _same(a: Ecg, b: Ecg) -> None:
    assert a.signal.dtype == b.signal.dtype
    np.testing.assert_array_equal(a.signal, b.signal)
    for name in FIELDS:
        assert getattr(a, name) == getattr(b, name), name


def _both(header: Path) -> tuple[Ecg, Ecg]:
    return load_ecg(header), load_ecg(header, files=wfdb_record_files(header))


@pytest.mark.parametrize("relative", RECORDS)
def test_same_ecg_as_from_disk(data_dir: Path, relative: str) -> None:
    _same(*_both(data_dir / f"{relative}.hea"))


@pytest.mark.parametrize("fmt", ["80", "24", "32"])
def test_formats_wfdb_reads_itself(ptbxl_dir: Path, tmp_path: Path, fmt: str) -> None:
    source = wfdb.rdrecord(str(ptbxl_dir / "records100/00000/00002_lr"))
    wfdb.wrsamp(
        "other_format",
        fs=100,
        units=["mV"] * 12,
        sig_name=source.sig_name,
        p_signal=source.p_signal,
        fmt=[fmt] * 12,
        adc_gain=[10.0 if fmt == "80" else 1000.0] * 12,  # 8-bit samples: a coarse gain
        baseline=[0] * 12,
        write_dir=str(tmp_path),
    )
    _same(*_both(tmp_path / "other_format.hea"))


def test_record_name_with_extension(cinc_dir: Path, tmp_path: Path) -> None:
    """A header naming its record after its .mat file (as some CinC headers do)."""
    for part in (cinc_dir / "cpsc2018_a0001_a0010").glob("A0001.*"):
        shutil.copy(part, tmp_path / part.name)
    header = tmp_path / "A0001.hea"
    header.write_text(header.read_text().replace("A0001 ", "A0001.mat ", 1))
    _same(*_both(header))


def test_the_bytes_given_are_read_not_the_disk(ptbxl_dir: Path, tmp_path: Path) -> None:
    for part in (ptbxl_dir / "records100/00000").glob("00001_lr.*"):
        shutil.copy(part, tmp_path / part.name)
    header = tmp_path / "00001_lr.hea"
    files = wfdb_record_files(header)
    expected = load_ecg(header)
    (tmp_path / "00001_lr.dat").write_bytes(b"\0" * 10)  # changed after it was read
    _same(expected, load_ecg(header, files=files))
    (tmp_path / "00001_lr.dat").unlink()
    _same(expected, load_ecg(header, files=files))


def test_problems_in_the_bytes_given(ptbxl_dir: Path) -> None:
    header = ptbxl_dir / "records100/00000/00001_lr.hea"
    files = wfdb_record_files(header)
    missing = {header.name: files[header.name]}
    with pytest.raises(EcgFormatError, match=r"00001_lr\.dat named by the header is missing"):
        load_ecg(header, files=missing)
    truncated = {**files, "00001_lr.dat": files["00001_lr.dat"][:10000]}
    with pytest.raises(EcgFormatError, match="truncated"):
        load_ecg(header, files=truncated)
    with pytest.raises(EcgFormatError, match="limit"):
        load_ecg(header, files=files, max_bytes=1000)
    with pytest.raises(EcgFormatError, match="not among the files"):
        load_ecg(header, files={"00001_lr.dat": files["00001_lr.dat"]})
