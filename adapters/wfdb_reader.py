"""WFDB records (PhysioNet): PTB-XL, the CinC challenge ``.hea`` + ``.mat`` variant, MIT-BIH, PTB.

A WFDB record is a text header (``.hea``) naming one or more signal files (``.dat``, or a
MATLAB v4 ``.mat`` holding ``val`` in the CinC challenges). The header carries, per channel,
the ADC gain and the physical units, so the reader converts each channel to millivolts from
its own units (``mV``, ``uV``, ``V``) instead of assuming one scale for the record.

Header comments are kept: CinC ``# Dx:`` lines with SNOMED CT codes become
``Ecg.diagnosis_codes``; every other informative comment (age, sex, the free-text diagnoses
of early CPSC and PTB headers) becomes a statement.

Signal files live beside the header, so WFDB can only be read from a path; bytes alone get
a clear :class:`~adapters.errors.EcgFormatError` telling the caller to pass the path.

The checks a header must pass before any signal file is read (sizes, names, rates) are
:mod:`adapters.wfdb_checks`; scaling to millivolts is :mod:`adapters.wfdb_scaling`.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from datetime import date, datetime, time
from pathlib import Path

import numpy as np
import wfdb

from adapters.errors import EcgFormatError
from adapters.leads import lead_aliases
from adapters.reader import Reader, ReaderInput
from adapters.record import Ecg, EcgSource
from adapters.wfdb_checks import (
    check_header,
    check_names_stay_local,
    digital_resolution,
    file_size,
    signal_files,
    uncalibrated_channels,
)
from adapters.wfdb_header import install as _install_fast_header_parser
from adapters.wfdb_scaling import to_millivolts
from adapters.wfdb_signals import DigitalRecord, read_digital

FORMAT = "wfdb"
_install_fast_header_parser()  # wfdb's own header grammar, without its per-field pandas lookups
SNOMED_SYSTEM = "http://snomed.info/sct"

#: Headers are small text files; anything bigger is not a header.
_MAX_HEADER_BYTES = 1024 * 1024
#: The record line: name[/segments] n_signals [fs ...]; see wfdb's ``rx_record``.
_RECORD_LINE = re.compile(r"^\s*[-\w.]+(/\d+)?\s+\d+(\s|$)")
#: Values that carry no information in CinC headers (``# Rx: Unknown``).
_EMPTY_VALUES = {"", "unknown", "unknows", "n/a", "na", "none", "nan"}
#: A record name wfdb accepts (letters, digits, ``_`` and ``-``; no extension).
_WFDB_NAME = re.compile(r"^\s*[-\w]+(/\d+)?\s")
_SNOMED_CODE = re.compile(r"^\d{6,18}$")
#: Offset of the variable name in a MATLAB v4 file (CinC ``.mat`` signal files hold ``val``).
_MAT4_NAME = slice(20, 24)


def _header_text(data: bytes) -> str | None:
    if len(data) > _MAX_HEADER_BYTES or b"\x00" in data[:4096]:
        return None
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        try:
            return data.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            return None


def _record_line(text: str) -> str | None:
    """The first line that is neither blank nor a comment: the record line."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped
    return None


def _is_mat4_signal_file(data: bytes) -> bool:
    """A CinC-style MATLAB v4 file whose one variable is ``val`` (a WFDB signal file)."""
    return (
        len(data) > 24
        and data[:4] in (b"\x1e\x00\x00\x00", b"\x00\x00\x00\x00")
        and data[_MAT4_NAME] == b"val\x00"
    )


def sniff(item: ReaderInput) -> bool:
    if _is_mat4_signal_file(item.data):
        return True  # so that read() can say "pass the .hea" instead of "unknown format"
    head = item.data[:4096]
    text = _header_text(head) if len(item.data) <= _MAX_HEADER_BYTES else None
    if text is None:
        return False
    line = _record_line(text)
    return line is not None and _RECORD_LINE.match(line) is not None


