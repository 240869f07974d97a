"""Every ECG format in, one canonical record (:class:`Ecg`), FHIR and DICOM out.

Readers register themselves with :mod:`adapters.loader` when imported below; callers use
:func:`load_ecg` and never a reader directly.
"""

from adapters.errors import EcgFormatError
from adapters.limits import DEFAULT_LIMITS, DecodeLimits, EcgTooLarge
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

# isort: split
# Reader modules register on import. Order matters only for sniffing ambiguity;
# each sniff looks at content, never at the file name.
# (reader imports are added here as readers land)
from adapters import aecg as _aecg  # noqa: F401
from adapters import cpsc_mat as _cpsc_mat  # noqa: F401
from adapters import dicom as _dicom  # noqa: F401
from adapters import fhir as _fhir  # noqa: F401
from adapters import muse as _muse  # noqa: F401
from adapters import philips as _philips  # noqa: F401
from adapters import scp as _scp  # noqa: F401
from adapters import sph_hdf5 as _sph_hdf5  # noqa: F401
from adapters import wfdb_reader as _wfdb_reader  # noqa: F401

# isort: split
# Writers: the canonical record out to the EHR's formats.
from adapters.dicom import ecg_to_dicom_bytes as to_dicom_bytes
from adapters.fhir import ecg_to_fhir_observation as to_fhir_observation

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
    "StandardLeads",
    "available_formats",
    "load_ecg",
    "sha256_hex",
    "standard_12_lead",
    "to_dicom_bytes",
    "to_fhir_observation",
]
