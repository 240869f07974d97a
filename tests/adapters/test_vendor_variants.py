"""Other vendors' variants of the real sample files: each reader reads them right or refuses
them by name.

Every variant is derived from a real file in ``formats/`` (pydicom / text edits) and the
expected values come from the standard's arithmetic applied to the raw numbers, not from
the reader: DICOM PS3.3 C.10.9.1.4.3 (value = sample x sensitivity x correction +
baseline, in the sensitivity units), HL7 aECG SLIST_PQ (digits x scale + origin), MUSE
(sample x LeadAmplitudeUnitsPerBit in LeadAmplitudeUnits), Philips (sample x resolution uV).
"""

from __future__ import annotations

import base64
import io
import re
import zlib
from copy import deepcopy as copy_element
from pathlib import Path

import numpy as np
import pydicom
import pytest
from lxml import etree
from pydicom.sequence import Sequence
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from adapters import Ecg, EcgFormatError, load_ecg
from adapters.dicom import AMBULATORY_ECG, GENERAL_32BIT_ECG, GENERAL_ECG

AECG = "hl7_aecg/Example_aECG_HL7_2003-12.xml"
MUSE = "ge_muse_xml/muse-sinus.xml"
PHILIPS = "philips_xml/129DYPRG.XML"


# --- DICOM ---------------------------------------------------------------------------------


