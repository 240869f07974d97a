"""HL7 aECG reader on the HL7 ballot example, the schema-valid minimal file and variants of it.

Expected values are read from the XML text itself (regular expressions over the file), or
follow from physics (Einthoven's law holds between the stored leads I, II and III).
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from adapters import EcgFormatError, load_ecg
from adapters.hl7_values import parse_hl7_ts

EXAMPLE = "hl7_aecg/Example_aECG_HL7_2003-12.xml"
MINIMUM = "hl7_aecg/minimum_aecg.xml"


@pytest.fixture(scope="session")
def example_text(formats_dir: Path) -> str:
    return (formats_dir / EXAMPLE).read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def minimum_text(formats_dir: Path) -> str:
    return (formats_dir / MINIMUM).read_text(encoding="utf-8")


def _digits_after(text: str, code: str, occurrence: int = 0) -> np.ndarray:
    """The ``digits`` of the n-th sequence with lead ``code``, straight from the XML text."""
    pattern = rf'code="{code}".*?<digits>(.*?)</digits>'
    matches = re.findall(pattern, text, flags=re.DOTALL)
    return np.array(matches[occurrence].split(), dtype=float)


def test_example_rhythm_matches_the_digits_in_the_file(
    formats_dir: Path, example_text: str
) -> None:
    ecg = load_ecg(formats_dir / EXAMPLE)
    assert ecg.source.format == "hl7-aecg"
    # 12 leads, 10 s at 0.002 s increments
    assert ecg.fs == pytest.approx(500.0)
    assert ecg.signal.shape == (12, 5000)
    assert set(ecg.leads) == {
        "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
    }  # fmt: skip
    # origin 0 uV, scale 2.5 uV: physical = digits * 2.5 uV = digits * 0.0025 mV
    for code, lead in [("MDC_ECG_LEAD_I", "I"), ("MDC_ECG_LEAD_V3", "V3")]:
        digits = _digits_after(example_text, code)
        np.testing.assert_allclose(ecg.lead(lead), digits * 0.0025, atol=1e-6)


def test_example_obeys_einthoven(formats_dir: Path) -> None:
    ecg = load_ecg(formats_dir / EXAMPLE)
    lead_i, lead_ii, lead_iii = ecg.lead("I"), ecg.lead("II"), ecg.lead("III")
    # stored independently in the file; 1 LSB = 2.5 uV of rounding allowed
    assert np.abs(lead_iii - (lead_ii - lead_i)).max() <= 0.0025 * 1.01
    assert np.abs(ecg.lead("aVR") + (lead_i + lead_ii) / 2).max() <= 0.0025 * 1.51


def test_example_metadata(formats_dir: Path) -> None:
    ecg = load_ecg(formats_dir / EXAMPLE)
    assert ecg.start_time == datetime(2002, 11, 22, 9, 10, 0)
    assert ecg.patient_id == "SBJ-123"
    assert ecg.device is not None
    assert "ELI250" in ecg.device and "Mortara" in ecg.device
    # the machine's rhythm annotation (MDC_ECG_RHY_SINUS_RHY, displayName "Sinus Rhythm")
    assert "Sinus Rhythm" in ecg.statements
    assert ecg.extra["MDC_ECG_TIME_PD_QTc"] == "443 ms"


def test_example_median_beats(formats_dir: Path, example_text: str) -> None:
    ecg = load_ecg(formats_dir / EXAMPLE)
    beats = ecg.median_beats
    assert beats is not None
    derived = example_text[example_text.index("<derivedSeries>") :]
    n_samples = len(_digits_after(derived, "MDC_ECG_LEAD_I"))
    assert beats.signal.shape == (12, n_samples)
    assert beats.fs == pytest.approx(500.0)
    assert beats.signal.dtype == np.float32
    np.testing.assert_allclose(
        beats.signal[beats.leads.index("II")],
        _digits_after(derived, "MDC_ECG_LEAD_II") * 0.0025,
        atol=1e-6,
    )


def test_minimum_file(formats_dir: Path, minimum_text: str) -> None:
    ecg = load_ecg(formats_dir / MINIMUM)
    digits = _digits_after(minimum_text, "MDC_ECG_LEAD_II")
    assert ecg.leads == ("II",)
    assert ecg.fs == pytest.approx(500.0)
    np.testing.assert_allclose(ecg.signal[0], digits * 0.0025, atol=1e-6)
    assert ecg.median_beats is None
    assert ecg.patient_id == "SBJ-123"
    assert ecg.start_time == datetime(2002, 11, 22, 9, 10, 0)


def _time_component(text: str) -> str:
    match = re.search(
        r"<component>\s*<sequence>\s*<code code=\"TIME_ABSOLUTE\".*?</component>", text, re.S
    )
    assert match is not None
    return match.group(0)


def test_time_sequence_in_any_position(minimum_text: str) -> None:
    time_part = _time_component(minimum_text)
    moved = minimum_text.replace(time_part, "").replace(
        "</sequenceSet>", time_part + "</sequenceSet>"
    )
    assert moved.index("TIME_ABSOLUTE") > moved.index("MDC_ECG_LEAD_II")
    original = load_ecg(minimum_text.encode(), name="minimum")
    reordered = load_ecg(moved.encode(), name="moved")
    assert reordered.fs == original.fs
    np.testing.assert_array_equal(reordered.signal, original.signal)


def test_glist_pq_relative_time_in_ms(minimum_text: str) -> None:
    relative = minimum_text.replace('code="TIME_ABSOLUTE"', 'code="TIME_RELATIVE"').replace(
        '<value xsi:type="GLIST_TS">\n\t\t\t\t\t\t\t\t<head value="20021122091000"/>\n'
        '\t\t\t\t\t\t\t\t<increment value="0.002" unit="s"/>',
        '<value xsi:type="GLIST_PQ"><head value="0" unit="ms"/><increment value="4" unit="ms"/>',
    )
    assert "GLIST_PQ" in relative
    ecg = load_ecg(relative.encode(), name="relative")
    assert ecg.fs == pytest.approx(250.0)
    # no absolute time in the sequence: the series effectiveTime gives the start
    assert ecg.start_time == datetime(2002, 11, 22, 9, 10, 0)


@pytest.mark.parametrize(("unit", "scale"), [("uV", "2.5"), ("mV", "0.0025"), ("V", "0.0000025")])
def test_amplitude_units_convert_to_millivolts(minimum_text: str, unit: str, scale: str) -> None:
    variant = minimum_text.replace(
        '<scale value="2.5" unit="uV"/>', f'<scale value="{scale}" unit="{unit}"/>'
    )
    ecg = load_ecg(variant.encode(), name=f"scale-{unit}")
    digits = _digits_after(minimum_text, "MDC_ECG_LEAD_II")
    np.testing.assert_allclose(ecg.signal[0], digits * 0.0025, atol=1e-7)


def test_origin_is_added(minimum_text: str) -> None:
    variant = minimum_text.replace(
        '<origin value="0" unit="uV"/>', '<origin value="100" unit="uV"/>'
    )
    ecg = load_ecg(variant.encode(), name="origin")
    digits = _digits_after(minimum_text, "MDC_ECG_LEAD_II")
    np.testing.assert_allclose(ecg.signal[0], digits * 0.0025 + 0.1, atol=1e-6)


def test_slist_int_is_read_as_microvolts(minimum_text: str) -> None:
    variant = (
        minimum_text.replace('xsi:type="SLIST_PQ"', 'xsi:type="SLIST_INT"')
        .replace('<origin value="0" unit="uV"/>', '<origin value="0"/>')
        .replace('<scale value="2.5" unit="uV"/>', '<scale value="5"/>')
    )
    ecg = load_ecg(variant.encode(), name="slist-int")
    digits = _digits_after(minimum_text, "MDC_ECG_LEAD_II")
    np.testing.assert_allclose(ecg.signal[0], digits * 0.005, atol=1e-6)
    assert "amplitude_unit_assumed" in ecg.extra


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'unit="uV"/>\n\t\t\t\t\t\t\t\t<digits>',
            'unit="furlong"/>\n\t\t\t\t\t\t\t\t<digits>',
            "unit",
        ),
        ('<increment value="0.002" unit="s"/>', '<increment value="0" unit="s"/>', "increment"),
        ('<increment value="0.002" unit="s"/>', '<increment value="fast" unit="s"/>', "number"),
        ("-2 -2 -2 -2 -3", "-2 -2 x -2 -3", "digits"),
        ('code="TIME_ABSOLUTE"', 'code="SOMETHING_ELSE"', "time sequence"),
        ('<code code="RHYTHM" codeSystem="2.16.840.1.113883.5.4"/>', "", "sequence"),
    ],
)
def test_broken_variants_raise_a_clear_error(
    minimum_text: str, old: str, new: str, message: str
) -> None:
    if old.startswith('<code code="RHYTHM"'):
        # no RHYTHM code and no sequences: the only series holds nothing usable
        variant = re.sub(
            r"<sequenceSet>.*</sequenceSet>", "<sequenceSet/>", minimum_text, flags=re.S
        )
    else:
        assert old in minimum_text
        variant = minimum_text.replace(old, new, 1)
    with pytest.raises(EcgFormatError) as info:
        load_ecg(variant.encode(), name="variant.xml")
    assert str(info.value).startswith("variant.xml: ")
    assert message in str(info.value).lower()


def test_truncated_file_names_input_and_line(formats_dir: Path) -> None:
    data = (formats_dir / EXAMPLE).read_bytes()
    with pytest.raises(EcgFormatError) as info:
        load_ecg(data[: len(data) // 3], name="cut.xml")
    message = str(info.value)
    assert message.startswith("cut.xml: ")
    # truncated XML is first reported as an aECG error (sniffed by its root element)
    assert "line" in message


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE AnnotatedECG [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<AnnotatedECG xmlns="urn:hl7-org:v3"><title>&lol9;</title></AnnotatedECG>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE AnnotatedECG [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<AnnotatedECG xmlns="urn:hl7-org:v3"><title>&xxe;</title></AnnotatedECG>
"""


