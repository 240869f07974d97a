"""``Ecg.filters``: every reader that can know the cart's filters states them, in hertz.

Each real sample file is checked against the values read here straight from the file (with
pydicom, lxml or the SCP-ECG tag bytes), so a test fails if a reader takes the wrong field
or the wrong unit. A malformed filter value is "not stated" (None), never an unreadable file.
"""

from __future__ import annotations

import binascii
import io
import struct
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from lxml import etree

from adapters import Ecg, RecordingFilters, load_ecg, to_dicom_bytes
from adapters.recording_filters import most_restrictive, stated_hz

DICOM = "dicom/pydicom_waveform_ecg.dcm"
MUSE = "ge_muse_xml/muse-sinus.xml"
AECG = "hl7_aecg/Example_aECG_HL7_2003-12.xml"
PHILIPS_103 = "philips_xml/129DYPRG.XML"
PHILIPS_104 = "philips_xml/3191723_ZZDEMOPTONLY_1-04_orig.xml"
WELCH_ALLYN = [
    "scp_ecg/ECG_20060620_112352_197001138994.SCP",
    "scp_ecg/ECG_20170504_163507_123456789.SCP",
]
HL7 = "{urn:hl7-org:v3}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0.05", 0.05), (" 150 ", 150.0), (60, 60.0), (56, 0.56)],
)
def test_a_stated_value_is_read_in_hertz(raw: object, expected: float) -> None:
    assert stated_hz(raw, 100.0 if raw == 56 else 1.0) == expected


@pytest.mark.parametrize("raw", [None, "", "0", 0, -60, "-0.5", "abc", "nan", "inf", "1e999", True])
def test_zero_negative_and_non_numeric_values_are_not_stated(raw: object) -> None:
    assert stated_hz(raw) is None


def test_channels_combine_to_the_narrowest_band() -> None:
    channels = [
        RecordingFilters(low_pass_hz=150.0, high_pass_hz=0.05),
        None,
        RecordingFilters(low_pass_hz=40.0, high_pass_hz=0.5, notch_hz=50.0),
        RecordingFilters(high_pass_hz=0.16),
    ]
    assert most_restrictive(channels) == RecordingFilters(40.0, 0.5, 50.0)
    assert most_restrictive([None, None]) is None


# --- DICOM -----------------------------------------------------------------------------------


def _dicom_expected(path: Path) -> RecordingFilters:
    """The rhythm channels' filters as pydicom reads them: lowest low-pass, highest high-pass."""
    ds = pydicom.dcmread(path)
    rhythm = next(g for g in ds.WaveformSequence if g.MultiplexGroupLabel == "RHYTHM")
    channels = rhythm.ChannelDefinitionSequence
    notches = [float(ch.NotchFilterFrequency) for ch in channels if ch.get("NotchFilterFrequency")]
    return RecordingFilters(
        low_pass_hz=min(float(ch.FilterHighFrequency) for ch in channels),
        high_pass_hz=max(float(ch.FilterLowFrequency) for ch in channels),
        notch_hz=next((hz for hz in notches if hz > 0), None),
    )


def test_dicom_sample_states_its_channel_filters(formats_dir: Path) -> None:
    expected = _dicom_expected(formats_dir / DICOM)
    assert expected == RecordingFilters(low_pass_hz=300.0, high_pass_hz=0.05, notch_hz=None)
    ecg = load_ecg(formats_dir / DICOM)
    assert ecg.filters == expected
    assert not {"filter_low_hz", "filter_high_hz"} & set(ecg.extra)  # typed now, not text


