"""Multi-file ECG records (a WFDB header and its signal files) stored as one blob.

WFDB can only be read from files beside each other, so such a record is kept as a zip of
its files. The zip is deterministic (sorted names, fixed timestamps, one deflate level), so
the same files always hash to the same SHA-256 and a duplicate upload is recognised.

The level is :data:`DEFLATE_LEVEL` (1). Until issue 11 it was zlib's default (6), which was
most of the cost of storing a record: measured on 50 PTB-XL 500 Hz signal files, level 6
took 4.5 ms per record for 56.9% of the size, level 1 1.8 ms for 59.0%. A bundle packed at
the old level has another SHA-256 for the same files, so the store also recognises a
duplicate by comparing the files of a bundle stored from the same source
(:func:`same_files`).
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
#: zlib level of every bundle packed now (see the module's docstring for the measurement).
DEFLATE_LEVEL = 1


def pack(files: Mapping[str, bytes], *, level: int = DEFLATE_LEVEL) -> bytes:
    """A deterministic zip of ``files`` (flat names only), deflated at ``level``."""
    if not files or len(files) > MAX_MEMBERS:
        raise ValueError(f"a bundle holds 1 to {MAX_MEMBERS} files, not {len(files)}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            if not _SAFE_NAME.match(name):
                raise ValueError(f"unsafe file name in bundle: {name!r}")
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
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