def _bytes(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _raw_rhythm(ds: pydicom.Dataset) -> np.ndarray:
    """The rhythm group's stored int16 samples, (samples, channels), as exact integers."""
    group = ds.WaveformSequence[0]
    assert group.MultiplexGroupLabel == "RHYTHM" and group.WaveformSampleInterpretation == "SS"
    n = int(group.NumberOfWaveformSamples)
    return np.frombuffer(group.WaveformData, "<i2").reshape(n, -1).astype(np.int64)


def test_implicit_vr_and_deflated_files_read_the_same(dicom_path: Path, dicom_ecg: Ecg) -> None:
    ds = pydicom.dcmread(dicom_path)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit = _bytes(ds)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated = _bytes(ds)
    assert len(deflated) < len(implicit) / 2  # really compressed
    for data in (implicit, deflated):
        ecg = load_ecg(data, name="variant.dcm")
        assert ecg.leads == dicom_ecg.leads and ecg.fs == dicom_ecg.fs
        np.testing.assert_array_equal(ecg.signal, dicom_ecg.signal)
        assert ecg.median_beats is not None and ecg.median_beats.signal.shape == (12, 1200)


#: (bits, interpretation, raw -> stored integers, sensitivity uV, baseline uV): the same
#: tracing stored as other carts store it (offset binary needs a negative baseline).
ENCODINGS = {
    "SL": (32, "SL", lambda r: r * 4, 0.3125, 0.0),
    "UL offset binary": (32, "UL", lambda r: r * 4 + 2**31, 0.3125, -(2**31) * 0.3125),
    "US offset binary": (16, "US", lambda r: r + 32768, 1.25, -32768 * 1.25),
    "SB": (8, "SB", lambda r: np.clip(r // 16, -128, 127), 20.0, 0.0),
    "UB offset binary": (8, "UB", lambda r: np.clip(r // 16, -128, 127) + 128, 20.0, -2560.0),
}
_NUMPY = {"SL": "<i4", "UL": "<u4", "US": "<u2", "SB": "i1", "UB": "u1"}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_sample_encodings_scale_by_the_standard(dicom_path: Path, encoding: str) -> None:
    # Before, 32-bit samples were scaled in float32, which holds integers exactly only up
    # to 2**24: UL offset-binary samples (~2**31) came out up to 70 uV off.
    bits, interpretation, convert, sensitivity, baseline = ENCODINGS[encoding]
    ds = pydicom.dcmread(dicom_path)
    stored = convert(_raw_rhythm(ds))
    group = ds.WaveformSequence[0]
    group.WaveformBitsAllocated = bits
    group.WaveformSampleInterpretation = interpretation
    group.WaveformData = stored.astype(_NUMPY[interpretation]).tobytes()
    for channel in group.ChannelDefinitionSequence:
        channel.ChannelSensitivity = f"{sensitivity:g}"
        channel.ChannelBaseline = f"{baseline:.0f}"
        channel.WaveformBitsStored = bits
    ecg = load_ecg(_bytes(ds), name=f"{encoding}.dcm")
    expected_mv = (stored * sensitivity + baseline).T / 1000.0
    np.testing.assert_allclose(ecg.signal, expected_mv, atol=1e-5)


@pytest.mark.parametrize("interpretation", ["MB", "AB"])
def test_companded_samples_are_refused_by_name(dicom_path: Path, interpretation: str) -> None:
    ds = pydicom.dcmread(dicom_path)
    stored = np.clip(_raw_rhythm(ds) // 16, -128, 127).astype("i1")
    group = ds.WaveformSequence[0]
    group.WaveformBitsAllocated = 8
    group.WaveformSampleInterpretation = interpretation
    group.WaveformData = stored.tobytes()
    with pytest.raises(EcgFormatError, match=rf"^law\.dcm: .*interpretation '{interpretation}'"):
        load_ecg(_bytes(ds), name="law.dcm")


def test_correction_factor_and_baseline(dicom_path: Path) -> None:
    ds = pydicom.dcmread(dicom_path)
    for channel in ds.WaveformSequence[0].ChannelDefinitionSequence:
        channel.ChannelSensitivityCorrectionFactor = "1.1"
        channel.ChannelBaseline = "-50"
    ecg = load_ecg(_bytes(ds), name="corrected.dcm")
    expected_mv = (_raw_rhythm(ds) * 1.25 * 1.1 - 50).T / 1000.0
    np.testing.assert_allclose(ecg.signal, expected_mv, atol=1e-5)


MDC_CODES = {
    "I": "2:1", "II": "2:2", "III": "2:61", "aVR": "2:62", "aVL": "2:63", "aVF": "2:64",
    "V1": "2:3", "V2": "2:4", "V3": "2:5", "V4": "2:6", "V5": "2:7", "V6": "2:8",
}  # fmt: skip


@pytest.mark.parametrize("coding", ["MDC", "meaning only", "label only", "MDC reference id"])
def test_lead_names_from_mdc_codes_or_code_meanings(
    dicom_path: Path, dicom_ecg: Ecg, coding: str
) -> None:
    # "label only" and "MDC reference id" (vendor_variants_2's round): before, the first was
    # refused as "duplicate lead names ['ECG lead', ...]", the second read as ch1..ch12.
    ds = pydicom.dcmread(dicom_path)
    for group in ds.WaveformSequence:
        for channel, lead in zip(group.ChannelDefinitionSequence, dicom_ecg.leads, strict=True):
            code = channel.ChannelSourceSequence[0]
            if coding == "MDC":  # DICOM CID 3001 as current carts write it
                code.CodeValue, code.CodingSchemeDesignator = MDC_CODES[lead], "MDC"
                code.CodeMeaning = f"Lead {lead}"
            elif coding == "label only":  # CID 3001 is Defined: a code of the cart's own
                code.CodeValue, code.CodingSchemeDesignator = "ECG", "99VENDOR"
                code.CodeMeaning = "ECG lead"  # names no lead: Channel Label (type 3) does
                channel.ChannelLabel = lead.upper()  # as carts print it: AVR, V1
            elif coding == "MDC reference id":  # the aECG spelling as the code, no meaning
                code.CodeValue, code.CodingSchemeDesignator = f"MDC_ECG_LEAD_{lead.upper()}", "MDC"
                code.CodeMeaning = ""
            else:  # a private scheme: only "Lead I (Einthoven)" etc. say which lead
                code.CodeValue, code.CodingSchemeDesignator = f"L{lead}", "99VENDOR"
    ecg = load_ecg(_bytes(ds), name=f"{coding}.dcm")
    assert ecg.leads == dicom_ecg.leads
    np.testing.assert_array_equal(ecg.signal, dicom_ecg.signal)


def test_group_order_and_label_case_do_not_decide_the_rhythm(
    dicom_path: Path, dicom_ecg: Ecg
) -> None:
    ds = pydicom.dcmread(dicom_path)
    rhythm, median = ds.WaveformSequence
    rhythm.MultiplexGroupLabel, median.MultiplexGroupLabel = "Rhythm", "Median Beat"
    ds.WaveformSequence = Sequence([median, rhythm])
    ecg = load_ecg(_bytes(ds), name="reordered.dcm")
    np.testing.assert_array_equal(ecg.signal, dicom_ecg.signal)
    assert ecg.median_beats is not None and ecg.median_beats.signal.shape == (12, 1200)
    for group in ds.WaveformSequence:  # no labels: Waveform Originality (type 1) decides
        del group.MultiplexGroupLabel
    np.testing.assert_array_equal(load_ecg(_bytes(ds), name="x.dcm").signal, dicom_ecg.signal)


@pytest.mark.parametrize("sop_class", [GENERAL_ECG, AMBULATORY_ECG, GENERAL_32BIT_ECG])
def test_every_ecg_sop_class_is_read(dicom_path: Path, dicom_ecg: Ecg, sop_class: str) -> None:
    ds = pydicom.dcmread(dicom_path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ecg = load_ecg(_bytes(ds), name="other-class.dcm")
    np.testing.assert_array_equal(ecg.signal, dicom_ecg.signal)
    assert ecg.extra["sop_class_uid"] == sop_class


@pytest.mark.parametrize(
    ("sop_class", "words"),
    [
        ("1.2.840.10008.5.1.4.1.1.9.7.1", "Electroencephalogram"),
        ("1.2.840.10008.5.1.4.1.1.9.7.2", "Electromyogram"),
        ("1.2.840.10008.5.1.4.1.1.9.4.1", "Voice Audio"),
        ("1.2.840.10008.5.1.4.1.1.9.6.1", "Respiratory"),
    ],
)
def test_waveforms_that_are_not_ecgs_are_refused(
    dicom_path: Path, sop_class: str, words: str
) -> None:
    # Before, any waveform object with channels in uV was read as an ECG: an EEG became a
    # "recording" of 12 unknown leads, zero-filled into the 12-lead view and classified.
    ds = pydicom.dcmread(dicom_path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    for index, channel in enumerate(ds.WaveformSequence[0].ChannelDefinitionSequence):
        channel.ChannelSourceSequence[0].CodeValue = f"E{index}"
        channel.ChannelSourceSequence[0].CodeMeaning = f"Electrode {index}"
    with pytest.raises(EcgFormatError, match=rf"^eeg\.dcm: .*{words}.* not an ECG"):
        load_ecg(_bytes(ds), name="eeg.dcm")


# --- HL7 aECG ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aecg_text(formats_dir: Path) -> str:
    return (formats_dir / AECG).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def aecg_ecg(formats_dir: Path) -> Ecg:
    return load_ecg(formats_dir / AECG)


def _prefixed(text: str) -> str:
    """The document with the HL7 namespace under prefix ``hl7:`` instead of the default."""
    text = text.replace('xmlns="urn:hl7-org:v3"', 'xmlns:hl7="urn:hl7-org:v3"')
    text = re.sub(r"<(/?)([A-Za-z])", r"<\1hl7:\2", text)
    return text.replace('xsi:type="', 'xsi:type="hl7:')


@pytest.mark.parametrize("variant", ["prefix", "utf-16", "iso-8859-1"])
def test_aecg_namespace_prefix_and_encodings(aecg_text: str, aecg_ecg: Ecg, variant: str) -> None:
    if variant == "prefix":
        data = _prefixed(aecg_text).encode()
    else:
        declared = aecg_text.replace('encoding="utf-8"', f'encoding="{variant}"')
        data = declared.replace("Sample Annotated", "Sample \u00e9 Annotated").encode(variant)
    ecg = load_ecg(data, name=f"{variant}.xml")
    assert ecg.leads == aecg_ecg.leads and ecg.fs == aecg_ecg.fs == 500.0
    np.testing.assert_array_equal(ecg.signal, aecg_ecg.signal)


@pytest.mark.parametrize(
    ("scale", "increment"),
    [
        ('<scale value="2500" unit="nV"/>', '<increment value="0.002" unit="s"/>'),
        ('<scale value="0.0025" unit="mV"/>', '<increment value="2" unit="ms"/>'),
    ],
)
def test_aecg_units_of_scale_and_increment(
    aecg_text: str, aecg_ecg: Ecg, scale: str, increment: str
) -> None:
    text = aecg_text.replace('<scale value="2.5" unit="uV"/>', scale)
    text = text.replace('<increment value="0.002" unit="s"/>', increment)
    ecg = load_ecg(text.encode(), name="units.xml")
    assert ecg.fs == 500.0
    np.testing.assert_allclose(ecg.signal, aecg_ecg.signal, rtol=1e-6)


@pytest.mark.parametrize("code", ["131073", "131329", "MDC_ECG_ELEC_POTL_I"])
def test_aecg_lead_in_another_mdc_spelling_is_read(
    aecg_text: str, aecg_ecg: Ecg, code: str
) -> None:
    # Before, a lead sequence whose code did not start with MDC_ECG_LEAD_ was dropped
    # without a word: the MDC numeric code of lead I gave an 11-lead record.
    text = aecg_text.replace('code="MDC_ECG_LEAD_I" ', f'code="{code}" ')
    ecg = load_ecg(text.encode(), name="numeric.xml")
    assert ecg.leads == aecg_ecg.leads
    np.testing.assert_array_equal(ecg.signal, aecg_ecg.signal)


def test_aecg_sequence_under_an_unknown_code_is_named_not_dropped(
    aecg_text: str, aecg_ecg: Ecg
) -> None:
    text = aecg_text.replace('code="MDC_ECG_LEAD_V3" ', 'code="VENDOR_CH_7" ')
    ecg = load_ecg(text.encode(), name="vendor.xml")
    assert ecg.leads == tuple(lead for lead in aecg_ecg.leads if lead != "V3")
    assert ecg.extra["ignored_sequences"] == "VENDOR_CH_7"


def test_aecg_origin_of_zero_without_a_unit_is_read(aecg_text: str, aecg_ecg: Ecg) -> None:
    """Zero needs no unit: ``<origin value="0"/>`` was refused ("amplitude unit (none)").
    Any other value without a unit stays refused (its size would be a guess)."""
    text = aecg_text.replace('<origin value="0" unit="uV"/>', '<origin value="0"/>')
    np.testing.assert_array_equal(load_ecg(text.encode(), name="bare.xml").signal, aecg_ecg.signal)
    nonzero = aecg_text.replace('<origin value="0" unit="uV"/>', '<origin value="5"/>')
    with pytest.raises(EcgFormatError, match="amplitude unit"):
        load_ecg(nonzero.encode(), name="bare5.xml")


# --- GE MUSE and Philips XML ---------------------------------------------------------------


@pytest.fixture(scope="module")
def muse_text(formats_dir: Path) -> str:
    return (formats_dir / MUSE).read_bytes().decode("latin-1")


@pytest.fixture(scope="module")
def muse_ecg(formats_dir: Path) -> Ecg:
    return load_ecg(formats_dir / MUSE)


def _wrapped_base64(text: str, tag: str, width: int, newline: str) -> str:
    def wrap(match: re.Match[str]) -> str:
        body = re.sub(r"\s+", "", match.group(2))
        lines = [body[i : i + width] for i in range(0, len(body), width)]
        return match.group(1) + newline.join(lines) + match.group(3)

    return re.sub(rf"(<{tag}[^>]*>)(.*?)(</{tag}>)", wrap, text, flags=re.DOTALL)


@pytest.mark.parametrize("variant", ["utf-16", "utf-8", "crlf base64", "&#xA; base64"])
def test_muse_encodings_and_wrapped_base64(muse_text: str, muse_ecg: Ecg, variant: str) -> None:
    named = muse_text.replace("<PatientLastName>DOE", "<PatientLastName>D\u00d6E")
    if variant.startswith("utf"):
        data = named.replace('encoding="ISO-8859-1"', f'encoding="{variant}"').encode(variant)
    else:
        newline = "\r\n" if variant.startswith("crlf") else "&#xA;"
        data = _wrapped_base64(named, "WaveFormData", 76, newline).encode("latin-1")
    ecg = load_ecg(data, name=f"{variant}.xml")
    assert ecg.leads == muse_ecg.leads and ecg.extra["derived_leads"] == "III aVR aVL aVF"
    np.testing.assert_array_equal(ecg.signal, muse_ecg.signal)


@pytest.mark.parametrize(
    ("per_bit", "units", "gain"),
    [("9.76", "MICROVOLTS", 2.0), ("0.00488", "MILLIVOLTS", 1.0), ("4880", "NANOVOLTS", 1.0)],
)
def test_muse_amplitude_units_per_bit(
    muse_text: str, muse_ecg: Ecg, per_bit: str, units: str, gain: float
) -> None:
    text = muse_text.replace(
        "<LeadAmplitudeUnitsPerBit>4.88<", f"<LeadAmplitudeUnitsPerBit>{per_bit}<"
    ).replace("<LeadAmplitudeUnits>MICROVOLTS<", f"<LeadAmplitudeUnits>{units}<")
    ecg = load_ecg(text.encode("latin-1"), name="units.xml")
    np.testing.assert_allclose(ecg.signal, muse_ecg.signal * gain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["iso-8859-1", "utf-16", "base64 64 wide", "resolution 10"])
def test_philips_encodings_wrapping_and_resolution(formats_dir: Path, variant: str) -> None:
    text = (formats_dir / PHILIPS).read_text(encoding="utf-8")
    original = load_ecg(formats_dir / PHILIPS)
    gain = 1.0
    if variant == "resolution 10":
        text, gain = text.replace("<signalresolution>5<", "<signalresolution>10<"), 2.0
        data = text.encode()
    elif variant.startswith("base64"):
        data = _wrapped_base64(text, "parsedwaveforms", 64, "\n").encode()
    else:
        declared = text.replace('encoding="UTF-8"', f'encoding="{variant}"')
        data = declared.replace("<patientid>", "<patientid>\u00e9").encode(variant)
    ecg = load_ecg(data, name=f"{variant}.xml")
    assert ecg.leads == original.leads and ecg.fs == original.fs
    np.testing.assert_allclose(ecg.signal, original.signal * gain, rtol=1e-6)


def test_muse_export_with_all_12_leads_stored(formats_dir: Path, muse_ecg: Ecg) -> None:
    """Some MUSE exports store III, aVR, aVL and aVF too: read as stored, none derived."""
    root = etree.fromstring((formats_dir / MUSE).read_bytes())
    rhythm = next(w for w in root.iter("Waveform") if w.findtext("WaveformType") == "Rhythm")
    stored = {
        d.findtext("LeadID"): np.frombuffer(base64.b64decode(d.findtext("WaveFormData")), "<i2")
        for d in rhythm.iter("LeadData")
    }
    lead_i, lead_ii = stored["I"].astype(np.int64), stored["II"].astype(np.int64)
    limb = {  # Einthoven and Goldberger on the stored integers, rounded to the cart's step
        "III": lead_ii - lead_i,
        "aVR": np.round(-(lead_i + lead_ii) / 2),
        "aVL": np.round(lead_i - lead_ii / 2),
        "aVF": np.round(lead_ii - lead_i / 2),
    }
    template = next(d for d in rhythm.iter("LeadData") if d.findtext("LeadID") == "I")
    for lead, samples in limb.items():
        data = samples.astype("<i2").tobytes()
        copy = copy_element(template)
        copy.find("LeadID").text = lead
        copy.find("WaveFormData").text = base64.b64encode(data).decode()
        copy.find("LeadDataCRC32").text = str(zlib.crc32(data))
        rhythm.append(copy)
    rhythm.find("NumberofLeads").text = "12"
    ecg = load_ecg(etree.tostring(root, encoding="ISO-8859-1"), name="muse12.xml")
    assert sorted(ecg.leads) == sorted(muse_ecg.leads) and "derived_leads" not in ecg.extra
    step_mv = 4.88 / 1000
    for lead in limb:
        np.testing.assert_allclose(ecg.lead(lead), muse_ecg.lead(lead), atol=step_mv / 2 + 1e-6)
