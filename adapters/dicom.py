"""DICOM ECG waveforms in (12-lead, General, Ambulatory ECG Waveform Storage); out: dicom_writer.

Reading: the RHYTHM multiplex group becomes the signal and a MEDIAN BEAT group, if present,
``Ecg.median_beats``. Each channel is scaled by its own sensitivity, correction factor and
baseline (DICOM PS3.3 C.10.9.1.4.3, the same arithmetic as pydicom's ``waveform_array``)
and converted from its UCUM sensitivity units (``uV``, ``mV``, ``V``) to millivolts. Lead
names come from the channel source codes (:mod:`adapters.dicom_codes`). Free-text
annotations become statements, coded SNOMED CT annotations diagnosis codes, numeric ones
(intervals, axes) ``extra`` entries. The rhythm channels' filter settings become
``Ecg.filters`` (:mod:`adapters.recording_filters`).

Writing (:func:`adapters.dicom_writer.ecg_to_dicom`): 16-bit signed samples, one
sensitivity per channel in microvolts. The sensitivity is the smallest value of the 1-2-5
series (0.1, 0.2, 0.5, 1, 2, 5 ... uV) that fits the channel's peak into int16, so the
quantisation step is that value and the round-trip error at most half of it (0.05 uV for a
3 mV peak).
"""

from __future__ import annotations

import io
import math
from datetime import datetime

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from adapters.dicom_checks import check_items, check_sop_class, inflated_data_set
from adapters.dicom_codes import CODE_CACHE, CodeCache, code_of, first_item, lead_name
from adapters.dicom_groups import pick_groups, unread_groups
from adapters.errors import EcgFormatError
from adapters.limits import DecodeLimits
from adapters.reader import Reader, ReaderInput, build_ecg
from adapters.record import Ecg, MedianBeats, RecordingFilters
from adapters.recording_filters import dicom_filters
from adapters.units import mv_factor

FORMAT = "dicom"
SNOMED_SYSTEM = "http://snomed.info/sct"

TWELVE_LEAD_ECG = "1.2.840.10008.5.1.4.1.1.9.1.1"
GENERAL_ECG = "1.2.840.10008.5.1.4.1.1.9.1.2"
AMBULATORY_ECG = "1.2.840.10008.5.1.4.1.1.9.1.3"
GENERAL_32BIT_ECG = "1.2.840.10008.5.1.4.1.1.9.1.4"

_DTYPES = {
    (8, "SB"): "i1", (8, "UB"): "u1", (16, "SS"): "i2", (16, "US"): "u2",
    (32, "SL"): "i4", (32, "UL"): "u4", (64, "SV"): "i8", (64, "UV"): "u8",
}  # fmt: skip
_SNOMED_SCHEMES = {"SCT", "SNM3", "SRT"}
#: The top-level attributes the reader uses: pydicom keeps only these (the character set
#: too), so a file padded with millions of other elements costs no memory for them.
_TOP_LEVEL = [
    "SOPClassUID", "PatientID", "Manufacturer", "ManufacturerModelName",
    "AcquisitionDateTime", "ContentDate", "ContentTime", "StudyDate", "StudyTime",
    "WaveformSequence", "WaveformAnnotationSequence",
]  # fmt: skip
#: Channel Status (003A,0205) terms whose samples are no usable ECG (PS3.3 C.10.9.1.4.2):
#: left out and named like channels that are not voltages.
_UNUSABLE_STATUS = {"DISCONNECTED", "INVALID", "TEST DATA", "UNCALIBRATED"}


def sniff(item: ReaderInput) -> bool:
    return item.data[128:132] == b"DICM"


# --------------------------------------------------------------------------- reading


