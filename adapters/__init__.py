"""Every ECG format in, one canonical record (:class:`Ecg`), FHIR and DICOM out.

Readers register themselves with :mod:`adapters.loader` when imported below; callers use
:func:`load_ecg` and never a reader directly.
"""

from adapters.errors import EcgFormatError
from adapters.loader import DEFAULT_MAX_BYTES, available_formats, load_ecg
from adapters.record import (
    STANDARD_LEADS,
    Ecg,
    EcgSource,
    MedianBeats,
    StandardLeads,
    sha256_hex,
    standard_12_lead,
)

# Reader modules register on import. Order matters only for sniffing ambiguity;
# each sniff looks at content, never at the file name.
# (reader imports are added here as readers land)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "STANDARD_LEADS",
    "Ecg",
    "EcgFormatError",
    "EcgSource",
    "MedianBeats",
    "StandardLeads",
    "available_formats",
    "load_ecg",
    "sha256_hex",
    "standard_12_lead",
]
