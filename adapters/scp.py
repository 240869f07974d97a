"""SCP-ECG (EN 1064 / ISO 11073-91064) reader: the binary format of many European carts.

A record is a CRC-protected list of sections found through the pointer table of section 0:
1 patient and acquisition data (tagged fields), 2 Huffman tables, 3 lead definitions,
4 QRS locations, 5 reference (median) beats, 6 rhythm data, 8 and 11 interpretation text.
Rhythm samples are Huffman-coded (the standard's default table) or raw 16-bit integers,
stored as values or as first or second differences, in units of the amplitude value
multiplier (nanovolts).

Supported: default Huffman table or none, difference coding 0/1/2, section 5 median beats
when section 4 gives their length. Refused with a clear error rather than guessed: custom
Huffman tables, bimodal compression, reference-beat subtraction. Every record's CRC is
checked, so a damaged file fails instead of yielding a silently wrong waveform.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from adapters.errors import EcgFormatError
from adapters.limits import DecodeLimits
from adapters.reader import Reader, ReaderInput, build_ecg
from adapters.record import Ecg, MedianBeats
from adapters.recording_filters import scp_filters

FORMAT = "scp-ecg"
_MARKER = b"SCPECG"
_HEADER = 16  # every section starts with CRC, id, length, versions and 6 reserved bytes
_DEFAULT_HUFFMAN = 19999

#: SCP-ECG lead identifiers (EN 1064 table 15) for the leads we name; others keep a number.
_LEADS = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6", 9: "V7",
    10: "V2R", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R", 16: "X", 17: "Y",
    18: "Z", 19: "CC5", 20: "CM5", 61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 65: "-aVR",
    66: "V8", 67: "V9", 68: "V8R", 69: "V9R", 70: "D", 71: "A", 72: "J",
}  # fmt: skip


@dataclass(frozen=True)
class _Lead:
    name: str
    n_samples: int
    #: First sample number (1-based) in section 3: when the lead was recorded.
    start: int = 1


def sniff_scp(item: ReaderInput) -> bool:
    data = item.data
    if len(data) < 6 + _HEADER:
        return False
    if data[6 + 10 : 6 + 16] == _MARKER:
        return True
    # SCP-ECG 1.x leaves the marker out: section 0 must then start at byte 7 with id 0
    section_id, length = struct.unpack_from("<HI", data, 8)
    return (
        section_id == 0
        and _HEADER + 10 <= length <= 16 * 1024
        and data[6 + 16 : 6 + 18] == b"\x00\x00"
    )


def _sections(data: bytes, name: str) -> dict[int, bytes]:
    """Section id -> section body (after its 16-byte header), through the pointer table."""
    if len(data) < 6 + _HEADER:
        raise EcgFormatError(name, "too short for an SCP-ECG record")
    crc, size = struct.unpack_from("<HI", data, 0)
    if size != len(data):
        raise EcgFormatError(
            name, f"SCP-ECG record says {size} bytes but has {len(data)}", "the file is truncated"
        )
    if binascii.crc_hqx(data[2:], 0xFFFF) != crc:
        raise EcgFormatError(name, "SCP-ECG record fails its CRC check", "the file is corrupt")
    section_id, table_length = struct.unpack_from("<HI", data, 8)
    if section_id != 0 or not _HEADER <= table_length <= len(data) - 6:
        raise EcgFormatError(name, "SCP-ECG section 0 (pointer table) is missing or malformed")
    sections: dict[int, bytes] = {}
    for offset in range(6 + _HEADER, 6 + table_length - 9, 10):
        section, length, index = struct.unpack_from("<HII", data, offset)
        if length == 0:
            continue
        start = index - 1
        if index < 1 or length < _HEADER or start + length > len(data):
            raise EcgFormatError(name, f"SCP-ECG section {section} points outside the record")
        header_id, header_length = struct.unpack_from("<HI", data, start + 2)
        if header_id != section or header_length != length:
            raise EcgFormatError(
                name, f"SCP-ECG section {section} header does not match its pointer"
            )
        sections[section] = data[start + _HEADER : start + length]
    return sections


def _need(sections: dict[int, bytes], section: int, what: str, name: str) -> bytes:
    if section not in sections:
        raise EcgFormatError(name, f"SCP-ECG section {section} ({what}) is missing")
    return sections[section]


def _leads(body: bytes, name: str) -> tuple[list[_Lead], int]:
    if len(body) < 2:
        raise EcgFormatError(name, "SCP-ECG section 3 (leads) is empty")
    count, flags = body[0], body[1]
    if count == 0 or len(body) < 2 + 9 * count:
        raise EcgFormatError(name, f"SCP-ECG section 3 declares {count} leads it does not hold")
    leads: list[_Lead] = []
    for index in range(count):
        start, end, code = struct.unpack_from("<IIB", body, 2 + 9 * index)
        if start < 1 or end < start:
            raise EcgFormatError(name, f"SCP-ECG lead {index + 1} has sample range {start}-{end}")
        leads.append(
            _Lead(name=_LEADS.get(code, f"SCP lead {code}"), n_samples=end - start + 1, start=start)
        )
    return leads, flags


def _huffman_default(data: bytes, n_values: int, name: str, lead: str) -> np.ndarray:
    """Decode the standard's default Huffman table (EN 1064 annex): a unary-prefix code.

    ``0`` is 0; ``1^k 0 s`` (k = 1..8 ones, a zero, a sign bit) is +-k; nine ones then
    ``0`` or ``1`` escape to a raw 8- or 16-bit two's-complement value.
    """
    # The longest code is 26 bits: more bytes than that cannot be read, so never unpack them.
    data = data[: (26 * n_values + 7) // 8]
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).tolist()  # lists index fast
    n_bits = len(bits)
    out = np.empty(n_values, dtype=np.int64)
    position = 0
    for index in range(n_values):
        ones = 0
        while ones < 9 and position < n_bits and bits[position]:
            ones += 1
            position += 1
        if position >= n_bits:
            raise EcgFormatError(
                name, f"SCP-ECG lead {lead}: Huffman data ends after {index} samples"
            )
        if ones == 0:
            out[index] = 0
            position += 1
        elif ones < 9:
            sign = bits[position + 1] if position + 1 < n_bits else 0
            out[index] = -ones if sign else ones
            position += 2  # the terminating zero and the sign bit
        else:
            width = 8 if bits[position] == 0 else 16
            position += 1
            if position + width > n_bits:
                raise EcgFormatError(name, f"SCP-ECG lead {lead}: Huffman data ends inside a value")
            raw = 0
            for bit in bits[position : position + width]:
                raw = (raw << 1) | bit
            position += width
            out[index] = raw - (1 << width) if raw >= 1 << (width - 1) else raw
    return out


def _undo_differences(values: np.ndarray, order: int, name: str) -> np.ndarray:
    if order == 0:
        return values
    if order == 1:
        return np.cumsum(values)
    if order == 2:
        # x[n] = d[n] + 2 x[n-1] - x[n-2] with x[0] = d[0], x[1] = d[1]: the steps
        # x[n] - x[n-1] start at d[1] - d[0] and then accumulate d[2:]
        if values.size < 2:
            return values
        steps = np.concatenate(([values[1] - values[0]], values[2:]))
        return np.concatenate(([values[0]], values[0] + np.cumsum(np.cumsum(steps))))
    raise EcgFormatError(name, f"SCP-ECG difference coding {order} is not defined")


def _decode_block(
    body: bytes,
    leads: list[_Lead],
    lengths: list[int],
    huffman: bool,
    order: int,
    name: str,
    what: str,
) -> np.ndarray:
    """Decode one section's per-lead byte streams into a leads x samples int64 array."""
    offset = 6 + 2 * len(leads)
    rows: list[np.ndarray] = []
    for lead, n_samples in zip(leads, lengths, strict=True):
        count = struct.unpack_from("<H", body, 6 + 2 * len(rows))[0]
        chunk = body[offset : offset + count]
        if len(chunk) < count:
            raise EcgFormatError(name, f"SCP-ECG {what} of lead {lead.name} is truncated")
        offset += count
        capacity = 8 * count if huffman else count // 2  # a Huffman code is at least 1 bit
        if n_samples > capacity:
            raise EcgFormatError(
                name,
                f"SCP-ECG {what} of lead {lead.name} declares {n_samples} samples "
                f"but holds {count} bytes",
                "the file is corrupt",
            )
        if huffman:
            values = _huffman_default(chunk, n_samples, name, lead.name)
        else:
            if count < 2 * n_samples:
                raise EcgFormatError(
                    name, f"SCP-ECG {what} of lead {lead.name} holds too few samples"
                )
            values = np.frombuffer(chunk[: 2 * n_samples], dtype="<i2").astype(np.int64)
        rows.append(_undo_differences(values, order, name))
    return np.stack(rows)


