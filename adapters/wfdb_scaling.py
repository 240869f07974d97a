"""WFDB digital samples to millivolts: units, ADC gain, baseline and missing-sample markers.

Split out of :mod:`adapters.wfdb_reader` (which finds, checks and reads the files) so each
module reads in one sitting. :func:`to_millivolts` takes what either decoder gives
(``wfdb.rdrecord(physical=False)`` or :func:`adapters.wfdb_signals.read_digital`).
"""

from __future__ import annotations

import numpy as np
import wfdb

from adapters.errors import EcgFormatError
from adapters.leads import normalize_lead_name
from adapters.reader import ReaderInput
from adapters.record import uncalibrated_wfdb
from adapters.units import mv_factor
from adapters.wfdb_signals import DigitalRecord

#: The digital value WFDB stores for a missing sample, by signal format (WFDB spec).
INVALID_SAMPLE = {"8": -128, "80": -128, "16": -32768, "61": -32768, "160": -32768,
                   "212": -2048, "310": -512, "311": -512, "24": -8388608,
                   "32": -2147483648}  # fmt: skip


def invalid_counts(digital: np.ndarray, formats: list[str]) -> np.ndarray:
    """Per channel, the samples equal to its format's invalid-sample marker (0 for formats
    without one): one pass over the samples, not one strided pass per channel."""
    n_sig = digital.shape[1]
    markers = [INVALID_SAMPLE.get(str(fmt)) for fmt in formats[:n_sig]]
    markers += [None] * (n_sig - len(markers))
    known = np.array([m is not None for m in markers])
    values = np.array([0 if m is None else m for m in markers], dtype=np.int64)
    if np.issubdtype(digital.dtype, np.integer):
        info = np.iinfo(digital.dtype)
        fits = (values >= info.min) & (values <= info.max)
        known &= fits  # a marker the samples' type cannot hold matches no sample
        values = np.where(fits, values, 0).astype(digital.dtype)
    if not known.any() or digital.size == 0:
        return np.zeros(n_sig, dtype=np.int64)
    # Each marker is its format's lowest value, so a record whose lowest sample lies above
    # every marker holds none: one contiguous pass (7 us for 12 x 5000) instead of the
    # element-wise comparison and a count across the channels (140 us).
    if digital.min() > values[known].max():
        return np.zeros(n_sig, dtype=np.int64)
    counts = np.count_nonzero(digital == values[None, :], axis=0)
    return np.where(known, counts, 0)


#: WFDB's DEFGAIN (wfdb.h): the ADC units per physical unit header(5) lets a reader assume
#: for a signal whose gain is 0 or missing.
DEFAULT_GAIN = 200.0


def to_millivolts(
    item: ReaderInput,
    record: wfdb.Record | DigitalRecord,
    uncalibrated: frozenset[int] = frozenset(),
) -> tuple[np.ndarray, list[str], list[str], str | None]:
    """Rows in mV for every calibrated voltage channel; non-voltage channels and the
    ``uncalibrated`` ones (no ADC gain in the header) are dropped and named, unless every
    voltage channel is uncalibrated: then all are read at WFDB's default gain
    (:data:`DEFAULT_GAIN`, header(5): "a value of 200 ... may be assumed"), one scale for all,
    and the last item says so (None where every kept channel is calibrated).

    The record is read as digital samples and scaled here, ``(d - baseline) / gain`` like
    wfdb's own ``dac`` but in float32 and straight into the (leads, samples) layout: this
    is what keeps the reader close to the speed of a plain ``wfdb.rdrecord``.
    """
    digital = record.d_signal
    if digital is None or digital.ndim != 2 or digital.shape[0] == 0:
        raise EcgFormatError(item.name, "the WFDB record holds no samples")
    n_sig = digital.shape[1]
    units = list(record.units or ["mV"] * n_sig)
    # The description is optional on a signal line: wfdb gives None for a missing one.
    given = list(record.sig_name or [None] * n_sig)
    names = [str(name) if name else f"ch{i + 1}" for i, name in enumerate(given)]
    formats = list(record.fmt or ["16"] * n_sig)
    keep: list[int] = []
    factors: list[float] = []
    dropped: list[str] = []
    missing = invalid_counts(digital, formats)
    unit_factors = [mv_factor(unit or "mV") for unit in units]  # None: not a voltage
    voltages = [i for i, factor in enumerate(unit_factors) if factor is not None]
    # Beside calibrated channels, an uncalibrated one would be on a scale of its own: dropped.
    # With no calibrated channel at all, one assumed scale for every channel keeps the record.
    assumed = bool(voltages) and all(i in uncalibrated for i in voltages)
    for i, (name, unit, factor) in enumerate(zip(names, units, unit_factors, strict=True)):
        if factor is None:
            dropped.append(f"{name} ({unit})")
            continue
        if i in uncalibrated and not assumed:  # millivolts would be a guess: said, not read
            dropped.append(f"{name} (uncalibrated: ADC gain 0 or missing)")
            continue
        gain = DEFAULT_GAIN if assumed else float(record.adc_gain[i])
        if not np.isfinite(gain) or gain == 0:
            raise EcgFormatError(item.name, f"channel {name} has ADC gain {gain}: uncalibrated")
        bad = int(missing[i])
        if bad:
            raise EcgFormatError(
                item.name,
                f"channel {name} has {bad} missing samples (WFDB invalid-sample marker)",
                "the record has gaps; crop or repair it before classification",
            )
        keep.append(i)
        factors.append(factor / gain)
    if not keep:
        raise EcgFormatError(
            item.name,
            f"no channel is a voltage: units {units}",
            "an ECG record needs channels in mV, uV or V",
        )
    rows = digital[:, keep].T if len(keep) < n_sig else digital.T
    signal = rows.astype(np.float32, order="C")  # one copy, already (leads, samples)
    baselines = np.asarray([record.baseline[i] for i in keep], dtype=np.float32)[:, None]
    signal -= baselines
    signal *= np.asarray(factors, dtype=np.float32)[:, None]
    note = uncalibrated_wfdb(DEFAULT_GAIN) if assumed else None
    return signal, [normalize_lead_name(names[i]) for i in keep], dropped, note
