"""GE MUSE XML reader on a real RestingECG export, cross-checked against its WFDB conversion.

About the reference: ``muse-sinus.hea`` declares a gain of 200 adu/mV, but its digital
values are the MUSE samples already multiplied by 4.88 uV/bit, i.e. they are microvolts
(so ``p_signal`` of that conversion is 5x too large: lead I would peak at 4.1 mV). The
cross-check therefore compares our millivolts with ``d_signal / 1000``.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import wfdb

from adapters import EcgFormatError, load_ecg, standard_12_lead

SAMPLE = "ge_muse_xml/muse-sinus.xml"
STORED = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


@pytest.fixture(scope="session")
def muse_text(formats_dir: Path) -> str:
    return (formats_dir / SAMPLE).read_text(encoding="iso-8859-1")


@pytest.fixture(scope="session")
def wfdb_reference(formats_dir: Path) -> wfdb.Record:
    return wfdb.rdrecord(str(formats_dir / "ge_muse_xml/muse-sinus"), physical=False)


def test_rhythm_leads_and_rate(formats_dir: Path) -> None:
    ecg = load_ecg(formats_dir / SAMPLE)
    assert ecg.source.format == "ge-muse-xml"
    assert ecg.fs == pytest.approx(500.0)
    assert ecg.signal.shape == (12, 5000)
    assert ecg.signal.dtype == np.float32
    assert ecg.extra["derived_leads"].split() == ["III", "aVR", "aVL", "aVF"]
    view = standard_12_lead(ecg)
    assert not view.missing and not view.derived  # all 12 present after the reader


def test_stored_leads_match_the_wfdb_conversion(
    formats_dir: Path, wfdb_reference: wfdb.Record
) -> None:
    ecg = load_ecg(formats_dir / SAMPLE)
    names = [name.upper() for name in wfdb_reference.sig_name]
    for lead in STORED:
        reference_uv = wfdb_reference.d_signal[:, names.index(lead.upper())].astype(float)
        # the conversion rounded to whole microvolts
        np.testing.assert_allclose(ecg.lead(lead) * 1000.0, reference_uv, atol=0.51)


def test_derived_limb_leads_match_the_wfdb_conversion(
    formats_dir: Path, wfdb_reference: wfdb.Record
) -> None:
    ecg = load_ecg(formats_dir / SAMPLE)
    names = [name.upper() for name in wfdb_reference.sig_name]
    for lead in ("III", "aVR", "aVL", "aVF"):
        reference_uv = wfdb_reference.d_signal[:, names.index(lead.upper())].astype(float)
        # derived there from rounded values, here from exact ones: a few uV apart at most
        np.testing.assert_allclose(ecg.lead(lead) * 1000.0, reference_uv, atol=3.0)


def test_amplitudes_follow_units_per_bit(formats_dir: Path, muse_text: str) -> None:
    ecg = load_ecg(formats_dir / SAMPLE)
    rhythm = muse_text[muse_text.index("<WaveformType>Rhythm") :]
    first = re.search(r"<WaveFormData>(.*?)</WaveFormData>", rhythm, re.S)
    assert first is not None
    raw = np.frombuffer(base64.b64decode(first.group(1)), dtype="<i2")
    per_bit = float(re.findall(r"<LeadAmplitudeUnitsPerBit>(.*?)<", rhythm)[0])
    np.testing.assert_allclose(ecg.lead("I"), raw * per_bit / 1000.0, rtol=1e-6, atol=1e-7)
    # a real lead II QRS peaks between 0.3 and 3 mV
    assert 0.3 < float(np.abs(ecg.lead("II")).max()) < 3.0


def test_limb_leads_obey_einthoven_and_goldberger(formats_dir: Path) -> None:
    ecg = load_ecg(formats_dir / SAMPLE)
    lead_i, lead_ii = ecg.lead("I"), ecg.lead("II")
    np.testing.assert_allclose(ecg.lead("III"), lead_ii - lead_i, atol=1e-6)
    np.testing.assert_allclose(ecg.lead("aVR"), -(lead_i + lead_ii) / 2, atol=1e-6)
    np.testing.assert_allclose(ecg.lead("aVL"), lead_i - lead_ii / 2, atol=1e-6)
    np.testing.assert_allclose(ecg.lead("aVF"), lead_ii - lead_i / 2, atol=1e-6)


def test_median_beats(formats_dir: Path, muse_text: str) -> None:
    ecg = load_ecg(formats_dir / SAMPLE)
    beats = ecg.median_beats
    assert beats is not None
    median = muse_text[
        muse_text.index("<WaveformType>Median") : muse_text.index("<WaveformType>Rhythm")
    ]
    count = int(re.findall(r"<LeadSampleCountTotal>(\d+)<", median)[0])
    assert beats.signal.shape == (12, count)
    assert beats.fs == pytest.approx(500.0)
    # the median QRS has the same order of amplitude as the rhythm's
    rhythm_peak = float(np.abs(ecg.lead("V3")).max())
    median_peak = float(np.abs(beats.signal[beats.leads.index("V3")]).max())
    assert 0.5 * rhythm_peak < median_peak < 1.5 * rhythm_peak


def test_statements_join_fragments_into_lines(formats_dir: Path, muse_text: str) -> None:
    ecg = load_ecg(formats_dir / SAMPLE)
    diagnosis = muse_text[muse_text.index("<Diagnosis>") : muse_text.index("</Diagnosis>")]
    fragments = re.findall(r"<StmtText>(.*?)</StmtText>", diagnosis)
    assert "Normal Sinus rhythm" in ecg.statements
    # "Anterior infarct" and ", age undetermined" are two fragments of one line
    assert "Anterior infarct, age undetermined" in ecg.statements
    joined = " ".join(ecg.statements)
    for fragment in fragments:
        assert fragment.strip(", ") in joined
    assert len(ecg.statements) < len(fragments)


def test_metadata(formats_dir: Path, muse_text: str) -> None:
    ecg = load_ecg(formats_dir / SAMPLE)
    assert ecg.patient_id == re.findall(r"<PatientID>(.*?)<", muse_text)[0]
    assert ecg.start_time == datetime(2023, 4, 29, 22, 41, 16)
    assert ecg.device is not None and "MV360" in ecg.device
    assert ecg.extra["QRSDuration"] == re.findall(r"<QRSDuration>(\d+)<", muse_text)[0]


def test_millivolt_units_are_honoured(formats_dir: Path, muse_text: str) -> None:
    original = load_ecg(formats_dir / SAMPLE)
    variant = muse_text.replace(
        "<LeadAmplitudeUnitsPerBit>4.88</LeadAmplitudeUnitsPerBit>",
        "<LeadAmplitudeUnitsPerBit>0.00488</LeadAmplitudeUnitsPerBit>",
    ).replace("MICROVOLTS", "MILLIVOLTS")
    ecg = load_ecg(variant.encode("iso-8859-1"), name="mv.xml")
    np.testing.assert_allclose(ecg.signal, original.signal, rtol=1e-6, atol=1e-7)


def test_corrupt_waveform_fails_its_crc(muse_text: str) -> None:
    rhythm_start = muse_text.index("<WaveformType>Rhythm")
    data_start = muse_text.index("<WaveFormData>", rhythm_start) + len("<WaveFormData>") + 200
    flipped = "B" if muse_text[data_start] != "B" else "C"
    corrupt = muse_text[:data_start] + flipped + muse_text[data_start + 1 :]
    with pytest.raises(EcgFormatError, match="CRC32") as info:
        load_ecg(corrupt.encode("iso-8859-1"), name="corrupt.xml")
    assert str(info.value).startswith("corrupt.xml: ")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("<WaveformType>Rhythm</WaveformType>", "<WaveformType>Other</WaveformType>", "rhythm"),
        ("<SampleBase>500</SampleBase>", "<SampleBase>fast</SampleBase>", "samplebase"),
        ("MICROVOLTS", "FURLONGS", "units"),
        ("<LeadSampleCountTotal>5000<", "<LeadSampleCountTotal>6000<", "samples"),
    ],
)
def test_broken_exports_raise_clear_errors(
    muse_text: str, old: str, new: str, message: str
) -> None:
    assert old in muse_text
    with pytest.raises(EcgFormatError) as info:
        load_ecg(muse_text.replace(old, new).encode("iso-8859-1"), name="broken.xml")
    assert str(info.value).startswith("broken.xml: ")
    assert message in str(info.value).lower()


def test_a_lead_missing_from_the_declared_count_is_not_dropped_silently(muse_text: str) -> None:
    # The Rhythm waveform declares <NumberofLeads>8</NumberofLeads>; an export that lost
    # the V6 LeadData was read as a 7-lead record (before), V6 later zero-filled as missing.
    rhythm = muse_text.index("<WaveformType>Rhythm")
    v6 = muse_text.index("<LeadID>V6</LeadID>", rhythm)
    start = muse_text.rindex("<LeadData>", rhythm, v6)
    end = muse_text.index("</LeadData>", v6) + len("</LeadData>")
    text = muse_text[:start] + muse_text[end:]
    with pytest.raises(EcgFormatError, match="NumberofLeads 8") as info:
        load_ecg(text.encode("iso-8859-1"), name="seven.xml")
    assert str(info.value).startswith("seven.xml: ")
    assert "7" in str(info.value)


@pytest.mark.parametrize("per_bit", ["0", "-10", "-4.88"])
def test_a_step_that_is_not_positive_is_refused(muse_text: str, per_bit: str) -> None:
    # Exports with LeadAmplitudeUnitsPerBit -10 exist in the wild. Before, a negative step
    # turned every lead upside down and 0 made a flat line, both read without a word.
    rhythm = muse_text.index("<WaveformType>Rhythm")
    step = muse_text.index("<LeadAmplitudeUnitsPerBit>4.88<", rhythm)
    text = muse_text[:step] + muse_text[step:].replace("4.88", per_bit, 1)
    with pytest.raises(EcgFormatError, match=f"UnitsPerBit is {per_bit}, not a positive") as info:
        load_ecg(text.encode("iso-8859-1"), name="step.xml")
    assert str(info.value).startswith("step.xml: ") and "Rhythm lead I" in str(info.value)


@pytest.mark.parametrize("field", ["LeadOffsetFirstSample", "LeadTimeOffset"])
def test_leads_starting_at_different_times_are_refused(muse_text: str, field: str) -> None:
    # A conversion of a sequentially recorded ECG writes each lead group's start there
    # (V1-V6 from sample 2500). Before: stacked as simultaneous, 5 s apart, without a word.
    rhythm = muse_text.index("<WaveformType>Rhythm")
    head, tail = muse_text[:rhythm], muse_text[rhythm:]
    v1 = tail.rindex("<LeadData>", 0, tail.index("<LeadID>V1</LeadID>"))
    tail = tail[:v1] + tail[v1:].replace(f"<{field}>0</{field}>", f"<{field}>2500</{field}>")
    with pytest.raises(EcgFormatError, match=f"not simultaneous \\({field}: I 0") as info:
        load_ecg((head + tail).encode("iso-8859-1"), name="sequential.xml")
    assert str(info.value).startswith("sequential.xml: ") and "V1 2500" in str(info.value)


def test_unreadable_median_beats_are_skipped_not_the_rhythm(
    formats_dir: Path, muse_text: str
) -> None:
    # The Median waveform comes first in the file. Before, its bad rate refused the file.
    original = load_ecg(formats_dir / SAMPLE)
    text = muse_text.replace("<SampleBase>500</SampleBase>", "<SampleBase>fast</SampleBase>", 1)
    ecg = load_ecg(text.encode("iso-8859-1"), name="median.xml")
    np.testing.assert_array_equal(ecg.signal, original.signal)
    assert ecg.median_beats is None and "SampleBase" in ecg.extra["median_beats_skipped"]
