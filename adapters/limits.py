"""Size limits every reader checks *before* it allocates or decompresses.

A small file can declare a huge record: an HDF5 dataset of 12 x 10^10 samples filled with a
fill value, a MATLAB element that inflates a hundredfold, a deflated DICOM, a WFDB header
whose signal file is a zip of zeros. Each reader reads the declared shape (leads x samples)
and the decompressed size from the file's own structure, checks them here, and only then
decodes. Refusals are :class:`EcgTooLarge` (an :class:`EcgFormatError` that names the limit),
which the service answers with 413.

The defaults are far above any diagnostic ECG (12 leads x 10 s x 500 Hz is 60,000 values; a
5-minute 16-lead 1 kHz recording is 4.8 million) and keep one decoded record's work arrays
well under 100 MB.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from adapters.errors import EcgFormatError

__all__ = [
    "DEFAULT_LIMITS",
    "UNLIMITED",
    "DecodeLimits",
    "EcgTooLarge",
    "check_tokens",
    "count_tokens",
    "inflate_capped",
    "parse_numbers",
]

_TOKEN_START = re.compile(r"(?<!\S)\S")
_CHUNK = 1 << 22


@dataclass(frozen=True)
class DecodeLimits:
    """What one decoded ECG may hold. Field names are the service's settings names."""

    #: Channels in one record.
    max_ecg_leads: int = 64
    #: Values in one record, all leads together (leads x samples per lead).
    max_ecg_samples: int = 5_000_000
    #: Bytes after decompression (deflate, zlib, XLI, FLAC...), all parts together.
    max_ecg_decoded_bytes: int = 64 * 1024 * 1024

    def check_shape(self, name: str, leads: int, samples_per_lead: int) -> None:
        """Refuse a declared shape over the limits (call before allocating it)."""
        if leads < 0 or samples_per_lead < 0:
            raise EcgFormatError(name, f"declares a negative shape ({leads} x {samples_per_lead})")
        if leads > self.max_ecg_leads:
            raise EcgTooLarge(
                name, f"declares {leads} channels", "max_ecg_leads", self.max_ecg_leads
            )
        self.check_values(name, leads * samples_per_lead, f"{leads} x {samples_per_lead}")

    def check_values(self, name: str, n_values: int, shape: str | None = None) -> None:
        """Refuse a declared number of values (all leads together) over the limit."""
        if n_values > self.max_ecg_samples:
            what = f"declares {shape} = {n_values} samples" if shape else f"has {n_values} samples"
            raise EcgTooLarge(name, what, "max_ecg_samples", self.max_ecg_samples)

    def check_decoded(self, name: str, n_bytes: int, what: str = "decompresses to") -> None:
        if n_bytes > self.max_ecg_decoded_bytes:
            raise EcgTooLarge(
                name,
                f"{what} {n_bytes} bytes",
                "max_ecg_decoded_bytes",
                self.max_ecg_decoded_bytes,
            )


DEFAULT_LIMITS = DecodeLimits()
#: For helpers whose caller has already checked the whole record against the real limits.
UNLIMITED = DecodeLimits(2**62, 2**62, 2**62)


class EcgTooLarge(EcgFormatError):
    """A record larger than a configured limit; ``limit`` names the setting."""

    def __init__(self, source: str, what: str, limit: str, value: int) -> None:
        self.limit = limit
        self.limit_value = value
        super().__init__(
            source,
            f"{what}, over the limit of {value} (setting {limit})",
            f"raise {limit} if this record is genuine",
        )


def inflate_capped(
    name: str, data: bytes, limits: DecodeLimits, *, wbits: int = zlib.MAX_WBITS
) -> bytes:
    """Decompress a zlib/deflate stream, refusing output beyond ``max_ecg_decoded_bytes``.

    The output is produced in bounded steps (``max_length``), so a bomb is stopped after at
    most the limit plus one step of memory, never after it has inflated.
    """
    cap = limits.max_ecg_decoded_bytes
    inflater = zlib.decompressobj(wbits)
    out = bytearray()
    pending = data
    try:
        while True:
            chunk = inflater.decompress(pending, min(1 << 20, cap + 1 - len(out)))
            out += chunk
            if len(out) > cap:
                limits.check_decoded(name, len(out), "decompresses to more than")
            pending = inflater.unconsumed_tail
            if inflater.eof or (not pending and not chunk):
                break
        out += inflater.flush()
    except zlib.error as exc:
        raise EcgFormatError(name, f"the compressed data is corrupt ({exc})") from None
    if len(out) > cap:
        limits.check_decoded(name, len(out), "decompresses to more than")
    return bytes(out)


def count_tokens(text: str) -> int:
    """Whitespace-separated tokens in ``text``, counted without building them."""
    if len(text) <= _CHUNK:
        return len(_TOKEN_START.findall(text))
    count = 0
    for start in range(0, len(text), _CHUNK):
        # the look-behind sees the character before ``start``: no token is counted twice
        count += len(_TOKEN_START.findall(text, start, start + _CHUNK))
    return count


