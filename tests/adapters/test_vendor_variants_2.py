"""More of other vendors' variants of the real sample files (second round; the first is
test_vendor_variants.py): each is read as its standard says, or refused by name.

Every variant is an edit of a real file in ``shared/data`` (a PTB-XL record for WFDB and
FHIR); the expected values come from the original file as read, and the edit's meaning from
the format's own definition: the Philips XML schemas (SierraECG 1.03, PhilipsECG 1.04.01:
``TYPEleadname``, ``TYPEdataencoding``, ``leadwaveforms``), DICOM PS3.3 A.34.3.4 and
C.10.9.1 (Channel Source, Channel Label, Channel Sensitivity), WFDB header(5) (the ADC
gain), HL7 aECG (a sequence set holds simultaneous sequences), published FHIR lead value
sets (HL7 Germany, HL7 PHR IG), XML 1.0 (the encoding declaration).
"""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pydicom
import pytest
from lxml import etree

from adapters import STANDARD_LEADS, Ecg, EcgFormatError, load_ecg, to_fhir_observation

PHILIPS_104 = "philips_xml/3191723_ZZDEMOPTONLY_1-04_orig.xml"


@pytest.fixture(scope="module")
def philips(formats_dir: Path) -> tuple[str, Ecg]:
    """The real PhilipsECG 1.04 file's text (UTF-16 on disk) and the file as read."""
    path = formats_dir / PHILIPS_104
    return path.read_bytes().decode("utf-16"), load_ecg(path)


# --- XML encodings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "encoding"),
    [
        ("ge_muse_xml/muse-sinus.xml", "latin-1"),
        ("hl7_aecg/Example_aECG_HL7_2003-12.xml", "latin-1"),
        ("ge_muse_xml/muse-sinus.xml", "utf_8"),
    ],
)
def test_xml_rewritten_by_python_elementtree_is_read(
    formats_dir: Path, relative: str, encoding: str
) -> None:
    # A script that anonymises or re-exports a file with Python's ElementTree writes the
    # encoding under the name it was given: <?xml version='1.0' encoding='latin-1'?>.
    # libxml2 knows ISO-8859-1 but not that spelling; before, such a file was refused as
    # "not well-formed XML (Unsupported encoding: latin-1) (the file is truncated or corrupt)".
    tree = ElementTree.parse(formats_dir / relative)
    out = io.BytesIO()
    tree.write(out, encoding=encoding, xml_declaration=True)
    assert out.getvalue().startswith(f"<?xml version='1.0' encoding='{encoding}'?>".encode())
    ecg = load_ecg(out.getvalue(), name="rewritten.xml")
    original = load_ecg(formats_dir / relative)
    assert ecg.leads == original.leads
    np.testing.assert_array_equal(ecg.signal, original.signal)


def test_xml_in_an_encoding_nobody_knows_is_refused_by_name(formats_dir: Path) -> None:
    text = (formats_dir / "ge_muse_xml/muse-sinus.xml").read_bytes()
    data = text.replace(b'encoding="ISO-8859-1"', b'encoding="ansi"')
    with pytest.raises(EcgFormatError, match=r"^ansi\.xml: the XML declares encoding 'ansi'"):
        load_ecg(data, name="ansi.xml")


def test_utf16_declaration_on_converted_bytes_is_named(philips: tuple[str, Ecg]) -> None:
    # The Philips 1.04 file (UTF-16) converted to UTF-8, its declaration still "utf-16":
    # a fatal error in XML 1.0 (4.3.3). Before, the message was libxml2's "Blank needed
    # here" with the hint "the file is truncated or corrupt".
    data = philips[0].encode("utf-8")
    assert data.startswith(b'<?xml version="1.0" encoding="utf-16"?>')
    with pytest.raises(EcgFormatError, match="declares encoding 'utf-16' but its bytes are not"):
        load_ecg(data, name="converted.xml")


def test_latin1_bytes_without_their_declaration_are_named(formats_dir: Path) -> None:
    # The MUSE export (ISO-8859-1, a patient name with an umlaut) with its XML declaration
    # stripped: XML then means UTF-8, and the bytes are not. Before: "not well-formed XML
    # (line 14: Invalid bytes in character encoding) (the file is truncated or corrupt)".
    text = (formats_dir / "ge_muse_xml/muse-sinus.xml").read_bytes().decode("latin-1")
    text = text.replace("<PatientLastName>DOE", "<PatientLastName>D\u00d6E")
    data = text.replace('<?xml version="1.0" encoding="ISO-8859-1"?>', "").encode("latin-1")
    with pytest.raises(EcgFormatError, match=r"line 14 are not valid in UTF-8 \(no declaration"):
        load_ecg(data, name="stripped.xml")


