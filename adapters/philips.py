"""Philips PageWriter / TraceMaster XML (SierraECG 1.03, PhilipsECG 1.04) reader.

Waveforms sit in ``parsedwaveforms`` as base64 (or hex, or Plain decimal text), usually
XLI-compressed (LZW + second differences, one chunk per lead; decoded by
:mod:`adapters.philips_xli`). As in
``sierraecg.read_file``, XLI files store III, aVR, aVL and aVF as residuals against I and
II, and they are reconstructed (vectorised, in int64).

Sample values are in units of ``signalresolution`` / ``resolution`` microvolts (5 uV in
both sample files). The stored 11 s ends with a stretch in which every lead is identical:
flat line plus the cart's 1 mV calibration pulse. It is not ECG, so it is cut off and its
length and pulse height go to ``extra``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import datetime

import numpy as np
from lxml import etree

from adapters.errors import EcgFormatError
from adapters.leads import iec_chest_lead, normalize_lead_name
from adapters.limits import DecodeLimits, check_tokens, parse_numbers
from adapters.philips_xli import MAX_CHUNKS, reconstruct_limb_leads, xli_decode
from adapters.reader import Reader, ReaderInput, build_ecg
from adapters.record import Ecg, MedianBeats
from adapters.recording_filters import philips_filters
from adapters.xml_safety import local_name, parse_xml, root_element_is

FORMAT = "philips-xml"
_SUPPORTED = {"SierraECG": ("1.03",), "PhilipsECG": ("1.03", "1.04", "1.04.01", "1.04.02")}
_STANDARD_ORDER = ("I", "II", "III", "aVR", "aVL", "aVF")
#: Representative beats pad the unused tail of each beat with this sentinel.
_REPBEAT_PAD = 32767


def _find(element: etree._Element, path: str) -> etree._Element | None:
    """Namespace-agnostic find: Philips changed its namespace between schema versions."""
    return element.find("/".join(f"{{*}}{part}" for part in path.split("/")))


def _text(element: etree._Element | None, path: str) -> str:
    if element is None:
        return ""
    found = _find(element, path)
    return (found.text or "").strip() if found is not None else ""


def _positive_number(raw: str | None, what: str, name: str) -> float:
    try:
        value = float(raw) if raw else float("nan")
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise EcgFormatError(name, f"{what} is {raw or 'missing'!r}, not a positive number")
    return value


#: TYPEdataencoding of the 1.03 and 1.04.01 schemas. Base64 and Hex carry the bytes (16-bit
#: little-endian samples, or XLI); Plain carries the sample values as decimal text, lead after
#: lead (what Sierra ECG Tools' preprocessor writes for a decoded file).
_ENCODINGS = ("Base64", "Hex", "Plain")


def _decoded(
    text: str | None, encoding: str, what: str, name: str, limits: DecodeLimits
) -> bytes | np.ndarray:
    """The bytes of a Base64 or Hex waveform, or the int64 sample values of a Plain one."""
    if encoding == "Plain":
        check_tokens(limits, name, [text or ""])  # before any value is parsed
        values = parse_numbers(text or "")
        if values is None or not (np.abs(values) < 2**31).all():  # NaN and inf fail too
            raise EcgFormatError(name, f"{what} (Plain) holds values that are not 32-bit numbers")
        if not np.array_equal(values, np.round(values)):
            raise EcgFormatError(name, f"{what} (Plain) holds values that are not integers")
        return values.astype(np.int64)
    body = re.sub(r"\s+", "", text or "")
    try:
        if encoding == "Hex":
            return bytes.fromhex(body)
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise EcgFormatError(name, f"{what} is not valid {encoding.lower()}") from None


def _lead_name(raw: str) -> str:
    """A Philips lead label as a standard name: the schemas' TYPEleadname lists the IEC
    chest-lead labels C1..C9 beside V1..V9, for the same leads."""
    return iec_chest_lead(normalize_lead_name(raw))


def _lead_labels(parsed: etree._Element, signal: etree._Element | None, name: str) -> list[str]:
    labels = (parsed.get("leadlabels") or "").split()
    if labels:
        count = (parsed.get("numberofleads") or "").strip()
        if not count.isdigit():
            return labels
        if not 0 < int(count) <= len(labels):  # a lead without a name would be dropped
            raise EcgFormatError(
                name,
                f"numberofleads {count} but leadlabels names {len(labels)}: {' '.join(labels)}",
                "the file's lead description is inconsistent; export it again",
            )
        return labels[: int(count)]
    allocated = _text(signal, "numberchannelsallocated")
    lead_set = _text(signal, "acquisitiontype")
    if not allocated.isdigit() or not 0 < int(allocated) <= MAX_CHUNKS:
        raise EcgFormatError(name, f"number of channels {allocated or 'missing'!r} is not usable")
    standard = (*_STANDARD_ORDER, "V1", "V2", "V3", "V4", "V5", "V6")
    if lead_set in ("STD-12", "10-WIRE"):
        return [standard[i] if i < 12 else f"Channel {i + 1}" for i in range(int(allocated))]
    return [f"Channel {i + 1}" for i in range(int(allocated))]


def _trim_calibration(samples: np.ndarray, fs: float) -> tuple[np.ndarray, int, float | None]:
    """Cut the trailing stretch where all leads are identical (flat line + calibration pulse)."""
    n_leads, n = samples.shape
    if n_leads < 3:
        return samples, 0, None
    differs = np.nonzero(~(samples == samples[0]).all(axis=0))[0]
    if differs.size == 0:
        return samples, 0, None
    tail = n - (int(differs[-1]) + 1)
    if tail < 0.1 * fs or tail > 0.25 * n:
        return samples, 0, None
    pulse = float(np.abs(samples[0, n - tail :]).max())
    return samples[:, : n - tail], tail, pulse


def _lead_after_lead(
    values: np.ndarray, n_leads: int, n_samples: int, what: str, name: str
) -> np.ndarray:
    """Uncompressed waveform values, lead after lead, as leads x samples (extra values after
    the declared leads, e.g. unused channels, are left out as before)."""
    needed = n_leads * n_samples
    if values.size < needed:
        raise EcgFormatError(
            name,
            f"the waveform holds {values.size} {what}, {n_leads} leads x {n_samples} expected",
            "the file is truncated or its durationperchannel is wrong",
        )
    return values[:needed].reshape(n_leads, n_samples)


def _check_duration(decoded: int, declared: int, duration_ms: float, fs: float, name: str) -> None:
    """XLI chunks carry no sample count: a lead that decodes to less than the declared
    duration at the declared rate means a wrong rate (a whole multiple short) or lost data,
    never a record to read at that rate. 1% slack for a cart's rounding."""
    if decoded < 0.99 * declared:
        raise EcgFormatError(
            name,
            f"the waveform decodes to {decoded} samples per lead, but durationperchannel "
            f"{duration_ms:g} ms at {fs:g} Hz declares {declared}",
            "the sampling rate or the duration in the file is wrong, or the data is truncated",
        )


