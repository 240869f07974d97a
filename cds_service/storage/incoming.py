"""Files read for storing, before anything touches the database: bytes, digest, parsed ECG.

:meth:`EcgStore.accept_paths` reads a whole group of files this way, then stores the new
ones in one transaction and appends their audit entries in one more (``ecg-cds ingest``
stores thousands of files; per-file commits were a tenth of its time).

A WFDB record is stored as a bundle (:mod:`cds_service.storage.bundle`) and parsed from the
same bytes, read once (``load_ecg(..., files=...)``), not from a temporary copy: the ECG
parsed is the one stored.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from adapters import Ecg, EcgFormatError, load_ecg, sha256_hex
from cds_service.settings import Settings
from cds_service.storage import bundle


@dataclass(frozen=True)
class Incoming:
    """One file (or WFDB record) read from disk, to be stored as ``blob`` under ``digest``."""

    path: Path
    uri: str
    blob: bytes
    digest: str
    container: str  # "raw" or "zip", as in the ecgs table
    files: dict[str, bytes] | None  # a WFDB record's files, header first (zip only)


def read_incoming(path: Path, settings: Settings) -> Incoming:
    """Read what :meth:`EcgStore.accept_path` would store for ``path`` (nothing is parsed)."""
    path = Path(path)
    uri = path.resolve().as_uri()
    if path.suffix.lower() == ".hea":
        try:
            files = bundle.wfdb_record_files(path)
        except (OSError, UnicodeError) as exc:
            raise EcgFormatError(
                str(path), str(exc), "keep the signal files beside the header"
            ) from None
        if len(files) == 1:  # a header alone: stored as is (and refused by the parser)
            ((_, data),) = files.items()
            return Incoming(path, uri, data, sha256_hex(data), "raw", None)
        try:
            blob = bundle.pack(files)
            bundle.header_name(files)
        except ValueError as exc:
            raise EcgFormatError(uri, str(exc)) from None
        return Incoming(path, uri, blob, sha256_hex(blob), "zip", files)
    if path.stat().st_size > settings.max_ecg_bytes:
        raise EcgFormatError(str(path), f"file is over the {settings.max_ecg_bytes}-byte limit")
    data = path.read_bytes()
    return Incoming(path, uri, data, sha256_hex(data), "raw", None)


def text_checked(ecg: Ecg, source: str) -> Ecg:
    """``ecg``, or :class:`~adapters.EcgFormatError` when text read from its file is not
    valid Unicode: a JSON file may escape a lone UTF-16 surrogate (``"\\ud800"``), which
    its reader decodes but no database, log line or card can encode."""
    texts = {
        "patient id": (ecg.patient_id,),
        "device": (ecg.device,),
        "lead names": ecg.leads,
        "statements": ecg.statements,
        "amplitude scale note": (ecg.amplitude_assumed,),
        "diagnosis codes": ecg.diagnosis_codes,
        "extra fields": (*ecg.extra.keys(), *ecg.extra.values()),
    }
    for what, values in texts.items():
        for value in values:
            if isinstance(value, str) and not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise EcgFormatError(
                        source,
                        f"the file's {what} hold a lone UTF-16 surrogate, not valid Unicode",
                        "export the file again from the system that wrote it",
                    ) from None
    return ecg


def parse_incoming(item: Incoming, settings: Settings) -> Ecg:
    """The ECG in ``item``'s bytes (:class:`~adapters.EcgFormatError` when unreadable).

    A WFDB record is read from the files read for its bundle (``files``), as if they lay in
    its folder: the ECG parsed is the one stored, even if the files on disk change meanwhile,
    and they are neither read nor hashed a second time.
    """
    max_bytes, limits = settings.max_ecg_bytes, settings.decode_limits
    if item.files is None:
        ecg = load_ecg(item.blob, name=item.uri, max_bytes=max_bytes, limits=limits)
    else:
        ecg = load_ecg(
            item.path, name=item.uri, max_bytes=max_bytes, limits=limits, files=item.files
        )
    return text_checked(ecg, item.uri)


def ecg_row_values(
    ecg: Ecg,
    blob: bytes,
    digest: str,
    container: str,
    source_uri: str | None,
    patient_ref: str | None,
    now: datetime,
) -> dict[str, Any]:
    """The ``ecgs`` row of a new ECG (a fresh id, status pending)."""
    return {
        "id": str(uuid.uuid4()),
        "sha256": digest,
        "source_uri": source_uri,
        "format": ecg.source.format,
        "container": container,
        "patient_ref": patient_ref,
        "file_patient_id": ecg.patient_id,
        "acquired_at": ecg.start_time,
        "n_leads": len(ecg.leads),
        "fs": float(ecg.fs),
        "duration_s": float(ecg.duration_s),
        "size_bytes": len(blob),
        "status": "pending",
        "created_at": now,
        "updated_at": now,
    }


class HandOver:
    """Parsed ECGs kept for the classification job of this process, each taken once.

    Bounded in waveform bytes: past ``max_bytes`` the oldest are dropped, and their jobs
    re-read the stored bytes (the result is the same, only slower).
    """

    DEFAULT_MAX_BYTES = 64 * 1024 * 1024

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._held: OrderedDict[str, Ecg] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, ecg_id: str, ecg: Ecg) -> None:
        size = int(ecg.signal.nbytes)
        if not self.max_bytes or size > self.max_bytes // 4:
            return
        with self._lock:
            self._held[ecg_id] = ecg
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._held.popitem(last=False)
                self._bytes -= int(dropped.signal.nbytes)

    def take(self, ecg_id: str) -> Ecg | None:
        with self._lock:
            ecg = self._held.pop(ecg_id, None)
            if ecg is not None:
                self._bytes -= int(ecg.signal.nbytes)
            return ecg
