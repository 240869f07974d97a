"""A stop-28 mutation fuzz of the readers: what reached the caller as a parser's own
exception (``unreadable (TypeError: ...)``) or as a silently wrong record, now said plainly.
Each mutation is made from a real sample file."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pydicom
import pytest

from adapters import EcgFormatError, load_ecg


def _dicom(dicom_path: Path, edit: str) -> bytes:
    ds = pydicom.dcmread(dicom_path)
    rhythm, median = ds.WaveformSequence[0], ds.WaveformSequence[1]
    channel = rhythm.ChannelDefinitionSequence[0]
    if edit == "two sensitivities":
        channel.ChannelSensitivity = "1.25\\2"
    elif edit == "two rates":
        rhythm.SamplingFrequency = "1000\\500"
    elif edit == "negative sensitivity":
        channel.ChannelSensitivity = "-" + str(channel.ChannelSensitivity)
    elif edit == "median at NaN Hz":
        median.SamplingFrequency = "NaN"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ("two sensitivities", r"channel 1 sensitivity holds several values"),
        ("two rates", r"sampling frequency holds several values"),
        ("negative sensitivity", r"channel 1 has sensitivity -"),
    ],
)
def test_dicom_scales_and_rates_are_named_not_unreadable(
    dicom_path: Path, edit: str, problem: str
) -> None:
    with pytest.raises(EcgFormatError, match=problem) as info:
        load_ecg(_dicom(dicom_path, edit))
    assert "unreadable" not in str(info.value)


def test_median_beats_at_nan_hz_are_skipped_not_the_rhythm(dicom_path: Path) -> None:
    ecg = load_ecg(_dicom(dicom_path, "median at NaN Hz"))
    assert ecg.median_beats is None and ecg.n_samples > 0
    assert "Hz" in ecg.extra["median_beats_skipped"]
    assert load_ecg(dicom_path).median_beats is not None  # the file as it is keeps them


def _aecg(formats_dir: Path) -> bytes:
    return (formats_dir / "hl7_aecg" / "Example_aECG_HL7_2003-12.xml").read_bytes()


def test_an_aecg_negative_scale_is_refused(formats_dir: Path) -> None:
    text = re.sub(rb'(<scale value=")([0-9.]+)', rb"\1-\2", _aecg(formats_dir), count=1)
    with pytest.raises(EcgFormatError, match="upside down"):
        load_ecg(text)


def test_an_aecg_lead_without_samples_is_named(formats_dir: Path) -> None:
    original = load_ecg(_aecg(formats_dir))
    text = _aecg(formats_dir)
    code = text.index(b'code="MDC_ECG_LEAD_V3"')
    start = text.index(b"<value", code)
    end = text.index(b"</value>", start) + len(b"</value>")
    ecg = load_ecg(text[:start] + text[end:])
    assert len(ecg.leads) == len(original.leads) - 1 and "V3" not in ecg.leads
    assert "MDC_ECG_LEAD_V3 (no value)" in ecg.extra["ignored_sequences"]


def test_aecg_integers_without_a_unit_withhold_amplitudes(formats_dir: Path) -> None:
    assert load_ecg(_aecg(formats_dir)).amplitude_assumed is None
    text = _aecg(formats_dir).replace(b'xsi:type="SLIST_PQ"', b'xsi:type="SLIST_INT"')
    ecg = load_ecg(text)
    assert ecg.amplitude_assumed is not None and "microvolts" in ecg.amplitude_assumed


def test_a_philips_rate_of_1e308_is_named_not_an_overflow(formats_dir: Path) -> None:
    text = (formats_dir / "philips_xml" / "129DYPRG.XML").read_bytes()
    assert b"<samplingrate>500<" in text
    with pytest.raises(EcgFormatError) as info:
        load_ecg(text.replace(b"<samplingrate>500<", b"<samplingrate>1e308<"))
    assert "OverflowError" not in str(info.value) and "unreadable" not in str(info.value)