def header_path_for(path: Path) -> Path | None:
    """The ``.hea`` that describes ``path``: itself, the record name + ``.hea``, or a sibling."""
    if path.suffix.lower() == ".hea":
        return path
    candidates = [path.with_name(path.name + ".hea")]
    if path.suffix:
        candidates.append(path.with_suffix(".hea"))
    return next((c for c in candidates if c.is_file()), None)


def _parse_start(line: str, wfdb_date: date | None, wfdb_time: time | None) -> datetime | None:
    """Base date and time from the record line.

    WFDB writes ``HH:MM:SS DD/MM/YYYY``; the CinC 2020/2021 headers write
    ``DD-Mon-YYYY HH:MM:SS`` instead, which wfdb itself mis-parses, so both are handled here.
    A time of day without a date is not a start time.
    """
    tokens = line.split()[4:]
    joined = " ".join(tokens)
    for fmt in ("%d-%b-%Y %H:%M:%S", "%H:%M:%S %d/%m/%Y", "%H:%M:%S.%f %d/%m/%Y"):
        try:
            return datetime.strptime(joined, fmt)
        except ValueError:
            continue
    if wfdb_date is not None:
        return datetime.combine(wfdb_date, wfdb_time or time())
    return None


def _parse_comments(comments: list[str]) -> tuple[list[str], list[str], dict[str, str]]:
    """Split header comments into statements, SNOMED codes and a few extra fields."""
    statements: list[str] = []
    codes: list[str] = []
    extra: dict[str, str] = {}
    for raw in comments:
        text = raw.strip().lstrip("#").strip()
        key, sep, value = text.partition(":")
        key, value = key.strip(), value.strip()
        if not sep:
            if text and text.lower() not in _EMPTY_VALUES:
                statements.append(text)
            continue
        if value.lower() in _EMPTY_VALUES:
            continue
        lowered = key.lower()
        if lowered == "dx":
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if parts and all(_SNOMED_CODE.match(p) for p in parts):
                codes.extend(f"{SNOMED_SYSTEM}|{p}" for p in parts)
                continue
        if lowered in ("age", "sex"):
            extra[lowered] = value
        statements.append(f"{key}: {value}")
    return statements, codes, extra


def _read_record(
    item: ReaderInput, header: Path, header_bytes: bytes, text: str
) -> tuple[wfdb.Record | DigitalRecord, list[Path], dict[str, bytes]]:
    """The record, its signal files and their bytes (each file read once, for the samples
    and the SHA-256 alike)."""
    check_names_stay_local(item, text)
    files = signal_files(header, text)
    for file in files:
        size = file_size(item, header.parent, file.name)
        if size is None:
            raise EcgFormatError(
                item.name,
                f"signal file {file.name} named by the header is missing",
                "keep the .hea and its signal files together in one folder",
            )
        if size > item.max_bytes:
            raise EcgFormatError(
                item.name,
                f"signal file {file.name} is {size} bytes, over the {item.max_bytes}-byte limit",
                "raise max_bytes if this record is genuine",
            )
    try:
        check_header(item, header, text)
    except (ValueError, IndexError) as exc:
        if isinstance(exc, EcgFormatError):
            raise
        raise EcgFormatError(item.name, f"malformed WFDB header ({exc})") from None
    given = item.files
    contents = {
        file.name: given[file.name] if given is not None else file.read_bytes() for file in files
    }
    try:
        named = _WFDB_NAME.match(_record_line(text) or "") is not None
        fast = read_digital(header_bytes, contents) if named else None
        if fast is not None:  # format 16/212 from the bytes just read (wfdb_signals)
            return fast, files, contents
        if given is None:
            return _read_with_wfdb(header, text, files, named), files, contents
        with tempfile.TemporaryDirectory(prefix="ecg-wfdb-") as tmp:  # wfdb reads files only
            folder = Path(tmp)
            (folder / header.name).write_bytes(header_bytes)
            for name, data in contents.items():
                (folder / name).write_bytes(data)
            copies = [folder / file.name for file in files]
            return _read_with_wfdb(folder / header.name, text, copies, named), files, contents
    except EcgFormatError:
        raise
    except Exception as exc:
        raise EcgFormatError(
            item.name, f"the WFDB record cannot be read ({type(exc).__name__}: {exc})"
        ) from None


