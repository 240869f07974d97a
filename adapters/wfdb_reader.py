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

One module over 400 lines on purpose: one format, its header grammar, its signal encodings
and its size checks, read in the order the reader needs them.
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
#: Signal-line format ``fmt[xspf][:skew][+offset]`` and bytes per sample of common formats.
_FORMAT_SPEC = re.compile(r"^(\d+)(?:x(\d+))?(:\d+)?(?:\+(\d+))?$")
_BYTES_PER_SAMPLE = {"8": 1.0, "80": 1.0, "16": 2.0, "61": 2.0, "160": 2.0, "212": 1.5,
                     "310": 4 / 3, "311": 4 / 3, "24": 3.0, "32": 4.0}  # fmt: skip
#: Bits needed to hold a sample of each format once decoded.
_FORMAT_BITS = {"8": 16, "80": 16, "16": 16, "61": 16, "160": 16, "212": 16, "310": 16,
                "311": 16, "24": 32, "32": 32}  # fmt: skip
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


def _content_lines(text: str) -> list[str]:
    """Header lines that are neither blank nor comments."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


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


def _signal_files(header: Path, text: str) -> list[Path]:
    """The signal files a single-segment header names (first token of each signal line).

    Multi-segment headers name segment records instead; wfdb resolves those itself.
    """
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines or "/" in lines[0].split()[0]:
        return []
    names = dict.fromkeys(ln.split()[0] for ln in lines[1:])  # ordered, unique
    return [header.parent / name for name in names if name != "~"]


def _file_size(item: ReaderInput, folder: Path, name: str) -> int | None:
    """Bytes in the record's file ``name`` (None when missing): of the files the caller
    read (``item.files``) when given, else on the disk beside the header."""
    if item.files is not None:
        data = item.files.get(name)
        return None if data is None else len(data)
    file = folder / name
    return file.stat().st_size if file.is_file() else None


def _check_header(item: ReaderInput, header: Path, text: str) -> None:
    """Catch the common corruptions with a precise message before wfdb trips over them.

    Checks the sampling rate on the record line and, for single-segment records, that each
    signal file holds as many bytes as the header's formats and length require.
    """
    lines = [
        ln.split() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]
    record = lines[0]
    _check_declared_size(item, header, record, lines[1:])
    if "/" in record[0]:
        return
    fs_token = record[2].split("/")[0] if len(record) > 2 else "250"
    try:
        fs = float(fs_token)
    except ValueError:
        raise EcgFormatError(item.name, f"sampling rate {fs_token!r} is not a number") from None
    if not np.isfinite(fs) or fs <= 0:
        raise EcgFormatError(
            item.name, f"the header gives sampling rate {fs_token}", "the header is corrupt"
        )
    n_sig = int(record[1])
    if len(lines) - 1 < n_sig:
        raise EcgFormatError(
            item.name, f"the header announces {n_sig} signals but describes {len(lines) - 1}"
        )
    if len(record) < 4 or not record[3].isdigit():
        return  # length unknown: wfdb infers it from the file size
    sig_len = int(record[3])
    needed: dict[str, float] = {}
    offsets: dict[str, int] = {}
    for tokens in lines[1 : n_sig + 1]:
        spec = _FORMAT_SPEC.match(tokens[1]) if len(tokens) > 1 else None
        if spec is None:
            raise EcgFormatError(item.name, f"signal line {' '.join(tokens)!r} has no format")
        fmt, per_frame, offset = spec.group(1), spec.group(2), spec.group(4)
        size = _BYTES_PER_SAMPLE.get(fmt)
        if size is None:
            return  # an exotic format: let wfdb judge it
        needed[tokens[0]] = needed.get(tokens[0], 0.0) + size * int(per_frame or 1) * sig_len
        offsets[tokens[0]] = int(offset or 0)
    for name, n_bytes in needed.items():
        actual = _file_size(item, header.parent, name)
        if actual is None:
            continue  # reported by the caller
        expected = offsets[name] + int(np.floor(n_bytes))
        if actual < expected:
            raise EcgFormatError(
                item.name,
                f"signal file {name} is {actual} bytes but the header's {sig_len} samples "
                f"per channel need {expected}",
                "the file is truncated or the header is wrong",
            )


def _check_declared_size(
    item: ReaderInput, header: Path, record: list[str], signal_lines: list[list[str]]
) -> None:
    """Leads x samples the header declares (or the signal files imply), against the limits,
    before wfdb allocates them: a header can declare anything, and a zipped signal file of
    zeros is tiny until inflated."""
    if len(record) < 2 or not record[1].isdigit():
        raise EcgFormatError(item.name, "the record line gives no number of signals")
    n_sig = int(record[1])
    if n_sig > item.limits.max_ecg_leads:
        item.check_shape(n_sig, 0)
    if len(record) >= 4 and record[3].isdigit():
        item.check_shape(n_sig, int(record[3]))
        return
    if "/" in record[0]:
        raise EcgFormatError(
            item.name, "a multi-segment record must declare its length on the record line"
        )
    # No length: wfdb reads whole signal files. Bound what they can hold.
    total = 0
    seen: set[str] = set()
    for tokens in signal_lines[:n_sig]:
        spec = _FORMAT_SPEC.match(tokens[1]) if len(tokens) > 1 else None
        size = _BYTES_PER_SAMPLE.get(spec.group(1)) if spec else None
        if size is None:
            raise EcgFormatError(
                item.name,
                "the header gives no signal length and a format whose size cannot be bounded",
                "add the number of samples to the record line",
            )
        file_size = None if tokens[0] in seen else _file_size(item, header.parent, tokens[0])
        if file_size is not None:
            seen.add(tokens[0])
            total += int(file_size / size)  # all of the file's interleaved values
    item.check_values(total)


def _digital_resolution(text: str) -> int:
    """The smallest integer width wfdb may return the digital samples in (16, 32 or 64).

    wfdb widens samples to int64 by default; int16 halves the memory traffic of a long
    record when every signal format fits 16 bits.
    """
    lines = _content_lines(text)
    if not lines or "/" in lines[0].split()[0]:
        return 64  # multi-segment: let wfdb choose
    widths = set()
    for line in lines[1:]:
        tokens = line.split()
        spec = _FORMAT_SPEC.match(tokens[1]) if len(tokens) > 1 else None
        widths.add(_FORMAT_BITS.get(spec.group(1), 64) if spec else 64)
    return max(widths, default=64)


def _check_names_stay_local(item: ReaderInput, text: str) -> None:
    """Signal files and segments must be bare names in the header's own folder.

    A header is untrusted input (an upload, a PACS export): a name such as
    ``../../secrets.dat`` or ``/etc/shadow`` would make the reader return another file's
    bytes as an ECG, so anything but a plain file name is refused.
    """
    for line in _content_lines(text)[1:]:
        name = line.split()[0]
        if name == "~":
            continue
        if name in (".", "..") or "/" in name or "\\" in name or ":" in name:
            raise EcgFormatError(
                item.name,
                f"the header names {name!r}, outside the record's folder",
                "WFDB signal files must sit beside the header",
            )


def _read_record(
    item: ReaderInput, header: Path, header_bytes: bytes, text: str
) -> tuple[wfdb.Record | DigitalRecord, list[Path], dict[str, bytes]]:
    """The record, its signal files and their bytes (each file read once, for the samples
    and the SHA-256 alike)."""
    _check_names_stay_local(item, text)
    files = _signal_files(header, text)
    for file in files:
        size = _file_size(item, header.parent, file.name)
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
        _check_header(item, header, text)
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
        return_res=_digital_resolution(text),
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
            return_res=_digital_resolution(text),
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
    signal, leads, dropped = to_millivolts(item, record)
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
    )


READER = Reader(format=FORMAT, sniff=sniff, read=read)
