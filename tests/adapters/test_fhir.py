"""FHIR Observation with SampledData: the writer's R4 output validates, and reads back."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import STANDARD_LEADS, Ecg, EcgFormatError, load_ecg, to_fhir_observation
from adapters.quantise import quantisation_step_uv


@pytest.fixture(scope="session")
def ptbxl_ecg(ptbxl_dir: Path) -> Ecg:
    return load_ecg(ptbxl_dir / "records500/00000/00003_hr")


@pytest.fixture(scope="session")
def observation(ptbxl_ecg: Ecg) -> dict[str, Any]:
    return to_fhir_observation(ptbxl_ecg, patient_ref="Patient/p-7", observation_id="ecg-1")


def _read(document: dict[str, Any]) -> Ecg:
    return load_ecg(json.dumps(document).encode(), name="observation.json")


def _half_steps_mv(ecg: Ecg) -> np.ndarray:
    peaks = np.abs(ecg.signal).max(axis=1)
    return np.array([quantisation_step_uv(float(p)) for p in peaks])[:, None] / 2000.0


def test_writer_output_is_a_valid_r4_ekg_observation(observation: dict[str, Any]) -> None:
    # Validated by the R4B model first; then the JSON itself is checked (what EHRs get).
    Observation.model_validate(observation)
    assert observation["code"]["coding"][0] == {
        "system": "urn:oid:2.16.840.1.113883.6.24",
        "code": "131328",
        "display": "MDC_ECG_ELEC_POTL",
    }
    assert observation["category"][0]["coding"][0]["code"] == "procedure"
    assert observation["subject"] == {"reference": "Patient/p-7"}
    leads = [c for c in observation["component"] if "valueSampledData" in c]
    # MDC lead potentials (ISO/IEEE 11073-10101; FHIR R4 "ekg" example), standard lead order.
    expected = ["131329", "131330", "131389", "131390", "131391", "131392"]
    expected += [str(131331 + i) for i in range(6)]
    assert [c["code"]["coding"][0]["code"] for c in leads] == expected
    sampled = leads[0]["valueSampledData"]
    assert sampled["period"] == pytest.approx(2.0)  # 500 Hz
    assert sampled["origin"]["code"] == "mV" and sampled["dimensions"] == 1
    assert all(token.lstrip("-").isdigit() for token in sampled["data"].split())


def test_round_trip_within_half_a_step(ptbxl_ecg: Ecg, observation: dict[str, Any]) -> None:
    back = _read(observation)
    assert back.source.format == "fhir-observation"
    assert back.leads == STANDARD_LEADS and back.fs == 500.0
    assert back.patient_id == "p-7"
    assert np.all(np.abs(back.signal - ptbxl_ecg.signal) <= _half_steps_mv(ptbxl_ecg) + 1e-7)


@pytest.mark.parametrize(
    "relative",
    [
        "formats/dicom/pydicom_waveform_ecg.dcm",
        "cinc/cinc2021/E07500",
        "cinc/cinc2021_more/smoke_data/PTB_PTBXL/S0001",
    ],
)
def test_file_to_fhir_to_ecg(data_dir: Path, relative: str) -> None:
    original = load_ecg(data_dir / relative)
    document = to_fhir_observation(original)
    Observation.model_validate(document)
    back = _read(document)
    assert back.leads == original.leads and back.fs == original.fs
    assert back.n_samples == original.n_samples
    assert np.all(np.abs(back.signal - original.signal) <= _half_steps_mv(original) + 1e-7)
    assert back.statements == original.statements
    assert back.diagnosis_codes == original.diagnosis_codes
    assert back.start_time == original.start_time  # naive local times survive (extension)


def test_unnamed_lead_keeps_its_name(data_dir: Path) -> None:
    mitbih = load_ecg(data_dir / "formats/wfdb/100")
    short = mitbih.with_signal(mitbih.signal[:, :3600], ("Holter A", "V5"))
    document = to_fhir_observation(short)
    Observation.model_validate(document)
    assert _read(document).leads == ("Holter A", "V5")
    assert _read(document).fs == 360.0


def test_r5_interval_shape(observation: dict[str, Any], ptbxl_ecg: Ecg) -> None:
    r5 = copy.deepcopy(observation)
    for component in r5["component"]:
        sampled = component.get("valueSampledData")
        if sampled:
            sampled["interval"] = sampled.pop("period") / 1000.0
            sampled["intervalUnit"] = "s"
    back = _read(r5)
    assert back.fs == 500.0
    assert np.all(np.abs(back.signal - ptbxl_ecg.signal) <= _half_steps_mv(ptbxl_ecg) + 1e-7)


def test_origin_factor_and_microvolts_honoured(observation: dict[str, Any]) -> None:
    reference = _read(observation)
    shifted = copy.deepcopy(observation)
    for component in shifted["component"]:
        sampled = component.get("valueSampledData")
        if sampled:
            factor_uv = sampled["factor"] * 1000.0
            counts = np.array(sampled["data"].split(), dtype=np.int64)
            sampled["origin"] = {"value": 250.0, "code": "uV", "unit": "uV"}
            sampled["factor"] = factor_uv / 2
            sampled["data"] = " ".join(map(str, (counts * 2 - int(250.0 / (factor_uv / 2)))))
    back = _read(shifted)
    np.testing.assert_allclose(back.signal, reference.signal, atol=5e-4)


def test_text_and_loinc_fallback_names(observation: dict[str, Any]) -> None:
    document = copy.deepcopy(observation)
    leads = [c for c in document["component"] if "valueSampledData" in c]
    leads[0]["code"] = {"coding": [{"system": "http://loinc.org", "code": "LP7386-8",
                                    "display": "Lead I"}]}  # fmt: skip
    leads[1]["code"] = {"text": "MDC_ECG_ELEC_POTL_II"}
    leads[2]["code"] = {"coding": [{"system": "http://loinc.org", "code": "LP7388-4"}]}
    assert _read(document).leads[:3] == ("I", "II", "III")


def test_bundle_with_one_observation(observation: dict[str, Any]) -> None:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "p-7"}},
            {"resource": observation},
        ],
    }
    Bundle.model_validate(bundle)
    assert _read(bundle).leads == STANDARD_LEADS
    bundle["entry"].append({"resource": observation})
    with pytest.raises(EcgFormatError, match="holds 2 Observations"):
        _read(bundle)


def _first_lead(document: dict[str, Any]) -> dict[str, Any]:
    return next(c["valueSampledData"] for c in document["component"] if "valueSampledData" in c)


def test_limit_markers(observation: dict[str, Any]) -> None:
    document = copy.deepcopy(observation)
    sampled = _first_lead(document)
    tokens = sampled["data"].split()
    tokens[10], tokens[11] = "U", "L"
    sampled["data"] = " ".join(tokens)
    with pytest.raises(EcgFormatError, match=r"sample 10 is 'U'.*no upperLimit"):
        _read(document)
    sampled["upperLimit"], sampled["lowerLimit"] = 5.0, -5.0
    back = _read(document)
    assert back.signal[0, 10] == pytest.approx(5.0) and back.signal[0, 11] == pytest.approx(-5.0)
    tokens[12] = "E"
    sampled["data"] = " ".join(tokens)
    with pytest.raises(EcgFormatError, match="sample 12 is 'E'"):
        _read(document)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: _first_lead(d).update(data=_first_lead(d)["data"].rsplit(" ", 7)[0]),
         "different numbers of samples"),
        (lambda d: _first_lead(d).update(period=4.0), "different sampling periods"),
        (lambda d: _first_lead(d).pop("period"), "neither period"),
        (lambda d: _first_lead(d).update(period=0), "not positive"),
        (lambda d: _first_lead(d).update(data="1 2 x 4"), "'x', not a number"),
        # before: a flat line at the origin, read as this lead's ECG
        (lambda d: _first_lead(d).update(factor=0), "factor 0"),
        # before: "unreadable (ZeroDivisionError: integer modulo by zero)"
        (lambda d: _first_lead(d).update(dimensions=0), "dimensions 0"),
        (lambda d: _first_lead(d)["origin"].update(code="mmHg"), "not a voltage"),
        (lambda d: d.update(resourceType="Patient"), "not an ECG"),
        (lambda d: d.update(component=[]), "no SampledData"),
    ],
)  # fmt: skip
def test_bad_observations(observation: dict[str, Any], mutate: Any, message: str) -> None:
    document = copy.deepcopy(observation)
    mutate(document)
    with pytest.raises(EcgFormatError, match=message):
        _read(document)


def test_truncated_json(observation: dict[str, Any]) -> None:
    data = json.dumps(observation).encode()
    with pytest.raises(EcgFormatError, match=r"observation\.json: not valid JSON"):
        load_ecg(data[: len(data) // 2], name="observation.json")


def test_absurd_sampling_rate(observation: dict[str, Any]) -> None:
    document = copy.deepcopy(observation)
    for component in document["component"]:
        if "valueSampledData" in component:
            component["valueSampledData"]["period"] = 1e-6
    with pytest.raises(EcgFormatError, match="outside"):
        _read(document)


def test_values_over_the_limit_are_refused_before_parsing(observation: dict[str, Any]) -> None:
    """The count that guards memory is exact where it matters: a document whose text could
    hold more values than ``max_ecg_samples`` is counted, one that cannot is not."""
    from adapters import EcgTooLarge
    from adapters.limits import DecodeLimits

    data = json.dumps(observation).encode()
    values = sum(len(c["valueSampledData"]["data"].split()) for c in observation["component"])
    with pytest.raises(EcgTooLarge, match="max_ecg_samples"):
        load_ecg(data, name="o.json", limits=DecodeLimits(max_ecg_samples=values - 1))
    assert load_ecg(data, name="o.json", limits=DecodeLimits(max_ecg_samples=values)).leads
    padded = copy.deepcopy(observation)  # twice the characters, the same values
    for component in padded["component"]:
        component["valueSampledData"]["data"] = component["valueSampledData"]["data"].replace(
            " ", "  "
        )
    ecg = load_ecg(json.dumps(padded).encode(), name="o.json", limits=DecodeLimits(values))
    assert np.array_equal(ecg.signal, _read(observation).signal)


@pytest.mark.parametrize(
    "text",
    ["-150 -150 -230 12", "  1\t2  3 ", "1\n2\r\n3", "1e3 -2.5 +4 0.125", "nan 1", "7"],
)
def test_sampled_data_numbers_read_as_numpy_reads_them(text: str) -> None:
    from adapters.limits import parse_numbers

    parsed = parse_numbers(text)
    assert parsed is not None
    assert np.array_equal(parsed, np.array(text.split(), dtype=np.float64), equal_nan=True)
    for bad in ("1 E 3", "1 L", "1,2", "0x10", "1.5e"):
        assert parse_numbers(bad) is None


_TOKENS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(-5000, 5000).map(lambda v: f"{v:+d}"),
    st.sampled_from(["-", "+", "-0", "007", "0.5", "-1.25", "1e3", "E", "--1", "1-2"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_TOKENS, st.sampled_from([" ", "  ", "\t", "\n", "\r\n"])), max_size=40))
def test_numbers_equal_float_of_each_token_or_are_refused(pairs: list[tuple[str, str]]) -> None:
    """The integer fast path and the general one together, over integers of every size,
    signs, decimals and markers: a text reads as ``float()`` reads each of its tokens, and a
    text with a token ``float()`` refuses is refused. (``float()`` also takes "1_000" and
    non-ASCII digits, which a sample text may not hold; those are refused, not generated.)"""
    from adapters.limits import parse_numbers

    text = "".join(token + space for token, space in pairs)
    try:
        expected: np.ndarray | None = np.array([float(t) for t in text.split()], dtype=np.float64)
    except ValueError:
        expected = None
    parsed = parse_numbers(text)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None and parsed.shape == expected.shape
        assert np.array_equal(parsed, expected)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("-1150 -1148  +3\t-0 7\n", 5),
        ("\x0b12\x0c\r\n9 ", 2),
        ("", 0),
        ("   ", 0),
        ("123 -", None),  # a sign that ends the text
        ("1 - 2", None),  # a sign before whitespace
        ("1 +-2", None),  # a sign before a sign
        ("5 6 7.5", None),
        ("5 6 x", None),
        ("5\x1f6", None),  # a control byte that is not whitespace
        ("12-5", 1),  # one token; the reader then finds two numbers and refuses it
    ],
)
def test_integer_scan_counts_tokens_of_plain_integer_text_only(
    text: str, tokens: int | None
) -> None:
    """The integer path's scan: the token count for digits, whitespace and leading signs
    (so such text takes the fast reader), None for anything else."""
    from adapters.limits import _plain_integer_tokens, parse_numbers

    assert _plain_integer_tokens(text.encode("ascii")) == tokens
    if text == "12-5":
        assert parse_numbers(text) is None


@pytest.mark.parametrize("chunk", [1, 3, 4, 7])
@pytest.mark.parametrize(
    "text", ["-1150 -1148  +3\t-0 7\n", "12345678 -9", "123 -", "12- 3", "1 - 2", "5 6 7.5"]
)
def test_integer_text_scanned_in_chunks_reads_as_a_whole(
    monkeypatch: pytest.MonkeyPatch, chunk: int, text: str
) -> None:
    """The integer path looks at a long text a chunk at a time (bounded work arrays): tokens
    and signs that straddle a chunk's edge read as they do in one piece."""
    from adapters import limits

    whole = limits.parse_numbers(text)
    monkeypatch.setattr(limits, "_SCAN_CHUNK", chunk)
    parsed = limits.parse_numbers(text)
    assert (parsed is None) == (whole is None)
    if whole is not None:
        assert parsed is not None and np.array_equal(parsed, whole)
        assert np.array_equal(parsed, np.array([float(t) for t in text.split()]))


def test_a_flood_of_json_objects_is_refused_before_parsing(observation: dict[str, Any]) -> None:
    # 1.2 million empty objects are 3.6 MB of JSON and ~100 MB of Python objects; a 64 MB
    # upload of them would be ~1.7 GB. Before: all parsed, then "no SampledData".
    data = b'{"resourceType":"Observation","x":[' + b"{}," * 1_200_000 + b"{}]}"
    started = time.perf_counter()
    with pytest.raises(EcgFormatError, match="over the limit of 1000000") as info:
        load_ecg(data, name="flood.json")
    assert str(info.value).startswith("flood.json: ")
    assert time.perf_counter() - started < 1.0
    assert load_ecg(json.dumps(observation).encode(), name="ok.json").n_samples > 0