def _channel_scale(
    channel: Dataset, where: str, index: int, cache: CodeCache
) -> tuple[float, float] | str:
    """(multiplier, offset) taking a raw sample to millivolts for one channel; for a channel
    that is not a voltage (a respiration or pressure channel beside the leads, one in
    arbitrary units), why it is left out."""
    units = code_of(channel, "ChannelSensitivityUnitsSequence", cache)
    if "ChannelSensitivity" not in channel and units is None:
        # Type 1C, "required if samples represent defined (not arbitrary) units" (PS3.3
        # C.10.9.1.4.3): a marker or trigger channel beside the leads, left out and named.
        return "arbitrary units: no Channel Sensitivity"
    if _empty(channel.get("ChannelSensitivity")) or units is None:
        raise EcgFormatError(
            where,
            f"channel {index + 1} has no sensitivity or sensitivity units",
            "the samples cannot be converted to millivolts",
        )
    unit = units[0] or units[1]  # the code meaning ("microvolt") when the value is empty
    factor = mv_factor(unit)
    if factor is None:
        return unit
    status = channel.get("ChannelStatus") or []
    unusable = sorted({str(v).strip().upper() for v in _as_list(status)} & _UNUSABLE_STATUS)
    if unusable:  # samples that are not the patient's calibrated ECG
        return f"status {'/'.join(unusable)}"
    name = f"channel {index + 1}"
    sensitivity = _number(channel.ChannelSensitivity, where, f"{name} sensitivity")
    # Absent or empty (type 1C/3): 1 and 0. A value that is there is taken as written, so a
    # correction factor of 0 is refused below instead of read as 1.
    correction = _number_or(
        channel.get("ChannelSensitivityCorrectionFactor"), 1.0, where, f"{name} correction"
    )
    baseline = _number_or(channel.get("ChannelBaseline"), 0.0, where, f"{name} baseline")
    values = (sensitivity, correction, baseline)
    if not all(math.isfinite(v) for v in values) or sensitivity * correction <= 0:
        raise EcgFormatError(
            where,
            f"{name} has sensitivity {sensitivity}, correction {correction}, baseline {baseline}",
            "a sensitivity times correction of zero or below cannot be read as millivolts "
            "(a negative one would show the lead upside down)",
        )
    return sensitivity * correction * factor, baseline * factor


def _group_signal(
    group: Dataset, where: str, little_endian: bool, cache: CodeCache, limits: DecodeLimits
) -> tuple[np.ndarray, tuple[str, ...], float, list[str], RecordingFilters | None]:
    """A multiplex group's voltage channels in mV (leads, samples), their lead names, the
    rate, the channels left out as not voltages ("name (unit)"), and the filters the kept
    channels state (a respiration channel's filter says nothing about the leads)."""
    label = str(group.get("MultiplexGroupLabel", "")) or "unlabelled"
    required = (
        "NumberOfWaveformChannels",
        "NumberOfWaveformSamples",
        "SamplingFrequency",
        "WaveformBitsAllocated",
        "WaveformSampleInterpretation",
        "WaveformData",
        "ChannelDefinitionSequence",
    )
    missing = [name for name in required if _empty(group.get(name))]  # absent or no value
    if missing:
        raise EcgFormatError(where, f"multiplex group {label!r} lacks {', '.join(missing)}")
    n_channels = int(group.NumberOfWaveformChannels)
    n_samples = int(group.NumberOfWaveformSamples)
    limits.check_shape(where, n_channels, n_samples)
    fs = _number(group.SamplingFrequency, where, f"multiplex group {label!r} sampling frequency")
    kind = (int(group.WaveformBitsAllocated), str(group.WaveformSampleInterpretation))
    dtype = _DTYPES.get(kind)
    if dtype is None:
        raise EcgFormatError(
            where,
            f"waveform samples of {kind[0]} bits, interpretation {kind[1]!r}, are not supported",
            "expected SS (16-bit signed) or another linear integer encoding",
        )
    channels = list(group.ChannelDefinitionSequence)
    if len(channels) != n_channels or n_channels == 0:
        raise EcgFormatError(
            where,
            f"group {label!r} announces {n_channels} channels but defines {len(channels)}",
        )
    raw_bytes = bytes(group.WaveformData)
    width = np.dtype(dtype).itemsize
    needed = n_channels * n_samples * width
    if len(raw_bytes) < needed:
        raise EcgFormatError(
            where,
            f"group {label!r} holds {len(raw_bytes)} bytes of waveform data but "
            f"{n_channels} channels x {n_samples} samples need {needed}",
            "the file is truncated or its header is wrong",
        )
    order = "<" if little_endian else ">"
    raw = np.frombuffer(raw_bytes[:needed], dtype=order + dtype).reshape(n_samples, n_channels)
    names = tuple(lead_name(ch, i, cache) for i, ch in enumerate(channels))
    _refuse_padding(group, raw, order + dtype, names, where, label)
    scales = [_channel_scale(ch, where, i, cache) for i, ch in enumerate(channels)]
    keep = [i for i, scale in enumerate(scales) if not isinstance(scale, str)]
    dropped = [f"{names[i]} ({scale})" for i, scale in enumerate(scales) if isinstance(scale, str)]
    if not keep:
        raise EcgFormatError(
            where,
            f"no channel of group {label!r} is a voltage that can be read: {', '.join(dropped)}",
            "an ECG needs channels in mV, uV or V with a usable Channel Status",
        )
    kept = [scale for scale in scales if not isinstance(scale, str)]
    rows = raw[:, keep].T if dropped else raw.T
    # float32 holds integers exactly only up to 2**24: 32/64-bit samples (UL offset binary
    # sits near 2**31) are scaled in float64, else they come out in steps of tens of uV.
    work: type[np.floating] = np.float32 if width <= 2 else np.float64
    signal: np.ndarray = rows.astype(work, order="C")  # one copy, (leads, samples)
    signal *= np.array([m for m, _ in kept], dtype=work)[:, None]
    signal += np.array([o for _, o in kept], dtype=work)[:, None]
    signal = signal.astype(np.float32, copy=False)
    filters = dicom_filters(channels[i] for i in keep)
    return signal, tuple(names[i] for i in keep), fs, dropped, filters


