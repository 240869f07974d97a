"""Coded items of a DICOM waveform's channels: code value and meaning, parsed once, and the
lead a channel records (split from :mod:`adapters.dicom`).

Lead names come from the Channel Source Sequence (003A,0208): MDC ``2:1``, legacy SCP-ECG
``5.6.3-9-1`` or a numeric MDC code, with the code meaning as a fallback.
"""

from __future__ import annotations

import pydicom
import pydicom.datadict
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from adapters.leads import lead_name_from_code, normalize_lead_name


def first_item(item: Dataset, sequence: str) -> Dataset | None:
    seq = item.get(sequence)
    return seq[0] if seq else None


#: Parsed code items by their raw encoding (see :func:`code_of`).
CodeCache = dict[tuple[bytes, bool, bool], tuple[str, str] | None]
#: Shared by all reads in this process: carts repeat the same few dozen code items in every
#: file. Content-addressed (bytes + encoding), so it can never return another file's code;
#: cleared when it grows past :data:`_CODE_CACHE_LIMIT` entries.
CODE_CACHE: CodeCache = {}
_CODE_CACHE_LIMIT = 4096
_CODE_TAGS = {
    keyword: pydicom.datadict.tag_for_keyword(keyword)
    for keyword in ("ChannelSourceSequence", "ChannelSensitivityUnitsSequence")
}


def code_of(item: Dataset, keyword: str, cache: CodeCache) -> tuple[str, str] | None:
    """(CodeValue, CodeMeaning) of the first item of a code sequence, parsed once per encoding.

    Every channel repeats the same units sequence, the median group repeats the rhythm
    group's lead codes, and a cart writes the same lead codes in every file; pydicom parses
    nested sequences lazily and slowly, so identical raw encodings are parsed once.
    """
    tag = _CODE_TAGS.get(keyword) or pydicom.datadict.tag_for_keyword(keyword)
    if tag is None or tag not in item:
        return None
    raw = item.get_item(tag)
    key = None
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
        key = (raw.value, bool(raw.is_implicit_VR), bool(raw.is_little_endian))
        if key in cache:
            return cache[key]
    code = first_item(item, keyword)
    result = (
        None
        if code is None
        else (str(code.get("CodeValue", "")).strip(), str(code.get("CodeMeaning", "")).strip())
    )
    if key is not None:
        if len(cache) >= _CODE_CACHE_LIMIT:
            cache.clear()
        cache[key] = result
    return result


def lead_name(channel: Dataset, index: int, cache: CodeCache) -> str:
    source = code_of(channel, "ChannelSourceSequence", cache)
    if source is None:
        return f"ch{index + 1}"
    value, meaning = source
    name = lead_name_from_code(value)
    if name is not None:
        return name
    # "Lead I (Einthoven)" -> "I"; an unknown meaning keeps its own text.
    meaning = meaning.split("(")[0].strip() or meaning
    return normalize_lead_name(meaning) if meaning else f"ch{index + 1}"
