"""Lead-name normalisation shared by all readers."""

from __future__ import annotations

import re

_CANONICAL = {
    "I": "I", "II": "II", "III": "III", "AVR": "aVR", "AVL": "aVL", "AVF": "aVF",
    "V1": "V1", "V2": "V2", "V3": "V3", "V4": "V4", "V5": "V5", "V6": "V6",
}  # fmt: skip
_PREFIXES = ("MDC_ECG_LEAD_", "LEAD_", "LEAD ")


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
    upper = re.sub(r"[\s_-]", "", upper)
    return _CANONICAL.get(upper, name)