class PaddedSamples(EcgFormatError):
    """A multiplex group holds samples equal to its Waveform Padding Value."""


def _refuse_padding(
    group: Dataset,
    raw: np.ndarray,
    dtype: str,
    names: tuple[str, ...],
    where: str,
    label: str,
) -> None:
    """Waveform Padding Value (5400,100A) marks samples that are not acquired data
    (PS3.3 C.10.9.1: channels padded to the group's length). Scaled, they would be read
    as a flat line at tens of millivolts, so a group that holds any is refused."""
    value = group.get("WaveformPaddingValue")  # OB/OW: raw bytes in the file's byte order
    if not isinstance(value, bytes | bytearray):
        return
    width = np.dtype(dtype).itemsize
    if len(value) < width:
        return
    padding = np.frombuffer(value[:width], dtype=dtype)[0]
    counts = np.count_nonzero(raw == padding, axis=0)
    padded = [f"{names[i]} ({int(counts[i])})" for i in np.flatnonzero(counts)]
    if padded:
        raise PaddedSamples(
            where,
            f"multiplex group {label!r} holds samples equal to its Waveform Padding Value "
            f"{int(padding)}, which are not acquired data: {', '.join(padded)}",
            "the channels are shorter than the group or have gaps; crop the record",
        )


def _datetime(ds: Dataset) -> datetime | None:
    candidates = [str(ds.get("AcquisitionDateTime", "") or "")]
    for day, clock in (("ContentDate", "ContentTime"), ("StudyDate", "StudyTime")):
        if ds.get(day):
            candidates.append(str(ds.get(day)) + str(ds.get(clock, "") or ""))
    for value in candidates:
        digits = value.split("+")[0].split("-")[0].strip()
        if not digits:
            continue
        main, _, fraction = digits.partition(".")
        for fmt in ("%Y%m%d%H%M%S", "%Y%m%d%H%M", "%Y%m%d%H", "%Y%m%d"):
            try:
                parsed = datetime.strptime(main, fmt)
            except ValueError:
                continue
            if fraction.isdigit():
                parsed = parsed.replace(microsecond=int(fraction[:6].ljust(6, "0")))
            return parsed
    return None


def _annotations(ds: Dataset) -> tuple[list[str], list[str], dict[str, str]]:
    statements: list[str] = []
    codes: list[str] = []
    measurements: dict[str, str] = {}
    for note in ds.get("WaveformAnnotationSequence", []):
        text = str(note.get("UnformattedTextValue", "") or "").strip()
        if text:
            statements.extend(line.strip() for line in text.splitlines() if line.strip())
        concept = first_item(note, "ConceptCodeSequence")
        if concept is not None:
            meaning = str(concept.get("CodeMeaning", "")).strip()
            scheme = str(concept.get("CodingSchemeDesignator", "")).strip().upper()
            value = str(concept.get("CodeValue", "")).strip()
            if scheme in _SNOMED_SCHEMES and value:
                codes.append(f"{SNOMED_SYSTEM}|{value}")
            elif meaning:
                statements.append(meaning)
        name = first_item(note, "ConceptNameCodeSequence")
        if name is not None and "NumericValue" in note:
            unit = first_item(note, "MeasurementUnitsCodeSequence")
            label = str(name.get("CodeMeaning", "") or name.get("CodeValue", "")).strip()
            number = note.NumericValue
            number = number[0] if isinstance(number, list | pydicom.multival.MultiValue) else number
            measurements[label] = f"{number} {unit.CodeValue if unit else ''}".strip()
    return statements, list(dict.fromkeys(codes)), measurements


