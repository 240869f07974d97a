"""GE MUSE XML (``RestingECG`` export) reader.

A MUSE export carries one ``Waveform`` per kind (``Rhythm``, ``Median``), each with one
``LeadData`` per stored lead: base64 little-endian int16 samples, the amplitude per bit
and its units, a sample count and a CRC32. Carts store the 8 independent leads
(I, II, V1-V6); III, aVR, aVL and aVF are derived here by Einthoven's and Goldberger's
laws (:func:`adapters.record.standard_12_lead`) and listed in ``extra["derived_leads"]``.
Interpretation text comes in fragments (``DiagnosisStatement/StmtText``) that a
``StmtFlag`` of ``ENDSLINE`` closes into one statement line.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from lxml import etree

from adapters.errors import EcgFormatError
from adapters.leads import normalize_lead_name
from adapters.reader import Reader, ReaderInput, build_ecg
from adapters.record import STANDARD_LEADS, Ecg, EcgSource, MedianBeats, standard_12_lead
from adapters.recording_filters import muse_filters
from adapters.xml_safety import parse_xml, root_element_is

FORMAT = "ge-muse-xml"

#: ``LeadAmplitudeUnits`` values, as millivolts per unit.
_UNITS_TO_MV = {
    "NANOVOLTS": 1e-6,
    "MICROVOLTS": 1e-3,
    "UV": 1e-3,
    "MILLIVOLTS": 1.0,
    "MV": 1.0,
    "VOLTS": 1e3,
}
#: Global measurements kept in ``Ecg.extra`` (ms, bpm, degrees as exported).
_MEASUREMENTS = (
    "VentricularRate", "AtrialRate", "PRInterval", "QRSDuration", "QTInterval",
    "QTCorrected", "PAxis", "RAxis", "TAxis",
)  # fmt: skip
_LIMB_DERIVED = ("III", "aVR", "aVL", "aVF")


@dataclass(frozen=True)
class _Waveform:
    signal: np.ndarray  # leads x samples, millivolts
    fs: float
    leads: tuple[str, ...]


def _text(element: etree._Element | None, path: str) -> str:
    if element is None:
        return ""
    return (element.findtext(path) or "").strip()


def _float(element: etree._Element, path: str, what: str, name: str) -> float:
    raw = _text(element, path)
    try:
        value = float(raw)
    except ValueError:
        raise EcgFormatError(name, f"{what} is {raw or 'missing'!r}, not a number") from None
    if not np.isfinite(value):
        raise EcgFormatError(name, f"{what} is not finite")
    return value


def _sampling_rate(waveform: etree._Element, kind: str, name: str) -> float:
    base = _float(waveform, "SampleBase", f"{kind} SampleBase", name)
    exponent_raw = _text(waveform, "SampleExponent") or "0"
    try:
        exponent = int(exponent_raw)
    except ValueError:
        raise EcgFormatError(
            name, f"{kind} SampleExponent {exponent_raw!r} is not an integer"
        ) from None
    if not -3 <= exponent <= 3:
        raise EcgFormatError(name, f"{kind} SampleExponent {exponent} is implausible")
    return base * 10.0**exponent


def _lead_samples(lead_data: etree._Element, lead: str, kind: str, name: str) -> np.ndarray:
    encoded = _text(lead_data, "WaveFormData")
    if not encoded:
        raise EcgFormatError(name, f"{kind} lead {lead} has no WaveFormData")
    try:
        raw = base64.b64decode(re.sub(r"\s+", "", encoded), validate=True)
    except (binascii.Error, ValueError):
        raise EcgFormatError(
            name, f"{kind} lead {lead}: WaveFormData is not valid base64"
        ) from None
    sample_size = _text(lead_data, "LeadSampleSize") or "2"
    if sample_size != "2":
        raise EcgFormatError(
            name, f"{kind} lead {lead}: {sample_size}-byte samples", "only 16-bit samples are known"
        )
    if len(raw) % 2:
        raise EcgFormatError(name, f"{kind} lead {lead}: odd number of waveform bytes ({len(raw)})")
    crc = _text(lead_data, "LeadDataCRC32")
    if crc.isdigit() and zlib.crc32(raw) != int(crc):
        raise EcgFormatError(
            name,
            f"{kind} lead {lead}: waveform bytes fail their CRC32 check",
            "the file is corrupt",
        )
    count = _text(lead_data, "LeadSampleCountTotal")
    if count.isdigit() and int(count) != len(raw) // 2:
        raise EcgFormatError(
            name,
            f"{kind} lead {lead}: {len(raw) // 2} samples stored, header says {count}",
            "the file is truncated or corrupt",
        )
    per_bit = _float(lead_data, "LeadAmplitudeUnitsPerBit", f"{kind} lead {lead} amplitude", name)
    if per_bit <= 0:  # 0 would be a flat line, a negative value the lead upside down
        raise EcgFormatError(
            name,
            f"{kind} lead {lead}: LeadAmplitudeUnitsPerBit is {per_bit:g}, not a positive step",
            "the export's amplitude scale is unusable; export the ECG again from MUSE",
        )
    units = _text(lead_data, "LeadAmplitudeUnits").upper() or "MICROVOLTS"
    if units not in _UNITS_TO_MV:
        raise EcgFormatError(
            name,
            f"{kind} lead {lead}: amplitude units {units!r}",
            f"expected one of {sorted(_UNITS_TO_MV)}",
        )
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    return samples * per_bit * _UNITS_TO_MV[units]


def _read_waveform(waveform: etree._Element, name: str) -> _Waveform:
    kind = _text(waveform, "WaveformType") or "Waveform"
    fs = _sampling_rate(waveform, kind, name)
    leads: list[str] = []
    rows: list[np.ndarray] = []
    for lead_data in waveform.iterfind("LeadData"):
        lead = normalize_lead_name(_text(lead_data, "LeadID"))
        if not lead:
            raise EcgFormatError(name, f"{kind} waveform has a lead without LeadID")
        if lead in leads:
            raise EcgFormatError(name, f"{kind} lead {lead} is stored twice")
        leads.append(lead)
        rows.append(_lead_samples(lead_data, lead, kind, name))
    if not rows:
        raise EcgFormatError(name, f"{kind} waveform holds no leads")
    declared = _text(waveform, "NumberofLeads")
    if declared.isdigit() and int(declared) != len(rows):
        raise EcgFormatError(
            name,
            f"{kind} waveform declares NumberofLeads {declared} but holds {len(rows)} "
            f"({' '.join(leads)})",
            "the export is incomplete; export the ECG again",
        )
    lengths = {row.size for row in rows}
    if len(lengths) != 1:
        raise EcgFormatError(name, f"{kind} leads differ in length: {sorted(lengths)} samples")
    _check_simultaneous(waveform, kind, name)
    return _Waveform(signal=np.stack(rows), fs=fs, leads=tuple(leads))


def _check_simultaneous(waveform: etree._Element, kind: str, name: str) -> None:
    """Leads that start at different samples or times (``LeadOffsetFirstSample``,
    ``LeadTimeOffset``: a cart recording lead groups one after another, or a conversion of
    such a record) are not one simultaneous recording, whatever their lengths."""
    for field in ("LeadOffsetFirstSample", "LeadTimeOffset"):
        starts = {
            _text(lead, "LeadID"): _text(lead, field) or "0"
            for lead in waveform.iterfind("LeadData")
        }
        if len(set(starts.values())) > 1:
            spans = ", ".join(f"{lead} {start}" for lead, start in starts.items())
            raise EcgFormatError(
                name,
                f"{kind} leads are not simultaneous ({field}: {spans})",
                "leads recorded one group after another cannot be read as one 12-lead record",
            )


def _with_limb_leads(waveform: _Waveform, name: str) -> tuple[_Waveform, list[str]]:
    """Add III/aVR/aVL/aVF from I and II where the cart did not store them."""
    try:
        probe = Ecg(
            signal=waveform.signal.astype(np.float32),
            fs=waveform.fs,
            leads=waveform.leads,
            source=EcgSource(format=FORMAT, uri=None, sha256=""),
        )
    except EcgFormatError as exc:  # validated here first, so name the input, not the format
        raise EcgFormatError(name, exc.problem, exc.hint) from None
    view = standard_12_lead(probe)
    derived = [lead for lead in _LIMB_DERIVED if lead in view.derived]
    if not derived:
        return waveform, []
    order = [lead for lead in STANDARD_LEADS if lead not in view.missing]
    order += [lead for lead in waveform.leads if lead not in STANDARD_LEADS]
    rows = [view.ecg.lead(lead) if lead in STANDARD_LEADS else probe.lead(lead) for lead in order]
    return _Waveform(signal=np.stack(rows), fs=waveform.fs, leads=tuple(order)), derived


def _statements(root: etree._Element) -> list[str]:
    """Diagnosis lines, joining fragments until a statement flagged ``ENDSLINE``."""
    diagnosis = root.find("Diagnosis")
    if diagnosis is None or diagnosis.find("DiagnosisStatement") is None:
        diagnosis = root.find("OriginalDiagnosis")
    if diagnosis is None:
        return []
    lines: list[str] = []
    parts: list[str] = []
    for statement in diagnosis.iterfind("DiagnosisStatement"):
        text = _text(statement, "StmtText")
        if text:
            parts.append(text)
        flags = {(flag.text or "").strip().upper() for flag in statement.findall("StmtFlag")}
        if "ENDSLINE" in flags and parts:
            lines.append(_join_fragments(parts))
            parts = []
    if parts:
        lines.append(_join_fragments(parts))
    return lines


def _join_fragments(parts: list[str]) -> str:
    line = parts[0]
    for part in parts[1:]:
        line += part if part[:1] in ",.;:)" else f" {part}"
    return line


def _start_time(root: etree._Element) -> datetime | None:
    date = _text(root, "TestDemographics/AcquisitionDate")
    time = _text(root, "TestDemographics/AcquisitionTime") or "00:00:00"
    for pattern in ("%m-%d-%Y %H:%M:%S", "%m-%d-%Y %H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(f"{date} {time}", pattern)
        except ValueError:
            continue
    return None


def _device(root: etree._Element) -> str | None:
    device = _text(root, "TestDemographics/AcquisitionDevice")
    software = _text(root, "TestDemographics/AcquisitionSoftwareVersion")
    if not device:
        return None
    return f"GE {device} (software {software})" if software else f"GE {device}"


def read_muse(item: ReaderInput) -> Ecg:
    """Read a GE MUSE ``RestingECG`` XML export into the canonical :class:`Ecg` (millivolts)."""
    name = item.name
    root = parse_xml(item.data, name, item.max_bytes)
    if root.tag != "RestingECG":
        raise EcgFormatError(name, f"root element is {root.tag!r}, not RestingECG")
    # 16-bit samples, base64: every lead's values counted before any is decoded.
    item.check_values(sum(len(d.text or "") * 3 // 8 for d in root.iter("WaveFormData")))
    for waveform in root.iterfind("Waveform"):  # and each waveform's leads
        item.check_shape(len(waveform.findall("LeadData")), 0)
    waveforms = {_text(w, "WaveformType").lower(): w for w in root.iterfind("Waveform")}
    if "rhythm" not in waveforms:
        raise EcgFormatError(name, "no Rhythm waveform in this MUSE export")
    rhythm, derived = _with_limb_leads(_read_waveform(waveforms["rhythm"], name), name)

    median_beats = None
    extra: dict[str, str] = {}
    if "median" in waveforms:
        try:
            median, _ = _with_limb_leads(_read_waveform(waveforms["median"], name), name)
            median_beats = MedianBeats(
                signal=median.signal.astype(np.float32), fs=median.fs, leads=median.leads
            )
        except EcgFormatError as exc:  # the cart's beats are extra: never lose the rhythm
            extra["median_beats_skipped"] = exc.problem

    if derived:
        extra["derived_leads"] = " ".join(derived)
    measurements = root.find("RestingECGMeasurements")
    for field in _MEASUREMENTS:
        value = _text(measurements, field)
        if value:
            extra[field] = value
    version = _text(root, "MuseInfo/MuseVersion")
    if version:
        extra["muse_version"] = version
    return build_ecg(
        item,
        FORMAT,
        signal=rhythm.signal,
        fs=rhythm.fs,
        leads=rhythm.leads,
        start_time=_start_time(root),
        patient_id=_text(root, "PatientDemographics/PatientID") or None,
        device=_device(root),
        statements=tuple(_statements(root)),
        median_beats=median_beats,
        extra=extra,
        filters=muse_filters(waveforms["rhythm"]),
    )


def sniff_muse(item: ReaderInput) -> bool:
    return root_element_is(item.data, "RestingECG")


READER = Reader(format=FORMAT, sniff=sniff_muse, read=read_muse)
