"""The fast signal-line parser is wfdb's own, field for field, on every real WFDB header."""

from __future__ import annotations

from pathlib import Path

import pytest
from wfdb.io import _header
from wfdb.io.header import parse_header_content

from adapters import load_ecg
from adapters.wfdb_header import WFDB_PARSE_SIGNAL_LINES, parse_signal_lines


def _signal_lines(path: Path) -> list[str]:
    lines, _ = parse_header_content(path.read_text(encoding="ascii", errors="ignore"))
    return lines[1:]


def test_same_fields_as_wfdb_on_every_shared_header(data_dir: Path) -> None:
    headers = sorted(data_dir.rglob("*.hea"))
    assert len(headers) > 100  # PTB-XL at both rates, CinC, QTDB, the format samples
    compared = 0
    for header in headers:
        lines = _signal_lines(header)
        if not lines or "/" in header.read_text(errors="ignore").split()[0]:
            continue  # no signal lines, or a multi-segment header (segment lines)
        assert parse_signal_lines(lines) == WFDB_PARSE_SIGNAL_LINES(lines), header
        compared += 1
    assert compared > 100


@pytest.mark.parametrize(
    "line",
    [
        "100.dat 212 200 11 1024 995 -22131 0 MLII",  # MIT-BIH: gain, resolution, zero, ...
        "rec.dat 16 0(12)/uV",  # gain 0 means 200; a baseline in brackets
        "rec.dat 16x2:3+512 1000/mV 16 7",  # frames, skew, offset; empty baseline takes adc_zero
        "rec.dat 16",  # every optional field absent: wfdb's read defaults
    ],
)
def test_same_fields_as_wfdb_on_edge_cases(line: str) -> None:
    assert parse_signal_lines([line]) == WFDB_PARSE_SIGNAL_LINES([line])


def test_invalid_signal_line_raises_wfdb_syntax_error() -> None:
    with pytest.raises(_header.HeaderSyntaxError):
        parse_signal_lines(["not a signal line ((("])


def test_rdheader_uses_it(data_dir: Path) -> None:
    assert _header._parse_signal_lines is parse_signal_lines
    ecg = load_ecg(data_dir / "ptbxl/records500/00000/00001_hr.hea")
    assert ecg.signal.shape == (12, 5000)