def _rate(interval_us: int, name: str) -> float:
    if interval_us == 0:
        raise EcgFormatError(name, "SCP-ECG sample interval is 0")
    fs = 1e6 / interval_us
    # intervals are whole microseconds: 1667 us stands for 600 Hz
    nearest = round(fs)
    return float(nearest) if abs(fs - nearest) / fs < 1e-3 else fs


def _huffman_used(sections: dict[int, bytes], name: str) -> bool:
    if 2 not in sections:
        return False
    body = sections[2]
    if len(body) < 2:
        raise EcgFormatError(name, "SCP-ECG section 2 (Huffman tables) is empty")
    tables = struct.unpack_from("<H", body, 0)[0]
    if tables != _DEFAULT_HUFFMAN:
        raise EcgFormatError(
            name,
            "SCP-ECG file uses custom Huffman tables",
            "only the standard's default table is supported",
        )
    return True


def _rhythm(
    sections: dict[int, bytes], leads: list[_Lead], huffman: bool, name: str
) -> tuple[np.ndarray, float, int]:
    body = _need(sections, 6, "rhythm data", name)
    if len(body) < 6 + 2 * len(leads):
        raise EcgFormatError(name, "SCP-ECG section 6 (rhythm data) is truncated")
    avm_nv, interval_us, order, bimodal = struct.unpack_from("<HHBB", body, 0)
    if bimodal:
        raise EcgFormatError(name, "SCP-ECG bimodal compression is not supported")
    if avm_nv == 0:
        raise EcgFormatError(name, "SCP-ECG amplitude multiplier is 0")
    # Same length is not enough: carts with fewer channels than leads record lead groups
    # one after another, and section 3's sample ranges say when each was taken.
    ranges = sorted({(lead.start, lead.start + lead.n_samples - 1) for lead in leads})
    if len(ranges) != 1:
        spans = ", ".join(f"{first}-{last}" for first, last in ranges)
        raise EcgFormatError(
            name,
            f"SCP-ECG leads are not simultaneous (sample ranges {spans})",
            "leads recorded one group after another cannot be read as one 12-lead record",
        )
    lengths = [lead.n_samples for lead in leads]
    values = _decode_block(body, leads, lengths, huffman, order, name, "rhythm data")
    return values.astype(np.float64) * avm_nv / 1e6, _rate(interval_us, name), interval_us


