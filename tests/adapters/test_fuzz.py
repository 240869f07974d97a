"""Fuzzing every reader with damaged copies of the real sample files.

Whatever the bytes, :func:`adapters.load_ecg` must either return a valid :class:`Ecg` or
raise :class:`EcgFormatError` naming the input; never another exception, never a hang
(pytest-timeout guards every test, Hypothesis a per-example deadline). Mutations: cutting
the file at a random point, flipping random bytes, random bytes, empty input, and
hand-made hostile inputs (entity bombs, huge declared sizes, deep nesting).

Every sample's intact file must load (its reader is registered: a missing one fails).
Our XML readers are also called directly, so
the loader's catch-all cannot hide a raw exception escaping them. Runs are derandomised
(the same examples every run) to keep CI deterministic; budgets keep the module under a
minute on one core.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import Ecg, EcgFormatError, load_ecg
from adapters.aecg import read_aecg
from adapters.loader import ReaderInput
from adapters.muse import read_muse
from adapters.philips import read_philips
from adapters.scp import read_scp

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class Sample:
    """A real file (plus companions for multi-file formats) and which of them to damage."""

    primary: str  # relative to the data folder; what load_ecg is given
    target: str  # the file that gets damaged (primary or a companion)
    companions: tuple[str, ...] = ()
    examples: int = 12  # Hypothesis examples per mutation kind (slow decoders get fewer)


SAMPLES = [
    Sample(
        "formats/hl7_aecg/Example_aECG_HL7_2003-12.xml",
        "formats/hl7_aecg/Example_aECG_HL7_2003-12.xml",
        examples=8,
    ),
    Sample("formats/hl7_aecg/minimum_aecg.xml", "formats/hl7_aecg/minimum_aecg.xml", examples=25),
    Sample("formats/ge_muse_xml/muse-sinus.xml", "formats/ge_muse_xml/muse-sinus.xml"),
    Sample("formats/philips_xml/129DYPRG.XML", "formats/philips_xml/129DYPRG.XML", examples=5),
    Sample(
        "formats/philips_xml/3191723_ZZDEMOPTONLY_1-04_orig.xml",
        "formats/philips_xml/3191723_ZZDEMOPTONLY_1-04_orig.xml",
        examples=5,
    ),
    Sample("formats/dicom/pydicom_waveform_ecg.dcm", "formats/dicom/pydicom_waveform_ecg.dcm"),
    Sample("formats/scp_ecg/Example.scp", "formats/scp_ecg/Example.scp", examples=6),
    Sample(
        "ptbxl/records100/00000/00001_lr.hea",
        "ptbxl/records100/00000/00001_lr.hea",
        ("ptbxl/records100/00000/00001_lr.dat",),
    ),
    Sample(
        "ptbxl/records100/00000/00001_lr.hea",
        "ptbxl/records100/00000/00001_lr.dat",
        ("ptbxl/records100/00000/00001_lr.dat",),
    ),
    Sample("cinc/cinc2021/E07500.hea", "cinc/cinc2021/E07500.hea", ("cinc/cinc2021/E07500.mat",)),
    Sample("cinc/cinc2021/E07500.hea", "cinc/cinc2021/E07500.mat", ("cinc/cinc2021/E07500.mat",)),
    Sample("cinc/cpsc2018/A1980.mat", "cinc/cpsc2018/A1980.mat"),
    Sample("fhir:muse-sinus", "fhir:muse-sinus"),  # an R4 Observation built below
]

#: Our own readers, called directly on the damaged bytes as well.
DIRECT: dict[str, Callable[[ReaderInput], Ecg]] = {
    "formats/hl7_aecg/Example_aECG_HL7_2003-12.xml": read_aecg,
    "formats/hl7_aecg/minimum_aecg.xml": read_aecg,
    "formats/ge_muse_xml/muse-sinus.xml": read_muse,
    "formats/philips_xml/129DYPRG.XML": read_philips,
    "formats/philips_xml/3191723_ZZDEMOPTONLY_1-04_orig.xml": read_philips,
    "formats/scp_ecg/Example.scp": read_scp,
}

MDC_LEADS = {
    "I": "131329", "II": "131330", "III": "131389", "aVR": "131390", "aVL": "131391",
    "aVF": "131392", "V1": "131331", "V2": "131332", "V3": "131333", "V4": "131334",
    "V5": "131335", "V6": "131336",
}  # fmt: skip


def _fhir_observation(data_dir: Path) -> bytes:
    """A plain FHIR R4 "ekg"-style Observation (2 s of the MUSE record), written by hand."""
    ecg = load_ecg(data_dir / "formats/ge_muse_xml/muse-sinus.xml")
    n = int(2 * ecg.fs)
    components = [
        {
            "code": {
                "coding": [{"system": "urn:oid:2.16.840.1.113883.6.24", "code": MDC_LEADS[lead]}]
            },
            "valueSampledData": {
                "origin": {"value": 0, "unit": "uV"},
                "period": 1000.0 / ecg.fs,
                "factor": 1,
                "dimensions": 1,
                "data": " ".join(str(round(v * 1000)) for v in ecg.lead(lead)[:n]),
            },
        }
        for lead in ecg.leads
    ]
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [
                {"system": "urn:oid:2.16.840.1.113883.6.24", "code": "131328"},
            ]
        },
        "subject": {"reference": "Patient/fuzz"},
        "effectiveDateTime": "2023-04-29T22:41:16Z",
        "component": components,
    }
    return json.dumps(observation).encode()


@pytest.fixture(scope="module")
def originals(data_dir: Path) -> dict[str, bytes]:
    """The bytes of every sample file, read once."""
    contents: dict[str, bytes] = {"fhir:muse-sinus": _fhir_observation(data_dir)}
    for sample in SAMPLES:
        for relative in (sample.primary, *sample.companions):
            if relative not in contents:
                contents[relative] = (data_dir / relative).read_bytes()
    return contents


def _stage(sample: Sample, originals: dict[str, bytes], damaged: bytes, folder: Path) -> Path:
    """Write the sample's files into ``folder``, with ``damaged`` in place of the target."""
    names = {}
    for relative in (sample.primary, *sample.companions):
        name = Path(relative).name if not relative.startswith("fhir:") else "observation.json"
        names[relative] = folder / name
        (folder / name).write_bytes(damaged if relative == sample.target else originals[relative])
    return names[sample.primary]


