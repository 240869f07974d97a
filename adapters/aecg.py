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
package rejects valid minimal files. The HL7 value types (timestamps, quantities in UCUM
units, codes, digits) are read by :mod:`adapters.hl7_values`; this module reads the layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from lxml import etree

from adapters.errors import EcgFormatError
from adapters.hl7_values import (
    HL7_NS,
    code_of,
    lead_digits,
    number,
    parse_hl7_ts,
    quantity_mv,
    quantity_s,
    tag,
    xsi_type,
)
from adapters.leads import lead_name_from_code, normalize_lead_name
from adapters.limits import check_tokens
from adapters.reader import Reader, ReaderInput, build_ecg
from adapters.record import Ecg, MedianBeats
from adapters.recording_filters import aecg_filters
from adapters.xml_safety import parse_xml, root_element_is

#: Leads of one sequence set may differ in length by this much (or 2 samples) before the
#: file is refused as missing data; within it they are cut to the common length.
MAX_LENGTH_MISMATCH_S = 0.02

FORMAT = "hl7-aecg"

#: Annotation codes whose value is interpretation text we pass on as a statement.
_STATEMENT_CODES = ("MDC_ECG_RHY", "MDC_ECG_INTERPRETATION")
#: Global measurement codes (intervals, axes, rates) kept in ``Ecg.extra``.
_MEASUREMENT_PREFIXES = ("MDC_ECG_TIME_PD_", "MDC_ECG_ANGLE_", "MDC_ECG_HEART_RATE")


@dataclass(frozen=True)
class _Waveforms:
    """One series decoded: samples in millivolts, leads x samples."""

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    start: datetime | None
    notes: dict[str, str]
    #: A TIME_RELATIVE (GLIST_PQ) head: the first sample's time after the series' start.
    offset_s: float | None = None


# --- series ----------------------------------------------------------------------------------


def _lead_samples_mv(
    value: etree._Element, lead: str, name: str, notes: dict[str, str]
) -> np.ndarray:
    kind = xsi_type(value)
    if kind == "SLIST_PQ":
        origin = quantity_mv(value.find(tag("origin")), f"lead {lead} origin", name)
        scale = quantity_mv(value.find(tag("scale")), f"lead {lead} scale", name)
    elif kind == "SLIST_INT":
        # SLIST_INT carries no unit; aECG producers use it for microvolt integers.
        origin = number(value.find(tag("origin")), f"lead {lead} origin", name) * 1e-3
        scale = number(value.find(tag("scale")), f"lead {lead} scale", name) * 1e-3
        notes["amplitude_unit_assumed"] = "uV (SLIST_INT has no unit)"
    else:
        raise EcgFormatError(
            name,
            f"lead {lead} has value type {kind or '(none)'!r}",
            "expected SLIST_PQ or SLIST_INT",
        )
    if not scale > 0:
        raise EcgFormatError(
            name,
            f"lead {lead} has scale {scale}",
            "a scale of zero or below cannot be read as millivolts (a negative one would show "
            "the lead upside down)",
        )
    return lead_digits(value, lead, name) * scale + origin


def _time_axis(value: etree._Element, name: str) -> tuple[float, datetime | None, float | None]:
    """Sampling rate (Hz), absolute start time (GLIST_TS) and relative start in seconds
    (GLIST_PQ) of a time sequence."""
    kind = xsi_type(value)
    increment = quantity_s(value.find(tag("increment")), "time increment", name)
    if increment <= 0:
        raise EcgFormatError(name, f"time increment {increment} s is not positive")
    start = offset = None
    head = value.find(tag("head"))
    if kind == "GLIST_TS":
        start = parse_hl7_ts(head.get("value") if head is not None else None)
    elif kind == "GLIST_PQ":
        try:  # as a malformed GLIST_TS head is: a start we can do without, not a refusal
            offset = quantity_s(head, "time head", name) if head is not None else None
        except EcgFormatError:
            offset = None
    else:
        raise EcgFormatError(
            name,
            f"time sequence of type {kind or '(none)'!r} is not supported",
            "expected GLIST_TS or GLIST_PQ (uniform sampling)",
        )
    return 1.0 / increment, start, offset