# --- HL7 aECG -------------------------------------------------------------------------------

AECG = "hl7_aecg/Example_aECG_HL7_2003-12.xml"
HL7 = "{urn:hl7-org:v3}"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


def _split_rhythm(path: Path, sets: int, sequential: bool) -> bytes:
    """The real aECG with its one rhythm sequence set split into ``sets`` sets of equal
    leads, each with its own TIME_RELATIVE (GLIST_PQ) time sequence: all starting at 0 s
    with every sample (simultaneous), or one after another, each holding its share of the
    10 s (as a cart recording 4 x 3 leads of 2.5 s writes them)."""
    root = etree.parse(str(path)).getroot()
    series = root.find(f"{HL7}component/{HL7}series")
    holder = series.find(f"{HL7}component")
    leads = holder.findall(f"{HL7}sequenceSet/{HL7}component")[1:]  # [0] is the time
    per_set, position = len(leads) // sets, list(series).index(holder)
    series.remove(holder)
    for k in range(sets):
        component = etree.Element(f"{HL7}component")
        sequence_set = etree.SubElement(component, f"{HL7}sequenceSet")
        time = etree.SubElement(etree.SubElement(sequence_set, f"{HL7}component"), f"{HL7}sequence")
        etree.SubElement(time, f"{HL7}code", code="TIME_RELATIVE")
        value = etree.SubElement(time, f"{HL7}value", {XSI_TYPE: "GLIST_PQ"})
        etree.SubElement(
            value, f"{HL7}head", value=f"{10 * k / sets if sequential else 0:g}", unit="s"
        )
        etree.SubElement(value, f"{HL7}increment", value="0.002", unit="s")
        for lead in leads[per_set * k : per_set * (k + 1)]:
            lead = copy.deepcopy(lead)
            digits = lead.find(f"{HL7}sequence/{HL7}value/{HL7}digits")
            if sequential:
                share = 5000 // sets
                digits.text = " ".join(digits.text.split()[share * k : share * (k + 1)])
            sequence_set.append(lead)
        series.insert(position + k, component)
    return etree.tostring(root)


def test_aecg_sequence_set_per_lead_is_one_record(formats_dir: Path) -> None:
    original = load_ecg(formats_dir / AECG)
    ecg = load_ecg(_split_rhythm(formats_dir / AECG, 12, sequential=False), name="per-lead.xml")
    assert ecg.leads == original.leads and "ignored_sequence_sets" not in ecg.extra
    np.testing.assert_array_equal(ecg.signal, original.signal)


def test_aecg_sets_recorded_one_after_another_are_not_stacked(formats_dir: Path) -> None:
    # A sequence set holds simultaneous sequences; the TIME_RELATIVE head says when a set
    # starts. Before, the heads of GLIST_PQ time sequences were ignored: four sets of three
    # leads at 0, 2.5, 5 and 7.5 s were stacked into one "simultaneous" 12-lead record of
    # 2.5 s, lead I from the first seconds beside V6 from the last, without a word.
    original = load_ecg(formats_dir / AECG)
    ecg = load_ecg(_split_rhythm(formats_dir / AECG, 4, sequential=True), name="4x3.xml")
    assert ecg.leads == original.leads[:3]  # the first set, as for any other set split
    np.testing.assert_array_equal(ecg.signal, original.signal[:3, :1250])
    assert ecg.extra["ignored_sequence_sets"] == "3"


# --- Philips --------------------------------------------------------------------------------


def test_philips_iec_chest_lead_labels_are_the_v_leads(philips: tuple[str, Ecg]) -> None:
    # The Philips schemas name the chest leads C1..C6 as well as V1..V6 (IEC labels, as
    # European carts print them). Before, "C1".."C6" were kept as unknown leads: the
    # 12-lead view had no V1-V6 and filled them with zeros, silently.
    philips_text, philips_ecg = philips
    text = philips_text.replace(
        'leadlabels="I II III aVR aVL aVF V1 V2 V3 V4 V5 V6"',
        'leadlabels="I II III aVR aVL aVF C1 C2 C3 C4 C5 C6"',
    )
    text = re.sub(r'<repbeat leadname="V(\d)">', r'<repbeat leadname="C\1">', text)
    assert text.count('leadname="C') == 6
    ecg = load_ecg(text.encode("utf-16"), name="iec.xml")
    assert ecg.leads == STANDARD_LEADS
    np.testing.assert_array_equal(ecg.signal, philips_ecg.signal)
    assert ecg.extra["lead_aliases"] == "C1 -> V1, C2 -> V2, C3 -> V3, C4 -> V4, C5 -> V5, C6 -> V6"
    assert ecg.median_beats is not None and philips_ecg.median_beats is not None
    assert ecg.median_beats.leads == philips_ecg.median_beats.leads


