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
import struct as binary
import zlib

import numpy as np
import scipy.io

from adapters.errors import EcgFormatError
from adapters.limits import DecodeLimits, inflate_capped
from adapters.reader import Reader, ReaderInput, build_ecg
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


_MI_MATRIX = 14
_MI_COMPRESSED = 15
_MAX_NESTING = 16


class _Mat5Walker:
    """Walks a MATLAB 5 file's element tags to check what ``loadmat`` would allocate.

    ``loadmat`` inflates every compressed element whole and allocates each array (cell and
    struct arrays too) from the dimensions it declares, before it reads a single element.
    This walk inflates with a cap and checks every declared dimension first.
    """

    def __init__(self, item: ReaderInput) -> None:
        self.item = item
        self.limits: DecodeLimits = item.limits
        self.order = "<" if item.data[126:128] == b"IM" else ">"
        self.inflated = 0

    def fail(self, problem: str) -> EcgFormatError:
        return EcgFormatError(self.item.name, f"the MATLAB file is malformed ({problem})")

    def tag(self, data: bytes, pos: int) -> tuple[int, int, int, int]:
        """(type, nbytes, data start, next element) of the element at ``pos``."""
        if pos + 8 > len(data):
            raise self.fail("an element tag runs past the end")
        first, second = binary.unpack_from(self.order + "II", data, pos)
        if first >> 16:  # small data element: type and size share the first word
            return first & 0xFFFF, first >> 16, pos + 4, pos + 8
        end = pos + 8 + second
        if end > len(data):
            raise self.fail("an element runs past the end")
        return first, second, pos + 8, end

    def walk_file(self) -> None:
        data, pos = self.item.data, 128
        while pos < len(data):
            kind, size, start, end = self.tag(data, pos)
            if kind == _MI_COMPRESSED:
                inflated = inflate_capped(self.item.name, data[start:end], self.limits)
                self.inflated += len(inflated)
                self.limits.check_decoded(self.item.name, self.inflated)
                self.walk_elements(inflated, 0, 0)
                pos = end
            else:
                if kind == _MI_MATRIX:
                    self.walk_matrix(data[start:end], 0)
                pos = start + ((size + 7) // 8) * 8

    def walk_elements(self, data: bytes, pos: int, depth: int) -> None:
        while pos < len(data):
            kind, size, start, end = self.tag(data, pos)
            if kind == _MI_MATRIX:
                self.walk_matrix(data[start:end], depth)
            pos = start + ((size + 7) // 8) * 8

    def walk_matrix(self, body: bytes, depth: int) -> None:
        if depth > _MAX_NESTING:
            raise self.fail(f"arrays nested over {_MAX_NESTING} deep")
        if not body:
            return  # an empty matrix element
        _, _, flags_at, flags_end = self.tag(body, 0)
        if flags_end - flags_at < 4:
            raise self.fail("array flags too short")
        matlab_class = binary.unpack_from(self.order + "I", body, flags_at)[0] & 0xFF
        pos = flags_at + 8
        _, dims_size, dims_at, _ = self.tag(body, pos)
        n_dims = dims_size // 4
        dims = binary.unpack_from(f"{self.order}{n_dims}i", body, dims_at)
        count = 1
        for dim in dims:
            if dim < 0:
                raise self.fail("a negative array dimension")
            count *= dim
        self.limits.check_values(self.item.name, count, " x ".join(map(str, dims)))
        pos = dims_at + ((dims_size + 7) // 8) * 8
        _, name_size, name_at, _ = self.tag(body, pos)
        pos = name_at + ((name_size + 7) // 8) * 8 if name_size > 4 else name_at + 4
        if matlab_class == 1:  # cell: its elements follow
            self.walk_elements(body, pos, depth + 1)
        elif matlab_class in (2, 3):  # struct/object: field names, then the fields
            if matlab_class == 3:
                _, size, at, _ = self.tag(body, pos)
                pos = at + ((size + 7) // 8) * 8 if size > 4 else at + 4
            _, _, length_at, _ = self.tag(body, pos)
            pos = length_at + 4
            _, names_size, names_at, _ = self.tag(body, pos)
            pos = names_at + ((names_size + 7) // 8) * 8
            self.walk_elements(body, pos, depth + 1)


def _check_declared(item: ReaderInput) -> None:
    try:
        _Mat5Walker(item).walk_file()
    except (binary.error, zlib.error) as exc:
        raise EcgFormatError(item.name, f"the MATLAB file is malformed ({exc})") from None


def read(item: ReaderInput) -> Ecg:
    _check_declared(item)
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


READER = Reader(format=FORMAT, sniff=sniff, read=read)