def _check_outcome(path: Path, data: bytes | None = None) -> Ecg | None:
    """load_ecg gives a valid Ecg or an EcgFormatError naming the input; nothing else."""
    try:
        ecg = load_ecg(path if data is None else data, name=None if data is None else path.name)
    except EcgFormatError as exc:
        message = str(exc)
        assert message, "empty error message"
        assert Path(path).stem in message or path.name in message, message
        return None
    assert isinstance(ecg, Ecg)
    assert ecg.signal.ndim == 2 and ecg.signal.dtype == np.float32
    assert ecg.signal.shape[0] == len(ecg.leads) >= 1
    assert np.isfinite(ecg.signal).all()
    assert ecg.fs > 0
    if ecg.median_beats is not None:
        assert np.isfinite(ecg.median_beats.signal).all()
        assert ecg.median_beats.signal.shape[0] == len(ecg.median_beats.leads)
    return ecg


def _check_direct(sample: Sample, data: bytes) -> None:
    """Our own readers raise EcgFormatError themselves, not via the loader's catch-all."""
    reader = DIRECT.get(sample.target)
    if reader is None:
        return
    item = ReaderInput(data=data, name="direct", path=None, max_bytes=64 * 1024 * 1024)
    try:
        reader(item)
    except EcgFormatError as exc:
        assert str(exc).startswith("direct: "), str(exc)


FUZZ_SETTINGS = {
    "deadline": timedelta(seconds=10),
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


def _run(sample: Sample, originals: dict[str, bytes], mutate: Callable[[bytes], bytes]) -> None:
    damaged = mutate(originals[sample.target])
    with tempfile.TemporaryDirectory(prefix="ecg-fuzz-") as folder:
        primary = _stage(sample, originals, damaged, Path(folder))
        _check_outcome(primary)
    _check_direct(sample, damaged)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: f"{Path(s.target).name}")
