"""load_ecg: format detection from content (never the file name), size limits, unknown input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adapters import EcgFormatError, available_formats, load_ecg

#: Single-file samples and the format their content must be detected as.
SINGLE_FILE = [
    ("hl7_aecg/Example_aECG_HL7_2003-12.xml", "hl7-aecg"),
    ("hl7_aecg/minimum_aecg.xml", "hl7-aecg"),
    ("ge_muse_xml/muse-sinus.xml", "ge-muse-xml"),
    ("philips_xml/129DYPRG.XML", "philips-xml"),
    ("philips_xml/3191723_ZZDEMOPTONLY_1-04_orig.xml", "philips-xml"),
]
MISLEADING_NAMES = ["record.dcm", "record.json", "record.hea", "no_extension", "ECG.XML.bak"]
#: Every sample under two misleading names (all names covered, Philips decoding kept cheap).
MISLEADING = [
    (relative, expected, MISLEADING_NAMES[(i + shift) % len(MISLEADING_NAMES)])
    for i, (relative, expected) in enumerate(SINGLE_FILE)
    for shift in (0, 2)
]


def test_xml_formats_are_registered() -> None:
    assert {"hl7-aecg", "ge-muse-xml", "philips-xml"} <= set(available_formats())


@pytest.mark.parametrize(("relative", "expected", "misleading"), MISLEADING)
def test_detection_ignores_the_file_name(
    formats_dir: Path, tmp_path: Path, relative: str, expected: str, misleading: str
) -> None:
    copy = tmp_path / misleading
    shutil.copyfile(formats_dir / relative, copy)
    ecg = load_ecg(copy)
    assert ecg.source.format == expected
    assert ecg.source.uri == str(copy)


@pytest.mark.parametrize(("relative", "expected"), SINGLE_FILE)
def test_detection_from_bytes(formats_dir: Path, relative: str, expected: str) -> None:
    data = (formats_dir / relative).read_bytes()
    ecg = load_ecg(data)
    assert ecg.source.format == expected
    assert ecg.source.uri is None
    # the same bytes give the same record whichever way they arrive
    from_path = load_ecg(formats_dir / relative)
    assert ecg.source.sha256 == from_path.source.sha256
    assert (ecg.signal == from_path.signal).all()


@pytest.mark.parametrize(("relative", "expected"), SINGLE_FILE)
def test_each_format_refuses_the_others(formats_dir: Path, relative: str, expected: str) -> None:
    data = (formats_dir / relative).read_bytes()
    for other in ("hl7-aecg", "ge-muse-xml", "philips-xml"):
        if other == expected:
            continue
        with pytest.raises(EcgFormatError) as info:
            load_ecg(data, format=other, name="forced.xml")
        assert str(info.value).startswith("forced.xml: ")


def test_unknown_content_names_the_input(tmp_path: Path) -> None:
    path = tmp_path / "notes.xml"
    path.write_text('<?xml version="1.0"?><shopping><item>milk</item></shopping>')
    with pytest.raises(EcgFormatError) as info:
        load_ecg(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "not a recognised ECG format" in message
    for name in ("hl7-aecg", "ge-muse-xml", "philips-xml"):
        assert name in message  # the hint lists what is supported


def test_unknown_format_name(formats_dir: Path) -> None:
    with pytest.raises(EcgFormatError, match="unknown format 'scp-ecg-v9'"):
        load_ecg(formats_dir / "hl7_aecg/minimum_aecg.xml", format="scp-ecg-v9")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EcgFormatError, match="no such file"):
        load_ecg(tmp_path / "absent.xml")


@pytest.mark.parametrize(("relative", "_format"), SINGLE_FILE[:3])
def test_over_size_file_is_refused_before_reading(
    formats_dir: Path, relative: str, _format: str
) -> None:
    path = formats_dir / relative
    size = path.stat().st_size
    with pytest.raises(EcgFormatError) as info:
        load_ecg(path, max_bytes=size - 1)
    assert str(info.value).startswith(str(path))
    assert f"{size} bytes" in str(info.value) and "limit" in str(info.value)
    assert load_ecg(path, max_bytes=size).n_samples > 0  # exactly at the limit is fine


def test_over_size_bytes_are_refused(formats_dir: Path) -> None:
    data = (formats_dir / "ge_muse_xml/muse-sinus.xml").read_bytes()
    with pytest.raises(EcgFormatError, match=r"^upload\.xml: .*limit"):
        load_ecg(data, name="upload.xml", max_bytes=1024)


def test_explicit_format_still_checks_content(formats_dir: Path) -> None:
    ecg = load_ecg(formats_dir / "ge_muse_xml/muse-sinus.xml", format="ge-muse-xml")
    assert ecg.source.format == "ge-muse-xml"
    with pytest.raises(EcgFormatError, match="RestingECG"):
        load_ecg(b"<?xml version='1.0'?><Other/>", format="ge-muse-xml", name="x")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ('<?xml version="1.0"?><!-- a > b --><!DOCTYPE x><?pi x?>\n<RestingECG>', True),
        ("<!-- <RestingECG> inside a comment --><Other>", False),
        ("<!-- never closed <RestingECG>", False),
        ("<?pi never closed <RestingECG>", False),
        ("<!--" * 2048, False),  # 8 KB of unclosed comments: one pass, not one per opener
        ("<?" * 4096, False),
    ],
)
def test_xml_sniffing_skips_what_precedes_the_root_element(head: str, expected: bool) -> None:
    """The root element is the first element after the declaration, comments, processing
    instructions and DOCTYPE; text inside one of them, closed or not, is no element."""
    from adapters.xml_safety import root_element_is

    assert root_element_is(head.encode(), "RestingECG") is expected
