"""The cart's filters as each format states them, into :class:`~adapters.record.RecordingFilters`.

One module for every format's filter fields because each states them in its own units and
places, and the rules for a value that cannot be used are the same everywhere: a value that
is missing, zero, negative, not finite or not a number is *not stated* (None), never an
error. Filter settings are metadata; a file whose samples can be read must stay readable
whatever its filter fields hold. A low-pass above the Nyquist frequency is kept as stated:
it says what the cart claims, and the caller judges it.

Where each format says it (cutoffs in Hz unless noted):

* DICOM waveform, per channel: Filter Low Frequency (003A,0220) is the high-pass, Filter
  High Frequency (003A,0221) the low-pass, Notch Filter Frequency (003A,0222) the notch.
* GE MUSE XML, per ``Waveform``: ``HighPassFilter`` in hundredths of a hertz,
  ``LowPassFilter``, ``ACFilter``.
* Philips XML: the stored signal's ``hipass``/``lowpass``/``notchfiltered``/
  ``notchfilterfreqs`` (``parsedwaveforms`` attributes, ``signalcharacteristics``), or
  SierraECG 1.03's ``signalbandwidth`` ("0.05-150"). Not ``reportbandwidth``: that is the
  printed report's filter, not the samples' (the TraceMaster sample file states a
  0.15-100 Hz report of a 0.05-150 Hz signal).
* HL7 aECG: the series' ``controlVariable`` codes ``MDC_ECG_CTL_VBL_ATTR_FILTER_LOW_PASS``
  / ``_HIGH_PASS`` / ``_NOTCH`` with a ``PQ`` cutoff component.
* SCP-ECG section 1: tag 27 high-pass in hundredths of a hertz, tag 28 low-pass, tag 29
  a bit map whose bit 0 is a 60 Hz and bit 1 a 50 Hz notch.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable

from lxml import etree
from pydicom.dataset import Dataset

from adapters.hl7_values import code_of, tag
from adapters.record import RecordingFilters


def stated_hz(raw: object, divisor: float = 1.0) -> float | None:
    """``raw`` (a number or its text) divided by ``divisor`` as a positive, finite Hz value;
    None for anything else (absent, empty, 0, negative, NaN, infinite, not a number)."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = float(raw.strip() if isinstance(raw, str) else raw)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    value /= divisor
    return value if math.isfinite(value) and value > 0 else None


def filters_stated(
    low_pass_hz: float | None, high_pass_hz: float | None, notch_hz: float | None
) -> RecordingFilters | None:
    """The filters, or None when the file states none of them."""
    if low_pass_hz is None and high_pass_hz is None and notch_hz is None:
        return None
    return RecordingFilters(low_pass_hz=low_pass_hz, high_pass_hz=high_pass_hz, notch_hz=notch_hz)


def most_restrictive(channels: Iterable[RecordingFilters | None]) -> RecordingFilters | None:
    """One statement for channels that state their own: the lowest low-pass and the highest
    high-pass any channel states (the narrowest band a lead may have been stored with), and
    the first notch stated. A filter no channel states stays None."""
    stated = [channel for channel in channels if channel is not None]
    low = [c.low_pass_hz for c in stated if c.low_pass_hz is not None]
    high = [c.high_pass_hz for c in stated if c.high_pass_hz is not None]
    notch = next((c.notch_hz for c in stated if c.notch_hz is not None), None)
    return filters_stated(min(low, default=None), max(high, default=None), notch)


# --- DICOM -----------------------------------------------------------------------------------


def _dicom_value(channel: Dataset, keyword: str) -> object:
    try:
        return channel.get(keyword)
    except Exception:  # pydicom converts on access; in its strict mode a bad DS raises here
        return None


def dicom_filters(channels: Iterable[Dataset]) -> RecordingFilters | None:
    """The filters of a multiplex group's channels (PS3.3 C.10.9.1.4.3), most restrictive."""
    return most_restrictive(
        filters_stated(
            stated_hz(_dicom_value(channel, "FilterHighFrequency")),
            stated_hz(_dicom_value(channel, "FilterLowFrequency")),
            stated_hz(_dicom_value(channel, "NotchFilterFrequency")),
        )
        for channel in channels
    )


# --- GE MUSE ---------------------------------------------------------------------------------

#: MUSE's ``HighPassFilter`` is in hundredths of a hertz. We found no GE document that
#: says so; the evidence: the sample export holds 56, GE's 0.56 Hz setting (a 56 Hz
#: high-pass would leave no ECG to store), and the C# ECG Toolkit (github.com/Refactoring/
#: ECGToolkit, libs/ECGConversion/MUSEXML/MUSEXML/MUSEXMLFormat.cs) maps it unscaled to the
#: field it reads from SCP-ECG's 0.01 Hz tag 27 and writes to DICOM divided by 100.
#: ``LowPassFilter`` and ``ACFilter`` are whole hertz (150, 60 in the sample export).
MUSE_HIGH_PASS_DIVISOR = 100.0


def muse_filters(waveform: etree._Element) -> RecordingFilters | None:
    """The filters stated in one MUSE ``Waveform`` element."""
    return filters_stated(
        stated_hz(waveform.findtext("LowPassFilter")),
        stated_hz(waveform.findtext("HighPassFilter"), MUSE_HIGH_PASS_DIVISOR),
        stated_hz(waveform.findtext("ACFilter")),
    )


# --- Philips ---------------------------------------------------------------------------------