def _median_beats(
    sections: dict[int, bytes], leads: list[_Lead], huffman: bool, name: str, limits: DecodeLimits
) -> MedianBeats | None:
    if 5 not in sections or 4 not in sections or len(sections[4]) < 2:
        return None
    body = sections[5]
    if len(body) < 6 + 2 * len(leads):
        raise EcgFormatError(name, "SCP-ECG section 5 (reference beats) is truncated")
    avm_nv, interval_us, order, _ = struct.unpack_from("<HHBB", body, 0)
    length_ms = struct.unpack_from("<H", sections[4], 0)[0]
    if avm_nv == 0 or interval_us == 0 or length_ms == 0:
        return None
    n_samples = round(length_ms * 1000 / interval_us)
    limits.check_shape(name, len(leads), n_samples)
    values = _decode_block(
        body, leads, [n_samples] * len(leads), huffman, order, name, "reference beat"
    )
    signal = (values.astype(np.float64) * avm_nv / 1e6).astype(np.float32)
    return MedianBeats(
        signal=signal, fs=_rate(interval_us, name), leads=tuple(lead.name for lead in leads)
    )


def _tags(body: bytes) -> dict[int, bytes]:
    """Section 1's tagged fields (tag, 2-byte length, value), up to the 255 terminator."""
    fields: dict[int, bytes] = {}
    offset = 0
    while offset + 3 <= len(body):
        tag, length = body[offset], struct.unpack_from("<H", body, offset + 1)[0]
        if tag == 255:
            break
        fields.setdefault(tag, body[offset + 3 : offset + 3 + length])
        offset += 3 + length
    return fields