def _check_sample_coding(parsed: etree._Element, signal: etree._Element | None, name: str) -> None:
    """Samples are read as signed 16-bit values around 0: a file that says otherwise
    (``bitspersample`` on the waveform; ``signalsigned``, ``signaloffset`` on it or in
    ``signalcharacteristics``) is refused rather than read with a shifted or wrapped scale."""
    found = {  # the stored width is the waveform's own (an acquisition may say 12 bits)
        "bitspersample": parsed.get("bitspersample") or parsed.get("nbitspersample"),
        "signalsigned": parsed.get("signalsigned") or _text(signal, "signalsigned"),
        "signaloffset": parsed.get("signaloffset") or _text(signal, "signaloffset"),
    }
    expected = {"bitspersample": "16", "signalsigned": "true", "signaloffset": "0"}
    wrong = [
        f"{key} {value!r}"
        for key, value in found.items()
        if value and value.strip().lower().removesuffix(".0") != expected[key]
    ]
    if wrong:
        raise EcgFormatError(
            name,
            f"waveform samples are coded as {', '.join(wrong)}",
            "only signed 16-bit samples with offset 0 are supported",
        )


# --- metadata ---------------------------------------------------------------------------------


def _statements(root: etree._Element) -> tuple[list[str], list[str]]:
    """Left-hand statements (and severity) of the latest interpretation, and their codes."""
    interpretations = root.findall(".//{*}interpretations/{*}interpretation")
    if not interpretations:
        return [], []
    latest = interpretations[-1]
    texts: list[str] = []
    codes: list[str] = []
    for statement in latest.iterfind("{*}statement"):
        left = _text(statement, "leftstatement")
        if left:
            texts.append(left)
        code = _text(statement, "statementcode")
        if code:
            codes.append(code)
    severity = _text(latest, "severity").strip(" -")
    if severity:
        texts.append(severity)
    return list(dict.fromkeys(texts)), codes