def _read_with_wfdb(header: Path, text: str, files: list[Path], named: bool) -> wfdb.Record:
    """The record read by wfdb itself from the header's folder (formats other than 16/212)."""
    if not named:
        return _read_with_repaired_name(header, text, files)
    # rdrecord parses the header itself; one read keeps us near wfdb's own speed.
    record: wfdb.Record = wfdb.rdrecord(
        str(header.with_suffix("")),
        physical=False,
        m2s=True,
        return_res=digital_resolution(text),
    )
    return record


def _read_with_repaired_name(header: Path, text: str, files: list[Path]) -> wfdb.Record:
    """Read a header whose record name has a file extension (``E00666.mat 12 500 ...``).

    Some CinC 2020/2021 Georgia headers name the record after its ``.mat`` file, which
    wfdb's record-line grammar rejects. The header is rewritten with the bare record name
    in a private temporary folder beside links to the untouched signal files.
    """
    lines = text.splitlines()
    index = next(i for i, ln in enumerate(lines) if ln.strip() and not ln.strip().startswith("#"))
    _, _, rest = lines[index].strip().partition(" ")
    lines[index] = f"{header.stem} {rest}"
    with tempfile.TemporaryDirectory(prefix="ecg-wfdb-") as tmp:
        folder = Path(tmp)
        (folder / header.name).write_text("\n".join(lines) + "\n", encoding="latin-1")
        for file in files:
            (folder / file.name).symlink_to(file.resolve())
        return wfdb.rdrecord(
            str(folder / header.stem),
            physical=False,
            m2s=True,
            return_res=digital_resolution(text),
        )


def _hash(header_bytes: bytes, files: list[Path], contents: dict[str, bytes]) -> str:
    digest = hashlib.sha256(header_bytes)
    for file in files:
        digest.update(contents[file.name])
    return digest.hexdigest()


def read(item: ReaderInput) -> Ecg:
    if item.path is None:
        raise EcgFormatError(
            item.name,
            "a WFDB record cannot be read from bytes: the header and its signal files "
            "are separate files",
            "pass the path of the .hea file (or the record name) instead of its bytes",
        )
    header = item.path if item.files is not None else header_path_for(item.path)
    if header is None:
        raise EcgFormatError(
            item.name,
            "this is a WFDB signal file without its .hea header",
            "put the .hea file beside it and pass that path",
        )
    header_bytes = item.data if header == item.path else header.read_bytes()
    text = _header_text(header_bytes)
    line = _record_line(text) if text is not None else None
    if line is None or not _RECORD_LINE.match(line):
        raise EcgFormatError(item.name, f"{header.name} has no WFDB record line")
    assert text is not None  # _record_line returned a line
    record, files, contents = _read_record(item, header, header_bytes, text)
    fs = float(record.fs or 0)
    if not np.isfinite(fs) or fs <= 0:
        raise EcgFormatError(item.name, f"the header gives sampling rate {record.fs!r}")
    signal, leads, dropped, assumed = to_millivolts(item, record, uncalibrated_channels(text))
    statements, codes, extra = _parse_comments(list(record.comments or []))
    extra["record"] = str(record.record_name)
    if dropped:
        extra["dropped_channels"] = ", ".join(dropped)
    aliases = lead_aliases(list(record.sig_name or []))
    if aliases:
        extra["lead_aliases"] = aliases
    return Ecg(
        signal=signal,
        fs=fs,
        leads=tuple(leads),
        source=EcgSource(
            format=FORMAT,
            uri=str(header),
            sha256=_hash(header_bytes, files, contents),
        ),
        start_time=_parse_start(line, record.base_date, record.base_time),
        statements=tuple(statements),
        diagnosis_codes=tuple(dict.fromkeys(codes)),
        extra=extra,
        amplitude_assumed=assumed,
    )


READER = Reader(format=FORMAT, sniff=sniff, read=read)
