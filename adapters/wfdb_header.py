"""wfdb's signal-line parser, with its field table read once instead of per field.

``wfdb.rdheader`` (4.x) parses each signal line of a header with
``wfdb.io._header._parse_signal_lines``, which looks every field's default and type up in a
pandas DataFrame (``SIGNAL_SPECS.loc[field, ...]``) for every channel: about 240 ``.loc``
lookups for a 12-lead header, measured as 24% of the CPU time of ``ecg-cds ingest`` (more
than reading the samples). :func:`parse_signal_lines` is the same function over the same
table, copied into plain dicts when this module is imported; :func:`install` puts it where
``rdheader`` calls it. Nothing else of wfdb changes, and the tests compare both parsers'
output on real headers of every WFDB source in ``shared/data``.
"""

from __future__ import annotations

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

_ADC_ZERO = _FIELDS.index("adc_zero")  # read raw, as wfdb does, when the baseline is empty


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


#: The field order of wfdb 4.x's parser (its tuple assignment from ``rx_signal``'s groups).
_EXPECTED_FIELDS = (
    "file_name", "fmt", "samps_per_frame", "skew", "byte_offset", "adc_gain", "baseline",
    "units", "adc_res", "adc_zero", "init_value", "checksum", "block_size", "sig_name",
)  # fmt: skip


def install() -> bool:
    """Make ``wfdb.rdheader`` (and so ``rdrecord``) use :func:`parse_signal_lines`; False
    (wfdb left as it is) if this wfdb's table or regex is not the one copied here."""
    if _FIELDS != _EXPECTED_FIELDS or tuple(_header.rx_signal.groupindex) != _EXPECTED_FIELDS:
        return False
    _header._parse_signal_lines = parse_signal_lines
    return True
