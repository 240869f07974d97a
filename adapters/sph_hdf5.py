"""Shandong Provincial Hospital (SPH) 12-lead ECGs: one HDF5 file per record.

Each file holds a single dataset ``ecg`` (12 x N, float16, millivolts, standard lead order
I, II, III, aVR, aVL, aVF, V1-V6) and no attributes; the sampling rate (500 Hz), patient,
date and SNOMED CT codes live in the dataset's ``metadata.csv`` (columns ``ECG_ID``,
``Patient_ID``, ``Age``, ``Sex``, ``Date``, ``fs``, ``SNOMEDCTCode``). When the file is read from
a path and a ``metadata.csv`` lies beside it, its row is used; otherwise 500 Hz, the rate of
the whole SPH database, is assumed and recorded in ``extra["fs_source"]``.
"""

from __future__ import annotations

import csv
import functools
import io
from pathlib import Path

import numpy as np

from adapters.errors import EcgFormatError
from adapters.reader import Reader, ReaderInput, build_ecg
from adapters.record import STANDARD_LEADS, Ecg

FORMAT = "sph-hdf5"
DEFAULT_FS_HZ = 500.0
SNOMED_SYSTEM = "http://snomed.info/sct"
_MAGIC = b"\x89HDF\r\n\x1a\n"


def sniff(item: ReaderInput) -> bool:
    return item.data.startswith(_MAGIC)


def _metadata_row(path: Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    table = path.parent / "metadata.csv"
    if not table.is_file():
        return None
    stat = table.stat()
    return _metadata_table(str(table), stat.st_mtime_ns, stat.st_size).get(path.name)


@functools.lru_cache(maxsize=8)
def _metadata_table(table: str, mtime_ns: int, size: int) -> dict[str, dict[str, str]]:
    """Rows of a ``metadata.csv`` by file name; cached per (path, mtime, size) so a folder
    of records parses its table once, and an edited table is re-read."""
    with open(table, newline="", encoding="utf-8") as handle:
        rows = {}
        for row in csv.DictReader(handle):
            name = row.get("ECG_ID", "").strip()
            rows[name] = row
            rows.setdefault(name.removesuffix(".h5") + ".h5", row)
        return rows


def _read_array(item: ReaderInput) -> np.ndarray:
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a declared dependency
        raise EcgFormatError(
            item.name, "HDF5 support needs the h5py package", "pip install h5py"
        ) from None
    try:
        # The path when there is one: h5py reads files natively, file objects via callbacks.
        source = str(item.path) if item.path is not None else io.BytesIO(item.data)
        with h5py.File(source, "r") as handle:
            dataset = handle.get("ecg")
            if not isinstance(dataset, h5py.Dataset):
                raise EcgFormatError(
                    item.name,
                    f"an HDF5 file without an 'ecg' dataset (contents: {sorted(handle.keys())})",
                    "only SPH-layout HDF5 ECGs are supported",
                )
            _check_declared(item, dataset.shape, dataset.dtype)
            return np.asarray(dataset[()])
    except EcgFormatError:
        raise
    except Exception as exc:
        raise EcgFormatError(
            item.name, f"the HDF5 file cannot be read ({type(exc).__name__}: {exc})"
        ) from None


def _check_declared(item: ReaderInput, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """The dataset's declared shape and size, before HDF5 allocates and inflates it."""
    if len(shape) != 2:
        raise EcgFormatError(item.name, f"'ecg' has shape {shape}; expected 12 x samples")
    if dtype.kind not in "iuf" or dtype.itemsize > 8:
        raise EcgFormatError(item.name, f"'ecg' holds {dtype}, not numbers")
    leads, samples = (shape[1], shape[0]) if shape[0] != len(STANDARD_LEADS) else shape
    item.check_shape(int(leads), int(samples))
    item.limits.check_decoded(item.name, int(shape[0]) * int(shape[1]) * dtype.itemsize)


def read(item: ReaderInput) -> Ecg:
    data = _read_array(item)
    if data.ndim != 2 or len(STANDARD_LEADS) not in data.shape:
        raise EcgFormatError(item.name, f"'ecg' has shape {data.shape}; expected 12 x samples")
    if data.shape[0] != len(STANDARD_LEADS):
        data = data.T
    row = _metadata_row(item.path)
    extra: dict[str, str] = {}
    codes: tuple[str, ...] = ()
    statements: list[str] = []
    patient: str | None = None
    fs = DEFAULT_FS_HZ
    if row is not None:
        fs = float(row.get("fs") or DEFAULT_FS_HZ)
        extra["fs_source"] = "metadata.csv"
        codes = tuple(
            f"{SNOMED_SYSTEM}|{c.strip()}"
            for c in (row.get("SNOMEDCTCode") or "").split(",")
            if c.strip()
        )
        patient = (row.get("Patient_ID") or "").strip() or None
        for key in ("Age", "Sex"):
            value = (row.get(key) or "").strip()
            if value:
                extra[key.lower()] = value
                statements.append(f"{key}: {value}")
        # The table gives the day only; a midnight start time would be invented, so the
        # date is kept as text and start_time stays unknown.
        day = (row.get("Date") or "").strip()
        if day:
            extra["date"] = day
    else:
        extra["fs_source"] = "SPH database default (no metadata.csv row)"
    return build_ecg(
        item,
        FORMAT,
        signal=data.astype(np.float32),
        fs=fs,
        leads=STANDARD_LEADS,
        patient_id=patient,
        statements=tuple(statements),
        diagnosis_codes=codes,
        extra=extra,
    )


READER = Reader(format=FORMAT, sniff=sniff, read=read)
