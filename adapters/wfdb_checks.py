"""What a WFDB header must pass before its signal files are read or allocated.

A header is untrusted text (an upload, a PACS export) that can declare anything: a sampling
rate of zero, more samples than its files hold, a billion samples of zeros, signal files in
another folder. These checks catch each with a precise :class:`~adapters.errors.EcgFormatError`
before wfdb (or the fast decoder) trips over it or allocates it. Split from
:mod:`adapters.wfdb_reader`, which calls them in this order: names, sizes, header.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from wfdb.io.header import rx_signal

from adapters.errors import EcgFormatError
from adapters.reader import ReaderInput

#: Signal-line format ``fmt[xspf][:skew][+offset]`` and bytes per sample of common formats.
_FORMAT_SPEC = re.compile(r"^(\d+)(?:x(\d+))?(:\d+)?(?:\+(\d+))?$")
_BYTES_PER_SAMPLE = {"8": 1.0, "80": 1.0, "16": 2.0, "61": 2.0, "160": 2.0, "212": 1.5,
                     "310": 4 / 3, "311": 4 / 3, "24": 3.0, "32": 4.0}  # fmt: skip
#: Every signal format of header(5) / signal(5): those above and the FLAC ones.
WFDB_FORMATS = frozenset(_BYTES_PER_SAMPLE) | {"508", "516", "524"}
#: Bits needed to hold a sample of each format once decoded.
_FORMAT_BITS = {"8": 16, "80": 16, "16": 16, "61": 16, "160": 16, "212": 16, "310": 16,
                "311": 16, "24": 32, "32": 32}  # fmt: skip


#: A signal line's ADC gain field: ``gain[(baseline)][/units]``.
_GAIN_FIELD = re.compile(r"^([^(/]*)")


def content_lines(text: str) -> list[str]:
    """Header lines that are neither blank nor comments."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def signal_files(header: Path, text: str) -> list[Path]:
    """The signal files a single-segment header names (first token of each signal line).

    Multi-segment headers name segment records instead; wfdb resolves those itself.
    """
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines or "/" in lines[0].split()[0]:
        return []
    names = dict.fromkeys(ln.split()[0] for ln in lines[1:])  # ordered, unique
    return [header.parent / name for name in names if name != "~"]


def file_size(item: ReaderInput, folder: Path, name: str) -> int | None:
    """Bytes in the record's file ``name`` (None when missing): of the files the caller
    read (``item.files``) when given, else on the disk beside the header."""
    if item.files is not None:
        data = item.files.get(name)
        return None if data is None else len(data)
    file = folder / name
    return file.stat().st_size if file.is_file() else None


def check_header(item: ReaderInput, header: Path, text: str) -> None:
    """Catch the common corruptions with a precise message before wfdb trips over them.

    Checks the sampling rate on the record line and, for single-segment records, that each
    signal file holds as many bytes as the header's formats and length require.
    """
    content = content_lines(text)
    lines = [ln.split() for ln in content]
    record = lines[0]
    _check_declared_size(item, header, record, lines[1:])
    if "/" in record[0]:
        return
    _check_signal_fields(item, content[1:])
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
        if fmt.lstrip("0") not in WFDB_FORMATS:
            raise EcgFormatError(
                item.name,
                f"signal line {' '.join(tokens)[:80]!r}: format {fmt} is not a WFDB signal format",
                f"WFDB formats are {', '.join(sorted(WFDB_FORMATS, key=int))}",
            )
        if per_frame is not None and int(per_frame) == 0:
            raise EcgFormatError(item.name, f"signal line {tokens[0]}: 0 samples per frame")
        size = _BYTES_PER_SAMPLE.get(fmt)
        if size is None:
            return  # an exotic format: let wfdb judge it
        needed[tokens[0]] = needed.get(tokens[0], 0.0) + size * int(per_frame or 1) * sig_len
        offsets[tokens[0]] = int(offset or 0)
    for name, n_bytes in needed.items():
        actual = file_size(item, header.parent, name)
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
        held = None if tokens[0] in seen else file_size(item, header.parent, tokens[0])
        if held is not None:
            seen.add(tokens[0])
            total += int(held / size)  # all of the file's interleaved values
    item.check_values(total)