@pytest.mark.parametrize("payload", [BILLION_LAUGHS, XXE, BILLION_LAUGHS.decode().encode("utf-16")])
def test_entity_declarations_are_refused(payload: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(EcgFormatError) as info:
        load_ecg(payload, format="hl7-aecg", name="bomb.xml")
    assert "entit" in str(info.value).lower()
    assert "root:" not in str(info.value)  # nothing from /etc/passwd leaks into the message
    assert time.perf_counter() - started < 5  # refused, not expanded


def test_external_dtd_is_not_fetched(minimum_text: str) -> None:
    # A DOCTYPE pointing at a network DTD is ignored (no_network, load_dtd=False), not fetched.
    with_dtd = minimum_text.replace(
        "<AnnotatedECG ",
        '<!DOCTYPE AnnotatedECG SYSTEM "http://192.0.2.1/aecg.dtd">\n<AnnotatedECG ',
        1,
    )
    ecg = load_ecg(with_dtd.encode(), name="dtd.xml")
    assert ecg.leads == ("II",)


def test_root_without_hl7_namespace_is_not_sniffed_as_aecg(minimum_text: str) -> None:
    variant = minimum_text.replace('xmlns="urn:hl7-org:v3" ', "")
    with pytest.raises(EcgFormatError, match="not a recognised"):
        load_ecg(variant.encode(), name="nons.xml")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20021122091000", datetime(2002, 11, 22, 9, 10, 0)),
        ("20021122091000.123", datetime(2002, 11, 22, 9, 10, 0, 123000)),
        ("200211220737", datetime(2002, 11, 22, 7, 37)),
        ("20021122", datetime(2002, 11, 22)),
        ("20021322", None),
        ("not a time", None),
        (None, None),
    ],
)
def test_hl7_timestamps(value: str | None, expected: datetime | None) -> None:
    assert parse_hl7_ts(value) == expected