def test_undamaged_seeds_load(sample: Sample, originals: dict[str, bytes]) -> None:
    """Fuzzing damaged copies only means something if the intact file reads."""
    with tempfile.TemporaryDirectory(prefix="ecg-fuzz-") as folder:
        primary = _stage(sample, originals, originals[sample.target], Path(folder))
        ecg = load_ecg(primary)
    assert ecg.n_samples > 0 and ecg.signal.shape[0] == len(ecg.leads)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: f"{Path(s.target).name}")
def test_truncated_anywhere(sample: Sample, originals: dict[str, bytes]) -> None:
    size = len(originals[sample.target])

    @settings(max_examples=sample.examples, **FUZZ_SETTINGS)
    @given(cut=st.integers(min_value=0, max_value=max(size - 1, 0)))
    def check(cut: int) -> None:
        _run(sample, originals, lambda data: data[:cut])

    check()


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: f"{Path(s.target).name}")
def test_flipped_bytes(sample: Sample, originals: dict[str, bytes]) -> None:
    size = len(originals[sample.target])
    flips = st.lists(
        st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=1, max_size=8
    )

    @settings(max_examples=sample.examples, **FUZZ_SETTINGS)
    @given(changes=flips)
    def check(changes: list[tuple[int, int]]) -> None:
        def mutate(data: bytes) -> bytes:
            buffer = bytearray(data)
            for position, mask in changes:
                buffer[position] ^= mask
            return bytes(buffer)

        _run(sample, originals, mutate)

    check()


@pytest.mark.parametrize("relative", ["formats/philips_xml/129DYPRG.XML"])
def test_philips_xli_payload_damage(originals: dict[str, bytes], relative: str) -> None:
    """Damage inside the base64 payload, so the XLI/LZW decoder itself sees corrupt data."""
    text = originals[relative].decode("utf-8")
    match = re.search(r"(<parsedwaveforms[^>]*>)(.*?)(</parsedwaveforms>)", text, re.S)
    assert match is not None
    payload = base64.b64decode(re.sub(r"\s+", "", match.group(2)))

    @settings(max_examples=8, **FUZZ_SETTINGS)
    @given(
        changes=st.lists(
            st.tuples(st.integers(0, len(payload) - 1), st.integers(1, 255)), min_size=1, max_size=4
        )
    )
    def check(changes: list[tuple[int, int]]) -> None:
        damaged = bytearray(payload)
        for position, mask in changes:
            damaged[position] ^= mask
        encoded = base64.b64encode(bytes(damaged)).decode()
        data = (text[: match.start(2)] + encoded + text[match.end(2) :]).encode("utf-8")
        with tempfile.TemporaryDirectory(prefix="ecg-fuzz-") as folder:
            path = Path(folder) / "xli.xml"
            path.write_bytes(data)
            _check_outcome(path)
        try:
            read_philips(ReaderInput(data=data, name="direct.xml", path=None, max_bytes=1 << 26))
        except EcgFormatError as exc:
            assert str(exc).startswith("direct.xml: ")

    check()


def _scp_section(data: bytes | bytearray, wanted: int) -> tuple[int, int]:
    """(start, length) of one SCP-ECG section, from the pointer table."""
    offset = 6 + 16
    while True:
        section, length, index = struct.unpack_from("<HII", data, offset)
        if section == wanted:
            return index - 1, length
        offset += 10


def _with_scp_crc(data: bytearray) -> bytes:
    data[0:2] = struct.pack("<H", binascii.crc_hqx(bytes(data[2:]), 0xFFFF))
    return bytes(data)