def _lead_of(code: str) -> str | None:
    """The lead a sequence code names: the MDC reference id the aECG guide uses
    (``MDC_ECG_LEAD_I``), the potential's id (``MDC_ECG_ELEC_POTL_I``) or either's numeric
    MDC code (131073, 131329); None for any other code."""
    if code.startswith(("MDC_ECG_LEAD_", "MDC_ECG_ELEC_POTL_")):
        return normalize_lead_name(code)
    return lead_name_from_code(code) if code.isdigit() else None


def _read_sequence_set(sequence_set: etree._Element, name: str) -> _Waveforms | None:
    fs: float | None = None
    start: datetime | None = None
    offset: float | None = None
    leads: list[str] = []
    rows: list[np.ndarray] = []
    notes: dict[str, str] = {}
    ignored: list[str] = []
    for sequence in sequence_set.iterfind(f"{tag('component')}/{tag('sequence')}"):
        code = code_of(sequence)
        value = sequence.find(tag("value"))
        if value is None:
            if not code.startswith("TIME_"):  # a lead without samples: said, not lost unseen
                ignored.append(f"{code or '(no code)'} (no value)")
            continue
        if code.startswith("TIME_"):
            fs, start, offset = _time_axis(value, name)
        elif (lead := _lead_of(code)) is not None:
            if lead in leads:
                raise EcgFormatError(name, f"lead {lead} appears twice in one sequence set")
            leads.append(lead)
            rows.append(_lead_samples_mv(value, lead, name, notes))
        else:  # samples under a code that names no lead: said, not dropped unseen
            ignored.append(code or "(no code)")
    if ignored:
        notes["ignored_sequences"] = " ".join(ignored)
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
    return _Waveforms(
        signal=signal, fs=fs, leads=tuple(leads), start=start, notes=notes, offset_s=offset
    )


def _read_series(series: etree._Element, name: str) -> _Waveforms:
    """All simultaneous leads of a series.

    Some carts split a series into several sequence sets; sets with the same sampling
    rate, start and length are merged, and the largest such group wins. The start is the
    GLIST_TS head or the TIME_RELATIVE (GLIST_PQ) head: sets a cart recorded one after
    another (4 x 3 leads of 2.5 s) are not one simultaneous record.
    """
    sets = [
        decoded
        for sequence_set in series.iterfind(f"{tag('component')}/{tag('sequenceSet')}")
        if (decoded := _read_sequence_set(sequence_set, name)) is not None
    ]
    if not sets:
        path = f"{tag('component')}/{tag('sequenceSet')}/{tag('component')}/{tag('sequence')}"
        codes = {code_of(s) for s in series.iterfind(path)} - {"TIME_ABSOLUTE", "TIME_RELATIVE"}
        raise EcgFormatError(
            name,
            "the series holds no lead sequences"
            + (f" (sequence codes: {', '.join(sorted(codes))})" if codes else ""),
            "leads are read from MDC_ECG_LEAD_* codes (e.g. MDC_ECG_LEAD_I)",
        )
    groups: dict[tuple[float, datetime | None, float | None, int], list[_Waveforms]] = {}
    for decoded in sets:
        key = (decoded.fs, decoded.start, decoded.offset_s, decoded.signal.shape[1])
        groups.setdefault(key, []).append(decoded)
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
    for node in annotation.iter(tag("annotation")):
        code = code_of(node)
        if not code.startswith(_STATEMENT_CODES):
            continue
        value = node.find(tag("value"))
        if value is not None:
            if xsi_type(value) in ("ST", "ED"):
                text = (value.text or "").strip()
            else:
                text = (value.get("displayName") or value.get("code") or "").strip()
            if text:
                texts.append(text)
        text = (node.findtext(tag("text")) or "").strip()
        if text:
            texts.append(text)
    return texts


def _annotations(series: etree._Element) -> tuple[list[str], dict[str, str]]:
    statements: list[str] = []
    measurements: dict[str, str] = {}
    sets = series.iterfind(f".//{tag('subjectOf')}/{tag('annotationSet')}")
    for annotation_set in sets:
        for annotation in annotation_set.iterfind(f"{tag('component')}/{tag('annotation')}"):
            code = code_of(annotation)
            if code.startswith(_STATEMENT_CODES):
                statements.extend(_annotation_texts(annotation))
            elif code.startswith(_MEASUREMENT_PREFIXES) and code not in measurements:
                value = annotation.find(tag("value"))
                if value is not None and value.get("value"):
                    unit = value.get("unit") or ""
                    measurements[code] = f"{value.get('value')} {unit}".strip()
    return list(dict.fromkeys(statements)), measurements