def test_hl7_timestamp_with_zone() -> None:
    moment = parse_hl7_ts("20021122091000-0500")
    assert moment is not None and moment.utcoffset() is not None
    assert moment.utcoffset().total_seconds() == -5 * 3600  # type: ignore[union-attr]


INTERPRETATION = """
<subjectOf><annotationSet>
  <component><annotation>
    <code code="MDC_ECG_INTERPRETATION" codeSystem="2.16.840.1.113883.6.24"/>
    <component><annotation>
      <code code="MDC_ECG_INTERPRETATION_STATEMENT" codeSystem="2.16.840.1.113883.6.24"/>
      <value xsi:type="ST">Sinus rhythm</value>
    </annotation></component>
    <component><annotation>
      <code code="MDC_ECG_INTERPRETATION_STATEMENT" codeSystem="2.16.840.1.113883.6.24"/>
      <value xsi:type="ST">Left axis deviation</value>
    </annotation></component>
  </annotation></component>
  <component><annotation>
    <code code="MDC_ECG_HEART_RATE" codeSystem="2.16.840.1.113883.6.24"/>
    <value xsi:type="PQ" value="72" unit="bpm"/>
  </annotation></component>
</annotationSet></subjectOf>
"""


def test_interpretation_statements_and_measurements(minimum_text: str) -> None:
    # the layout GE and Philips aECG exports use for machine statements
    variant = minimum_text.replace("</series>", INTERPRETATION + "</series>")
    ecg = load_ecg(variant.encode(), name="interpreted.xml")
    assert ecg.statements == ("Sinus rhythm", "Left axis deviation")
    assert ecg.extra["MDC_ECG_HEART_RATE"] == "72 bpm"