def test_philips_leadwaveforms_are_named_not_called_missing(philips: tuple[str, Ecg]) -> None:
    # PhilipsECG 1.04.01 also defines leadwaveforms: the waveform "as a set of individual
    # lead elements", with parsedwaveforms' attributes. This reader does not decode it;
    # before, such a file was refused as "no parsedwaveforms element: the file holds no
    # waveform".
    text = re.sub(
        r"<parsedwaveforms([^>]*)>(.*?)</parsedwaveforms>",
        r'<leadwaveforms\1><leadwaveform leadname="I" starttime="0" duration="11000">'
        r"\2</leadwaveform></leadwaveforms>",
        philips[0],
        count=1,
        flags=re.S,
    )
    assert "<leadwaveforms" in text and "<parsedwaveforms" not in text
    with pytest.raises(EcgFormatError, match="stored as leadwaveforms"):
        load_ecg(text.encode("utf-16"), name="leads.xml")


# --- DICOM ----------------------------------------------------------------------------------


def _dicom_bytes(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_dicom_channel_label_never_overrides_a_lead_code(dicom_path: Path, dicom_ecg: Ecg) -> None:
    # Channel Label is the fallback for codes that name no lead (test_vendor_variants:
    # "label only"); where the Channel Source code names one, the code is what was recorded.
    ds = pydicom.dcmread(dicom_path)
    for channel in ds.WaveformSequence[0].ChannelDefinitionSequence:
        channel.ChannelLabel = "II"  # a display label; the coded lead is what was recorded
    assert load_ecg(_dicom_bytes(ds), name="labels.dcm").leads == dicom_ecg.leads


def test_dicom_channel_in_arbitrary_units_is_dropped_not_the_file(
    dicom_path: Path, dicom_ecg: Ecg
) -> None:
    # PS3.3 C.10.9.1.4.3: Channel Sensitivity is "required if samples represent defined (not
    # arbitrary) units" (type 1C), and its units with it. A 13th channel (the 12-lead IOD
    # allows 13) in arbitrary units, say a pacing marker, has neither. Before, the whole
    # file was refused: "channel 13 has no sensitivity or sensitivity units".
    ds = pydicom.dcmread(dicom_path)
    rhythm = ds.WaveformSequence[0]
    n = int(rhythm.NumberOfWaveformSamples)
    stored = np.frombuffer(rhythm.WaveformData, "<i2").reshape(n, 12)
    marker = np.zeros((n, 1), dtype="<i2")
    marker[::800] = 1  # one mark every 0.8 s
    rhythm.WaveformData = np.hstack([stored, marker]).tobytes()
    rhythm.NumberOfWaveformChannels = 13
    channel = copy.deepcopy(rhythm.ChannelDefinitionSequence[0])
    del channel.ChannelSensitivity, channel.ChannelSensitivityUnitsSequence
    del channel.ChannelSensitivityCorrectionFactor, channel.ChannelBaseline
    source = channel.ChannelSourceSequence[0]
    source.CodeValue, source.CodingSchemeDesignator = "PACE", "99VENDOR"
    source.CodeMeaning = "Pacing marker"
    rhythm.ChannelDefinitionSequence.append(channel)
    ecg = load_ecg(_dicom_bytes(ds), name="marker.dcm")
    assert ecg.leads == dicom_ecg.leads
    np.testing.assert_array_equal(ecg.signal, dicom_ecg.signal)
    dropped = "Pacing marker (arbitrary units: no Channel Sensitivity)"
    assert ecg.extra["dropped_channels"] == dropped
    # a sensitivity without its units is no such channel: still refused by name
    del rhythm.ChannelDefinitionSequence[2].ChannelSensitivityUnitsSequence
    with pytest.raises(EcgFormatError, match="channel 3 has no sensitivity or sensitivity units"):
        load_ecg(_dicom_bytes(ds), name="nounits.dcm")


# --- FHIR -----------------------------------------------------------------------------------

#: HL7 Germany TerminologieBasisDE ValueSet EkgAbleitungenVS (SNOMED CT codes of the leads),
#: as its tx.fhir.org expansion displays them.
SNOMED_LEADS = {
    "I": ("272729005", "Lead I"), "II": ("272730000", "Lead II"),
    "III": ("272731001", "Lead III"), "aVR": ("257474006", "aVR"),
    "aVL": ("257473000", "aVL"), "aVF": ("257472005", "aVF"),
    "V1": ("257475007", "Lead site V1"), "V2": ("257476008", "Lead site V2"),
    "V3": ("257477004", "Lead site V3"), "V4": ("257478009", "Lead site V4"),
    "V5": ("257479001", "Lead site V5"), "V6": ("257480003", "Lead site V6"),
}  # fmt: skip
PHR_LEADS = "http://hl7.org/fhir/uv/phr/CodeSystem/ecg-lead-codes"


@pytest.mark.parametrize("coding", ["SNOMED CT", "PHR lead codes"])
def test_fhir_lead_codes_of_published_value_sets(ptbxl_dir: Path, coding: str) -> None:
    # Lead components coded from the HL7 Germany SNOMED CT value set (V1 is "Lead site
    # V1"), or from the HL7 Personal Health Record IG's code system (the code is the lead
    # name, no display). Before, the first gave "site V1".."site V6" and the second
    # ch1..ch12: unknown leads, zero-filled in the 12-lead view.
    record = load_ecg(ptbxl_dir / "records500/00000/00003_hr")
    document = to_fhir_observation(record, patient_ref="Patient/p-7", observation_id="e")
    original = load_ecg(json.dumps(document).encode(), name="mdc.json")  # MDC lead codes
    components = [c for c in document["component"] if "valueSampledData" in c]
    for component, lead in zip(components, original.leads, strict=True):
        if coding == "SNOMED CT":
            code, display = SNOMED_LEADS[lead]
            component["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": code,
                                             "display": display}]}  # fmt: skip
        else:
            component["code"] = {"coding": [{"system": PHR_LEADS, "code": lead}]}
    ecg = load_ecg(json.dumps(document).encode(), name="observation.json")
    assert ecg.leads == original.leads == record.leads
    np.testing.assert_array_equal(ecg.signal, original.signal)


