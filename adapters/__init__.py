"""Every ECG format in, one canonical record (:class:`Ecg`), FHIR and DICOM out.

:mod:`adapters.loader` knows every reader (:mod:`adapters.reader` says what one is); callers
use :func:`load_ecg` and never a reader directly.
"""

from adapters.errors import EcgFormatError
from adapters.limits import DEFAULT_LIMITS, DecodeLimits, EcgTooLarge
from adapters.loader import DEFAULT_MAX_BYTES, available_formats, load_ecg
from adapters.record import (
    STANDARD_LEADS,
    Ecg,
    EcgSource,
    MedianBeats,
    RecordingFilters,
    StandardLeads,
    sha256_hex,
    standard_12_lead,
)

# isort: split
# Writers: the canonical record out to the EHR's formats.
from adapters.dicom_writer import ecg_to_dicom_bytes as to_dicom_bytes
from adapters.fhir_writer import ecg_to_fhir_observation as to_fhir_observation

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_BYTES",
    "STANDARD_LEADS",
    "DecodeLimits",
    "Ecg",
    "EcgFormatError",
    "EcgSource",
    "EcgTooLarge",
    "MedianBeats",
    "RecordingFilters",
    "StandardLeads",
    "available_formats",
    "load_ecg",
    "sha256_hex",
    "standard_12_lead",
    "to_dicom_bytes",
    "to_fhir_observation",
]
