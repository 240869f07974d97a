"""DICOM ECG waveforms: the reader against pydicom's own decoding, and the writer round trip."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian

from adapters import STANDARD_LEADS, Ecg, EcgFormatError, load_ecg, to_dicom_bytes
from adapters.dicom import AMBULATORY_ECG, GENERAL_ECG, TWELVE_LEAD_ECG
from adapters.dicom_writer import ecg_to_dicom, quantisation_step_uv
from adapters.record import standard_12_lead


def test_rhythm_group_matches_pydicom(dicom_ecg: Ecg, dicom_path: Path) -> None:
    ds = pydicom.dcmread(dicom_path)
    labels = [g.MultiplexGroupLabel for g in ds.WaveformSequence]
    rhythm = labels.index("RHYTHM")
    expected_uv = ds.waveform_array(rhythm).T  # sensitivity units are uV in this file
    assert dicom_ecg.source.format == "dicom"
    assert dicom_ecg.fs == float(ds.WaveformSequence[rhythm].SamplingFrequency) == 1000.0
    assert dicom_ecg.signal.shape == expected_uv.shape == (12, 10000)
    np.testing.assert_allclose(dicom_ecg.signal, expected_uv / 1000.0, atol=1e-6)


def test_median_beats_come_from_the_median_group(dicom_ecg: Ecg, dicom_path: Path) -> None:
    ds = pydicom.dcmread(dicom_path)
    median = [g.MultiplexGroupLabel for g in ds.WaveformSequence].index("MEDIAN BEAT")
    assert dicom_ecg.median_beats is not None
    assert dicom_ecg.median_beats.signal.shape == (12, 1200)
    np.testing.assert_allclose(
        dicom_ecg.median_beats.signal, ds.waveform_array(median).T / 1000.0, atol=1e-6
    )


def test_scpecg_lead_codes_and_metadata(dicom_ecg: Ecg) -> None:
    assert dicom_ecg.leads == STANDARD_LEADS  # from legacy SCPECG codes 5.6.3-9-*
    assert dicom_ecg.statements == ("RITMO SINUSALE", "ECG NORMALE")
    assert dicom_ecg.patient_id == "642341"
    assert dicom_ecg.start_time is not None
    assert dicom_ecg.start_time.isoformat() == "2013-01-25T10:59:19"
    assert dicom_ecg.device is not None and dicom_ecg.device.startswith("Mortara")
    assert dicom_ecg.extra["QRS Duration"] == "75 ms"


def test_writer_output_reads_back_in_pydicom_and_our_reader(dicom_ecg: Ecg) -> None:
    data = to_dicom_bytes(dicom_ecg, patient_id="P-1")
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.SOPClassUID == TWELVE_LEAD_ECG
    assert ds.Modality == "ECG"
    assert ds.file_meta.MediaStorageSOPClassUID == TWELVE_LEAD_ECG
    rhythm = ds.WaveformSequence[0]
    assert rhythm.WaveformSampleInterpretation == "SS" and rhythm.WaveformBitsAllocated == 16
    codes = [ch.ChannelSourceSequence[0].CodeValue for ch in rhythm.ChannelDefinitionSequence]
    assert codes[:3] == ["2:1", "2:2", "2:61"] and codes[6] == "2:3"
    assert {ch.ChannelSourceSequence[0].CodingSchemeDesignator for ch in
            rhythm.ChannelDefinitionSequence} == {"MDC"}  # fmt: skip
    # pydicom's own decoding agrees with the record within half a quantisation step.
    steps_mv = np.array([float(ch.ChannelSensitivity) for ch in rhythm.ChannelDefinitionSequence])
    steps_mv = steps_mv / 1000.0
    decoded = ds.waveform_array(0).T / 1000.0
    assert np.all(np.abs(decoded - dicom_ecg.signal) <= steps_mv[:, None] / 2 + 1e-7)

    back = load_ecg(data)
    assert back.leads == dicom_ecg.leads and back.fs == dicom_ecg.fs
    assert back.patient_id == "P-1"
    assert back.statements == dicom_ecg.statements
    assert back.start_time == dicom_ecg.start_time
    assert np.all(np.abs(back.signal - dicom_ecg.signal) <= steps_mv[:, None] / 2 + 1e-7)
    assert back.median_beats is not None and dicom_ecg.median_beats is not None
    np.testing.assert_allclose(back.median_beats.signal, dicom_ecg.median_beats.signal, atol=1e-4)


def test_round_trip_keeps_codes_extra_leads_and_picks_the_iod(data_dir: Path) -> None:
    cinc = load_ecg(data_dir / "cinc/cinc2021/E07500")
    back = load_ecg(to_dicom_bytes(cinc))
    assert back.diagnosis_codes == cinc.diagnosis_codes
    assert back.statements == cinc.statements

    ptb = load_ecg(data_dir / "formats/wfdb/s0010_re")  # 15 leads, 38,400 samples
    ds = ecg_to_dicom(ptb)
    assert ds.SOPClassUID == GENERAL_ECG  # too many channels and samples for 12-lead
    back = load_ecg(to_dicom_bytes(ptb))
    assert back.leads == ptb.leads  # Frank vx/vy/vz keep MDC codes 2:16-2:18

    low = load_ecg(data_dir / "ptbxl/records100/00000/00001_lr")  # 100 Hz
    assert ecg_to_dicom(low).SOPClassUID == AMBULATORY_ECG

    mitbih = load_ecg(data_dir / "formats/wfdb/100")
    assert mitbih.leads == ("II", "V5")  # MLII is read as (modified) lead II
    mitbih = mitbih.with_signal(mitbih.signal, ("Holter A", "V5"))
    back = load_ecg(to_dicom_bytes(mitbih))
    assert back.leads == ("Holter A", "V5")  # no MDC code for it: carried by CodeMeaning
    step = quantisation_step_uv(float(np.abs(mitbih.signal).max())) / 1000.0
    assert float(np.abs(back.signal - mitbih.signal).max()) <= step / 2 + 1e-7


@pytest.mark.parametrize(
    ("peak_mv", "step_uv"), [(0.0, 0.1), (3.0, 0.1), (3.3, 0.2), (6.0, 0.2), (30.0, 1.0)]
)
def test_quantisation_step_is_the_smallest_fitting_1_2_5_value(
    peak_mv: float, step_uv: float
) -> None:
    assert quantisation_step_uv(peak_mv) == pytest.approx(step_uv)
    assert peak_mv * 1000.0 / quantisation_step_uv(peak_mv) <= 32767


def test_big_endian_file_is_decoded(dicom_path: Path, dicom_ecg: Ecg, tmp_path: Path) -> None:
    ds = pydicom.dcmread(dicom_path)
    for group in ds.WaveformSequence:
        samples = np.frombuffer(group.WaveformData, dtype="<i2")
        group.WaveformData = samples.astype(">i2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    out = tmp_path / "big.dcm"
    pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    assert pydicom.dcmread(out).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    np.testing.assert_allclose(load_ecg(out).signal, dicom_ecg.signal, atol=1e-6)


def test_truncated_waveform_data(dicom_path: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(dicom_path)
    ds.WaveformSequence[0].WaveformData = ds.WaveformSequence[0].WaveformData[:1000]
    out = tmp_path / "short.dcm"
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(EcgFormatError, match="bytes of waveform data"):
        load_ecg(out)


def test_truncated_file(dicom_path: Path) -> None:
    data = dicom_path.read_bytes()
    with pytest.raises(EcgFormatError) as info:
        load_ecg(data[: len(data) // 3], name="cut.dcm")
    assert "cut.dcm" in str(info.value)


def test_missing_sensitivity_units(dicom_path: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(dicom_path)
    del ds.WaveformSequence[0].ChannelDefinitionSequence[2].ChannelSensitivityUnitsSequence
    out = tmp_path / "nounits.dcm"
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(EcgFormatError, match="channel 3 has no sensitivity"):
        load_ecg(out)


def test_a_correction_factor_of_zero_is_refused_not_read_as_one(
    dicom_path: Path, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(dicom_path)
    ds.WaveformSequence[0].ChannelDefinitionSequence[1].ChannelSensitivityCorrectionFactor = "0"
    out = tmp_path / "zero-correction.dcm"
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(EcgFormatError, match=r"channel 2 has sensitivity .*, correction 0\.0"):
        load_ecg(out)


def test_a_channel_that_is_not_a_voltage_is_left_out_and_named(
    dicom_path: Path, dicom_ecg: Ecg, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(dicom_path)
    channels = ds.WaveformSequence[0].ChannelDefinitionSequence
    channels[3].ChannelSensitivityUnitsSequence[0].CodeValue = "mm[Hg]"  # a pressure channel
    out = tmp_path / "pressure.dcm"
    ds.save_as(out, enforce_file_format=True)
    ecg = load_ecg(out)
    assert ecg.leads == dicom_ecg.leads[:3] + dicom_ecg.leads[4:]
    np.testing.assert_array_equal(ecg.signal, np.delete(dicom_ecg.signal, 3, axis=0))
    assert ecg.extra["dropped_channels"] == f"{dicom_ecg.leads[3]} (mm[Hg])"
    for channel in channels:
        channel.ChannelSensitivityUnitsSequence[0].CodeValue = "mm[Hg]"
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(EcgFormatError, match=r"no channel of group .* is a voltage"):
        load_ecg(out)


def test_millivolt_sensitivity_is_honoured(
    dicom_path: Path, dicom_ecg: Ecg, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(dicom_path)
    for channel in ds.WaveformSequence[0].ChannelDefinitionSequence:
        channel.ChannelSensitivity = f"{float(channel.ChannelSensitivity) / 1000.0:g}"
        channel.ChannelSensitivityUnitsSequence[0].CodeValue = "mV"
    out = tmp_path / "mv.dcm"
    ds.save_as(out, enforce_file_format=True)
    np.testing.assert_allclose(load_ecg(out).signal, dicom_ecg.signal, atol=1e-6)


def test_dicom_without_waveform_is_refused(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    image = get_testdata_file("CT_small.dcm")
    assert image is not None
    with pytest.raises(EcgFormatError, match="without a waveform"):
        load_ecg(Path(image))


def _padded(dicom_path: Path, tmp_path: Path, group_index: int, channel: int) -> Path:
    """The sample with the last 2000 samples of one channel set to the group's declared
    Waveform Padding Value (PS3.3 C.10.9.1: samples that are not acquired data)."""
    ds = pydicom.dcmread(dicom_path)
    group = ds.WaveformSequence[group_index]
    n_channels = int(group.NumberOfWaveformChannels)
    samples = np.frombuffer(group.WaveformData, dtype="<i2").reshape(-1, n_channels).copy()
    samples[-2000:, channel] = -32768
    group.WaveformData = samples.tobytes()
    group.add_new((0x5400, 0x100A), "OW", np.int16(-32768).tobytes())  # Waveform Padding Value
    out = tmp_path / f"padded-{group_index}-{channel}.dcm"
    ds.save_as(out, enforce_file_format=True)
    return out


def test_padding_samples_are_not_read_as_voltages(dicom_path: Path, tmp_path: Path) -> None:
    # Before: channel V1 ended in 2 s of -40.96 mV (-32768 x 1.25 uV), read as ECG.
    with pytest.raises(EcgFormatError, match="Padding Value -32768") as info:
        load_ecg(_padded(dicom_path, tmp_path, 0, 6), name="padded.dcm")
    assert str(info.value).startswith("padded.dcm: ")
    assert "V1 (2000)" in str(info.value)


def test_padded_median_beats_are_skipped_not_the_rhythm(
    dicom_path: Path, dicom_ecg: Ecg, tmp_path: Path
) -> None:
    padded = tmp_path / "median.dcm"
    ds = pydicom.dcmread(dicom_path)
    group = ds.WaveformSequence[1]
    samples = np.frombuffer(group.WaveformData, dtype="<i2").reshape(-1, 12).copy()
    samples[-100:, 0] = -32768
    group.WaveformData = samples.tobytes()
    group.add_new((0x5400, 0x100A), "OW", np.int16(-32768).tobytes())
    ds.save_as(padded, enforce_file_format=True)
    ecg = load_ecg(padded)
    assert ecg.median_beats is None
    assert "Padding Value" in ecg.extra["median_beats_skipped"]
    np.testing.assert_array_equal(ecg.signal, dicom_ecg.signal)


@pytest.mark.parametrize(
    ("value", "meaning"), [("2:65", "-aVR"), ("5.6.3-9-65", "Lead -aVR"), ("2:999", "-aVR")]
)
def test_inverted_avr_is_not_read_as_avr(
    dicom_path: Path, dicom_ecg: Ecg, tmp_path: Path, value: str, meaning: str
) -> None:
    # Cabrera carts record -aVR (MDC and SCP-ECG code 65): aVR upside down. Before, the code
    # was unknown and its meaning "-aVR" lost its sign, so the lead was read as aVR.
    ds = pydicom.dcmread(dicom_path)
    for group in ds.WaveformSequence:
        source = group.ChannelDefinitionSequence[3].ChannelSourceSequence[0]
        source.CodeValue, source.CodeMeaning = value, meaning
    out = tmp_path / "inverted-avr.dcm"
    ds.save_as(out, enforce_file_format=True)
    ecg = load_ecg(out)
    assert ecg.leads[3] == "-aVR" and "aVR" not in ecg.leads
    np.testing.assert_array_equal(ecg.signal, dicom_ecg.signal)
    view = standard_12_lead(ecg)  # aVR itself is derived from I and II, not taken from -aVR
    assert "aVR" in view.derived


def test_a_file_of_median_beats_only_is_refused(dicom_path: Path, tmp_path: Path) -> None:
    # Before, with the median group alone its 1.2 s beat was read as the rhythm.
    ds = pydicom.dcmread(dicom_path)
    ds.WaveformSequence = pydicom.Sequence([ds.WaveformSequence[1]])
    out = tmp_path / "median-only.dcm"
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(EcgFormatError, match="'MEDIAN BEAT': median beats, no rhythm"):
        load_ecg(out)


@pytest.mark.parametrize("status", ["DISCONNECTED", ["OK", "INVALID"], "UNCALIBRATED", "TEST DATA"])
def test_a_channel_with_an_unusable_status_is_left_out_and_named(
    dicom_path: Path, dicom_ecg: Ecg, tmp_path: Path, status: str | list[str]
) -> None:
    # Channel Status (PS3.3 C.10.9.1.4.2) says the samples are not the patient's calibrated
    # ECG (an electrode off, a test signal). Before, such a channel was read as the lead.
    ds = pydicom.dcmread(dicom_path)
    channels = ds.WaveformSequence[0].ChannelDefinitionSequence
    channels[6].ChannelStatus = status
    out = tmp_path / "status.dcm"
    ds.save_as(out, enforce_file_format=True)
    ecg = load_ecg(out)
    assert "V1" not in ecg.leads and ecg.leads == dicom_ecg.leads[:6] + dicom_ecg.leads[7:]
    np.testing.assert_array_equal(ecg.signal, np.delete(dicom_ecg.signal, 6, axis=0))
    assert ecg.extra["dropped_channels"].startswith("V1 (status ")
    for channel in channels:
        channel.ChannelStatus = ["OK", "QUESTIONABLE"]  # kept: usable, if doubtful
    ds.save_as(out, enforce_file_format=True)
    assert load_ecg(out).leads == dicom_ecg.leads


@pytest.mark.parametrize(
    "keyword",
    ["NumberOfWaveformChannels", "NumberOfWaveformSamples", "SamplingFrequency",
     "WaveformBitsAllocated"],
)  # fmt: skip
def test_a_required_attribute_without_a_value_is_named(
    dicom_path: Path, tmp_path: Path, keyword: str
) -> None:
    # Present but empty (zero length, legal encoding, type 1 violated). Before, the reader
    # failed inside int()/float() and the caller got "unreadable (TypeError: int() ...)".
    ds = pydicom.dcmread(dicom_path)
    ds.WaveformSequence[0][keyword].value = None
    out = tmp_path / "empty.dcm"
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(EcgFormatError, match=f"multiplex group 'RHYTHM' lacks {keyword}"):
        load_ecg(out)
    ds = pydicom.dcmread(dicom_path)
    ds.WaveformSequence[0].ChannelDefinitionSequence[1].ChannelSensitivity = None
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(EcgFormatError, match="channel 2 has no sensitivity"):
        load_ecg(out)


@pytest.mark.parametrize(("value", "meaning"), [("", "microvolt"), ("microvolts", "x")])
def test_units_named_in_words_are_read(
    dicom_path: Path, dicom_ecg: Ecg, tmp_path: Path, value: str, meaning: str
) -> None:
    # Before: a units code with only its meaning, or the unit spelled out, made every
    # channel "not a voltage" and the file was refused.
    ds = pydicom.dcmread(dicom_path)
    for channel in ds.WaveformSequence[0].ChannelDefinitionSequence:
        units = channel.ChannelSensitivityUnitsSequence[0]
        units.CodeValue, units.CodeMeaning = value, meaning
    out = tmp_path / "words.dcm"
    ds.save_as(out, enforce_file_format=True)
    np.testing.assert_array_equal(load_ecg(out).signal, dicom_ecg.signal)


def test_a_flood_of_sequence_items_is_refused_before_parsing(dicom_path: Path) -> None:
    # 120,000 empty annotation items are 1 MB; pydicom parsed them all (~4 s, ~80 MB;
    # a 64 MB upload of them: minutes and gigabytes) before the reader saw the waveform.
    ds = pydicom.dcmread(dicom_path)
    ds.WaveformAnnotationSequence = pydicom.Sequence([pydicom.Dataset()])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    empty_item = struct.pack("<HHI", 0xFFFE, 0xE000, 0)
    header = struct.pack("<HH", 0x0040, 0xB020) + b"SQ\x00\x00"
    start = data.index(header)
    at = data.index(empty_item, start)
    n = 120_000
    length = struct.unpack_from("<I", data, start + 8)[0]
    if length != 0xFFFFFFFF:  # an explicit length grows with the items; undefined stays
        length += 8 * (n - 1)
    flood = (
        data[: start + 8] + struct.pack("<I", length) + data[start + 12 : at]
        + empty_item * n + data[at + 8 :]
    )  # fmt: skip
    started = time.perf_counter()
    refused = r"holds 1200\d\d sequence items, over the limit of 100000"
    with pytest.raises(EcgFormatError, match=refused) as info:
        load_ecg(flood, name="flood.dcm")
    assert str(info.value).startswith("flood.dcm: ")
    assert time.perf_counter() - started < 1.0


def test_elements_the_reader_does_not_use_cost_no_memory(dicom_path: Path, dicom_ecg: Ecg) -> None:
    # 50,000 empty private elements after the waveform (0.4 MB). Before, pydicom kept a
    # raw element for each: ~17 MB of Python objects here (now: 2 MB, the waveform), ~2 GB
    # for a 64 MB upload.
    padding = bytearray()
    for index in range(50_000):
        group, element = 0x7FF1 + 2 * (index // 0xF000), 0x1000 + index % 0xF000
        padding += struct.pack("<HH", group, element) + b"UN\x00\x00" + struct.pack("<I", 0)
    data = dicom_path.read_bytes() + bytes(padding)
    tracemalloc.start()
    try:
        ecg = load_ecg(data, name="padded.dcm")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(ecg.signal, dicom_ecg.signal)
    assert peak < 8e6, f"{peak / 1e6:.0f} MB"


@pytest.mark.parametrize(
    ("keyword", "value", "problem"),
    [
        ("WaveformSampleInterpretation", "MB", "interpretation 'MB'"),  # mu-law beats
        ("NumberOfWaveformChannels", 0, "announces 0 channels"),
    ],
)
def test_unreadable_median_beats_are_skipped_not_the_rhythm(
    dicom_path: Path, dicom_ecg: Ecg, tmp_path: Path, keyword: str, value: object, problem: str
) -> None:
    # Before, anything wrong with the MEDIAN BEAT group but padding refused the whole file,
    # though the rhythm it would classify was fine.
    ds = pydicom.dcmread(dicom_path)
    setattr(ds.WaveformSequence[1], keyword, value)
    out = tmp_path / "median.dcm"
    ds.save_as(out, enforce_file_format=True)
    ecg = load_ecg(out)
    np.testing.assert_array_equal(ecg.signal, dicom_ecg.signal)
    assert ecg.median_beats is None and problem in ecg.extra["median_beats_skipped"]
