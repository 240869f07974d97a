"""wfdb's signal-line and record-line parsers, with their field tables read once.

``wfdb.rdheader`` (4.x) parses each signal line of a header with
``wfdb.io._header._parse_signal_lines``, which looks every field's default and type up in a
pandas DataFrame (``SIGNAL_SPECS.loc[field, ...]``) for every channel: about 240 ``.loc``
lookups for a 12-lead header, measured as 24% of the CPU time of ``ecg-cds ingest`` (more
than reading the samples). :func:`parse_signal_lines` is the same function over the same
table, copied into plain dicts when this module is imported; :func:`install` puts it where
``rdheader`` calls it. Nothing else of wfdb changes, and the tests compare both parsers'
output on real headers of every WFDB source in ``shared/data``.

:func:`parse_record_line` does the same for the record line (``_parse_record_line``, nine
``RECORD_SPECS.loc`` lookups per header, most of what was left of ``rdheader``'s time).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any

from wfdb.io import _header

#: The untouched parser (the reference the tests compare against).
WFDB_PARSE_SIGNAL_LINES: Callable[[Sequence[str]], dict[str, list[Any]]] = (
    _header._parse_signal_lines
)

_FIELDS: tuple[str, ...] = tuple(_header.SIGNAL_SPECS.index)
_READ_DEFAULT: dict[str, Any] = {f: _header.SIGNAL_SPECS.loc[f, "read_default"] for f in _FIELDS}
_INT_FIELDS = frozenset(
    f for f in _FIELDS if _header.SIGNAL_SPECS.loc[f, "allowed_types"] is _header.int_types
)
_FLOAT_FIELDS = frozenset(
    f for f in _FIELDS if _header.SIGNAL_SPECS.loc[f, "allowed_types"] is _header.float_types
)

_ADC_ZERO = _FIELDS.index("adc_zero")

#: The untouched record-line parser (the reference the tests compare against).
WFDB_PARSE_RECORD_LINE: Callable[[str], dict[str, Any]] = _header._parse_record_line

_RECORD_FIELDS: tuple[str, ...] = tuple(_header.RECORD_SPECS.index)
_RECORD_DEFAULT: dict[str, Any] = {
    f: _header.RECORD_SPECS.loc[f, "read_default"] for f in _RECORD_FIELDS
}
_RECORD_INT = frozenset(
    f for f in _RECORD_FIELDS if _header.RECORD_SPECS.loc[f, "allowed_types"] == _header.int_types
)
_RECORD_FLOAT = frozenset(
    f for f in _RECORD_FIELDS if _header.RECORD_SPECS.loc[f, "allowed_types"] == _header.float_types
)


def parse_signal_lines(signal_lines: Sequence[str]) -> dict[str, list[Any]]:
    """``wfdb.io._header._parse_signal_lines``, field for field (same order, same defaults,
    the same special cases: an empty baseline takes ``adc_zero``, an ADC gain of 0 is 200)."""
    n_sig = len(signal_lines)
    fields: dict[str, list[Any]] = {field: [None] * n_sig for field in _FIELDS}
    for ch in range(n_sig):
        match = _header.rx_signal.match(signal_lines[ch])
        if match is None:
            raise _header.HeaderSyntaxError("invalid syntax in signal line")
        values = match.groups()
        for field, value in zip(_FIELDS, values, strict=True):
            if value == "":
                fields[field][ch] = _READ_DEFAULT[field]
                if field == "baseline" and values[_ADC_ZERO] != "":
                    fields["baseline"][ch] = int(values[_ADC_ZERO])
            elif field in _INT_FIELDS:
                fields[field][ch] = int(value)
            elif field in _FLOAT_FIELDS:
                fields[field][ch] = float(value)
                if field == "adc_gain" and fields[field][ch] == 0:
                    fields[field][ch] = 200.0
            else:
                fields[field][ch] = value
    return fields


def parse_record_line(record_line: str) -> dict[str, Any]:
    """``wfdb.io._header._parse_record_line``, field for field (same defaults, ``fs`` an int
    when whole, ``base_time`` by wfdb's own ``wfdb_strptime``, ``base_date`` day/month/year,
    ``base_datetime`` when both are given)."""
    match = _header.rx_record.match(record_line)
    if match is None:
        raise _header.HeaderSyntaxError("invalid syntax in record line")
    fields: dict[str, Any] = dict(zip(_EXPECTED_RECORD_FIELDS, match.groups(), strict=True))
    for field in _RECORD_FIELDS:
        value = fields[field]
        if value == "":
            fields[field] = _RECORD_DEFAULT[field]
        elif field in _RECORD_INT:
            fields[field] = int(value)
        elif field in _RECORD_FLOAT:
            fields[field] = float(value)
            if field == "fs":
                fs = float(fields["fs"])
                if round(fs, 8) == float(int(fs)):
                    fs = int(fs)
                fields["fs"] = fs
        elif field == "base_time":
            fields["base_time"] = _header.wfdb_strptime(value)
        elif field == "base_date":
            fields["base_date"] = datetime.datetime.strptime(value, "%d/%m/%Y").date()
    if fields["base_date"] and fields["base_time"]:  # not a WFDB field; wfdb sets it too
        fields["base_datetime"] = datetime.datetime.combine(
            fields["base_date"], fields["base_time"]
        )
    return fields


#: The field order of wfdb 4.x's parser (its tuple assignment from ``rx_signal``'s groups).
_EXPECTED_FIELDS = (
    "file_name", "fmt", "samps_per_frame", "skew", "byte_offset", "adc_gain", "baseline",
    "units", "adc_res", "adc_zero", "init_value", "checksum", "block_size", "sig_name",
)  # fmt: skip


#: The field order of wfdb 4.x's record-line parser (``rx_record``'s groups).
_EXPECTED_RECORD_FIELDS = (
    "record_name", "n_seg", "n_sig", "fs", "counter_freq", "base_counter", "sig_len",
    "base_time", "base_date",
)  # fmt: skip


def installable() -> bool:
    """Whether this wfdb's tables and regexes are the ones copied here."""
    return (
        _FIELDS == _EXPECTED_FIELDS
        and tuple(_header.rx_signal.groupindex) == _EXPECTED_FIELDS
        and _RECORD_FIELDS == _EXPECTED_RECORD_FIELDS
        and tuple(_header.rx_record.groupindex) == _EXPECTED_RECORD_FIELDS
    )


def install() -> bool:
    """Make ``wfdb.rdheader`` (and so ``rdrecord``) use :func:`parse_signal_lines` and
    :func:`parse_record_line`; False (wfdb left as it is) if this wfdb's tables or regexes
    are not the ones copied here."""
    if not installable():
        return False
    _header._parse_signal_lines = parse_signal_lines
    _header._parse_record_line = parse_record_line
    return True