_BANDWIDTH = re.compile(r"^\s*([0-9.]+)\s*-\s*([0-9.]+)\s*(?:hz)?\s*$", re.IGNORECASE)


def _philips_texts(
    parsed: etree._Element | None, signal: etree._Element | None, name: str
) -> list[str]:
    """The stored waveform's own attribute, then the acquisition's element of that name."""
    texts = [parsed.get(name) or ""] if parsed is not None else []
    found = signal.find(f"{{*}}{name}") if signal is not None else None
    texts.append((found.text or "") if found is not None else "")
    return [text.strip() for text in texts if text.strip()]


def _philips_hz(
    parsed: etree._Element | None, signal: etree._Element | None, name: str
) -> float | None:
    """The first usable value of :func:`_philips_texts`: a malformed attribute does not
    hide a good element."""
    return next(
        (hz for hz in map(stated_hz, _philips_texts(parsed, signal, name)) if hz is not None),
        None,
    )


def philips_filters(
    parsed: etree._Element | None, signal: etree._Element | None
) -> RecordingFilters | None:
    """The stored signal's filters: ``parsedwaveforms`` attributes, else
    ``signalcharacteristics`` (PhilipsECG 1.04) or its ``signalbandwidth`` (SierraECG 1.03).
    A notch only where the file says the samples were notch filtered."""
    high = _philips_hz(parsed, signal, "hipass")
    low = _philips_hz(parsed, signal, "lowpass")
    for text in _philips_texts(parsed, signal, "signalbandwidth"):
        band = _BANDWIDTH.match(text)
        if band is not None:
            high = high if high is not None else stated_hz(band.group(1))
            low = low if low is not None else stated_hz(band.group(2))
    notch = None
    notch_filtered = _philips_texts(parsed, signal, "notchfiltered")
    if notch_filtered and notch_filtered[0].lower() == "true":  # the waveform's own word first
        freqs = " ".join(_philips_texts(parsed, signal, "notchfilterfreqs"))
        stated = [hz for hz in map(stated_hz, re.split(r"[\s,;]+", freqs)) if hz is not None]
        # notch filtered but no frequency given: the cart's mains setting is the one it used
        notch = stated[0] if stated else _philips_hz(parsed, signal, "acsetting")
    return filters_stated(low, high, notch)


# --- HL7 aECG --------------------------------------------------------------------------------

_AECG_FILTERS = {
    "MDC_ECG_CTL_VBL_ATTR_FILTER_LOW_PASS": "low",
    "MDC_ECG_CTL_VBL_ATTR_FILTER_HIGH_PASS": "high",
    "MDC_ECG_CTL_VBL_ATTR_FILTER_NOTCH": "notch",
}
#: The cutoff component; a notch may name its frequency so (the HL7 2003-12 example does).
_AECG_FREQUENCIES = (
    "MDC_ECG_CTL_VBL_ATTR_FILTER_CUTOFF_FREQ",
    "MDC_ECG_CTL_VBL_ATTR_FILTER_NOTCH_FREQ",
)
#: PQ units (UCUM) honoured for a cutoff, as hertz per unit; any other unit is not read.
_FREQUENCY_UNITS = {"Hz": 1.0, "kHz": 1000.0}


def _aecg_cutoff(control: etree._Element) -> float | None:
    for component in control.iterfind(f"{tag('component')}/{tag('controlVariable')}"):
        if code_of(component) not in _AECG_FREQUENCIES:
            continue
        value = component.find(tag("value"))
        if value is None:
            continue
        per_unit = _FREQUENCY_UNITS.get((value.get("unit") or "").strip())
        hz = stated_hz(value.get("value")) if per_unit is not None else None
        if hz is not None and per_unit is not None and math.isfinite(hz * per_unit):
            return hz * per_unit
    return None


def aecg_filters(series: etree._Element) -> RecordingFilters | None:
    """The filters a series' control variables state (the first statement of each kind)."""
    found: dict[str, float] = {}
    cv = tag("controlVariable")
    # The act sits inside a controlVariable relationship; some producers leave the wrapper out.
    for control in [*series.iterfind(f"{cv}/{cv}"), *series.iterfind(cv)]:
        kind = _AECG_FILTERS.get(code_of(control))
        if kind is not None and kind not in found:
            hz = _aecg_cutoff(control)
            if hz is not None:
                found[kind] = hz
    return filters_stated(found.get("low"), found.get("high"), found.get("notch"))


# --- SCP-ECG ---------------------------------------------------------------------------------

#: Tag 29 bits: bit 0 a 60 Hz, bit 1 a 50 Hz notch (as the C# ECG Toolkit's DICOM mapping
#: reads them); both set says nothing about one frequency, so no notch is taken.
_SCP_NOTCH_BITS = {0x01: 60.0, 0x02: 50.0}


def _uint16(raw: bytes | None) -> int | None:
    return struct.unpack_from("<H", raw, 0)[0] if raw is not None and len(raw) >= 2 else None


def scp_filters(fields: dict[int, bytes]) -> RecordingFilters | None:
    """The filters of SCP-ECG section 1's tags 27 (0.01 Hz), 28 (Hz) and 29 (bit map)."""
    notch = None
    bitmap = fields.get(29)
    if bitmap:
        notch = _SCP_NOTCH_BITS.get(bitmap[0] & 0x03)
    return filters_stated(
        stated_hz(_uint16(fields.get(28))), stated_hz(_uint16(fields.get(27)), 100.0), notch
    )
