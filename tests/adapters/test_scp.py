"""SCP-ECG reader on the three real sample records.

``Example.scp`` is the C# ECG Toolkit's conversion of the HL7 aECG ballot example (same
subject, time and device), so its rhythm and median beats must equal what the aECG reader
gets from ``Example_aECG_HL7_2003-12.xml``: two independent decoders agreeing sample for
sample. Einthoven's law checks its independently stored limb leads.
"""

from __future__ import annotations

import binascii
import struct
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from adapters import EcgFormatError, load_ecg

EXAMPLE = "scp_ecg/Example.scp"
WELCH_ALLYN = [
    "scp_ecg/ECG_20060620_112352_197001138994.SCP",
    "scp_ecg/ECG_20170504_163507_123456789.SCP",
]


def test_example_equals_the_aecg_it_was_converted_from(formats_dir: Path) -> None:
    scp = load_ecg(formats_dir / EXAMPLE)
    aecg = load_ecg(formats_dir / "hl7_aecg/Example_aECG_HL7_2003-12.xml")
    assert scp.source.format == "scp-ecg"
    assert scp.fs == aecg.fs == 500.0
    assert set(scp.leads) == set(aecg.leads)
    for lead in aecg.leads:
        np.testing.assert_allclose(scp.lead(lead), aecg.lead(lead), atol=1e-6)
    assert scp.patient_id == aecg.patient_id == "SBJ-123"
    assert scp.start_time == aecg.start_time
    assert scp.median_beats is not None and aecg.median_beats is not None
    for lead in aecg.median_beats.leads:
        np.testing.assert_allclose(
            scp.median_beats.signal[scp.median_beats.leads.index(lead)],
            aecg.median_beats.signal[aecg.median_beats.leads.index(lead)],
            atol=1e-6,
        )


def test_example_obeys_einthoven(formats_dir: Path) -> None:
    ecg = load_ecg(formats_dir / EXAMPLE)
    lead_i, lead_ii = ecg.lead("I"), ecg.lead("II")
    assert np.abs(ecg.lead("III") - (lead_ii - lead_i)).max() <= 0.0025 * 1.01
    assert np.abs(ecg.lead("aVR") + (lead_i + lead_ii) / 2).max() <= 0.0025 * 1.51


@pytest.mark.parametrize("relative", WELCH_ALLYN)
def test_welch_allyn_records(formats_dir: Path, relative: str) -> None:
    ecg = load_ecg(formats_dir / relative)
    # 8 simultaneous leads, 6000 samples at 1667 us (= 600 Hz in whole microseconds)
    assert ecg.signal.shape == (8, 6000)
    assert ecg.fs == 600.0
    assert ecg.extra["sample_interval_us"] == "1667"
    assert {"I", "II"} <= set(ecg.leads)
    # acquisition time and patient id are in the file name the cart gave the record
    stamp, patient = Path(relative).stem.split("_", 1)[1].rsplit("_", 1)
    assert ecg.start_time == datetime.strptime(stamp, "%Y%m%d_%H%M%S")
    assert ecg.patient_id == patient
    assert ecg.device is not None and "Welch Allyn" in ecg.device
    assert any("sinusrytm" in statement for statement in ecg.statements)
    assert 0.2 < float(np.abs(ecg.lead("II")).max()) < 5.0  # physiological millivolts
    beats = ecg.median_beats
    assert beats is not None and beats.leads == ecg.leads and beats.fs == 600.0
    rhythm_peak = float(np.abs(ecg.lead("II")).max())
    assert 0.5 * rhythm_peak < float(np.abs(beats.signal[1]).max()) < 1.5 * rhythm_peak


def _section_body(data: bytearray, wanted: int) -> int:
    """Offset of section ``wanted``'s body (after its 16-byte header), via section 0."""
    table = 6 + 16
    while True:
        section, _, index = struct.unpack_from("<HII", data, table)
        if section == wanted:
            return index - 1 + 16
        table += 10


def _fix_crc(data: bytearray) -> None:
    data[0:2] = struct.pack("<H", binascii.crc_hqx(bytes(data[2:]), 0xFFFF))


def test_pediatric_lead_set_keeps_its_names(formats_dir: Path) -> None:
    ecg = load_ecg(formats_dir / WELCH_ALLYN[0])
    assert ecg.leads == ("I", "II", "V3R", "V1", "V2", "V4", "V6", "V7")


def test_crc_catches_a_single_flipped_bit(formats_dir: Path) -> None:
    data = bytearray((formats_dir / EXAMPLE).read_bytes())
    data[20000] ^= 0x01  # inside the rhythm data
    with pytest.raises(EcgFormatError, match="CRC") as info:
        load_ecg(bytes(data), name="flipped.scp")
    assert str(info.value).startswith("flipped.scp: ")


def test_truncated_record_is_refused(formats_dir: Path) -> None:
    data = (formats_dir / EXAMPLE).read_bytes()
    with pytest.raises(EcgFormatError, match="truncated"):
        load_ecg(data[:-100], name="cut.scp")


def test_reference_beat_subtraction_is_refused_not_guessed(formats_dir: Path) -> None:
    data = bytearray((formats_dir / EXAMPLE).read_bytes())
    # section 3 flags byte: set bit 0 (reference beat subtracted), then fix the record CRC
    data[_section_body(data, 3) + 1] |= 0x01
    _fix_crc(data)
    with pytest.raises(EcgFormatError, match="reference-beat subtraction"):
        load_ecg(bytes(data), name="rbs.scp")


def test_sequentially_recorded_leads_are_not_stacked_as_simultaneous(formats_dir: Path) -> None:
    # A 3-channel cart records its lead groups one after another; section 3 says when
    # (start/end sample) and clears flag bit 2 ("all leads simultaneous"). Here V1-V6 are
    # declared as samples 5001-10000, after the limb leads' 1-5000. Before: read as 12
    # simultaneous leads, V1-V6 shifted 10 s against the limb leads.
    data = bytearray((formats_dir / EXAMPLE).read_bytes())
    body = _section_body(data, 3)
    data[body + 1] &= ~0x04 & 0xFF
    for lead in range(6, 12):
        struct.pack_into("<II", data, body + 2 + 9 * lead, 5001, 10000)
    _fix_crc(data)
    with pytest.raises(EcgFormatError, match="not simultaneous") as info:
        load_ecg(bytes(data), name="sequential.scp")
    assert "5001" in str(info.value)


def test_unreadable_median_beats_are_skipped_not_the_rhythm(formats_dir: Path) -> None:
    # Section 5 says lead 1's beat takes 60000 bytes (more than it holds). Before, the
    # whole record was refused for its reference beats.
    original = load_ecg(formats_dir / EXAMPLE)
    data = bytearray((formats_dir / EXAMPLE).read_bytes())
    struct.pack_into("<H", data, _section_body(data, 5) + 6, 60000)
    _fix_crc(data)
    ecg = load_ecg(bytes(data), name="beats.scp")
    np.testing.assert_array_equal(ecg.signal, original.signal)
    assert ecg.median_beats is None and "truncated" in ecg.extra["median_beats_skipped"]
