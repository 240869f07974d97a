"""Multi-file ECG records (a WFDB header and its signal files) stored as one blob.

WFDB can only be read from files beside each other, so such a record is kept as a zip of
its files. The zip is deterministic (sorted names, fixed timestamps, one way of storing the
members), so the same files always hash to the same SHA-256 and a duplicate upload is
recognised.

Members are stored, not deflated (issue 11). Deflating was the largest cost of an ingest
outside the model: on 60 PTB-XL 500 Hz signal files (120 000 bytes each) zlib level 1 took
2.04 ms of CPU per record for 58.7 % of the size, Huffman-only 1.09 ms for 68.8 %, storing
0.03 ms (the CRC) for 100 %; reading a deflated bundle back (distributed workers, backfills,
the viewer) inflated it again, 0.75 ms per record. Every other format is stored as received
(aECG, DICOM, MUSE files, uncompressed at 120-250 KiB per 500 Hz ECG), so WFDB records now
are too: ~117 KiB per 500 Hz record instead of 68 KiB. Bundles packed before were deflated
(level 6 until the first issue-11 change, then level 1): the same files have another
SHA-256 then, so the store also recognises a duplicate by comparing the files of a bundle
stored from the same source (:func:`same_files`).
"""

from __future__ import annotations

import io
import re
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

#: A fixed timestamp makes the archive bytes depend on the file contents only.
_EPOCH = (1980, 1, 1, 0, 0, 0)
#: Bundles are small (a header and one or two signal files); refuse anything else.
MAX_MEMBERS = 16
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def pack(files: Mapping[str, bytes], *, level: int | None = None) -> bytes:
    """A deterministic zip of ``files`` (flat names only): stored, or deflated at zlib
    ``level`` (how bundles were packed before; see the module's docstring)."""
    if not files or len(files) > MAX_MEMBERS:
        raise ValueError(f"a bundle holds 1 to {MAX_MEMBERS} files, not {len(files)}")
    buffer = io.BytesIO()
    method = zipfile.ZIP_STORED if level is None else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name in sorted(files):
            if not _SAFE_NAME.match(name):
                raise ValueError(f"unsafe file name in bundle: {name!r}")
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name], compresslevel=level)
    return buffer.getvalue()


def same_files(blob: bytes, files: Mapping[str, bytes], max_bytes: int) -> bool:
    """Whether the stored bundle ``blob`` holds exactly ``files`` (whatever its deflate level)."""
    try:
        return unpack(blob, max_bytes) == dict(files)
    except (ValueError, OSError, zipfile.BadZipFile):
        return False


def unpack(data: bytes, max_bytes: int) -> dict[str, bytes]:
    """The files of a bundle, refusing unsafe names and archives that inflate past ``max_bytes``."""
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise ValueError(f"bundle has {len(members)} files, over {MAX_MEMBERS}")
        if sum(m.file_size for m in members) > max_bytes:
            raise ValueError(f"bundle inflates past {max_bytes} bytes")
        for member in members:
            if not _SAFE_NAME.match(member.filename):
                raise ValueError(f"unsafe file name in bundle: {member.filename!r}")
            files[member.filename] = archive.read(member)
    return files


def wfdb_record_files(header_path: Path) -> dict[str, bytes]:
    """The header and the signal files it names, read from the header's folder."""
    header_path = header_path if header_path.suffix else header_path.with_suffix(".hea")
    text = header_path.read_bytes()
    files = {header_path.name: text}
    lines = [
        line.strip()
        for line in text.decode("latin-1").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for line in lines[1:]:  # signal lines: the first token is the signal file name
        name = line.split()[0]
        if name in files or name == "~":
            continue
        candidate = header_path.parent / name
        if candidate.parent != header_path.parent or not candidate.is_file():
            raise FileNotFoundError(
                f"{header_path} names signal file {name!r}, not found beside it"
            )
        files[name] = candidate.read_bytes()
    return files


def header_name(files: Mapping[str, bytes]) -> str:
    """The one ``.hea`` member of a WFDB bundle."""
    headers = [name for name in files if name.lower().endswith(".hea")]
    if len(headers) != 1:
        raise ValueError(f"a WFDB bundle needs exactly one .hea file, found {len(headers)}")
    return headers[0]


@contextmanager
def extracted(files: Mapping[str, bytes]) -> Iterator[Path]:
    """A temporary folder holding ``files``; removed on exit."""
    with tempfile.TemporaryDirectory(prefix="ecg-cds-bundle-") as folder:
        root = Path(folder)
        for name, data in files.items():
            if not _SAFE_NAME.match(name):
                raise ValueError(f"unsafe file name in bundle: {name!r}")
            (root / name).write_bytes(data)
        yield root