def test_split_sequence_sets_are_merged(example_text: str) -> None:
    """Leads spread over two simultaneous sequence sets (same time axis) are one recording."""
    rhythm = example_text[: example_text.index("<derivation>")]
    time_part = _time_component(rhythm)
    lead_iii = rhythm.index("<component>", rhythm.index('code="MDC_ECG_LEAD_V6"'))
    split = (
        rhythm[:lead_iii]
        + "</sequenceSet></component><component><sequenceSet>"
        + time_part
        + rhythm[lead_iii:]
    )
    variant = split + example_text[example_text.index("<derivation>") :]
    assert variant.count("<sequenceSet>") == example_text.count("<sequenceSet>") + 1
    merged = load_ecg(variant.encode(), name="split.xml")
    original = load_ecg(example_text.encode(), name="original.xml")
    assert merged.leads == original.leads
    np.testing.assert_array_equal(merged.signal, original.signal)


def _shorten_lead(text: str, code: str, keep: int | None = None, drop: int = 0) -> str:
    """The text with the first ``digits`` of lead ``code`` cut to ``keep`` values (or
    ``drop`` fewer)."""
    pattern = re.compile(rf'(code="{code}".*?<digits>)(.*?)(</digits>)', re.DOTALL)
    match = pattern.search(text)
    assert match is not None
    values = match.group(2).split()
    kept = values[:keep] if keep is not None else values[: len(values) - drop]
    return text[: match.start(2)] + " ".join(kept) + text[match.end(2) :]


def test_a_lead_with_half_its_samples_missing_is_refused(example_text: str) -> None:
    full = _digits_after(example_text, "MDC_ECG_LEAD_V1").size
    cut = _shorten_lead(example_text, "MDC_ECG_LEAD_V1", keep=full // 2)
    with pytest.raises(EcgFormatError, match=rf"differ in length \(V1 {full // 2} of {full}"):
        load_ecg(cut.encode(), name="cut")


def test_a_lead_one_sample_short_is_read_cut_to_the_common_length(example_text: str) -> None:
    original = load_ecg(example_text.encode(), name="example")
    cut = load_ecg(_shorten_lead(example_text, "MDC_ECG_LEAD_V1", drop=1).encode(), name="short")
    assert cut.leads == original.leads
    assert cut.n_samples == original.n_samples - 1
    np.testing.assert_array_equal(cut.signal, original.signal[:, :-1])
    assert "truncated_to_common_length" in str(cut.extra)


@pytest.mark.parametrize("code", ["MDC_ECG_LEAD_-aVR", "MDC_ECG_LEAD_aVRneg"])
def test_inverted_avr_keeps_its_sign(example_text: str, code: str) -> None:
    # Before, "MDC_ECG_LEAD_-aVR" lost its minus sign and the inverted lead was read as aVR.
    original = load_ecg(example_text.encode(), name="example")
    variant = example_text.replace('code="MDC_ECG_LEAD_AVR"', f'code="{code}"')
    ecg = load_ecg(variant.encode(), name="cabrera.xml")
    assert "aVR" not in ecg.leads
    index = original.leads.index("aVR")
    assert ecg.leads[index] == "-aVR"
    np.testing.assert_array_equal(ecg.signal, original.signal)


def test_a_file_of_representative_beats_only_is_refused(minimum_text: str) -> None:
    # Before, with no RHYTHM series the first series was read whatever it was: one
    # averaged beat became "the recording" (noted only as extra["series_code"]).
    beats = minimum_text.replace('code="RHYTHM"', 'code="REPRESENTATIVE_BEAT"')
    with pytest.raises(EcgFormatError, match="only representative-beat series") as info:
        load_ecg(beats.encode(), name="beats.xml")
    assert str(info.value).startswith("beats.xml: ")
    other = minimum_text.replace('code="RHYTHM"', 'code="OTHER"')
    assert load_ecg(other.encode(), name="other.xml").extra["series_code"] == "OTHER"


def test_leads_under_codes_we_do_not_read_are_named(minimum_text: str) -> None:
    # Before: "the series holds no lead sequences", not saying that there were some.
    variant = minimum_text.replace('code="MDC_ECG_LEAD_II"', 'code="VENDOR_LEAD_II"')
    with pytest.raises(EcgFormatError, match=r"sequence codes: VENDOR_LEAD_II\) \(leads are"):
        load_ecg(variant.encode(), name="vendor.xml")


def test_unreadable_median_beats_are_skipped_not_the_rhythm(example_text: str) -> None:
    # Before, a problem in the derived (representative beat) series refused the whole file.
    original = load_ecg(example_text.encode(), name="example")
    at = example_text.index("<derivation>")
    scale = example_text.index('<scale value="', at)
    unit = example_text.index('unit="', scale) + len('unit="')
    end = example_text.index('"', unit)
    text = example_text[:unit] + "furlong" + example_text[end:]
    ecg = load_ecg(text.encode(), name="median.xml")
    np.testing.assert_array_equal(ecg.signal, original.signal)
    assert ecg.median_beats is None and "furlong" in ecg.extra["median_beats_skipped"]
