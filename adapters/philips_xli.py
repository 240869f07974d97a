"""Philips XLI waveform decoding (split from :mod:`adapters.philips`).

XLI stores each lead as a chunk (an 8-byte header with the chunk's size and a start value,
then LZW data with 10-bit codes); the decoded bytes are the high bytes, then the low bytes,
of second differences. Decompression uses the ``sierraecg`` package's LZW
decoder; the chunk walk around it is ours so corrupt input cannot loop forever or expand
without bound, and the delta step is sierraecg's recurrence vectorised (tested equal).
XLI (the DXL encoder) stores III, aVR, aVL and aVF as residuals against I and II:
:func:`reconstruct_limb_leads` undoes that.
"""

from __future__ import annotations

import numpy as np
from sierraecg.lzw import LzwDecoder

from adapters.errors import EcgFormatError

#: At most this many XLI chunks (PageWriters allocate 16 channels for 12 leads).
MAX_CHUNKS = 64


def _xli_chunks(data: bytes, n_leads: int, name: str) -> list[tuple[bytes, int]]:
    """Split XLI data into (compressed chunk, first sample) per lead, validating every header."""
    chunks: list[tuple[bytes, int]] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 8 or len(chunks) >= MAX_CHUNKS:
            raise EcgFormatError(name, "XLI waveform data is truncated or has trailing garbage")
        size = int.from_bytes(data[offset : offset + 4], "little", signed=True)
        start = int.from_bytes(data[offset + 6 : offset + 8], "little", signed=True)
        offset += 8
        if size <= 0 or offset + size > len(data):
            raise EcgFormatError(name, f"XLI chunk {len(chunks) + 1} declares {size} bytes")
        chunks.append((data[offset : offset + size], start))
        offset += size
    if len(chunks) < n_leads:
        raise EcgFormatError(name, f"XLI data holds {len(chunks)} leads, the header says {n_leads}")
    return chunks[:n_leads]


def xli_undo_deltas(buffer: np.ndarray, first: int) -> np.ndarray:
    """``sierraecg.xli.xli_decode_deltas`` vectorised (its per-sample loop is the slow part).

    The buffer holds the high bytes of n int16 values, then their low bytes. With ``d``
    those values: ``x[0] = d[0]``, ``x[1] = d[1]`` and ``x[i] = 2 x[i-1] - x[i-2] - c[i]``
    where ``c[2] = first`` and ``c[i] = d[i-1] - 64`` after that, a second-order recurrence
    solved with two cumulative sums. Equality with sierraecg is tested on the sample files.
    """
    n = buffer.size // 2
    joined = (buffer[:n] << 8) | buffer[n : 2 * n]
    deltas = np.where(joined >= 1 << 15, joined - (1 << 16), joined)
    if n < 3:
        return deltas
    corrections = np.concatenate(([first], deltas[2 : n - 1] - 64))
    steps = np.concatenate(([deltas[1] - deltas[0]], -corrections))
    return np.concatenate(([deltas[0]], deltas[0] + np.cumsum(np.cumsum(steps))))


def xli_decode(data: bytes, n_leads: int, n_samples: int, name: str) -> np.ndarray:
    limit = 2 * n_samples + 2  # bytes per lead: high bytes then low bytes of int16 samples
    rows: list[np.ndarray] = []
    for index, (chunk, start) in enumerate(_xli_chunks(data, n_leads, name)):
        decoder = LzwDecoder(chunk, bits=10)
        buffer: list[int] = []
        while (byte := decoder.read()) != -1:
            buffer.append(byte & 0xFF)
            if len(buffer) > limit:
                raise EcgFormatError(
                    name, f"XLI lead {index + 1} decodes to more than {n_samples} samples"
                )
        if len(buffer) % 2:
            buffer.append(0)
        if len(buffer) < 4:
            raise EcgFormatError(name, f"XLI lead {index + 1} decodes to no samples")
        samples = xli_undo_deltas(np.asarray(buffer, dtype=np.int64), start)
        if samples.min() < -32768 or samples.max() > 32767:
            raise EcgFormatError(name, f"XLI lead {index + 1} decodes out of the 16-bit range")
        rows.append(samples)
    length = min(row.size for row in rows)
    return np.stack([row[:length] for row in rows])


def reconstruct_limb_leads(samples: np.ndarray) -> np.ndarray:
    """Undo Philips' residual coding of III, aVR, aVL, aVF (same formulas as sierraecg)."""
    lead_i, lead_ii, res_iii, res_avr, res_avl, res_avf = samples[:6]
    lead_iii = lead_ii - lead_i - res_iii
    out = samples.copy()
    out[2] = lead_iii
    out[3] = -res_avr - np.floor_divide(lead_i + lead_ii, 2)
    out[4] = np.floor_divide(lead_i - lead_iii, 2) - res_avl
    out[5] = np.floor_divide(lead_ii + lead_iii, 2) - res_avf
    return out