def test_dicom_channels_take_the_most_restrictive_filter(formats_dir: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(formats_dir / DICOM)
    rhythm = next(g for g in ds.WaveformSequence if g.MultiplexGroupLabel == "RHYTHM")
    channels = rhythm.ChannelDefinitionSequence
    channels[3].FilterHighFrequency = "40"
    channels[5].FilterLowFrequency = "0.5"
    channels[7].NotchFilterFrequency = "50"
    path = tmp_path / "narrow.dcm"
    ds.save_as(path)
    assert _dicom_expected(path) == RecordingFilters(40.0, 0.5, 50.0)
    assert load_ecg(path).filters == RecordingFilters(40.0, 0.5, 50.0)


def test_dicom_round_trip_keeps_the_filters(formats_dir: Path) -> None:
    ecg = load_ecg(formats_dir / DICOM)
    again = load_ecg(to_dicom_bytes(ecg))
    assert again.filters == ecg.filters == _dicom_expected(formats_dir / DICOM)
    # a notch, and a low-pass above Nyquist (1000 Hz sampling), are written as stated
    stated = RecordingFilters(low_pass_hz=2000.0, high_pass_hz=0.67, notch_hz=50.0)
    written = to_dicom_bytes(replace(ecg, filters=stated))
    assert load_ecg(written).filters == stated
    channel = pydicom.dcmread(io.BytesIO(written)).WaveformSequence[0]
    first = channel.ChannelDefinitionSequence[0]
    assert (first.FilterLowFrequency, first.FilterHighFrequency, first.NotchFilterFrequency) == (
        0.67,
        2000.0,
        50.0,
    )


def test_dicom_without_stated_filters_writes_none(formats_dir: Path) -> None:
    ecg = replace(load_ecg(formats_dir / DICOM), filters=None)
    written = to_dicom_bytes(ecg)
    first = pydicom.dcmread(io.BytesIO(written)).WaveformSequence[0]
    assert "FilterHighFrequency" not in first.ChannelDefinitionSequence[0]
    assert load_ecg(written).filters is None


def test_malformed_dicom_filter_values_are_not_stated(formats_dir: Path) -> None:
    data = (formats_dir / DICOM).read_bytes()
    # Filter High Frequency "300 " -> "abc " (an invalid DS), Filter Low Frequency
    # "0.050 " -> "-0.05 " on every channel; explicit VR little endian, lengths kept.
    bad = data.replace(b"DS\x04\x00300 ", b"DS\x04\x00abc ").replace(
        b"DS\x06\x000.050 ", b"DS\x06\x00-0.05 "
    )
    assert bad.count(b"abc ") == data.count(b"DS\x04\x00300 ") > 0
    ecg = load_ecg(bad)
    assert ecg.filters is None
    assert ecg.signal.shape == load_ecg(data).signal.shape


def test_an_invalid_dicom_filter_value_reads_under_strict_validation(
    formats_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pydicom's strict mode raises when the invalid DS is accessed: still "not stated"
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.RAISE)
    bad = (formats_dir / DICOM).read_bytes().replace(b"DS\x04\x00300 ", b"DS\x04\x00abc ")
    assert load_ecg(bad).filters == RecordingFilters(low_pass_hz=None, high_pass_hz=0.05)


# --- GE MUSE ---------------------------------------------------------------------------------


def test_muse_sample_states_its_rhythm_filters(formats_dir: Path) -> None:
    root = etree.parse(str(formats_dir / MUSE)).getroot()
    rhythm = next(w for w in root.iter("Waveform") if w.findtext("WaveformType") == "Rhythm")
    expected = RecordingFilters(
        low_pass_hz=float(rhythm.findtext("LowPassFilter") or "nan"),
        high_pass_hz=float(rhythm.findtext("HighPassFilter") or "nan") / 100,  # 0.01 Hz units
        notch_hz=float(rhythm.findtext("ACFilter") or "nan"),
    )
    assert expected == RecordingFilters(low_pass_hz=150.0, high_pass_hz=0.56, notch_hz=60.0)
    assert load_ecg(formats_dir / MUSE).filters == expected


def test_muse_filters_come_from_the_rhythm_and_malformed_ones_are_dropped(
    formats_dir: Path,
) -> None:
    text = (formats_dir / MUSE).read_text(encoding="iso-8859-1")
    median, _, rhythm = text.partition("<WaveformType>Rhythm</WaveformType>")
    median = median.replace("<LowPassFilter>150<", "<LowPassFilter>40<")
    assert load_ecg(
        (median + "<WaveformType>Rhythm</WaveformType>" + rhythm).encode("iso-8859-1")
    ).filters == RecordingFilters(150.0, 0.56, 60.0)
    rhythm = (
        rhythm.replace("<HighPassFilter>56<", "<HighPassFilter>n/a<", 1)
        .replace("<LowPassFilter>150<", "<LowPassFilter>0<", 1)
        .replace("<ACFilter>60<", "<ACFilter>-60<", 1)
    )
    bad = (median + "<WaveformType>Rhythm</WaveformType>" + rhythm).encode("iso-8859-1")
    assert load_ecg(bad).filters is None


# --- HL7 aECG --------------------------------------------------------------------------------


def _aecg_cutoff(root: etree._Element, code: str) -> float | None:
    for control in root.iter(f"{HL7}controlVariable"):
        if control.find(f"{HL7}code") is None or control.find(f"{HL7}code").get("code") != code:
            continue
        for value in control.iter(f"{HL7}value"):
            if value.get("unit") == "Hz":
                return float(value.get("value") or "nan")
    return None


def test_aecg_example_states_a_low_pass_and_a_notch(formats_dir: Path) -> None:
    root = etree.parse(str(formats_dir / AECG)).getroot()
    expected = RecordingFilters(
        low_pass_hz=_aecg_cutoff(root, "MDC_ECG_CTL_VBL_ATTR_FILTER_LOW_PASS"),
        high_pass_hz=_aecg_cutoff(root, "MDC_ECG_CTL_VBL_ATTR_FILTER_HIGH_PASS"),
        notch_hz=_aecg_cutoff(root, "MDC_ECG_CTL_VBL_ATTR_FILTER_NOTCH"),
    )
    # the high-pass is described ("FIR") but has no cutoff; the notch names its frequency
    assert expected == RecordingFilters(low_pass_hz=150.0, high_pass_hz=None, notch_hz=60.0)
    assert load_ecg(formats_dir / AECG).filters == expected


def test_aecg_honours_hz_and_khz_and_ignores_other_units(formats_dir: Path) -> None:
    text = (formats_dir / AECG).read_bytes()
    low, notch = b'value="150" unit="Hz"', b'value="60" unit="Hz"'
    assert text.count(low) == 1 and text.count(notch) == 1
    khz = text.replace(low, b'value="0.15" unit="kHz"')
    assert load_ecg(khz).filters == RecordingFilters(150.0, None, 60.0)
    other = text.replace(low, b'value="150" unit="s"').replace(notch, b'value="x" unit="Hz"')
    assert load_ecg(other).filters is None


def test_aecg_without_control_variables_states_none(formats_dir: Path) -> None:
    assert load_ecg(formats_dir / "hl7_aecg/minimum_aecg.xml").filters is None


# --- Philips ---------------------------------------------------------------------------------


def _philips_signal(path: Path) -> etree._Element:
    root = etree.parse(str(path)).getroot()
    return root.find(".//{*}dataacquisition/{*}signalcharacteristics")


def test_philips_104_states_the_stored_signal_not_the_report(formats_dir: Path) -> None:
    signal = _philips_signal(formats_dir / PHILIPS_104)
    expected = RecordingFilters(
        low_pass_hz=float(signal.findtext("{*}lowpass")),
        high_pass_hz=float(signal.findtext("{*}hipass")),
        notch_hz=None,  # notchfiltered False: 60 Hz is the mains setting, not a filter
    )
    assert signal.findtext("{*}notchfiltered") == "False"
    assert expected == RecordingFilters(low_pass_hz=150.0, high_pass_hz=0.05)
    ecg = load_ecg(formats_dir / PHILIPS_104)
    assert ecg.filters == expected
    report = etree.parse(str(formats_dir / PHILIPS_104)).getroot().find(".//{*}reportbandwidth")
    assert float(report.findtext("{*}lowpassfiltersetting")) == 100.0  # the printout's filter


def test_philips_103_states_its_signal_bandwidth(formats_dir: Path) -> None:
    band = _philips_signal(formats_dir / PHILIPS_103).findtext("{*}signalbandwidth")
    high, low = (float(part) for part in band.split("-"))
    assert (high, low) == (0.05, 150.0)
    assert load_ecg(formats_dir / PHILIPS_103).filters == RecordingFilters(low, high, None)


def test_philips_malformed_values_fall_back_or_are_dropped(formats_dir: Path) -> None:
    text = (formats_dir / PHILIPS_104).read_bytes().decode("utf-16")
    assert text.count('hipass="0.05"') == 1 and text.count("<hipass>0.05</hipass>") == 1
    # a malformed waveform attribute does not hide the acquisition's good element
    fallback = text.replace('hipass="0.05"', 'hipass="abc"')
    assert load_ecg(fallback.encode("utf-16")).filters == RecordingFilters(150.0, 0.05)
    both = fallback.replace("<hipass>0.05</hipass>", "<hipass>-1</hipass>")
    assert load_ecg(both.encode("utf-16")).filters == RecordingFilters(150.0, None)
    notched = text.replace(
        'notchfiltered="False" notchfilterfreqs="0"', 'notchfiltered="True" notchfilterfreqs="50"'
    )
    assert load_ecg(notched.encode("utf-16")).filters == RecordingFilters(150.0, 0.05, 50.0)


# --- SCP-ECG ---------------------------------------------------------------------------------


def _scp_tags(data: bytes) -> dict[int, tuple[int, bytes]]:
    """Section 1's tags as (offset of the value in the record, value), walked here."""
    for entry in range(6 + 16, 6 + struct.unpack_from("<I", data, 10)[0], 10):
        section, length, index = struct.unpack_from("<HII", data, entry)
        if section == 1 and length:
            break
    else:
        return {}
    tags: dict[int, tuple[int, bytes]] = {}
    offset, end = index - 1 + 16, index - 1 + length
    while offset + 3 <= end and data[offset] != 255:
        size = struct.unpack_from("<H", data, offset + 1)[0]
        tags.setdefault(data[offset], (offset + 3, data[offset + 3 : offset + 3 + size]))
        offset += 3 + size
    return tags


@pytest.mark.parametrize("relative", WELCH_ALLYN)
def test_scp_welch_allyn_records_state_a_35_hz_low_pass_and_a_50_hz_notch(
    formats_dir: Path, relative: str
) -> None:
    data = (formats_dir / relative).read_bytes()
    tags = _scp_tags(data)
    assert 27 not in tags  # no high-pass stated
    low_pass = struct.unpack("<H", tags[28][1])[0]  # whole hertz
    bitmap = tags[29][1][0]  # bit 0: 60 Hz notch, bit 1: 50 Hz notch
    assert (low_pass, bitmap) == (35, 0x02)
    assert load_ecg(data).filters == RecordingFilters(low_pass_hz=35.0, notch_hz=50.0)


def test_scp_zero_filter_tags_are_not_stated(formats_dir: Path) -> None:
    data = (formats_dir / "scp_ecg/Example.scp").read_bytes()
    tags = _scp_tags(data)
    assert tags[27][1] == tags[28][1] == b"\x00\x00" and 29 not in tags
    assert load_ecg(data).filters is None


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    out = bytearray(data)
    out[offset : offset + len(value)] = value
    out[0:2] = struct.pack("<H", binascii.crc_hqx(bytes(out[2:]), 0xFFFF))
    return bytes(out)


def test_scp_high_pass_is_in_hundredths_and_both_notch_bits_say_no_frequency(
    formats_dir: Path,
) -> None:
    data = (formats_dir / "scp_ecg/Example.scp").read_bytes()
    tags = _scp_tags(data)
    stated = _patched(_patched(data, tags[27][0], struct.pack("<H", 5)), tags[28][0], b"\x96\x00")
    assert load_ecg(stated).filters == RecordingFilters(low_pass_hz=150.0, high_pass_hz=0.05)
    welch = (formats_dir / WELCH_ALLYN[0]).read_bytes()
    both = _patched(welch, _scp_tags(welch)[29][0], b"\x03")
    assert load_ecg(both).filters == RecordingFilters(low_pass_hz=35.0, notch_hz=None)


# --- formats that state no filters -----------------------------------------------------------


@pytest.mark.parametrize("relative", ["wfdb/100.hea", "ge_muse_xml/muse-af.hea"])
def test_wfdb_records_state_no_filters(formats_dir: Path, relative: str) -> None:
    ecg: Ecg = load_ecg(formats_dir / relative)
    assert ecg.filters is None