def _start_time(root: etree._Element) -> datetime | None:
    acquisition = _find(root, "dataacquisition")
    if acquisition is None:
        return None
    stamp = f"{acquisition.get('date', '')} {acquisition.get('time', '')}".strip()
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(stamp, pattern)
        except ValueError:
            continue
    return None


def _median_beats(
    root: etree._Element, fs: float, name: str, extra: dict[str, str], limits: DecodeLimits
) -> MedianBeats | None:
    repbeats = root.find(".//{*}repbeats")
    if repbeats is None:
        return None
    encoding = repbeats.get("dataencoding") or "Base64"
    if encoding not in _ENCODINGS:
        extra["median_beats_skipped"] = f"encoding {encoding}"
        return None
    resolution_raw = repbeats.get("resolution")
    if not resolution_raw:
        extra["median_beats_skipped"] = "no amplitude resolution given"
        return None
    resolution_uv = _positive_number(resolution_raw, "representative beat resolution", name)
    rate_raw = repbeats.get("samplespersec")
    rate = _positive_number(rate_raw, "representative beat rate", name) if rate_raw else fs
    leads: list[str] = []
    rows: list[np.ndarray] = []
    for repbeat in repbeats.iterfind("{*}repbeat"):
        lead = _lead_name(repbeat.get("leadname") or "")
        if not lead or lead in leads:
            raise EcgFormatError(
                name, f"representative beat lead {lead or '(unnamed)'!r} is invalid"
            )
        holder = _find(repbeat, "waveform")
        text = (holder if holder is not None else repbeat).text
        samples = _decoded(text, encoding, f"{lead} beat", name, limits)
        if isinstance(samples, bytes):
            if len(samples) % 2:
                raise EcgFormatError(name, f"representative beat {lead} has an odd byte count")
            samples = np.frombuffer(samples, dtype="<i2")
        valid = np.nonzero(samples != _REPBEAT_PAD)[0]
        samples = samples[: int(valid[-1]) + 1] if valid.size else samples[:0]
        leads.append(lead)
        rows.append(samples.astype(np.float64) * resolution_uv / 1000.0)
    if not rows or min(row.size for row in rows) == 0:
        return None
    length = min(row.size for row in rows)
    signal = np.stack([row[:length] for row in rows]).astype(np.float32)
    return MedianBeats(signal=signal, fs=rate, leads=tuple(leads))


# --- reader -----------------------------------------------------------------------------------


