"""HL7 v3 data types as the aECG reader reads them: element names, timestamps, quantities.

* :func:`tag`: an element name in the HL7 v3 namespace (``urn:hl7-org:v3``);
* :func:`parse_hl7_ts`: a ``TS`` timestamp, any precision, with its zone;
* :func:`number`, :func:`quantity_mv`, :func:`quantity_s`: a ``value`` attribute, and a
  ``PQ`` amplitude or time in millivolts or seconds (UCUM units, refused when unknown);
* :func:`xsi_type`, :func:`code_of`: an element's ``xsi:type`` and its ``code/@code``;
* :func:`lead_digits`: a sequence's ``digits`` as numbers.

Split from :mod:`adapters.aecg` so that module reads as the aECG layout (series, sequence
sets, annotations) and this one as the value types it is written in.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np
from lxml import etree

from adapters.errors import EcgFormatError
from adapters.limits import parse_numbers

HL7_NS = "urn:hl7-org:v3"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"

#: Amplitude units (UCUM) accepted for lead values, as millivolts per unit.
_AMPLITUDE_TO_MV = {"nV": 1e-6, "uV": 1e-3, "µV": 1e-3, "mV": 1.0, "V": 1e3}
#: Time units (UCUM) accepted for the sampling increment, as seconds per unit.
_TIME_TO_S = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


def tag(name: str) -> str:
    """``name`` in the HL7 v3 namespace, as lxml spells it (``{urn:hl7-org:v3}name``)."""
    return f"{{{HL7_NS}}}{name}"


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


def number(element: etree._Element | None, what: str, name: str) -> float:
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


def quantity_mv(element: etree._Element | None, what: str, name: str) -> float:
    """A ``PQ`` amplitude (``value`` + ``unit``) in millivolts."""
    value = number(element, what, name)
    assert element is not None
    unit = (element.get("unit") or "").strip()
    if not unit and value == 0:  # zero needs no unit (an origin of 0 written bare)
        return 0.0
    if unit not in _AMPLITUDE_TO_MV:
        raise EcgFormatError(
            name,
            f"{what} has amplitude unit {unit or '(none)'!r}",
            f"expected one of {sorted(_AMPLITUDE_TO_MV)}",
        )
    return value * _AMPLITUDE_TO_MV[unit]


def quantity_s(element: etree._Element | None, what: str, name: str) -> float:
    value = number(element, what, name)
    assert element is not None
    unit = (element.get("unit") or "s").strip()
    if unit not in _TIME_TO_S:
        raise EcgFormatError(
            name, f"{what} has time unit {unit!r}", f"expected one of {sorted(_TIME_TO_S)}"
        )
    return value * _TIME_TO_S[unit]


def xsi_type(value: etree._Element) -> str:
    raw = value.get(_XSI_TYPE) or ""
    return raw.split(":")[-1]


def code_of(element: etree._Element | None) -> str:
    if element is None:
        return ""
    code = element.find(tag("code"))
    return (code.get("code") or "").strip() if code is not None else ""


def lead_digits(value: etree._Element, lead: str, name: str) -> np.ndarray:
    text = value.findtext(tag("digits")) or ""
    # counted against the limits for the whole document in read_aecg
    digits = parse_numbers(text)
    if digits is None:
        raise EcgFormatError(name, f"lead {lead}: digits are not all numbers")
    if digits.size == 0:
        raise EcgFormatError(name, f"lead {lead} has no samples")
    if not np.isfinite(digits).all():
        raise EcgFormatError(name, f"lead {lead}: digits include NaN or infinite values")
    return digits