def _device(series: etree._Element) -> str | None:
    author = series.find(f"{tag('author')}/{tag('seriesAuthor')}")
    if author is None:
        return None
    device = author.find(tag("manufacturedSeriesDevice"))
    maker = (author.findtext(f"{tag('manufacturerOrganization')}/{tag('name')}") or "").strip()
    model = software = ""
    if device is not None:
        model = (device.findtext(tag("manufacturerModelName")) or "").strip()
        software = (device.findtext(tag("softwareName")) or "").strip()
    label = " ".join(part for part in (maker, model) if part)
    if software:
        label = f"{label} (software {software})".strip()
    return label or None


def _patient_id(root: etree._Element) -> str | None:
    for ident in root.iterfind(f".//{tag('trialSubject')}/{tag('id')}"):
        value = ident.get("extension") or ident.get("root")
        if value:
            return value.strip()
    return None


def _effective_time(element: etree._Element) -> datetime | None:
    effective = element.find(tag("effectiveTime"))
    if effective is None:
        return None
    for part in ("low", "center"):
        point = effective.find(tag(part))
        if point is not None and (moment := parse_hl7_ts(point.get("value"))) is not None:
            return moment
    return None


def _rhythm_series(root: etree._Element, name: str) -> etree._Element:
    series = root.findall(f"{tag('component')}/{tag('series')}")
    if not series:
        raise EcgFormatError(name, "the aECG holds no waveform series (component/series)")
    for candidate in series:
        if code_of(candidate) == "RHYTHM":
            return candidate
    # A representative (median) beat is one averaged beat, not a recording to classify.
    others = [s for s in series if code_of(s) != "REPRESENTATIVE_BEAT"]
    if not others:
        raise EcgFormatError(
            name,
            "the aECG holds only representative-beat series (REPRESENTATIVE_BEAT), no rhythm",
            "send the aECG with its rhythm waveforms",
        )
    return others[0]


# --- reader ---------------------------------------------------------------------------------


def read_aecg(item: ReaderInput) -> Ecg:
    """Read an HL7 aECG document into the canonical :class:`Ecg` (millivolts)."""
    name = item.name
    root = parse_xml(item.data, name, item.max_bytes)
    if root.tag != tag("AnnotatedECG"):
        raise EcgFormatError(name, f"root element is {root.tag!r}, not HL7 v3 AnnotatedECG")
    # Every sample of every series, and the leads of each sequence set (each lead sequence
    # is one), counted before any is parsed.
    check_tokens(item.limits, name, (d.text or "" for d in root.iter(tag("digits"))))
    path = f"{tag('component')}/{tag('sequence')}"
    for sequence_set in root.iter(tag("sequenceSet")):
        leads = sum(_lead_of(code_of(s)) is not None for s in sequence_set.iterfind(path))
        item.check_shape(leads, 0)
    series = _rhythm_series(root, name)
    rhythm = _read_series(series, name)
    statements, measurements = _annotations(series)

    median_beats = None
    skipped: str | None = None
    derived = series.find(f"{tag('derivation')}/{tag('derivedSeries')}")
    if derived is not None:
        try:
            medians = _read_series(derived, name)
            median_beats = MedianBeats(
                signal=medians.signal.astype(np.float32), fs=medians.fs, leads=medians.leads
            )
        except EcgFormatError as exc:  # the cart's beats are extra: never lose the rhythm
            skipped = exc.problem
        derived_statements, derived_measurements = _annotations(derived)
        statements = list(dict.fromkeys([*statements, *derived_statements]))
        measurements = {**derived_measurements, **measurements}

    extra = {**measurements, **rhythm.notes}
    if skipped:
        extra["median_beats_skipped"] = skipped
    series_code = code_of(series)
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
        filters=aecg_filters(series),
        amplitude_assumed=(
            "the aECG's SLIST_INT values carry no unit: read as microvolts"
            if "amplitude_unit_assumed" in rhythm.notes
            else None
        ),
    )


def sniff_aecg(item: ReaderInput) -> bool:
    return root_element_is(item.data, "AnnotatedECG", HL7_NS)


READER = Reader(format=FORMAT, sniff=sniff_aecg, read=read_aecg)
