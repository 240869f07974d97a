"""ECG waveforms as FHIR Observations with SampledData, in (writing: adapters.fhir_writer).

Reading (format ``fhir-observation``): JSON of an Observation, or of a Bundle holding exactly
one ECG Observation. Each component with ``valueSampledData`` is a lead, named from its
MDC code (``131329`` = I, ``131389`` = III, also lead identities ``131073``...), a LOINC part
or SNOMED CT code of a lead, a code that is a lead's name, else from the code's display or
text (``MDC_ECG_ELEC_POTL_V1``, ``Lead V1``). Both SampledData shapes are
accepted: R4 ``period`` (ms) and R5 ``interval`` + ``intervalUnit``. Values are
``origin + factor * data`` in the unit of ``origin`` (mV, uV or V; a unitless origin is
taken as mV and ``extra["units"]`` says so). Special values: ``L`` and ``U`` (below/above
the detection limit) become ``lowerLimit``/``upperLimit`` when those are given; ``E`` (no
valid value) and ``L``/``U`` without a limit raise :class:`EcgFormatError`, because any
number put there would be invented.

Writing (:func:`adapters.fhir_writer.ecg_to_fhir_observation`): the FHIR R4 "ekg" example
shape: code MDC 131328,
category ``procedure``, one component per lead with origin 0 mV, period in ms, integer
data and ``factor`` = the step of :mod:`adapters.quantise` in mV.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import numpy as np

from adapters.errors import EcgFormatError
from adapters.leads import (
    lead_name_from_code,
    mdc_lead_term,
    normalize_lead_name,
)
from adapters.limits import EcgTooLarge, check_tokens, parse_numbers
from adapters.reader import Reader, ReaderInput, build_ecg
from adapters.record import STANDARD_LEADS, Ecg
from adapters.units import mv_factor

FORMAT = "fhir-observation"
MDC_SYSTEM = "urn:oid:2.16.840.1.113883.6.24"
MDC_SYSTEMS = {MDC_SYSTEM, "urn:iso:std:iso:11073:10101", "http://hl7.org/fhir/uv/ihe-pcd"}
LOINC_SYSTEM = "http://loinc.org"
SNOMED_SYSTEM = "http://snomed.info/sct"
UCUM_SYSTEM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
EKG_IMPRESSION_LOINC = "8601-7"
#: LOINC parts naming the 12 standard leads (as in the HL7 Germany EkgLeads value set).
LOINC_LEAD_PARTS = {
    "LP7386-8": "I", "LP7387-6": "II", "LP7388-4": "III",
    "LP7385-0": "aVR", "LP7384-3": "aVL", "LP7383-5": "aVF",
    "LP7389-2": "V1", "LP7390-0": "V2", "LP7391-8": "V3",
    "LP7392-6": "V4", "LP7393-4": "V5", "LP7394-2": "V6",
}  # fmt: skip
#: SNOMED CT codes of the 12 standard leads, in STANDARD_LEADS order (HL7 Germany's
#: EkgAbleitungenVS value set: "Lead I" ... "aVF", "Lead site V1" ... "Lead site V6").
_SNOMED_CODES = (
    "272729005", "272730000", "272731001", "257474006", "257473000", "257472005",
    "257475007", "257476008", "257477004", "257478009", "257479001", "257480003",
)  # fmt: skip
SNOMED_LEADS = dict(zip(_SNOMED_CODES, STANDARD_LEADS, strict=True))
#: Carries a start time without time zone (the cart's local clock); see :func:`_effective`.
LOCAL_TIME_EXTENSION = "urn:ecg-cds:fhir:local-acquisition-time"

_TO_MS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3, "min": 60000.0}


def sniff(item: ReaderInput) -> bool:
    head = item.data[:4096].lstrip()
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip()
    return head.startswith(b"{") and b'"resourceType"' in item.data[:65536]


# --------------------------------------------------------------------------- reading


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding", []) if isinstance(c, dict)]


def _lead_name(component: dict[str, Any], index: int) -> str:
    concept = component.get("code")
    for coding in _codings(concept):
        if str(coding.get("system", "")) in MDC_SYSTEMS or str(coding.get("code", "")).isdigit():
            name = lead_name_from_code(str(coding.get("code", "")))
            if name is not None:
                return name
    for coding in _codings(concept):
        code = str(coding.get("code", ""))
        if coding.get("system") == LOINC_SYSTEM and code in LOINC_LEAD_PARTS:
            return LOINC_LEAD_PARTS[code]
        if coding.get("system") == SNOMED_SYSTEM and code in SNOMED_LEADS:
            return SNOMED_LEADS[code]
        # A code system whose codes are the lead names (the HL7 PHR IG's ecg-lead-codes).
        if not code.isdigit() and mdc_lead_term(code) is not None:
            return normalize_lead_name(code)
    # The lead's own text first: with the generic potential code (131328), the display
    # names no lead and the writer puts the lead name in text.
    texts = [concept.get("text") if isinstance(concept, dict) else None]
    texts.extend(c.get("display") for c in _codings(concept))
    for text in texts:
        if isinstance(text, str) and text.strip() and text.strip() != "MDC_ECG_ELEC_POTL":
            return normalize_lead_name(text)
    return f"ch{index + 1}"


def _unit_to_mv(origin: dict[str, Any], where: str) -> tuple[float, str | None]:
    unit = origin.get("code") or origin.get("unit")
    if unit is None:
        return 1.0, None
    factor = mv_factor(str(unit))
    if factor is None:
        raise EcgFormatError(where, f"SampledData origin is in {unit!r}, not a voltage")
    return factor, str(unit)


def _period_ms(sampled: dict[str, Any], where: str) -> float:
    if "period" in sampled:  # R4
        period = float(sampled["period"])
    elif "interval" in sampled:  # R5
        unit = str(sampled.get("intervalUnit", "ms")).strip()
        scale = _TO_MS.get(unit.lower())
        if scale is None:
            raise EcgFormatError(where, f"SampledData intervalUnit {unit!r} is not a time unit")
        period = float(sampled["interval"]) * scale
    else:
        raise EcgFormatError(where, "SampledData has neither period (R4) nor interval (R5)")
    if not math.isfinite(period) or period <= 0:
        raise EcgFormatError(where, f"SampledData period {period} ms is not positive")
    return period


def _dimensions(sampled: dict[str, Any], lead: str, where: str) -> int:
    """SampledData ``dimensions``: how many channels its data interleaves (each one a lead)."""
    value = sampled.get("dimensions", 1)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 12.0: a JSON writer's integer
    text = str(value).strip() if isinstance(value, int | str) else ""
    if isinstance(value, bool) or not text.isascii() or not text.isdigit() or int(text) < 1:
        shown = repr(value)[:40]
        raise EcgFormatError(where, f"lead {lead}: SampledData dimensions {shown} is not >= 1")
    return int(text)


def _samples(
    sampled: dict[str, Any], lead: str, where: str
) -> tuple[np.ndarray, float, int, str | None]:
    """(values in mV, period in ms, dimensions, origin unit) of one SampledData."""
    origin = sampled.get("origin")
    if not isinstance(origin, dict) or "value" not in origin:
        raise EcgFormatError(where, f"lead {lead}: SampledData has no origin value")
    to_mv, unit = _unit_to_mv(origin, where)
    period = _period_ms(sampled, where)
    factor = float(sampled.get("factor", 1.0))
    dimensions = _dimensions(sampled, lead, where)
    # A zero factor would turn every sample into the origin: a flat line, not this lead.
    if not math.isfinite(factor) or factor == 0:
        raise EcgFormatError(where, f"lead {lead}: SampledData factor {factor} is not usable")
    text = sampled.get("data")
    if not isinstance(text, str) or not text.strip():
        raise EcgFormatError(where, f"lead {lead}: SampledData has no data")
    data = parse_numbers(text)  # the record was counted by read()
    if data is None:
        tokens = text.split()
        data = _special_values(tokens, sampled, factor, float(origin["value"]), lead, where)
    values = (float(origin["value"]) + factor * data) * to_mv
    return values, period, dimensions, unit


def _special_values(
    tokens: list[str], sampled: dict[str, Any], factor: float, origin: float, lead: str, where: str
) -> np.ndarray:
    """Data with E/L/U markers: limits where the file gives them, an error otherwise."""
    limits = {"L": sampled.get("lowerLimit"), "U": sampled.get("upperLimit")}
    out = np.empty(len(tokens), dtype=np.float64)
    for i, token in enumerate(tokens):
        if token in ("L", "U"):
            limit = limits[token]
            if limit is None:
                side = "lower" if token == "L" else "upper"
                raise EcgFormatError(
                    where,
                    f"lead {lead}: sample {i} is {token!r} (beyond the {side} detection limit) "
                    f"and SampledData gives no {side}Limit",
                )
            out[i] = (float(limit) - origin) / factor  # so origin + factor * x == limit
        elif token == "E":
            raise EcgFormatError(
                where,
                f"lead {lead}: sample {i} is 'E' (no valid value)",
                "the recording has gaps; it cannot be classified as it is",
            )
        else:
            try:
                out[i] = float(token)
            except ValueError:
                raise EcgFormatError(
                    where, f"lead {lead}: sample {i} is {token!r}, not a number"
                ) from None
    return out


def _observation(document: Any, where: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise EcgFormatError(where, "JSON is not a FHIR resource object")
    kind = document.get("resourceType")
    if kind == "Observation":
        return document
    if kind == "Bundle":
        found = [
            entry["resource"]
            for entry in document.get("entry", [])
            if isinstance(entry, dict)
            and isinstance(entry.get("resource"), dict)
            and entry["resource"].get("resourceType") == "Observation"
            and _has_waveform(entry["resource"])
        ]
        if len(found) != 1:
            raise EcgFormatError(
                where,
                f"the Bundle holds {len(found)} Observations with SampledData",
                "send a Bundle with exactly one ECG Observation, or the Observation itself",
            )
        return found[0]
    raise EcgFormatError(
        where, f"FHIR {kind!r} resource is not an ECG", "expected an Observation with SampledData"
    )


def _has_waveform(observation: dict[str, Any]) -> bool:
    if isinstance(observation.get("valueSampledData"), dict):
        return True
    return any(
        isinstance(c, dict) and isinstance(c.get("valueSampledData"), dict)
        for c in observation.get("component", [])
    )


def _parse_datetime(observation: dict[str, Any]) -> datetime | None:
    for extension in (observation.get("_effectiveDateTime") or {}).get("extension", []):
        if isinstance(extension, dict) and extension.get("url") == LOCAL_TIME_EXTENSION:
            try:
                return datetime.fromisoformat(str(extension.get("valueString")))
            except ValueError:
                break
    value = observation.get("effectiveDateTime") or observation.get("effectiveInstant")
    if value is None and isinstance(observation.get("effectivePeriod"), dict):
        value = observation["effectivePeriod"].get("start")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _reference_id(reference: Any) -> str | None:
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if isinstance(ref, str) and ref.strip():
        return ref.strip().rsplit("/", 1)[-1]
    ident = reference.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        return str(ident["value"])
    return None


def _findings(observation: dict[str, Any]) -> tuple[list[str], list[str]]:
    statements = [
        str(note["text"]).strip()
        for note in observation.get("note", [])
        if isinstance(note, dict) and str(note.get("text", "")).strip()
    ]
    codes: list[str] = []
    for component in observation.get("component", []):
        if not isinstance(component, dict):
            continue
        concept = component.get("valueCodeableConcept")
        for coding in _codings(concept):
            if coding.get("system") == SNOMED_SYSTEM and coding.get("code"):
                codes.append(f"{SNOMED_SYSTEM}|{coding['code']}")
            elif coding.get("display"):
                statements.append(str(coding["display"]))
        if isinstance(component.get("valueString"), str) and component["valueString"].strip():
            statements.append(component["valueString"].strip())
    return statements, list(dict.fromkeys(codes))


#: At most this many JSON objects, arrays and array items ("{", "[", "," counted, strings
#: included): an ECG Observation has a few hundred (its samples are one string per lead);
#: json.loads would turn a 64 MB upload of "{}," into ~1.7 GB of Python objects.
MAX_JSON_VALUES = 1_000_000


def read(item: ReaderInput) -> Ecg:
    containers = sum(item.data.count(char) for char in (b"{", b"[", b","))
    if containers > MAX_JSON_VALUES:
        raise EcgFormatError(
            item.name,
            f"the JSON holds {containers} objects, arrays or list items, over the limit of "
            f"{MAX_JSON_VALUES}",
            "an ECG Observation has a few hundred; SampledData carries samples as one string",
        )
    try:
        document = json.loads(item.data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EcgFormatError(
            item.name, f"not valid JSON ({exc})", "is the file truncated?"
        ) from None
    observation = _observation(document, item.name)
    rows: list[np.ndarray] = []
    leads: list[str] = []
    periods: set[float] = set()
    units: set[str | None] = set()
    components = [
        c
        for c in observation.get("component", [])
        if isinstance(c, dict) and isinstance(c.get("valueSampledData"), dict)
    ]
    if not components and isinstance(observation.get("valueSampledData"), dict):
        components = [
            {"code": observation.get("code"), "valueSampledData": observation["valueSampledData"]}
        ]
    if not components:
        raise EcgFormatError(item.name, "the Observation has no SampledData")
    # Every lead (a SampledData of n dimensions is n of them) and every value, counted
    # before any is parsed: one component declaring millions of dimensions was read as
    # millions of leads.
    channels = sum(
        _dimensions(c["valueSampledData"], _lead_name(c, i), item.name)
        for i, c in enumerate(components)
    )
    if channels > item.limits.max_ecg_leads:
        raise EcgTooLarge(
            item.name,
            f"declares {channels} channels ({len(components)} SampledData, their dimensions "
            "counted)",
            "max_ecg_leads",
            item.limits.max_ecg_leads,
        )
    item.check_shape(channels, 0)
    check_tokens(
        item.limits,
        item.name,
        (data for c in components if isinstance(data := c["valueSampledData"].get("data"), str)),
    )
    for index, component in enumerate(components):
        name = _lead_name(component, index)
        values, period, dimensions, unit = _samples(component["valueSampledData"], name, item.name)
        periods.add(round(period, 9))
        units.add(unit)
        if dimensions == 1:
            rows.append(values)
            leads.append(name)
            continue
        if values.size % dimensions:
            raise EcgFormatError(
                item.name, f"{values.size} values do not divide into {dimensions} dimensions"
            )
        interleaved = values.reshape(-1, dimensions).T
        rows.extend(interleaved)
        leads.extend(f"{name}-{k + 1}" for k in range(dimensions))
    if len(periods) != 1:
        raise EcgFormatError(item.name, f"leads have different sampling periods {sorted(periods)}")
    lengths = {row.size for row in rows}
    if len(lengths) != 1:
        raise EcgFormatError(
            item.name, f"leads have different numbers of samples {sorted(lengths)}"
        )
    fs = round(1000.0 / periods.pop(), 6)
    statements, codes = _findings(observation)
    extra = {
        "units": "assumed mV (origin has no unit)"
        if None in units
        else "/".join(sorted(u for u in units if u))
    }
    if observation.get("id"):
        extra["observation_id"] = str(observation["id"])
    device = observation.get("device")
    return build_ecg(
        item,
        FORMAT,
        signal=np.stack(rows).astype(np.float32),
        fs=fs,
        leads=tuple(leads),
        start_time=_parse_datetime(observation),
        patient_id=_reference_id(observation.get("subject")),
        device=str(device.get("display"))
        if isinstance(device, dict) and device.get("display")
        else None,
        statements=tuple(statements),
        diagnosis_codes=tuple(codes),
        extra=extra,
    )


READER = Reader(format=FORMAT, sniff=sniff, read=read)
