"""Checks on a DICOM file made before its waveform is read (split from adapters.dicom).

pydicom inflates a deflated data set whole and parses every item of a sequence it is asked
for; both are bounded here first, from the bytes alone. Then the SOP class: a waveform
object that is no ECG is refused before its channels are taken for leads.
"""

from __future__ import annotations

import io
import zlib

import pydicom
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from adapters.errors import EcgFormatError
from adapters.limits import inflate_capped
from adapters.reader import ReaderInput


def inflated_data_set(item: ReaderInput) -> bytes:
    """A deflated data set (transfer syntax 1.2.840.10008.1.2.1.99) is inflated whole by
    pydicom: inflate it here first, capped, so a few KB cannot become gigabytes. Returns
    the data set's bytes as pydicom will parse them (inflated, or the file itself)."""
    fp = io.BytesIO(item.data)
    try:
        # what dcmread itself does first (the public read_file_meta_info wants a path)
        pydicom.filereader.read_preamble(fp, False)
        meta = pydicom.filereader._read_file_meta_info(fp)
    except Exception:
        return item.data  # no readable file meta: dcmread reports it
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return item.data
    return inflate_capped(item.name, item.data[fp.tell() :], item.limits, wbits=-zlib.MAX_WBITS)


#: At most this many sequence items (FFFE,E000) in one file. An ECG has a few hundred
#: (channel codes, annotations); pydicom spends ~35 us and ~700 bytes on each it parses,
#: so 8 million empty items in a 64 MB upload would take minutes and gigabytes.
MAX_SEQUENCE_ITEMS = 100_000
_ITEM_TAGS = (b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00")  # little and big endian


def check_items(name: str, data: bytes) -> None:
    """Refuse a file with more sequence items than :data:`MAX_SEQUENCE_ITEMS` (counted as
    their tag bytes, an upper bound) before pydicom parses any."""
    items = sum(data.count(tag) for tag in _ITEM_TAGS)
    if items > MAX_SEQUENCE_ITEMS:
        raise EcgFormatError(
            name,
            f"the DICOM file holds {items} sequence items, over the limit of {MAX_SEQUENCE_ITEMS}",
            "an ECG waveform object has a few hundred; this is not one",
        )


#: Waveform Storage SOP classes (PS3.4 B.5) whose channels are not an ECG: audio, arterial
#: pulse, respiratory, EEG/EMG/EOG, sleep EEG, body position. Their microvolt channels would
#: be read as leads of unknown names, zero-filled into the 12-lead view and classified.
#: Hemodynamic and Cardiac Electrophysiology waveforms carry surface ECG leads beside their
#: pressures and electrograms (those are left out or kept as extra leads) and are read.
NOT_ECG_WAVEFORMS = frozenset(
    f"1.2.840.10008.5.1.4.1.1.9.{suffix}"
    for suffix in ("4.1", "4.2", "5.1", "6.1", "6.2", "7.1", "7.2", "7.3", "7.4", "8.1")
)


def check_sop_class(name: str, sop_class: str) -> None:
    """Refuse a waveform object of a SOP class that is not an ECG (:data:`NOT_ECG_WAVEFORMS`)."""
    if sop_class in NOT_ECG_WAVEFORMS:
        raise EcgFormatError(
            name,
            f"SOP class {sop_class} ({UID(sop_class).name}) is not an ECG waveform",
            "send a 12-lead, General, Ambulatory or General 32-bit ECG Waveform Storage object",
        )
