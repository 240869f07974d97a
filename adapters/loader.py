"""One entry point, :func:`load_ecg`, that detects the format from the bytes and reads it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from adapters import aecg, cpsc_mat, dicom, fhir, muse, philips, scp, sph_hdf5, wfdb_reader
from adapters.errors import EcgFormatError
from adapters.limits import DEFAULT_LIMITS, DecodeLimits
from adapters.reader import Reader, ReaderInput
from adapters.record import Ecg

#: Default upper bound on the size of one input file (bytes). Override per call.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


#: Every reader, in the order they are tried when sniffing (each sniff looks at content,
#: never at the file name; order matters only where two could claim the same bytes).
_READERS: dict[str, Reader] = {
    reader.format: reader
    for reader in (
        aecg.READER,
        cpsc_mat.READER,
        dicom.READER,
        fhir.READER,
        muse.READER,
        philips.READER,
        scp.READER,
        sph_hdf5.READER,
        wfdb_reader.READER,
    )
}


def available_formats() -> list[str]:
    return sorted(_READERS)


def _wfdb_header_instead(path: Path) -> Path:
    """A WFDB record may be named by its record path or one of its signal files: use its header.

    ``records500/00000/00001_hr`` (no extension) and ``00001_hr.dat`` / CinC ``A0001.mat``
    with a ``.hea`` beside them all mean the record the header describes; the header is the
    file whose content identifies the format.
    """
    if not path.exists():
        named = path.with_name(path.name + ".hea")
        return named if named.is_file() else path
    if path.suffix.lower() in (".dat", ".mat"):
        sibling = path.with_suffix(".hea")
        if sibling.is_file():
            return sibling
    return path


def _check_size(display: str, what: str, size: int, max_bytes: int) -> None:
    """Refuse an input over ``max_bytes`` (checked before anything is read or decoded)."""
    if size > max_bytes:
        raise EcgFormatError(
            display,
            f"{what} is {size} bytes, over the {max_bytes}-byte limit",
            "raise max_bytes if this file is genuine",
        )


def _read_input(
    source: str | Path | bytes,
    name: str | None,
    max_bytes: int,
    limits: DecodeLimits,
    files: Mapping[str, bytes] | None = None,
) -> ReaderInput:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        display = name or "<bytes>"
        _check_size(display, "input", len(data), max_bytes)
        return ReaderInput(data=data, name=display, path=None, max_bytes=max_bytes, limits=limits)
    path = Path(source)
    display = name or str(path)
    if files is not None:  # read by the caller: the disk is not looked at again
        given = files.get(path.name)
        if given is None:
            raise EcgFormatError(display, f"{path.name} is not among the files read")
        _check_size(display, "file", len(given), max_bytes)
        return ReaderInput(
            data=given, name=display, path=path, max_bytes=max_bytes, limits=limits, files=files
        )
    path = _wfdb_header_instead(path)
    if path.is_dir():
        raise EcgFormatError(display, "is a folder, not a file", "pass one ECG file")
    if not path.is_file():
        raise EcgFormatError(display, "no such file", "check the path")
    _check_size(display, "file", path.stat().st_size, max_bytes)
    return ReaderInput(
        data=path.read_bytes(), name=display, path=path, max_bytes=max_bytes, limits=limits
    )


def load_ecg(
    source: str | Path | bytes,
    format: str | None = None,
    *,
    name: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    limits: DecodeLimits | None = None,
    files: Mapping[str, bytes] | None = None,
) -> Ecg:
    """Read one ECG from a path or from bytes, in any supported format.

    ``files``: the contents of the path's file and of the files beside it that a
    multi-file record names (a WFDB header and its signal files), already read by the
    caller (name -> bytes): the record is read from exactly those bytes, as if they lay in
    the path's folder, and the disk is not touched (``ecg-cds ingest`` stores the bytes it
    read and parses the same ones; reading and hashing them again cost ~0.3 ms per record).

    The format is detected from the content, not the file name, unless ``format`` names
    one of :func:`available_formats`. Anything that cannot be read raises
    :class:`~adapters.errors.EcgFormatError`; no other exception escapes. A record whose
    declared shape or decompressed size is over ``limits`` raises
    :class:`~adapters.limits.EcgTooLarge` before it is decoded.
    """
    display = name or (str(source) if isinstance(source, str | Path) else "<bytes>")
    try:
        item = _read_input(source, name, max_bytes, limits or DEFAULT_LIMITS, files)
        if format is not None:
            reader = _READERS.get(format)
            if reader is None:
                raise EcgFormatError(
                    display, f"unknown format {format!r}", f"use one of {available_formats()}"
                )
        else:
            reader = next((r for r in _READERS.values() if r.sniff(item)), None)
            if reader is None:
                raise EcgFormatError(
                    display,
                    "not a recognised ECG format",
                    f"supported: {', '.join(available_formats())}",
                )
        return reader.read(item)
    except EcgFormatError:
        raise
    except (MemoryError, RecursionError) as exc:
        raise EcgFormatError(
            display, f"input too complex to parse ({type(exc).__name__})"
        ) from None
    except Exception as exc:  # a parser's own exception: never let it escape raw
        raise EcgFormatError(display, f"unreadable ({type(exc).__name__}: {exc})") from None