#: A token that reads as a number (or as the start of a gain field's parenthesis or units).
_NUMBER_LIKE = re.compile(r"^[-+]?(\d|\.\d)|^\.?\d*\)|^(nan|inf)", re.IGNORECASE)


def _check_signal_fields(item: ReaderInput, signal_lines: list[str]) -> None:
    """Each signal line's numeric fields must be what wfdb's grammar reads as such.

    wfdb's signal-line pattern backs off its optional fields, so one malformed number (an
    ADC resolution of -1, a gain of 200(1.5)/mV) does not fail: it and every field after it
    become the lead's description. The record then reads with the zero and baseline lost
    (MIT-BIH 100's lead: "-22131 0 MLII", every sample 5 mV off). The description may only
    follow all eight fields (header(5)); one that begins like a number means a field was
    swallowed.
    """
    for number, line in enumerate(signal_lines, start=1):
        tokens = line.split()
        match = rx_signal.match(line)
        if match is None or len(tokens) < 3:
            continue  # wfdb's own parser names it
        description = match.group("sig_name").strip()
        expected = " ".join(tokens[8:])
        swallowed = (len(tokens) > 8 and description.split() != expected.split()) or (
            len(tokens) <= 8 and description != "" and _NUMBER_LIKE.match(description)
        )
        if swallowed:
            first = description.split()[0] if description else tokens[min(len(tokens), 8) - 1]
            raise EcgFormatError(
                item.name,
                f"signal line {number} ({tokens[0]}): field {first[:20]!r} is not what the WFDB "
                "header format allows there (gain[(baseline)][/units], then whole numbers)",
                "the header is corrupt or hand-edited; fix the signal line",
            )


def uncalibrated_channels(text: str) -> frozenset[int]:
    """Channels (0-based) whose signal line gives no ADC gain, or a gain of 0.

    WFDB's header(5): "If the gain is zero or missing, this indicates that the signal
    amplitude is uncalibrated"; wfdb then reads 200 units per mV, a guess that makes a
    PTB-XL-like record (1000 per mV) five times too tall. The parsed header no longer tells
    (wfdb and :mod:`adapters.wfdb_header` turn 0 into 200), so the text is read here."""
    lines = content_lines(text)
    if not lines or "/" in lines[0].split()[0]:
        return frozenset()  # multi-segment: the segments' headers hold the signal lines
    found: set[int] = set()
    for index, line in enumerate(lines[1:]):
        tokens = line.split()
        field = _GAIN_FIELD.match(tokens[2]) if len(tokens) > 2 else None
        try:
            gain = float(field.group(1)) if field is not None else 0.0
        except ValueError:
            continue  # malformed: wfdb's parser reports it
        if gain == 0:
            found.add(index)
    return frozenset(found)


def digital_resolution(text: str) -> int:
    """The smallest integer width wfdb may return the digital samples in (16, 32 or 64).

    wfdb widens samples to int64 by default; int16 halves the memory traffic of a long
    record when every signal format fits 16 bits.
    """
    lines = content_lines(text)
    if not lines or "/" in lines[0].split()[0]:
        return 64  # multi-segment: let wfdb choose
    widths = set()
    for line in lines[1:]:
        tokens = line.split()
        spec = _FORMAT_SPEC.match(tokens[1]) if len(tokens) > 1 else None
        widths.add(_FORMAT_BITS.get(spec.group(1), 64) if spec else 64)
    return max(widths, default=64)


def check_names_stay_local(item: ReaderInput, text: str) -> None:
    """Signal files and segments must be bare names in the header's own folder.

    A header is untrusted input (an upload, a PACS export): a name such as
    ``../../secrets.dat`` or ``/etc/shadow`` would make the reader return another file's
    bytes as an ECG, so anything but a plain file name is refused.
    """
    for line in content_lines(text)[1:]:
        name = line.split()[0]
        if name == "~":
            continue
        if name in (".", "..") or "/" in name or "\\" in name or ":" in name:
            raise EcgFormatError(
                item.name,
                f"the header names {name!r}, outside the record's folder",
                "WFDB signal files must sit beside the header",
            )