@pytest.mark.parametrize("section", [3, 6])
def test_scp_damage_behind_a_valid_crc(originals: dict[str, bytes], section: int) -> None:
    """Damage the lead table or the Huffman data and fix the CRC, so the decoder sees it."""
    original = originals["formats/scp_ecg/Example.scp"]
    start, length = _scp_section(original, section)

    @settings(max_examples=15, **FUZZ_SETTINGS)
    @given(
        changes=st.lists(
            st.tuples(st.integers(start + 16, start + length - 1), st.integers(1, 255)),
            min_size=1,
            max_size=6,
        )
    )
    def check(changes: list[tuple[int, int]]) -> None:
        damaged = bytearray(original)
        for position, mask in changes:
            damaged[position] ^= mask
        data = _with_scp_crc(damaged)
        with tempfile.TemporaryDirectory(prefix="ecg-fuzz-") as folder:
            path = Path(folder) / "damaged.scp"
            path.write_bytes(data)
            _check_outcome(path)
        try:
            read_scp(ReaderInput(data=data, name="direct", path=None, max_bytes=1 << 26))
        except EcgFormatError as exc:
            assert str(exc).startswith("direct: ")

    check()


def test_scp_huge_declared_sample_count(originals: dict[str, bytes]) -> None:
    damaged = bytearray(originals["formats/scp_ecg/Example.scp"])
    start, _ = _scp_section(damaged, 3)
    for lead in range(damaged[start + 16]):  # every lead's end sample
        struct.pack_into("<I", damaged, start + 16 + 2 + 9 * lead + 4, 2**32 - 1)
    with pytest.raises(EcgFormatError, match="declares"):
        load_ecg(_with_scp_crc(damaged), name="huge.scp")


@settings(max_examples=60, **FUZZ_SETTINGS)
@given(data=st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="ecg-fuzz-") as folder:
        path = Path(folder) / "random.bin"
        path.write_bytes(data)
        _check_outcome(path)
        _check_outcome(path, data)


@settings(max_examples=30, **FUZZ_SETTINGS)
@given(
    head=st.sampled_from(
        [
            b'<?xml version="1.0"?>\n<AnnotatedECG xmlns="urn:hl7-org:v3">',
            b"<?xml version='1.0' encoding='ISO-8859-1'?>\n<RestingECG>",
            b'<?xml version="1.0"?><restingecgdata xmlns="http://www3.medical.philips.com">',
        ]
    ),
    body=st.text(alphabet="<>/= \"'&;abcdefgXYZ0123456789\n", max_size=400),
)
def test_xml_heads_with_garbage_bodies(head: bytes, body: str) -> None:
    data = head + body.encode()
    with pytest.raises(EcgFormatError) as info:
        load_ecg(data, name="garbage.xml")
    assert str(info.value).startswith("garbage.xml: ")
    for reader in (read_aecg, read_muse, read_philips):
        with pytest.raises(EcgFormatError):
            reader(ReaderInput(data=data, name="garbage.xml", path=None, max_bytes=1 << 20))


@pytest.mark.parametrize("data", [b"", b" ", b"\n\n", b"\x00" * 64, b"{}", b"<"])
def test_empty_and_trivial_inputs(data: bytes, tmp_path: Path) -> None:
    with pytest.raises(EcgFormatError, match="trivial"):
        load_ecg(data, name="trivial")
    path = tmp_path / "trivial.bin"
    path.write_bytes(data)
    with pytest.raises(EcgFormatError, match="trivial"):
        load_ecg(path)


def _entity_bomb(root: str, namespace: str = "") -> bytes:
    levels = ['<!ENTITY a0 "dha">']
    for level in range(1, 10):
        levels.append(f'<!ENTITY a{level} "{("&a" + str(level - 1) + ";") * 10}">')
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE {root} [\n{chr(10).join(levels)}\n]>\n'
        f"<{root}{xmlns}><x>&a9;</x></{root}>\n"
    ).encode()


