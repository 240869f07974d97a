"""What a format reader is and gets: :class:`Reader`, :class:`ReaderInput`, :func:`build_ecg`.

Each reader module (``adapters.aecg``, ``adapters.dicom``, ...) defines one ``READER``;
:mod:`adapters.loader` lists them and picks one by content. Readers import this module,
never the loader, so the loader can import them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.errors import EcgFormatError
from adapters.limits import DEFAULT_LIMITS, DecodeLimits
from adapters.record import Ecg, EcgSource, sha256_hex, split_scale_note


@dataclass(frozen=True)
class ReaderInput:
    """What a reader gets: the raw bytes, a display name, and the path when read from disk.

    ``path`` matters for multi-file formats (WFDB ``.hea`` + ``.dat``); readers of
    single-file formats use ``data`` only.
    """

    data: bytes
    name: str
    path: Path | None
    max_bytes: int
    #: Declared-shape and decompressed-size limits, checked before allocating.
    limits: DecodeLimits = DEFAULT_LIMITS
    #: The files of ``path``'s folder the caller has already read (name -> bytes): a
    #: multi-file record (WFDB) is read from exactly these, never from the disk again.
    files: Mapping[str, bytes] | None = None

    def check_shape(self, leads: int, samples_per_lead: int) -> None:
        self.limits.check_shape(self.name, leads, samples_per_lead)

    def check_values(self, n_values: int) -> None:
        self.limits.check_values(self.name, n_values)


@dataclass(frozen=True)
class Reader:
    """A format: how to recognise it from the first bytes and how to read it."""

    format: str
    sniff: Callable[[ReaderInput], bool]
    read: Callable[[ReaderInput], Ecg]


def build_ecg(item: ReaderInput, format: str, **fields: Any) -> Ecg:
    """Construct the canonical record for one reader input.

    :class:`Ecg` validates itself (finite samples, plausible rate and amplitude) and names
    the record by its URI; for input read from bytes that would be just the format, so
    its errors are re-raised here under the caller's display name. Every reader counts
    its leads before decoding them; the record's own count is checked once more here, so
    no reader's record holds more channels than ``max_ecg_leads``.
    """
    item.check_shape(len(fields.get("leads") or ()), 0)
    if fields.get("statements") and fields.get("amplitude_assumed") is None:
        # A file this project wrote from an uncalibrated record says so in a note: the
        # assumption is read back as such, not as one more interpretation statement.
        statements, assumed = split_scale_note(fields["statements"])
        if assumed is not None:
            fields = {**fields, "statements": tuple(statements), "amplitude_assumed": assumed}
    source = EcgSource(
        format=format, uri=str(item.path) if item.path else None, sha256=sha256_hex(item.data)
    )
    try:
        return Ecg(source=source, **fields)
    except EcgFormatError as exc:
        if exc.source == item.name:
            raise
        raise EcgFormatError(item.name, exc.problem, exc.hint) from None
