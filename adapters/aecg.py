"""HL7 v3 annotated ECG (aECG, the FDA submission format) reader.

Layout (namespace ``urn:hl7-org:v3``)::

    AnnotatedECG
      effectiveTime, componentOf/.../trialSubject/id
      component/series (code RHYTHM)
        author/seriesAuthor/manufacturedSeriesDevice     -> device
        component/sequenceSet/component/sequence         -> one time sequence + one per lead
        subjectOf/annotationSet/component/annotation     -> rhythm and interpretation text
        derivation/derivedSeries (REPRESENTATIVE_BEAT)   -> median beats, same layout

A sequence's ``value`` is typed by ``xsi:type``: ``GLIST_TS`` / ``GLIST_PQ`` for time
(head + increment), ``SLIST_PQ`` (origin + scale with units, integer ``digits``;
physical value = digits x scale + origin) or ``SLIST_INT`` for leads. The time sequence
may come in any position. Parsed with our own namespace-aware lxml code: the PyPI ``aecg``
package rejects valid minimal files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
from lxml import etree

from adapters.errors import EcgFormatError
from adapters.leads import normalize_lead_name
from adapters.limits import check_tokens, parse_numbers
from adapters.reader import Reader, ReaderInput, build_ecg
from adapters.record import Ecg, MedianBeats
from adapters.xml_safety import parse_xml, root_element_is

#: Leads of one sequence set may differ in length by this much (or 2 samples) before the
#: file is refused as missing data; within it they are cut to the common length.
MAX_LENGTH_MISMATCH_S = 0.02

FORMAT = "hl7-aecg"
HL7_NS = "urn:hl7-org:v3"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_NS = {"v3": HL7_NS}

#: Amplitude units (UCUM) accepted for lead values, as millivolts per unit.
_AMPLITUDE_TO_MV = {"nV": 1e-6, "uV": 1e-3, "µV": 1e-3, "mV": 1.0, "V": 1e3}
#: Time units (UCUM) accepted for the sampling increment, as seconds per unit.
_TIME_TO_S = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}

#: Annotation codes whose value is interpretation text we pass on as a statement.
_STATEMENT_CODES = ("MDC_ECG_RHY", "MDC_ECG_INTERPRETATION")
#: Global measurement codes (intervals, axes, rates) kept in ``Ecg.extra``.
_MEASUREMENT_PREFIXES = ("MDC_ECG_TIME_PD_", "MDC_ECG_ANGLE_", "MDC_ECG_HEART_RATE")


def _q(tag: str) -> str:
    return f"{{{HL7_NS}}}{tag}"


@dataclass(frozen=True)
class _Waveforms:
    """One series decoded: samples in millivolts, leads x samples."""

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    start: datetime | None
    notes: dict[str, str]


# --- HL7 data types ------------------------------------------------------------------------


_TS_PATTERN = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$"
)


def parse_hl7_ts(value: str | None) -> datetime | None:
    """An HL7 v3 ``TS`` (``YYYYMMDDHHMMSS.UUUU[+|-ZZzz]``, any precision) as a datetime.

    Returns ``None`` for a missing or malformed value: a bad timestamp is metadata we can
    do without, not a reason to refuse the waveform.
    """
    if not value:
        return None
    match = _TS_PATTERN.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )
    except ValueError:
        return None
    if zone:
        sign = 1 if zone[0] == "+" else -1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        try:
            moment = moment.replace(tzinfo=timezone(sign * offset))
        except ValueError:
            return None
    return moment


def _number(element: etree._Element | None, what: str, name: str) -> float:
    if element is None:
        raise EcgFormatError(name, f"{what} is missing")
    raw = element.get("value")
    try:
        value = float(raw) if raw is not None else float("nan")
    except ValueError:
        raise EcgFormatError(name, f"{what} value {raw!r} is not a number") from None
    if not np.isfinite(value):
        raise EcgFormatError(name, f"{what} has no finite value")
    return value


def _quantity_mv(element: etree._Element | None, what: str, name: str) -> float:
    """A ``PQ`` amplitude (``value`` + ``unit``) in millivolts."""
    value = _number(element, what, name)
    assert element is not None
    unit = (element.get("unit") or "").strip()
    if unit not in _AMPLITUDE_TO_MV:
        raise EcgFormatError(
            name,
            f"{what} has amplitude unit {unit or '(none)'!r}",
            f"expected one of {sorted(_AMPLITUDE_TO_MV)}",
        )
    return value * _AMPLITUDE_TO_MV[unit]


def _quantity_s(element: etree._Element | None, what: str, name: str) -> float:
    value = _number(element, what, name)
    assert element is not None
    unit = (element.get("unit") or "s").strip()
    if unit not in _TIME_TO_S:
        raise EcgFormatError(
            name, f"{what} has time unit {unit!r}", f"expected one of {sorted(_TIME_TO_S)}"
        )
    return value * _TIME_TO_S[unit]


def _xsi_type(value: etree._Element) -> str:
    raw = value.get(_XSI_TYPE) or ""
    return raw.split(":")[-1]


def _code(element: etree._Element | None) -> str:
    if element is None:
        return ""
    code = element.find(_q("code"))
    return (code.get("code") or "").strip() if code is not None else ""


def _digits(value: etree._Element, lead: str, name: str) -> np.ndarray:
    text = value.findtext(_q("digits")) or ""
    # counted against the limits for the whole document in read_aecg
    digits = parse_numbers(text)
    if digits is None:
        raise EcgFormatError(name, f"lead {lead}: digits are not all numbers")
    if digits.size == 0:
        raise EcgFormatError(name, f"lead {lead} has no samples")
    if not np.isfinite(digits).all():
        raise EcgFormatError(name, f"lead {lead}: digits include NaN or infinite values")
    return digits


# --- series ----------------------------------------------------------------------------------


def _lead_samples_mv(
    value: etree._Element, lead: str, name: str, notes: dict[str, str]
) -> np.ndarray:
    kind = _xsi_type(value)
    if kind == "SLIST_PQ":
        origin = _quantity_mv(value.find(_q("origin")), f"lead {lead} origin", name)
        scale = _quantity_mv(value.find(_q("scale")), f"lead {lead} scale", name)
    elif kind == "SLIST_INT":
        # SLIST_INT carries no unit; aECG producers use it for microvolt integers.
        origin = _number(value.find(_q("origin")), f"lead {lead} origin", name) * 1e-3
        scale = _number(value.find(_q("scale")), f"lead {lead} scale", name) * 1e-3
        notes["amplitude_unit_assumed"] = "uV (SLIST_INT has no unit)"
    else:
        raise EcgFormatError(
            name,
            f"lead {lead} has value type {kind or '(none)'!r}",
            "expected SLIST_PQ or SLIST_INT",
        )
    if scale == 0:
        raise EcgFormatError(name, f"lead {lead} has scale 0")
    return _digits(value, lead, name) * scale + origin


def _time_axis(value: etree._Element, name: str) -> tuple[float, datetime | None]:
    """Sampling rate (Hz) and absolute start time (if any) of a time sequence."""
    kind = _xsi_type(value)
    increment = _quantity_s(value.find(_q("increment")), "time increment", name)
    if increment <= 0:
        raise EcgFormatError(name, f"time increment {increment} s is not positive")
    start = None
    if kind == "GLIST_TS":
        head = value.find(_q("head"))
        start = parse_hl7_ts(head.get("value") if head is not None else None)
    elif kind != "GLIST_PQ":
        raise EcgFormatError(
            name,
            f"time sequence of type {kind or '(none)'!r} is not supported",
            "expected GLIST_TS or GLIST_PQ (uniform sampling)",
        )
    return 1.0 / increment, start


def _read_sequence_set(sequence_set: etree._Element, name: str) -> _Waveforms | None:
    fs: float | None = None
    start: datetime | None = None
    leads: list[str] = []
    rows: list[np.ndarray] = []
    notes: dict[str, str] = {}
    for sequence in sequence_set.iterfind(f"{_q('component')}/{_q('sequence')}"):
        code = _code(sequence)
        value = sequence.find(_q("value"))
        if value is None:
            continue
        if code.startswith("TIME_"):
            fs, start = _time_axis(value, name)
        elif code.startswith("MDC_ECG_LEAD_"):
            lead = normalize_lead_name(code)
            if lead in leads:
                raise EcgFormatError(name, f"lead {lead} appears twice in one sequence set")
            leads.append(lead)
            rows.append(_lead_samples_mv(value, lead, name, notes))
    if not rows:
        return None
    if fs is None:
        raise EcgFormatError(
            name, "a sequence set has lead data but no time sequence (TIME_ABSOLUTE/TIME_RELATIVE)"
        )
    lengths = {row.size for row in rows}
    if len(lengths) > 1:
        # The leads of one sequence set share its time axis: a few samples' difference is a
        # cart's rounding (cut to the common length, noted), more means lost data.
        if max(lengths) - min(lengths) > max(2, round(MAX_LENGTH_MISMATCH_S * fs)):
            short = ", ".join(
                f"{lead} {row.size}"
                for lead, row in zip(leads, rows, strict=True)
                if row.size < max(lengths)
            )
            raise EcgFormatError(
                name,
                f"the leads of a sequence set differ in length ({short} of {max(lengths)} "
                "samples): data is missing",
                "export the ECG again from the cart or archive",
            )
        notes["truncated_to_common_length"] = f"lead lengths {sorted(lengths)}"
    n = min(lengths)
    signal = np.stack([row[:n] for row in rows]).astype(np.float32)
    return _Waveforms(signal=signal, fs=fs, leads=tuple(leads), start=start, notes=notes)


def _read_series(series: etree._Element, name: str) -> _Waveforms:
    """All simultaneous leads of a series.

    Some carts split a series into several sequence sets; sets with the same sampling
    rate, start and length are merged, and the largest such group wins.
    """
    sets = [
        decoded
        for sequence_set in series.iterfind(f"{_q('component')}/{_q('sequenceSet')}")
        if (decoded := _read_sequence_set(sequence_set, name)) is not None
    ]
    if not sets:
        raise EcgFormatError(name, "the series holds no lead sequences")
    groups: dict[tuple[float, datetime | None, int], list[_Waveforms]] = {}
    for decoded in sets:
        groups.setdefault((decoded.fs, decoded.start, decoded.signal.shape[1]), []).append(decoded)
    best = max(groups.values(), key=lambda group: sum(len(w.leads) for w in group))
    leads: list[str] = []
    rows: list[np.ndarray] = []
    notes: dict[str, str] = {}
    for decoded in best:
        notes.update(decoded.notes)
        for lead, row in zip(decoded.leads, decoded.signal, strict=True):
            if lead not in leads:
                leads.append(lead)
                rows.append(row)
    if len(best) < len(sets):
        notes["ignored_sequence_sets"] = str(len(sets) - len(best))
    first = best[0]
    return _Waveforms(
        signal=np.stack(rows), fs=first.fs, leads=tuple(leads), start=first.start, notes=notes
    )


# --- metadata -----------------------------------------------------------------------------


def _annotation_texts(annotation: etree._Element) -> list[str]:
    """Statement text of one interpretation/rhythm annotation and its nested components."""
    texts: list[str] = []
    for node in annotation.iter(_q("annotation")):
        code = _code(node)
        if not code.startswith(_STATEMENT_CODES):
            continue
        value = node.find(_q("value"))
        if value is not None:
            if _xsi_type(value) in ("ST", "ED"):
                text = (value.text or "").strip()
            else:
                text = (value.get("displayName") or value.get("code") or "").strip()
            if text:
                texts.append(text)
        text = (node.findtext(_q("text")) or "").strip()
        if text:
            texts.append(text)
    return texts


def _annotations(series: etree._Element) -> tuple[list[str], dict[str, str]]:
    statements: list[str] = []
    measurements: dict[str, str] = {}
    sets = series.iterfind(f".//{_q('subjectOf')}/{_q('annotationSet')}")
    for annotation_set in sets:
        for annotation in annotation_set.iterfind(f"{_q('component')}/{_q('annotation')}"):
            code = _code(annotation)
            if code.startswith(_STATEMENT_CODES):
                statements.extend(_annotation_texts(annotation))
            elif code.startswith(_MEASUREMENT_PREFIXES) and code not in measurements:
                value = annotation.find(_q("value"))
                if value is not None and value.get("value"):
                    unit = value.get("unit") or ""
                    measurements[code] = f"{value.get('value')} {unit}".strip()
    return list(dict.fromkeys(statements)), measurements


def _device(series: etree._Element) -> str | None:
    author = series.find(f"{_q('author')}/{_q('seriesAuthor')}")
    if author is None:
        return None
    device = author.find(_q("manufacturedSeriesDevice"))
    maker = (author.findtext(f"{_q('manufacturerOrganization')}/{_q('name')}") or "").strip()
    model = software = ""
    if device is not None:
        model = (device.findtext(_q("manufacturerModelName")) or "").strip()
        software = (device.findtext(_q("softwareName")) or "").strip()
    label = " ".join(part for part in (maker, model) if part)
    if software:
        label = f"{label} (software {software})".strip()
    return label or None


def _patient_id(root: etree._Element) -> str | None:
    for ident in root.iterfind(f".//{_q('trialSubject')}/{_q('id')}"):
        value = ident.get("extension") or ident.get("root")
        if value:
            return value.strip()
    return None


def _effective_time(element: etree._Element) -> datetime | None:
    effective = element.find(_q("effectiveTime"))
    if effective is None:
        return None
    for part in ("low", "center"):
        point = effective.find(_q(part))
        if point is not None and (moment := parse_hl7_ts(point.get("value"))) is not None:
            return moment
    return None


def _rhythm_series(root: etree._Element, name: str) -> etree._Element:
    series = root.findall(f"{_q('component')}/{_q('series')}")
    if not series:
        raise EcgFormatError(name, "the aECG holds no waveform series (component/series)")
    for candidate in series:
        if _code(candidate) == "RHYTHM":
            return candidate
    return series[0]


# --- reader ---------------------------------------------------------------------------------


def read_aecg(item: ReaderInput) -> Ecg:
    """Read an HL7 aECG document into the canonical :class:`Ecg` (millivolts)."""
    name = item.name
    root = parse_xml(item.data, name, item.max_bytes)
    if root.tag != _q("AnnotatedECG"):
        raise EcgFormatError(name, f"root element is {root.tag!r}, not HL7 v3 AnnotatedECG")
    # Every sample of every series, counted before any is parsed.
    check_tokens(item.limits, name, (d.text or "" for d in root.iter(_q("digits"))))
    series = _rhythm_series(root, name)
    rhythm = _read_series(series, name)
    statements, measurements = _annotations(series)

    median_beats = None
    derived = series.find(f"{_q('derivation')}/{_q('derivedSeries')}")
    if derived is not None:
        medians = _read_series(derived, name)
        median_beats = MedianBeats(
            signal=medians.signal.astype(np.float32), fs=medians.fs, leads=medians.leads
        )
        derived_statements, derived_measurements = _annotations(derived)
        statements = list(dict.fromkeys([*statements, *derived_statements]))
        measurements = {**derived_measurements, **measurements}

    extra = {**measurements, **rhythm.notes}
    series_code = _code(series)
    if series_code != "RHYTHM":
        extra["series_code"] = series_code or "(none)"
    return build_ecg(
        item,
        FORMAT,
        signal=rhythm.signal,
        fs=rhythm.fs,
        leads=rhythm.leads,
        start_time=rhythm.start or _effective_time(series) or _effective_time(root),
        patient_id=_patient_id(root),
        device=_device(series),
        statements=tuple(statements),
        median_beats=median_beats,
        extra=extra,
    )


def sniff_aecg(item: ReaderInput) -> bool:
    return root_element_is(item.data, "AnnotatedECG", HL7_NS)


READER = Reader(format=FORMAT, sniff=sniff_aecg, read=read_aecg)