@pytest.mark.parametrize(
    "bomb",
    [
        _entity_bomb("AnnotatedECG", "urn:hl7-org:v3"),
        _entity_bomb("RestingECG"),
        _entity_bomb("restingecgdata", "http://www3.medical.philips.com"),
        _entity_bomb("RestingECG").decode().encode("utf-16"),
        # quadratic blow-up: one large entity referenced many times
        (
            '<?xml version="1.0"?><!DOCTYPE RestingECG [<!ENTITY big "'
            + "x" * 50_000
            + '">]><RestingECG>'
            + "&big;" * 5_000
            + "</RestingECG>"
        ).encode(),
        # external entity pointing at a local file and at the network
        b'<?xml version="1.0"?><!DOCTYPE RestingECG [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<RestingECG><PatientDemographics><PatientID>&x;</PatientID></PatientDemographics>"
        b"</RestingECG>",
        b'<?xml version="1.0"?><!DOCTYPE RestingECG [<!ENTITY % p SYSTEM "http://192.0.2.1/x.dtd">'
        b" %p;]><RestingECG/>",
    ],
    ids=["aecg", "muse", "philips", "utf16", "quadratic", "xxe-file", "xxe-network"],
)
def test_entity_attacks_are_refused(bomb: bytes) -> None:
    with pytest.raises(EcgFormatError) as info:
        load_ecg(bomb, name="bomb.xml")
    assert str(info.value).startswith("bomb.xml: ")
    assert "root:" not in str(info.value)


def test_deep_nesting_is_refused() -> None:
    data = b'<AnnotatedECG xmlns="urn:hl7-org:v3">' + b"<a>" * 100_000 + b"</a>" * 100_000
    data += b"</AnnotatedECG>"
    with pytest.raises(EcgFormatError, match=r"deep\.xml"):
        load_ecg(data, name="deep.xml")


@pytest.mark.parametrize(
    "root",
    [b'<AnnotatedECG xmlns="urn:hl7-org:v3">', b"<RestingECG>", b"<restingecgdata>"],
    ids=["aecg", "muse", "philips"],
)
def test_millions_of_empty_elements_are_refused_before_parsing(root: bytes) -> None:
    # "<a/>" x 1.2 million is 4.8 MB; lxml would build a ~150 MB tree of it (a 64 MB
    # upload: about 2 GB) before any reader looked at it. Before: parsed, then refused.
    end = b"</" + root[1:].split(b" ")[0].rstrip(b">") + b">"
    data = root + b"<a/>" * 1_200_000 + end
    started = time.perf_counter()
    with pytest.raises(EcgFormatError, match="over the limit of 1000000") as info:
        load_ecg(data, name="flood.xml")
    assert str(info.value).startswith("flood.xml: ")
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("relative", "old", "new"),
    [
        (
            "formats/ge_muse_xml/muse-sinus.xml",
            b"<LeadSampleCountTotal>5000<",
            b"<LeadSampleCountTotal>999999999999<",
        ),
        (
            "formats/philips_xml/129DYPRG.XML",
            b'durationperchannel="11000"',
            b'durationperchannel="99999999999999"',
        ),
        ("formats/philips_xml/129DYPRG.XML", b"<samplingrate>500<", b"<samplingrate>1e300<"),
        (  # the rhythm's rate (an absurd one in the median beats only skips those)
            "formats/ge_muse_xml/muse-sinus.xml",
            b"<WaveformType>Rhythm</WaveformType>",
            b"<WaveformType>Rhythm</WaveformType><SampleBase>1e308</SampleBase>",
        ),
        (
            "ptbxl/records100/00000/00001_lr.hea",
            b"00001_lr 12 100 1000",
            b"00001_lr 12 100 99999999999",
        ),
    ],
)
def test_huge_declared_sizes(
    data_dir: Path, tmp_path: Path, relative: str, old: bytes, new: bytes
) -> None:
    original = (data_dir / relative).read_bytes()
    assert old in original
    target = tmp_path / Path(relative).name
    target.write_bytes(original.replace(old, new, 1))
    for companion in (data_dir / relative).parent.glob(Path(relative).stem + ".dat"):
        shutil.copy(companion, tmp_path / companion.name)
    with pytest.raises(EcgFormatError) as info:
        load_ecg(target)
    assert Path(relative).stem in str(info.value)


def test_dicom_with_huge_declared_sample_count(data_dir: Path, tmp_path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(data_dir / "formats/dicom/pydicom_waveform_ecg.dcm")
    ds.WaveformSequence[0].NumberOfWaveformSamples = 2**31 - 1
    path = tmp_path / "huge.dcm"
    ds.save_as(path)
    with pytest.raises(EcgFormatError, match="huge"):
        load_ecg(path)
