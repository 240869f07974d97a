"""Lead-name normalisation shared by all readers."""

from __future__ import annotations

import functools
import re

_CANONICAL = {
    "I": "I", "II": "II", "III": "III", "AVR": "aVR", "AVL": "aVL", "AVF": "aVF",
    "V1": "V1", "V2": "V2", "V3": "V3", "V4": "V4", "V5": "V5", "V6": "V6",
}  # fmt: skip
_PREFIXES = ("MDC_ECG_ELEC_POTL_", "MDC_ECG_LEAD_", "LEAD_", "LEAD ")
#: Other names of the standard leads. Ambulatory (Holter) recordings such as MIT-BIH use the
#: Mason-Likar *modified* limb leads (``MLII`` is a modified lead II: limb electrodes moved to
#: the torso) and modified chest leads (``MV1``); European carts write Einthoven's leads as
#: ``DI``/``DII``/``DIII``. Each is read as the lead it stands for; readers record the
#: original name (``extra["lead_aliases"]``) because modified leads differ a little from
#: the standard ones in amplitude and axis.
_ALIASES = {
    "MLI": "I", "MLII": "II", "MLIII": "III", "ML2": "II", "MII": "II",
    "DI": "I", "DII": "II", "DIII": "III", "D1": "I", "D2": "II", "D3": "III",
    "MAVR": "aVR", "MAVL": "aVL", "MAVF": "aVF",
    "MV1": "V1", "MV2": "V2", "MV3": "V3", "MV4": "V4", "MV5": "V5", "MV6": "V6",
}  # fmt: skip
#: The inverted aVR lead, under the name SCP-ECG gives it; a name for no other lead.
INVERTED_AVR = "-aVR"
_INVERTED = {"-AVR", "AVRNEG", "NEGAVR"}


@functools.lru_cache(maxsize=4096)  # a handful of spellings, looked up per lead per record
def normalize_lead_name(raw: str) -> str:
    """Map vendor spellings (``AVR``, ``MDC_ECG_LEAD_AVR``, ``Lead V1``, ``v1``) to standard names.

    Unknown names are returned stripped but otherwise unchanged, so extra leads keep
    their own identity (e.g. Frank ``vx``).
    """
    name = raw.strip()
    upper = name.upper()
    for prefix in _PREFIXES:
        if upper.startswith(prefix):
            upper = upper[len(prefix) :].strip()
            name = name[len(prefix) :].strip()
            break
    upper = re.sub(r"[\s_]", "", upper)
    # A sign is part of the lead: -aVR (Cabrera's inverted aVR, SCP-ECG and MDC code 65)
    # is aVR upside down, never aVR itself; nor is "I-II" lead III.
    if upper in _INVERTED:
        return INVERTED_AVR
    if upper.startswith("-"):
        return name
    parts = [part for part in upper.split("-") if part]
    if len(parts) > 1 and all(_CANONICAL.get(p) or _ALIASES.get(p) for p in parts):
        return name  # a bipolar pair of two leads is neither of them
    upper = "".join(parts)
    return _CANONICAL.get(upper) or _ALIASES.get(upper) or name


_IEC_CHEST = re.compile(r"C([1-9])|C([2-9])R", flags=re.IGNORECASE)


def iec_chest_lead(name: str) -> str:
    """``V1`` for the IEC label ``C1`` (C1..C9, C2R..C9R), any other name unchanged.

    IEC 60601-2-25 labels the chest electrodes, and European carts the chest leads, C1..C6
    where AHA writes V1..V6: the same positions. Only readers of formats whose definition
    lists them use this (the Philips XML schemas name C1..C9 beside V1..V9); elsewhere a
    "C1" may be a channel number."""
    match = _IEC_CHEST.fullmatch(name.strip())
    if match is None:
        return name
    return f"V{match.group(1)}" if match.group(1) else f"V{match.group(2)}R"


def lead_aliases(raw_names: list[str | None] | tuple[str | None, ...]) -> str:
    """``"MLII -> II, MV1 -> V1"`` for the names read as another lead (an alias), else ``""``.

    A missing name (None: a WFDB signal line without a description) is no alias."""
    pairs = []
    for raw in raw_names:
        if not raw:
            continue
        name = normalize_lead_name(raw)
        key = re.sub(r"[\s_-]", "", raw.strip().upper())
        if name in _CANONICAL.values() and key in _ALIASES:
            pairs.append(f"{raw.strip()} -> {name}")
    return ", ".join(pairs)


#: ISO/IEEE 11073-10101 (MDC) ECG lead term codes, the part after the partition: DICOM CID 3001
#: writes them as ``2:<term>``, the context-free lead identity is ``131072 + term``
#: (MDC_ECG_LEAD_*), the lead potential used in FHIR is ``131328 + term`` (MDC_ECG_ELEC_POTL_*),
#: and legacy SCP-ECG DICOM files write ``5.6.3-9-<term>``. Frank X/Y/Z keep the PTB names.
MDC_LEAD_TERMS: dict[int, str] = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
    9: "V7", 10: "V2R", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R",
    16: "vx", 17: "vy", 18: "vz", 19: "CC5", 20: "CM5",
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 65: INVERTED_AVR,
}  # fmt: skip
MDC_LEAD_BASE = 131072  # MDC_ECG_LEAD (partition 2 << 16)
MDC_POTENTIAL_BASE = 131328  # MDC_ECG_ELEC_POTL: the lead-unspecific potential code
_TERM_BY_NAME = {name.upper(): term for term, name in MDC_LEAD_TERMS.items()}
_TERM_BY_NAME.update({"X": 16, "Y": 17, "Z": 18})


def mdc_lead_term(name: str) -> int | None:
    """The MDC lead term of a (normalised) lead name, or None if MDC has no code for it."""
    return _TERM_BY_NAME.get(normalize_lead_name(name).upper())


def lead_name_from_mdc_term(term: int) -> str | None:
    return MDC_LEAD_TERMS.get(term)


def lead_name_from_code(code: str) -> str | None:
    """A lead name from any coded form: ``2:61``, ``131133``, ``131389``, ``5.6.3-9-61``.

    Returns None for codes that name no specific lead (e.g. the generic potential 131328)
    or that are unknown, so callers can fall back to the code's display text.
    """
    value = code.strip()
    term: int | None = None
    if re.fullmatch(r"2:\d+", value):
        term = int(value[2:])
    elif re.fullmatch(r"5\.6\.3-9-\d+", value):
        term = int(value.rsplit("-", 1)[1])
    elif value.isdigit():
        number = int(value)
        if MDC_POTENTIAL_BASE < number < MDC_POTENTIAL_BASE + 256:
            term = number - MDC_POTENTIAL_BASE
        elif MDC_LEAD_BASE < number < MDC_LEAD_BASE + 256:
            term = number - MDC_LEAD_BASE
    return None if term is None else MDC_LEAD_TERMS.get(term)