def read(item: ReaderInput) -> Ecg:
    check_items(item.name, inflated_data_set(item))
    try:
        ds = pydicom.dcmread(io.BytesIO(item.data), specific_tags=_TOP_LEVEL)
    except Exception as exc:
        raise EcgFormatError(
            item.name, f"not a readable DICOM file ({type(exc).__name__}: {exc})"
        ) from None
    check_sop_class(item.name, str(ds.get("SOPClassUID", "")))
    groups = list(ds.get("WaveformSequence", []))
    if not groups:
        sop = str(ds.get("SOPClassUID", "unknown"))
        raise EcgFormatError(
            item.name,
            f"a DICOM object without a waveform (SOP class {sop})",
            "only DICOM ECG waveform objects can be read",
        )
    little_endian = True
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and getattr(syntax, "is_little_endian", True) is False:
        little_endian = False
    rhythm_index, median_index = pick_groups(groups, item.name)
    cache = CODE_CACHE
    signal, leads, fs, dropped, filters = _group_signal(
        groups[rhythm_index], item.name, little_endian, cache, item.limits
    )
    median: MedianBeats | None = None
    skipped: str | None = None
    if median_index is not None and median_index != rhythm_index:
        try:
            beats, beat_leads, beat_fs, _, _ = _group_signal(
                groups[median_index], item.name, little_endian, cache, item.limits
            )
            median = MedianBeats(signal=beats, fs=beat_fs, leads=beat_leads)
        except EcgFormatError as exc:  # the cart's beats are extra: never lose the rhythm
            skipped = exc.problem  # to them (padded, unsupported encoding, bad scale...)
    statements, codes, measurements = _annotations(ds)
    device = " ".join(
        str(ds.get(tag, "") or "").strip()
        for tag in ("Manufacturer", "ManufacturerModelName")
        if str(ds.get(tag, "") or "").strip()
    )
    extra = {"sop_class_uid": str(ds.get("SOPClassUID", ""))}
    if skipped:
        extra["median_beats_skipped"] = skipped
    if dropped:  # as the WFDB reader does: named, not read as millivolts
        extra["dropped_channels"] = ", ".join(dropped)
    unread = unread_groups(groups, rhythm_index, median_index)
    if unread:  # an Ambulatory ECG's further time segments, say: said, not dropped unseen
        extra["unread_groups"] = unread
    extra.update(measurements)
    return build_ecg(
        item,
        FORMAT,
        signal=signal,
        fs=fs,
        leads=leads,
        start_time=_datetime(ds),
        patient_id=str(ds.get("PatientID", "") or "").strip() or None,
        device=device or None,
        statements=tuple(statements),
        diagnosis_codes=tuple(codes),
        median_beats=median,
        extra=extra,
        filters=filters,
    )


READER = Reader(format=FORMAT, sniff=sniff, read=read)


def _as_list(value: object) -> list[object]:
    """A multi-valued attribute's values (pydicom gives one value bare, several as a list)."""
    return list(value) if isinstance(value, list | pydicom.multival.MultiValue) else [value]


def _empty(value: object) -> bool:
    """An attribute that is absent or present without a value (pydicom: None or "")."""
    return value is None or (isinstance(value, str) and not value.strip())


def _number_or(value: object, default: float, where: str, what: str) -> float:
    """A DICOM decimal string attribute as a float, ``default`` when absent or empty."""
    if _empty(value):
        return default
    return _number(value, where, what)


def _number(value: object, where: str, what: str) -> float:
    """One DS/IS value as a float; :class:`EcgFormatError` naming the attribute for several
    values (``1.25\\2``) or text that is no number."""
    if isinstance(value, (list, tuple, MultiValue)):
        raise EcgFormatError(where, f"{what} holds several values; one is expected")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise EcgFormatError(where, f"{what} {str(value)[:40]!r} is not a number") from None