def _string(raw: bytes | None) -> str | None:
    if not raw:
        return None
    text = raw.split(b"\x00", 1)[0].decode("latin-1").strip()
    return text or None


def _start_time(fields: dict[int, bytes]) -> datetime | None:
    date, time = fields.get(25), fields.get(26)
    if not date or len(date) < 4:
        return None
    year, month, day = struct.unpack_from("<HBB", date, 0)
    hour, minute, second = (time[0], time[1], time[2]) if time and len(time) >= 3 else (0, 0, 0)
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def _device(fields: dict[int, bytes]) -> str | None:
    raw = fields.get(14)  # acquiring device: ids, type, manufacturer code, model text, ...
    if not raw or len(raw) < 14:
        return None
    model = _string(raw[8:14])
    # after the fixed part come ASCIIZ strings; the last non-empty ones name maker and model
    strings = [s.decode("latin-1").strip() for s in raw[36:].split(b"\x00") if s.strip()]
    parts = [part for part in (*strings[-2:], model) if part]
    return " ".join(dict.fromkeys(parts)) or None


def _statements(sections: dict[int, bytes]) -> list[str]:
    """Interpretation text of sections 8 (full text) and 11 (universal statements)."""
    texts: list[str] = []
    for section in (8, 11):
        body = sections.get(section)
        if not body or len(body) < 9:
            continue
        count = body[8]
        offset = 9
        for _ in range(count):
            if offset + 3 > len(body):
                break
            length = struct.unpack_from("<H", body, offset + 1)[0]
            text = _string(body[offset + 3 : offset + 3 + length])
            offset += 3 + length
            if text:
                texts.append(text)
    return list(dict.fromkeys(texts))


def read_scp(item: ReaderInput) -> Ecg:
    """Read an SCP-ECG record into the canonical :class:`Ecg` (millivolts)."""
    name = item.name
    try:
        sections = _sections(item.data, name)
    except struct.error:
        raise EcgFormatError(name, "SCP-ECG structure is truncated") from None
    try:
        leads, flags = _leads(_need(sections, 3, "lead definitions", name), name)
        if flags & 0x01:
            raise EcgFormatError(
                name, "SCP-ECG reference-beat subtraction is not supported", "export without it"
            )
        item.check_shape(len(leads), max((lead.n_samples for lead in leads), default=0))
        huffman = _huffman_used(sections, name)
        signal, fs, interval_us = _rhythm(sections, leads, huffman, name)
        fields = _tags(sections.get(1, b""))
    except struct.error:
        raise EcgFormatError(name, "an SCP-ECG section is shorter than its fields") from None
    extra = {"sample_interval_us": str(interval_us)}
    try:  # the cart's beats are extra: never lose the rhythm to them
        median_beats = _median_beats(sections, leads, huffman, name, item.limits)
    except EcgFormatError as exc:
        median_beats, extra["median_beats_skipped"] = None, exc.problem
    except struct.error:
        median_beats, extra["median_beats_skipped"] = None, "section 5 is shorter than its fields"
    return build_ecg(
        item,
        FORMAT,
        signal=signal,
        fs=fs,
        leads=tuple(lead.name for lead in leads),
        start_time=_start_time(fields),
        patient_id=_string(fields.get(2)),
        device=_device(fields),
        statements=tuple(_statements(sections)),
        median_beats=median_beats,
        extra=extra,
        filters=scp_filters(fields),
    )


READER = Reader(format=FORMAT, sniff=sniff_scp, read=read_scp)
