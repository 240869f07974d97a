"""Philips PageWriter/TraceMaster XML reader on real 1.03 and 1.04 files.

References: ``sierraecg.read_file`` (the package's own end-to-end reader) for the decoded
samples, Einthoven's and Goldberger's laws for the reconstructed limb leads, and the
cart's 1 mV calibration pulse for the amplitude units.
"""

from __future__ import annotations

import base64
import re
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import sierraecg
from hypothesis import given, settings
from hypothesis import strategies as st
from sierraecg.xli import xli_decode_deltas

from adapters import STANDARD_LEADS, EcgFormatError, load_ecg
from adapters.philips_xli import xli_undo_deltas

FILES = ["philips_xml/129DYPRG.XML", "philips_xml/3191723_ZZDEMOPTONLY_1-04_orig.xml"]
V103, V104 = FILES


def _text(path: Path) -> str:
    data = path.read_bytes()
    return data.decode("utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else data.decode("utf-8")


@pytest.fixture(scope="module")
def loaded(formats_dir: Path) -> dict[str, object]:
    return {relative: load_ecg(formats_dir / relative) for relative in FILES}


@pytest.mark.parametrize("relative", FILES)
def test_standard_leads_in_millivolts(loaded: dict, relative: str) -> None:
    ecg = loaded[relative]
    assert ecg.source.format == "philips-xml"
    assert ecg.leads == STANDARD_LEADS
    assert ecg.fs == pytest.approx(500.0)
    assert ecg.signal.dtype == np.float32
    assert 10.0 <= ecg.duration_s <= 11.0
    # the cart's calibration pulse at the end of the record is exactly 1 mV
    assert float(ecg.extra["calibration_pulse_mv"]) == pytest.approx(1.0)
    assert 0.2 < float(np.abs(ecg.signal).max()) < 6.0


@pytest.mark.parametrize("relative", FILES)
def test_samples_match_sierraecg(formats_dir: Path, loaded: dict, relative: str) -> None:
    ecg = loaded[relative]
    reference = sierraecg.read_file(str(formats_dir / relative))
    text = _text(formats_dir / relative)
    resolution = re.search(r'resolution="(\d+(?:\.\d+)?)"|<signalresolution>(.*?)<', text)
    assert resolution is not None
    uv_per_bit = float(resolution.group(1) or resolution.group(2))
    for lead in reference.leads:
        expected = lead.samples[: ecg.n_samples].astype(float) * uv_per_bit / 1000.0
        np.testing.assert_allclose(ecg.lead(lead.label), expected, atol=1e-6)


@pytest.mark.parametrize("relative", FILES)
def test_reconstructed_limb_leads_obey_einthoven(loaded: dict, relative: str) -> None:
    ecg = loaded[relative]
    lead_i, lead_ii = ecg.lead("I"), ecg.lead("II")
    lsb = 0.005  # 5 uV per bit in both files
    # exact up to the cart's rounding of the residuals: a few LSB
    assert np.abs(ecg.lead("III") - (lead_ii - lead_i)).max() <= 3 * lsb
    assert np.abs(ecg.lead("aVR") + (lead_i + lead_ii) / 2).max() <= 3 * lsb
    assert np.abs(ecg.lead("aVL") - (lead_i - lead_ii / 2)).max() <= 3 * lsb
    assert np.abs(ecg.lead("aVF") - (lead_ii - lead_i / 2)).max() <= 3 * lsb


def test_calibration_tail_is_cut(loaded: dict) -> None:
    # durationperchannel is 11000 ms (5500 samples); the identical-in-all-leads tail goes
    for relative in FILES:
        ecg = loaded[relative]
        assert ecg.n_samples + int(ecg.extra["trimmed_calibration_samples"]) == 5500
        # what remains is ECG: no two limb leads identical at the end
        assert not np.array_equal(ecg.lead("I")[-50:], ecg.lead("V1")[-50:])


@pytest.mark.parametrize("relative", FILES)
def test_statements_from_the_interpretation(formats_dir: Path, loaded: dict, relative: str) -> None:
    ecg = loaded[relative]
    text = _text(formats_dir / relative)
    interpretation = text[text.rindex("<interpretation ") :]
    expected = re.findall(r"<leftstatement>(.*?)</leftstatement>", interpretation, re.S)
    assert expected
    unescaped = [
        s.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&") for s in expected
    ]
    for statement in unescaped:
        assert statement.strip() in ecg.statements
    assert "ABNORMAL ECG" in ecg.statements  # the severity line


def test_104_statements_are_the_final_ones_not_the_analysis_drafts(loaded: dict) -> None:
    ecg = loaded[V104]
    assert "PROBABLE LEFT VENTRICULAR HYPERTROPHY" in ecg.statements
    assert "LEFT VENTRICULAR HYPERTROPHY" not in ecg.statements  # <lhsstatement> draft
    assert ecg.extra["statement_codes"].split() == ["SR", "LVHCNP", "STELVH"]


def test_metadata(loaded: dict) -> None:
    old, new = loaded[V103], loaded[V104]
    assert old.patient_id == "1112010721168bdc"
    assert old.start_time == datetime(2011, 12, 1, 7, 27, 34)
    assert old.device == "Philips HeartstartMRx"
    assert new.patient_id == "9999"
    assert new.start_time == datetime(2010, 1, 19, 15, 19, 22)
    assert new.device is not None and "PageWriter" in new.device


def test_median_beats_of_104(formats_dir: Path, loaded: dict) -> None:
    ecg = loaded[V104]
    beats = ecg.median_beats
    assert beats is not None
    assert beats.leads == STANDARD_LEADS
    assert beats.fs == pytest.approx(500.0)
    reference = sierraecg.read_file(str(formats_dir / V104), include_repbeats=True).repbeats
    n = beats.signal.shape[1]
    for lead in STANDARD_LEADS:
        raw = reference[lead].samples.astype(float)
        assert (raw[n:] == 32767).all()  # what was cut is the padding sentinel
        np.testing.assert_allclose(
            beats.signal[beats.leads.index(lead)], raw[:n] * 2.5 / 1000, atol=1e-6
        )
    # a median QRS is about as tall as the rhythm's
    rhythm_peak = float(np.abs(ecg.lead("V3")).max())
    median_peak = float(np.abs(beats.signal[beats.leads.index("V3")]).max())
    assert 0.5 * rhythm_peak < median_peak < 1.5 * rhythm_peak


def test_103_file_has_no_median_beats(loaded: dict) -> None:
    assert loaded[V103].median_beats is None


def _with_first_chunk_size(text: str, size: int) -> str:
    match = re.search(r"(<parsedwaveforms[^>]*>)(.*?)(</parsedwaveforms>)", text, re.S)
    assert match is not None
    data = bytearray(base64.b64decode(re.sub(r"\s+", "", match.group(2))))
    data[0:4] = size.to_bytes(4, "little", signed=True)
    encoded = base64.b64encode(bytes(data)).decode()
    return text[: match.start(2)] + encoded + text[match.end(2) :]


@pytest.mark.parametrize("size", [-8, 0, 10**9])
def test_corrupt_xli_chunk_size_fails_fast(formats_dir: Path, size: int) -> None:
    # sierraecg.xli.xli_decode would loop forever on a chunk size of -8
    corrupt = _with_first_chunk_size(_text(formats_dir / V103), size)
    started = time.perf_counter()
    with pytest.raises(EcgFormatError, match="XLI") as info:
        load_ecg(corrupt.encode("utf-8"), name="xli.xml")
    assert str(info.value).startswith("xli.xml: ")
    assert time.perf_counter() - started < 5


def test_unsupported_version_is_refused(formats_dir: Path) -> None:
    text = _text(formats_dir / V103).replace(
        "<documentversion>1.03</documentversion>", "<documentversion>9.99</documentversion>"
    )
    with pytest.raises(EcgFormatError, match=r"9\.99"):
        load_ecg(text.encode("utf-8"), name="future.xml")


def test_utf16_file_is_detected_from_bytes(formats_dir: Path) -> None:
    data = (formats_dir / V104).read_bytes()
    assert data[:2] == b"\xff\xfe"  # the 1.04 sample is UTF-16
    ecg = load_ecg(data, name="upload")
    assert ecg.source.format == "philips-xml"
    assert ecg.source.uri is None


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    n=st.integers(min_value=2, max_value=64),  # the reader refuses fewer than 2 samples
    first=st.integers(min_value=-100, max_value=100),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_vectorised_deltas_equal_sierraecg(n: int, first: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    high = rng.choice([0, 255], n)  # small signed values, as real XLI deltas are
    low = rng.integers(0, 256, n)
    buffer = [int(v) for v in np.concatenate((high, low))]
    try:
        expected = np.asarray(xli_decode_deltas(list(buffer), first), dtype=np.int64)
    except OverflowError:  # the reference's int16 array overflowed: not a valid file
        return
    np.testing.assert_array_equal(xli_undo_deltas(np.asarray(buffer), first), expected)


def test_waveform_rate_wins_over_the_acquisition_rate(formats_dir: Path, loaded: dict) -> None:
    # parsedwaveforms says samplespersecond="500"; a cart that acquires at 1000 Hz and
    # stores 500 Hz writes 1000 in signalcharacteristics. Reading the 5500 stored samples
    # as 1000 Hz halved the duration and doubled every rate (before: fs 1000.0).
    text = _text(formats_dir / V104).replace(
        "<samplingrate>500</samplingrate>", "<samplingrate>1000</samplingrate>", 1
    )
    ecg = load_ecg(text.encode("utf-16"), name="acquired-at-1000.xml")
    assert ecg.fs == 500.0
    np.testing.assert_array_equal(ecg.signal, loaded[V104].signal)


def test_stored_samples_must_fill_the_declared_duration(formats_dir: Path) -> None:
    # 1.03 has only signalcharacteristics/samplingrate: a wrong one there (1000 for the
    # 500 Hz data) left 5500 samples per lead for 11000 ms at 1000 Hz and was read as a
    # 5.3 s record at 1000 Hz (before); the decoded length now has to match.
    text = _text(formats_dir / V103).replace(
        "<samplingrate>500</samplingrate>", "<samplingrate>1000</samplingrate>", 1
    )
    with pytest.raises(EcgFormatError, match="11000 ms") as info:
        load_ecg(text.encode("utf-8"), name="wrong-rate.xml")
    assert str(info.value).startswith("wrong-rate.xml: ")


def _with_waveform(
    text: str, samples: np.ndarray | None, attributes: dict[str, str], body: str | None = None
) -> str:
    """The file with its parsedwaveforms replaced by ``samples`` (leads x n, int16,
    lead after lead, uncompressed; or the element's text ``body`` as given) and the given
    attributes set on the element."""
    match = re.search(r"<parsedwaveforms([^>]*)>(.*?)</parsedwaveforms>", text, re.S)
    assert match is not None
    head = match.group(1)
    for key, value in attributes.items():
        head, found = re.subn(rf'\b{key}="[^"]*"', f'{key}="{value}"', head)
        if not found:
            head += f' {key}="{value}"'
    assert (samples is None) != (body is None)
    encoded = body or base64.b64encode(np.asarray(samples).astype("<i2").tobytes()).decode()
    return (
        text[: match.start()]
        + f"<parsedwaveforms{head}>{encoded}</parsedwaveforms>"
        + (text[match.end() :])
    )


def _stored_leads(formats_dir: Path, relative: str) -> np.ndarray:
    """The file's 12 leads as 16-bit sample values, untrimmed (sierraecg's decoding)."""
    leads = sierraecg.read_file(str(formats_dir / relative)).leads
    return np.stack([np.asarray(lead.samples, dtype=np.int64) for lead in leads[:12]])


@pytest.mark.parametrize(
    ("relative", "attributes"),
    [
        (V103, {"compressflag": "False"}),  # 1.03: the method stays named, the flag says no
        (V104, {"compression": "Uncompressed"}),
    ],
)
def test_uncompressed_leads_are_taken_as_stored(
    formats_dir: Path, loaded: dict, relative: str, attributes: dict[str, str]
) -> None:
    # Only XLI stores III, aVR, aVL and aVF as residuals against I and II. Before, the
    # residual formulas were applied to uncompressed data too, so those four leads came
    # out as III' = II - I - III and so on: wrong leads, silently.
    samples = _stored_leads(formats_dir, relative)
    text = _with_waveform(_text(formats_dir / relative), samples, attributes)
    ecg = load_ecg(text.encode("utf-16"), name="uncompressed.xml")
    assert ecg.leads == STANDARD_LEADS
    np.testing.assert_array_equal(ecg.signal, loaded[relative].signal)


#: How each version says "not compressed" (1.03 keeps the method named, the flag says no).
UNCOMPRESSED = {V103: {"compressflag": "False"}, V104: {"compression": "Uncompressed"}}


@pytest.mark.parametrize("relative", FILES)
@pytest.mark.parametrize("encoding", ["Plain", "Hex"])
def test_plain_and_hex_encodings_of_the_schemas(
    formats_dir: Path, loaded: dict, relative: str, encoding: str
) -> None:
    # TYPEdataencoding in the 1.03 and 1.04.01 schemas is Plain, Base64 or Hex; Sierra ECG
    # Tools' preprocessors write a decoded file as Plain (decimal values lead after lead, 25
    # a line, compressflag False). Before, both were refused ("encoding 'Plain' is not
    # supported").
    text = _text(formats_dir / relative)
    if encoding == "Plain":
        samples = _stored_leads(formats_dir, relative)
        lines = [row[i : i + 25] for row in samples for i in range(0, row.size, 25)]
        body = "\n".join(" ".join(str(value) for value in line) for line in lines)
        attributes = {"dataencoding": "Plain", **UNCOMPRESSED[relative]}
    else:  # the same XLI bytes, written as hex digits
        match = re.search(r"<parsedwaveforms[^>]*>(.*?)</parsedwaveforms>", text, re.S)
        assert match is not None
        body = base64.b64decode(re.sub(r"\s+", "", match.group(1))).hex().upper()
        attributes = {"dataencoding": "Hex"}
    variant = _with_waveform(text, None, attributes, body=body)
    ecg = load_ecg(variant.encode("utf-16"), name=f"{encoding}.xml")
    assert ecg.leads == STANDARD_LEADS
    np.testing.assert_array_equal(ecg.signal, loaded[relative].signal)


@pytest.mark.parametrize("token", ["1.5", "inf", "1e30"])
def test_plain_values_that_are_not_integers_are_refused(formats_dir: Path, token: str) -> None:
    # inf and 1e30 passed an integer test and wrapped to -2**63 in int64 before this check
    body = " ".join([token] * 12 * 5500)
    attributes = {"dataencoding": "Plain", **UNCOMPRESSED[V104]}
    variant = _with_waveform(_text(formats_dir / V104), None, attributes, body=body)
    with pytest.raises(EcgFormatError, match=r"^half\.xml: parsedwaveforms \(Plain\) holds values"):
        load_ecg(variant.encode("utf-16"), name="half.xml")


@pytest.mark.parametrize(
    "attribute", ['signalsigned="False"', 'signaloffset="2048"', 'bitspersample="12"']
)
def test_unsigned_or_offset_samples_are_refused(formats_dir: Path, attribute: str) -> None:
    # Before: ignored, so unsigned samples around 2048 were read as a 10 mV offset.
    key, value = attribute.split("=")
    text = _with_waveform(
        _text(formats_dir / V104),
        _stored_leads(formats_dir, V104),
        {"compression": "Uncompressed", key: value.strip('"')},
    )
    with pytest.raises(EcgFormatError, match=rf"coded as {key} '{value.strip(chr(34))}'") as info:
        load_ecg(text.encode("utf-16"), name="unsigned.xml")
    assert str(info.value).startswith("unsigned.xml: ")


def test_104_resolution_from_signalcharacteristics(formats_dir: Path, loaded: dict) -> None:
    # 1.04 writes signalcharacteristics/resolution (1.03: signalresolution). Before, a 1.04
    # file without the parsedwaveforms resolution attribute was refused as "missing".
    text = _text(formats_dir / V104)
    assert "<resolution>5</resolution>" in text
    variant = re.sub(r'(<parsedwaveforms[^>]*?) resolution="5"', r"\1", text, count=1)
    assert variant != text
    ecg = load_ecg(variant.encode("utf-16"), name="no-attribute.xml")
    np.testing.assert_array_equal(ecg.signal, loaded[V104].signal)


@pytest.mark.parametrize(("count", "labels"), [("12", "I II III"), ("0", None)])
def test_lead_count_and_labels_must_agree(formats_dir: Path, count: str, labels: str) -> None:
    # Before: 3 labels for 12 leads read 3 leads and dropped 9 without a word; a count of 0
    # failed as "unreadable (ValueError: min() arg is an empty sequence)".
    text = _text(formats_dir / V104).replace('numberofleads="12"', f'numberofleads="{count}"')
    if labels is not None:
        text = re.sub(r'leadlabels="[^"]*"', f'leadlabels="{labels}"', text, count=1)
    with pytest.raises(EcgFormatError, match=f"numberofleads {count} but leadlabels") as info:
        load_ecg(text.encode("utf-16"), name="labels.xml")
    assert str(info.value).startswith("labels.xml: ")


def test_unreadable_median_beats_are_skipped_not_the_rhythm(
    formats_dir: Path, loaded: dict
) -> None:
    # Before, a representative-beat resolution that is not a number refused the file.
    text = _text(formats_dir / V104).replace(
        'samplespersec="500" resolution="2.5"', 'samplespersec="500" resolution="fine"'
    )
    ecg = load_ecg(text.encode("utf-16"), name="median.xml")
    np.testing.assert_array_equal(ecg.signal, loaded[V104].signal)
    assert ecg.median_beats is None and "fine" in ecg.extra["median_beats_skipped"]
