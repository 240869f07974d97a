"""The numpy decoder of WFDB format 16/212 records gives exactly what ``wfdb.rdrecord`` gives.

Compared on every WFDB record in ``shared/data`` (samples array for array, header fields
one by one, and the whole :class:`~adapters.Ecg` with the decoder switched off), and on
written records for the layouts it must hand back to wfdb.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb
from wfdb.io import _header
from wfdb.io.header import parse_header_content

import adapters.wfdb_reader as wfdb_reader
from adapters import EcgFormatError, load_ecg
from adapters.wfdb_header import WFDB_PARSE_RECORD_LINE, parse_record_line
from adapters.wfdb_signals import DigitalRecord, read_digital
from cds_service.storage.bundle import wfdb_record_files

_FIELDS = ("record_name", "base_time", "base_date", "comments", "sig_name", "units", "fmt",
           "adc_gain", "baseline")  # fmt: skip


def _digital(header: Path) -> DigitalRecord | None:
    files = wfdb_record_files(header)
    return read_digital(files.pop(header.name), files)


def _wfdb(header: Path) -> wfdb.Record:
    return wfdb.rdrecord(str(header.with_suffix("")), physical=False, m2s=True, return_res=16)


def _assert_same(fast: DigitalRecord, reference: wfdb.Record, where: object) -> None:
    assert fast.d_signal.dtype == np.int16, where
    assert np.array_equal(fast.d_signal, reference.d_signal), where
    assert fast.fs == reference.fs and type(fast.fs) is type(reference.fs), where
    for field in _FIELDS:
        assert getattr(fast, field) == getattr(reference, field), (where, field)


def test_same_record_as_wfdb_on_every_shared_record(data_dir: Path) -> None:
    decoded = 0
    for header in sorted(data_dir.rglob("*.hea")):
        fast = _digital(header)
        if fast is None:
            continue  # handed to wfdb (e.g. a record line naming a .mat: the repaired path)
        _assert_same(fast, _wfdb(header), header)
        decoded += 1
    assert decoded > 1000  # PTB-XL at both rates (16), CinC .mat (16+24), QTDB (212)


def _load_both(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    def load() -> object:
        try:
            return load_ecg(path)
        except EcgFormatError as exc:
            return str(exc)

    fast = load()
    with monkeypatch.context() as patch:
        patch.setattr(wfdb_reader, "read_digital", lambda header, files: None)
        slow = load()
    return fast, slow


def test_same_ecg_with_and_without_the_decoder(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders: dict[Path, list[Path]] = {}
    for header in sorted(data_dir.rglob("*.hea")):
        folders.setdefault(header.parent, []).append(header)
    for headers in folders.values():
        for header in headers[:3] + headers[-2:]:
            fast, slow = _load_both(header, monkeypatch)
            if isinstance(fast, str) or isinstance(slow, str):
                assert fast == slow, header
                continue
            for field in ("fs", "leads", "source", "start_time", "patient_id", "device",
                          "statements", "diagnosis_codes", "median_beats", "extra"):  # fmt: skip
                assert getattr(fast, field) == getattr(slow, field), (header, field)
            assert fast.signal.dtype == slow.signal.dtype  # type: ignore[attr-defined]
            assert np.array_equal(fast.signal, slow.signal), header  # type: ignore[attr-defined]


def _write(folder: Path, fmt: str, n_sig: int = 3, samples: int = 500, **kw: object) -> Path:
    rng = np.random.default_rng(0)
    limit = 2000 if fmt == "212" else 30000
    digital = rng.integers(-limit, limit, size=(samples, n_sig)).astype(np.int16)
    wfdb.wrsamp(
        "rec",
        fs=500,
        units=["mV"] * n_sig,
        sig_name=[f"V{i + 1}" for i in range(n_sig)],
        d_signal=digital,
        fmt=[fmt] * n_sig,
        adc_gain=[1000.0] * n_sig,
        baseline=[7] * n_sig,
        write_dir=str(folder),
        **kw,  # type: ignore[arg-type]
    )
    return folder / "rec.hea"


@pytest.mark.parametrize("fmt", ["16", "212"])
def test_written_records(tmp_path: Path, fmt: str) -> None:
    header = _write(tmp_path, fmt)
    fast = _digital(header)
    assert fast is not None
    _assert_same(fast, _wfdb(header), fmt)


def test_two_signal_files_and_byte_offsets(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(-2000, 2000, size=(400, 2)).astype("<i2")
    b = rng.integers(-2000, 2000, size=(400, 1)).astype("<i2")
    (tmp_path / "a.dat").write_bytes(b"\x00" * 6 + a.tobytes())
    (tmp_path / "b.dat").write_bytes(b.tobytes())
    (tmp_path / "rec.hea").write_text(
        "rec 3 250 400 10:11:12 13/01/2020\n"
        "a.dat 16+6 200/mV 16 0 0 0 0 I\n"
        "a.dat 16+6 200/mV 16 0 0 0 0 II\n"
        "b.dat 16 100/uV 16 0 -3 0 0 V1\n"
        "# Age: 50\n"
    )
    fast = _digital(tmp_path / "rec.hea")
    assert fast is not None and fast.d_signal.shape == (400, 3)
    _assert_same(fast, _wfdb(tmp_path / "rec.hea"), "two files")


@pytest.mark.parametrize(
    "signal_line",
    [
        "rec.dat 16x2 200/mV 16 0 0 0 0 I",  # two samples per frame
        "rec.dat 16:1 200/mV 16 0 0 0 0 I",  # skew
        "rec.dat 8 200/mV 8 0 0 0 0 I",  # a format not decoded here
        "~ 16 200/mV 16 0 0 0 0 I",  # no signal file
    ],
)
def test_layouts_left_to_wfdb(tmp_path: Path, signal_line: str) -> None:
    (tmp_path / "rec.dat").write_bytes(b"\x00" * 4000)
    header = f"rec 1 250 500\n{signal_line}\n".encode()
    assert read_digital(header, {"rec.dat": b"\x00" * 4000}) is None


def test_short_file_or_half_triplet_left_to_wfdb() -> None:
    header_16 = b"rec 1 250 500\nrec.dat 16 200/mV 16 0 0 0 0 I\n"
    assert read_digital(header_16, {"rec.dat": b"\x00" * 999}) is None  # wfdb reports it
    header_212 = b"rec 1 250 3\nrec.dat 212 200/mV 12 0 0 0 0 I\n"
    assert read_digital(header_212, {"rec.dat": b"\x00" * 6}) is None  # 3 samples: odd
    split = b"rec 3 250 2\na.dat 16\nb.dat 16\na.dat 16\n"  # a file's channels not together
    assert read_digital(split, {"a.dat": b"\x00" * 8, "b.dat": b"\x00" * 4}) is None
    assert read_digital(b"rec 1 250 2\nrec.dat 16\n", {}) is None  # its file not given


def test_record_line_parser_is_wfdbs(data_dir: Path) -> None:
    lines = []
    for header in sorted(data_dir.rglob("*.hea")):
        content, _ = parse_header_content(header.read_text(encoding="ascii", errors="ignore"))
        lines.append(content[0])
    lines += ["rec 12", "rec/3 2 360 650000", "rec 2 360/100(5) 1000 1:2 03/04/2005",
              "rec 1 500.000000001 10 10:00:00.25", "rec 1 0.5"]  # fmt: skip
    for line in lines:
        try:
            expected = WFDB_PARSE_RECORD_LINE(line)
        except Exception as exc:
            with pytest.raises(type(exc)):
                parse_record_line(line)
            continue
        got = parse_record_line(line)
        assert got == expected and type(got["fs"]) is type(expected["fs"]), line
    assert _header._parse_record_line is parse_record_line  # installed for rdheader too
