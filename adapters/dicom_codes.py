"""Coded items of a DICOM waveform's channels: code value and meaning, parsed once, and the
lead a channel records (split from :mod:`adapters.dicom`).

Lead names come from the Channel Source Sequence (003A,0208): MDC ``2:1``, legacy SCP-ECG
``5.6.3-9-1``, a numeric MDC code or an MDC reference id, with the code meaning and then
the Channel Label as fallbacks (:func:`lead_name`).
"""

from __future__ import annotations

import pydicom
import pydicom.datadict
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from adapters.leads import lead_name_from_code, mdc_lead_term, normalize_lead_name

#: MDC reference ids (the names aECG uses as codes) that some writers put in Code Value.
_MDC_REFERENCE_IDS = ("MDC_ECG_LEAD_", "MDC_ECG_ELEC_POTL_")


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
    """The lead a channel records: its source code, else the code meaning, else its Channel
    Label (003A,0203, type 3: what the cart displays).

    The code is normative and is never overridden by the label; but CID 3001 is a Defined
    context group, so a cart may use a code of its own whose meaning names no lead ("ECG
    lead"), and then only the label says which lead it is. A name none of them gives as a
    known lead keeps the meaning's (or the label's) own text."""
    value, meaning = code_of(channel, "ChannelSourceSequence", cache) or ("", "")
    name = lead_name_from_code(value)
    if name is not None:
        return name
    if value.upper().startswith(_MDC_REFERENCE_IDS):  # the aECG spelling as a code value
        name = normalize_lead_name(value)
        if mdc_lead_term(name) is not None:
            return name
    # "Lead I (Einthoven)" -> "I"
    text = meaning.split("(")[0].strip() or meaning
    from_meaning = normalize_lead_name(text) if text else ""
    if from_meaning and mdc_lead_term(from_meaning) is not None:
        return from_meaning
    label = str(channel.get("ChannelLabel", "") or "").strip()
    from_label = normalize_lead_name(label) if label else ""
    if from_label and mdc_lead_term(from_label) is not None:
        return from_label
    return from_meaning or from_label or f"ch{index + 1}"
