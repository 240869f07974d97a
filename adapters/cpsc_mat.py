"""CPSC 2018 original ``.mat`` files (``A0001.mat`` ... ``A6877.mat``).

Each file is a MATLAB 5 struct ``ECG`` with fields ``sex``, ``age`` and ``data`` (12 x N,
float). The challenge description gives 500 Hz and the standard lead order
(I, II, III, aVR, aVL, aVF, V1-V6) but no units in the file. The values are millivolts
(peaks of a few units, a QRS of about 1-2 mV); the reader checks this from the data rather
than trusting it: a record whose 99th percentile amplitude is above :data:`_UV_THRESHOLD`
cannot be millivolts and is read as microvolts (``extra["units"]`` says which was used).
"""

from __future__ import annotations

import io

import numpy as np
import scipy.io

from adapters.errors import EcgFormatError
from adapters.loader import Reader, ReaderInput, build_ecg, register_reader
from adapters.record import STANDARD_LEADS, Ecg

FORMAT = "cpsc2018-mat"
FS_HZ = 500.0
_MAGIC = b"MATLAB 5.0 MAT-file"
#: A millivolt ECG has its 99th percentile |amplitude| well below 20 mV; microvolts above.
_UV_THRESHOLD = 50.0


def sniff(item: ReaderInput) -> bool:
    return item.data.startswith(_MAGIC)


def _field(struct: np.ndarray, name: str) -> np.ndarray | None:
    if struct.dtype.names is None or name not in struct.dtype.names:
        return None
    value = struct[name]
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.item()
    return np.asarray(value)


def _scalar_text(value: np.ndarray | None) -> str | None:
    if value is None or value.size == 0:
        return None
    text = str(value.ravel()[0]).strip()
    return text or None


def read(item: ReaderInput) -> Ecg:
    try:
        content = scipy.io.loadmat(io.BytesIO(item.data), squeeze_me=False)
    except Exception as exc:
        raise EcgFormatError(
            item.name, f"the MATLAB file cannot be parsed ({type(exc).__name__}: {exc})"
        ) from None
    struct = content.get("ECG")
    if not isinstance(struct, np.ndarray) or struct.dtype.names is None or struct.size != 1:
        variables = sorted(k for k in content if not k.startswith("__"))
        raise EcgFormatError(
            item.name,
            f"a MATLAB file without the CPSC 2018 struct 'ECG' (variables: {variables})",
            "only CPSC 2018 originals are read from .mat alone; "
            "CinC challenge .mat files need their .hea header",
        )
    record = struct.reshape(-1)[0]
    data = _field(record, "data")
    if data is None or data.ndim != 2 or not np.issubdtype(data.dtype, np.number):
        raise EcgFormatError(item.name, "the ECG struct has no numeric 2-D 'data' field")
    if data.shape[0] != len(STANDARD_LEADS) and data.shape[1] == len(STANDARD_LEADS):
        data = data.T
    if data.shape[0] != len(STANDARD_LEADS):
        raise EcgFormatError(
            item.name, f"'data' is {data.shape[0]} x {data.shape[1]}; CPSC 2018 stores 12 leads"
        )
    signal = data.astype(np.float32)
    if not np.isfinite(signal).all():
        raise EcgFormatError(item.name, "the signal contains NaN or infinite samples")
    units = "mV"
    # Every 7th sample is plenty for a 99th percentile and avoids sorting the whole record.
    if signal.size and float(np.percentile(np.abs(signal[:, ::7]), 99)) > _UV_THRESHOLD:
        signal = signal / np.float32(1000.0)
        units = "uV"
    extra = {"units": units}
    sex = _scalar_text(_field(record, "sex"))
    age = _scalar_text(_field(record, "age"))
    statements = []
    if age is not None:
        extra["age"] = age
        statements.append(f"Age: {age}")
    if sex is not None:
        extra["sex"] = sex
        statements.append(f"Sex: {sex}")
    return build_ecg(
        item,
        FORMAT,
        signal=signal,
        fs=FS_HZ,
        leads=STANDARD_LEADS,
        statements=tuple(statements),
        extra=extra,
    )


register_reader(Reader(format=FORMAT, sniff=sniff, read=read))