# --- WFDB -----------------------------------------------------------------------------------


def test_wfdb_uncalibrated_channel_is_dropped_and_named(ptbxl_dir: Path, tmp_path: Path) -> None:
    # WFDB header(5): "If the gain is zero or missing, this indicates that the signal
    # amplitude is uncalibrated". wfdb reads such a channel at 200 units per mV: PTB-XL's
    # V6 (1000 per mV) came out five times too tall, silently.
    source = ptbxl_dir / "records500" / "00000" / "00001_hr"
    original = load_ecg(source.with_suffix(".hea"))
    shutil.copy(source.with_suffix(".dat"), tmp_path / "00001_hr.dat")
    lines = source.with_suffix(".hea").read_text().splitlines()
    v6 = next(i for i, line in enumerate(lines) if line.endswith(" V6"))
    lines[v6] = lines[v6].replace(" 1000.0(0)/mV ", " 0(0)/mV ")
    header = tmp_path / "00001_hr.hea"
    header.write_text("\n".join(lines) + "\n")
    ecg = load_ecg(header)
    assert ecg.leads == original.leads[:-1]
    np.testing.assert_array_equal(ecg.signal, original.signal[:-1])
    assert ecg.extra["dropped_channels"] == "V6 (uncalibrated: ADC gain 0 or missing)"
    assert ecg.amplitude_assumed is None  # the kept channels are calibrated
    # gain 0 on every channel: all are read at WFDB's default of 200 units per mV
    # (header(5)), one scale for the record, and the record says so
    zeroed = [lines[0], *(line.replace(" 1000.0(0)/mV ", " 0(0)/mV ") for line in lines[1:])]
    header.write_text("\n".join(zeroed) + "\n")
    guessed = load_ecg(header)
    assert guessed.leads == original.leads and "dropped_channels" not in guessed.extra
    assert guessed.amplitude_assumed is not None and "no ADC gain" in guessed.amplitude_assumed
    np.testing.assert_allclose(guessed.signal, original.signal * 1000.0 / 200.0, rtol=1e-6)
    # no gain field at all (format only): the same, the channels without names
    header.write_text("\n".join([lines[0], *("00001_hr.dat 16" for _ in lines[1:13])]) + "\n")
    unnamed = load_ecg(header)
    assert unnamed.amplitude_assumed is not None and len(unnamed.leads) == 12
    np.testing.assert_allclose(unnamed.signal, guessed.signal, rtol=1e-6)