def check_tokens(limits: DecodeLimits, name: str, texts: Iterable[str]) -> None:
    """Refuse ``texts`` whose whitespace-separated values, all together, are over
    ``max_ecg_samples`` (call before parsing them).

    A text of n characters holds at most (n + 1) // 2 values, so the exact count, a pass
    over every character that cost as much as parsing the numbers, is only made when that
    bound is over the limit: a diagnostic ECG is far below it and is never counted."""
    texts = list(texts)
    if sum((len(text) + 1) // 2 for text in texts) > limits.max_ecg_samples:
        limits.check_values(name, sum(count_tokens(text) for text in texts))


#: Integers up to this magnitude are exact in float64; numpy's reader saturates far beyond.
_EXACT_INTEGER = 2.0**53


def parse_numbers(text: str) -> np.ndarray | None:
    """The whitespace-separated numbers of ``text`` as float64; None when a token is not a
    plain number (the caller's slower path explains which). No per-token Python objects are
    made. The caller has already checked the whole document against its limits
    (:func:`check_tokens`, once, not again per lead)."""
    if not text or text.isspace():
        return np.empty(0, dtype=np.float64)
    integers = _parse_integers(text)
    if integers is not None:
        return integers
    if "\n" in text or "\r" in text:  # one line for numpy's C reader, which reads by lines
        text = text.replace("\r", " ").replace("\n", " ")
    try:
        return np.loadtxt([text], dtype=np.float64, ndmin=1, comments=None)
    except ValueError:  # loadtxt refuses any token it cannot read (fromstring, in numpy 1.x,
        return None  # would stop there with only a warning)


def _parse_integers(text: str) -> np.ndarray | None:
    """``text`` as float64 when every token is a plain integer ("-1150 -1148 ..."), else None.

    FHIR SampledData and aECG digits are integers scaled by a factor, and numpy's integer
    text reader takes them about ten times faster than its float readers (measured: 0.1
    against 1.1-1.4 ms for a lead of 5,000 samples; 12 leads of 500 Hz text had cost 31 ms
    per ECG, three times the classification). Below 2**53 the conversion to float64 is
    exact, so each value equals ``float(token)`` (``-0`` reads as 0). Larger magnitudes
    (which the reader saturates), lone signs (which it reads as 0, or joins to the next
    number), decimals and anything else go to the general path. The number of values read
    must equal the number of tokens: numpy before 2.x stops at the first token it cannot
    read, with only a warning.
    """
    if not text.isascii():
        return None
    tokens = _plain_integer_tokens(text.encode("ascii"))
    if tokens is None:
        return None
    try:
        values = np.fromstring(text, dtype=np.int64, sep=" ")
    except ValueError:  # a token that is not an integer: "0.25", "1e3", "E", "L"...
        return None
    if values.size != tokens:
        return None
    out = values.astype(np.float64)
    if out.size and float(np.abs(out).max()) >= _EXACT_INTEGER:
        return None
    return out


#: Digits and ASCII whitespace: deleting them (``bytes.translate``, a C loop over the text)
#: leaves only what else the text holds, which must be signs.
_DIGITS_AND_SPACES = b"0123456789\t\n\x0b\x0c\r "
_SIGNS = b"+-"
#: Bytes looked at per step: the work arrays stay a few MiB whatever the text's size.
_SCAN_CHUNK = 1 << 20


def _plain_integer_tokens(data: bytes) -> int | None:
    """The number of whitespace-separated tokens of ``data`` when it holds only digits,
    whitespace and signs that each lead a digit; else None.

    Once the text is known to hold only those bytes, each class is one comparison: whitespace
    (9-13, 32) is ``<= 32``, the two signs (43, 45) lie between 32 and 48, digits from 48 up.
    numpy's comparisons run as vector loops; the lookup tables indexed by every byte that
    this replaced cost ten times as much (a fifth of a hook call's parsing of a 12-lead
    FHIR Observation).
    """
    rest = data.translate(None, _DIGITS_AND_SPACES)
    if rest.strip(_SIGNS):  # something other than digits, whitespace and signs
        return None
    signed = bool(rest)
    tokens = 0
    previous_space = True  # the text's start counts as whitespace
    for start in range(0, len(data), _SCAN_CHUNK):
        # One byte more than the chunk: a sign at the chunk's end is judged by what follows.
        raw = np.frombuffer(data, dtype=np.uint8, count=min(_SCAN_CHUNK + 1, len(data) - start),
                            offset=start)  # fmt: skip
        here = raw[: min(_SCAN_CHUNK, raw.size)]
        space = here <= 32
        if signed:
            sign = (here > 32) & (here < 48)
            following = raw[1:] >= 48  # the byte after each sign is a digit
            if (sign[: following.size] & ~following).any():
                return None
            if raw.size == here.size and sign[-1]:  # a sign ends the text
                return None
        tokens += int((~space[0] & previous_space) + np.count_nonzero(~space[1:] & space[:-1]))
        previous_space = bool(space[-1])
    return tokens