def read_philips(item: ReaderInput) -> Ecg:
    """Read a Philips PageWriter/TraceMaster XML file into the canonical :class:`Ecg` (mV)."""
    name = item.name
    root = parse_xml(item.data, name, item.max_bytes)
    if local_name(root) != "restingecgdata":
        raise EcgFormatError(name, f"root element is {root.tag!r}, not restingecgdata")
    doc_type = _text(root, "documentinfo/documenttype")
    version = _text(root, "documentinfo/documentversion")
    if version not in _SUPPORTED.get(doc_type, ()):
        raise EcgFormatError(
            name,
            f"Philips {doc_type or '?'} version {version or '?'} is not supported",
            "supported: SierraECG 1.03, PhilipsECG 1.03-1.04.02",
        )
    signal_info = root.find(".//{*}dataacquisition/{*}signalcharacteristics")
    parsed = root.find(".//{*}parsedwaveforms")
    if parsed is None and root.find(".//{*}leadwaveforms") is not None:
        raise EcgFormatError(  # the schemas' other layout: one element per lead
            name,
            "the waveform is stored as leadwaveforms (one element per lead), which is not read",
            "export the ECG with parsedwaveforms",
        )
    if parsed is None:
        raise EcgFormatError(name, "no parsedwaveforms element: the file holds no waveform")
    # The waveform's own rate first: signalcharacteristics gives the acquisition's, which
    # a cart that stores fewer samples than it acquires (1000 Hz in, 500 Hz out) differs from.
    fs = _positive_number(
        parsed.get("samplespersecond") or _text(signal_info, "samplingrate"), "sampling rate", name
    )
    resolution_uv = _positive_number(
        parsed.get("resolution")  # 1.04; signalcharacteristics says it as 1.03 or 1.04 does
        or _text(signal_info, "signalresolution")
        or _text(signal_info, "resolution"),
        "signal resolution (uV per bit)",
        name,
    )
    duration_ms = _positive_number(parsed.get("durationperchannel"), "durationperchannel", name)
    declared = duration_ms * fs / 1000.0  # inf for a rate of 1e308: no round() of that
    n_samples = round(declared) if math.isfinite(declared) else 0
    if not 0 < n_samples <= item.max_bytes:
        raise EcgFormatError(name, f"declared duration {duration_ms} ms is not plausible")
    raw_labels = _lead_labels(parsed, signal_info, name)
    labels = [_lead_name(label) for label in raw_labels]
    item.check_shape(len(labels), n_samples)  # before the XLI decoder allocates them
    if len(set(labels)) != len(labels):
        raise EcgFormatError(name, f"duplicate lead labels {labels}")

    encoding = parsed.get("dataencoding") or "Base64"
    if encoding not in _ENCODINGS:
        raise EcgFormatError(
            name,
            f"waveform encoding {encoding!r} is not supported",
            f"the schemas define {', '.join(_ENCODINGS)}",
        )
    _check_sample_coding(parsed, signal_info, name)
    data = _decoded(parsed.text, encoding, "parsedwaveforms", name, item.limits)
    compression = parsed.get("compressmethod") or parsed.get("compression") or "Uncompressed"
    if (parsed.get("compressflag") or "").strip().lower() == "false":
        compression = "Uncompressed"  # 1.03 names the method even when it is not used
    if isinstance(data, np.ndarray):
        # Plain text holds the leads' values: XLI compresses bytes, so a compression still
        # named there (jsierraecg's 1.03 preprocessor leaves compressflag True) is stale.
        samples = _lead_after_lead(data, len(labels), n_samples, "values", name)
    elif compression == "XLI":
        samples = xli_decode(data, len(labels), n_samples, name)
        _check_duration(samples.shape[1], n_samples, duration_ms, fs, name)
        # III, aVR, aVL, aVF are stored as residuals against I and II by XLI (the DXL
        # encoder); uncompressed data holds the leads themselves.
        if tuple(labels[:6]) == _STANDARD_ORDER:
            samples = reconstruct_limb_leads(samples)
    elif compression == "Uncompressed":
        values = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int64)
        samples = _lead_after_lead(values, len(labels), n_samples, "16-bit samples", name)
    else:
        raise EcgFormatError(name, f"waveform compression {compression!r} is not supported")

    extra: dict[str, str] = {"document": f"{doc_type} {version}"}
    renamed = [f"{raw} -> {lead}" for raw, lead in zip(raw_labels, labels, strict=True)
               if iec_chest_lead(raw.strip()) != raw.strip()]  # fmt: skip
    if renamed:  # as the WFDB reader names its aliases
        extra["lead_aliases"] = ", ".join(renamed)
    samples, trimmed, pulse = _trim_calibration(samples, fs)
    if trimmed:
        extra["trimmed_calibration_samples"] = str(trimmed)
        if pulse is not None:
            extra["calibration_pulse_mv"] = f"{pulse * resolution_uv / 1000.0:.3f}"
    statements, codes = _statements(root)
    if codes:
        extra["statement_codes"] = " ".join(codes)
    machine = _text(root, "dataacquisition/machine")
    try:  # the cart's beats are extra: never lose the rhythm to them
        median_beats = _median_beats(root, fs, name, extra, item.limits)
    except EcgFormatError as exc:
        median_beats, extra["median_beats_skipped"] = None, exc.problem
    return build_ecg(
        item,
        FORMAT,
        signal=samples.astype(np.float64) * resolution_uv / 1000.0,
        fs=fs,
        leads=tuple(labels),
        start_time=_start_time(root),
        patient_id=_text(root, "patient/generalpatientdata/patientid") or None,
        device=f"Philips {machine}" if machine else None,
        statements=tuple(statements),
        median_beats=median_beats,
        extra=extra,
        filters=philips_filters(parsed, signal_info),
    )


def sniff_philips(item: ReaderInput) -> bool:
    return root_element_is(item.data, "restingecgdata")


READER = Reader(format=FORMAT, sniff=sniff_philips, read=read_philips)
