"""Finding 1: decompression and declared-size bombs are refused before allocation.

Each bomb goes to the real web process (``live``); its peak memory must rise by less than
:data:`MAX_GROWTH_MB` and the answer must be a 413 OperationOutcome naming the setting.
The figures are printed (``pytest -s``) for the issue's closing note.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.security import bombs
from tests.security.conftest import LiveService, peak_growth_mb
from tests.service.ehr import document_reference, hook_body, searchset

MAX_GROWTH_MB = 150.0
GROWTH: dict[str, float] = {}


@pytest.fixture(scope="module")
def dicom_bytes(formats_dir: Path) -> bytes:
    return (formats_dir / "dicom" / "pydicom_waveform_ecg.dcm").read_bytes()


def _assert_refused(response: httpx.Response, setting: str) -> None:
    assert response.status_code == 413, response.text[:500]
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert setting in outcome["issue"][0]["diagnostics"]


def _octet(data: bytes) -> Callable[[LiveService], httpx.Response]:
    return lambda live: live.upload(
        content=data, headers={"Content-Type": "application/octet-stream"}
    )


@pytest.mark.parametrize(
    ("name", "build", "setting"),
    [
        ("hdf5", lambda _: bombs.hdf5_bomb(), "max_ecg_samples"),
        ("matlab", lambda _: bombs.matlab_bomb(), "max_ecg_decoded_bytes"),
        ("matlab-cells", lambda _: bombs.matlab_cell_bomb(), "max_ecg_samples"),
        ("dicom-deflate", lambda d: bombs.deflated_dicom_bomb(d), "max_ecg_decoded_bytes"),
    ],
)
def test_single_file_bombs_are_413_without_the_memory(
    live: LiveService, dicom_bytes: bytes, name: str, build: Any, setting: str
) -> None:
    data = build(dicom_bytes)
    growth, response = peak_growth_mb(live.pid, lambda: _octet(data)(live))
    GROWTH[name] = growth
    print(f"\nbomb {name}: {len(data)} bytes, web process peak +{growth:.1f} MB")
    _assert_refused(response, setting)
    assert growth < MAX_GROWTH_MB


def test_wfdb_record_bomb_is_413_without_the_memory(live: LiveService) -> None:
    files = bombs.wfdb_bomb()
    multipart = [("file", (name, data, "application/octet-stream")) for name, data in files.items()]
    growth, response = peak_growth_mb(live.pid, lambda: live.upload(files=multipart))
    print(f"\nbomb wfdb: {sum(map(len, files.values()))} bytes, peak +{growth:.1f} MB")
    GROWTH["wfdb"] = growth
    _assert_refused(response, "max_ecg_samples")
    assert growth < MAX_GROWTH_MB


def test_aecg_token_bomb_is_413_without_the_memory(live: LiveService, formats_dir: Path) -> None:
    template = (formats_dir / "hl7_aecg" / "Example_aECG_HL7_2003-12.xml").read_bytes()
    data = bombs.aecg_bomb(template)
    growth, response = peak_growth_mb(live.pid, lambda: _octet(data)(live))
    print(f"\nbomb aecg: {len(data)} bytes, peak +{growth:.1f} MB")
    GROWTH["aecg"] = growth
    _assert_refused(response, "max_ecg_samples")
    assert growth < MAX_GROWTH_MB


def test_sampled_data_with_millions_of_dimensions_is_413_without_the_memory(
    live: LiveService,
) -> None:
    """SampledData ``dimensions`` is a channel count: 2 M of them in one component are 2 M
    leads, refused against max_ecg_leads before the data is parsed (it was read as a record
    of 2 M leads: about 800 MB in the web process, and stored)."""
    data = bombs.sampled_data_dimensions_bomb()
    headers = {"Content-Type": "application/fhir+json"}
    growth, response = peak_growth_mb(live.pid, lambda: live.upload(content=data, headers=headers))
    print(f"\nbomb SampledData dimensions: {len(data)} bytes, peak +{growth:.1f} MB")
    GROWTH["fhir-dimensions"] = growth
    _assert_refused(response, "max_ecg_leads")
    assert "dimensions" in response.json()["issue"][0]["diagnostics"]
    assert growth < MAX_GROWTH_MB


@pytest.mark.parametrize(
    ("name", "template", "build"),
    [
        ("aecg", "hl7_aecg/minimum_aecg.xml", bombs.aecg_lead_flood),
        ("muse", "ge_muse_xml/muse-sinus.xml", bombs.muse_lead_flood),
    ],
)
def test_xml_with_tens_of_thousands_of_leads_is_413_at_once(
    live: LiveService, formats_dir: Path, name: str, template: str, build: Any
) -> None:
    """20,000 one-sample leads in an aECG sequence set or a MUSE waveform were read (4-8 s of
    CPU, quadratic in the leads) and stored as a 20,000-lead record: the leads are now
    counted against max_ecg_leads before any is decoded."""
    data = build((formats_dir / template).read_bytes())
    started = time.monotonic()
    growth, response = peak_growth_mb(live.pid, lambda: _octet(data)(live))
    seconds = time.monotonic() - started
    print(f"\nlead flood {name}: {len(data)} bytes, peak +{growth:.1f} MB, {seconds:.1f} s")
    GROWTH[f"{name}-leads"] = growth
    _assert_refused(response, "max_ecg_leads")
    assert "20000 channels" in response.json()["issue"][0]["diagnostics"]
    assert seconds < 5
    assert growth < MAX_GROWTH_MB


def test_hdf5_bomb_inline_in_a_hook_call_is_named_not_decoded(live: LiveService) -> None:
    """The same HDF5 file as an inline attachment: an unreadable-ECG card naming the limit."""
    document = document_reference("bomb-1", bombs.hdf5_bomb(), "application/octet-stream")
    body = hook_body(
        prefetch={
            "ecgObservations": None,
            "ecgDocuments": searchset(document),
            "ecgImagingStudies": None,
        }
    )
    # A first call loads the model and catalog (a one-off, hundreds of MB): not the bomb's.
    empty = {"ecgObservations": None, "ecgDocuments": searchset(), "ecgImagingStudies": None}
    assert live.hook("/cds-services/ecg-review", hook_body(prefetch=empty)).status_code == 200
    growth, response = peak_growth_mb(live.pid, lambda: live.hook("/cds-services/ecg-review", body))
    print(f"\nbomb hdf5 inline in a hook call: peak +{growth:.1f} MB")
    GROWTH["hdf5-hook"] = growth
    assert response.status_code == 200, response.text[:500]
    details = " ".join(card["detail"] for card in response.json()["cards"])
    assert "DocumentReference/bomb-1" in details
    assert "max\\_ecg\\_samples" in details  # Markdown-escaped in the card
    assert growth < MAX_GROWTH_MB


def test_a_hook_body_of_millions_of_tiny_values_is_400_without_the_memory(
    live: LiveService,
) -> None:
    """3 million empty arrays in a prefetch key: 9 MB of text, well under the body limit,
    that parsed into about 200 MB of Python lists. Refused before parsing, naming the limit."""
    import json

    from cds_service.input_guard import MAX_JSON_VALUES

    body = json.dumps(hook_body(prefetch={"ecgObservations": None})).encode()
    tiny = b"[" + b"[]," * (MAX_JSON_VALUES + 1_000_000) + b"[]]"
    body = body.replace(b'"ecgObservations": null', b'"ecgObservations": ' + tiny)
    path = "/cds-services/ecg-review"
    headers = {"Authorization": f"Bearer {live.token(path)}", "Content-Type": "application/json"}

    def attack() -> httpx.Response:
        return httpx.post(live.base_url + path, content=body, headers=headers, timeout=120)

    growth, response = peak_growth_mb(live.pid, attack)
    print(f"\nbomb JSON values: {len(body)} bytes, web process peak +{growth:.1f} MB")
    GROWTH["json-values"] = growth
    assert response.status_code == 400, response.text[:300]
    assert f"over the limit of {MAX_JSON_VALUES}" in response.text
    assert growth < MAX_GROWTH_MB


def test_genuine_records_still_load(live: LiveService, dicom_bytes: bytes) -> None:
    """The limits are far above real ECGs: the waveform DICOM uploads as before."""
    response = _octet(dicom_bytes)(live)
    assert response.status_code in (200, 201), response.text[:500]


_JSON_BYTES = [b'"', b"a", b"{", b"}", b"[", b"]", b",", b":", b"1", b" ", b'""']
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _strings_blanked_stepwise(body: bytes) -> bytes:
    """The reference: a byte at a time, each string (escapes read as escapes) made ``""``."""
    out = bytearray()
    i = 0
    while i < len(body):
        if body[i : i + 1] != b'"':
            out += body[i : i + 1]
            i += 1
            continue
        j = i + 1
        while j < len(body) and body[j : j + 1] != b'"':
            j += 2 if body[j : j + 1] == b"\\" else 1
        if j >= len(body):  # never closed: the rest as it is
            return bytes(out + body[i:])
        out += b'""'
        i = j + 1
    return bytes(out)


@given(st.lists(st.sampled_from(_JSON_BYTES), max_size=40))
def test_strings_are_removed_from_text_without_escapes(pieces: list[bytes]) -> None:
    """Any bytes without a backslash, unclosed strings included: each string becomes ``""``."""
    from cds_service.input_guard import without_strings

    body = b"".join(pieces)
    assert without_strings(body) == _strings_blanked_stepwise(body)


@given(_JSON_VALUES, st.booleans())
def test_strings_are_removed_from_any_json(value: object, ascii_only: bool) -> None:
    """Valid JSON with every kind of escape (quotes, backslashes, control characters, \\u):
    the strings, and only they, become ``""``."""
    from cds_service.input_guard import without_strings

    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert without_strings(body) == _strings_blanked_stepwise(body)


def test_escaped_quotes_outside_strings_take_linear_time() -> None:
    """200 KB of ``\\"``: the regular expression this check used backtracked over the rest of
    the body from every quote (32 KB took 3.8 s, this would have taken minutes); a split is
    one pass. The body is not JSON; it is refused by the parser, not here."""
    from cds_service.input_guard import json_body_problem

    assert json_body_problem(b"[" + b'\\"' * 100_000 + b"]", 64) is None


def test_a_body_of_many_strings_is_refused_before_they_are_taken_apart() -> None:
    """Removing the strings makes a piece per string: 32 MB of ``"",`` would be ten million
    pieces (a gigabyte of Python objects). More strings than the limit are refused by a count
    of the quotes; a body under it is scanned in memory of the order of its size."""
    import tracemalloc

    from cds_service.input_guard import MAX_JSON_STRINGS, json_body_problem

    over = b"[" + b'"",' * MAX_JSON_STRINGS + b'""]'
    under = b"[" + b'"",' * (MAX_JSON_STRINGS // 2) + b'""]'
    tracemalloc.start()
    try:
        refused = json_body_problem(over, 64)
        _, peak_over = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        accepted = json_body_problem(under, 64)
        _, peak_under = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused is not None and f"over the limit of {MAX_JSON_STRINGS}" in refused
    assert peak_over < 1_000_000  # a count, nothing taken apart
    assert accepted is None
    assert peak_under < 40 * len(under), f"{peak_under / 1e6:.0f} MB for {len(under) / 1e6:.1f} MB"


def _escape_problem_stepwise(body: bytes) -> str | None:
    """The reference: every escape read in turn, as the guard did before (and as a JSON
    parser reads them), pairing each high surrogate with a low one right after it."""
    import re

    pending_high: int | None = None
    for match in re.finditer(rb"\\(?:u([0-9a-fA-F]{4})|.)", body, re.DOTALL):
        code = int(match.group(1), 16) if match.group(1) is not None else None
        if pending_high is not None:
            if code is not None and 0xDC00 <= code <= 0xDFFF and match.start() == pending_high:
                pending_high = None
                continue
            return "a string holds a lone UTF-16 surrogate (\\ud800-\\udbff unpaired)"
        if code == 0:
            return "a string holds a NUL character (\\u0000)"
        if code is not None and 0xD800 <= code <= 0xDBFF:
            pending_high = match.end()
        elif code is not None and 0xDC00 <= code <= 0xDFFF:
            return "a string holds a lone UTF-16 surrogate (\\udc00-\\udfff unpaired)"
    if pending_high is not None:
        return "a string holds a lone UTF-16 surrogate (\\ud800-\\udbff unpaired)"
    return None


_ESCAPE_PIECES = [
    b"\\", b"\\\\", b"\\n", b'\\"', b"\\u0000", b"\\u0001", b"\\ud800", b"\\uDBFF", b"\\udc00",
    b"\\uDFFF", b"\\ue000", b"\\u00e9", b"a", b'"', b"u", b"d800", b"0",
]  # fmt: skip


@given(st.lists(st.sampled_from(_ESCAPE_PIECES), max_size=12))
def test_escapes_are_judged_as_read_one_by_one(pieces: list[bytes]) -> None:
    """The searches find the first escaped NUL or lone surrogate that reading every escape in
    turn finds, with the same message, escaped backslashes and adjacency included."""
    from cds_service.input_guard import _escape_problem, _without_escaped_backslashes

    body = b"".join(pieces)
    found = _escape_problem(_without_escaped_backslashes(body))
    assert found == _escape_problem_stepwise(body), body


def test_a_flood_of_escapes_is_judged_as_a_whole() -> None:
    """32 MB of escapes (16 million): those that cannot be a problem leave none, and a lone
    surrogate after 15 million escaped backslashes is found (measured: 5 s of CPU per such
    request when every escape was a step of a Python loop, 0.1-0.5 s with the searches)."""
    from cds_service.input_guard import _escape_problem, _without_escaped_backslashes

    def problem_of(body: bytes) -> str | None:
        return _escape_problem(_without_escaped_backslashes(body))

    assert problem_of(b'["' + b"\\n" * 16_000_000 + b'"]') is None
    problem = problem_of(b'["' + b"\\\\" * 15_000_000 + b'\\ud800"]')
    assert problem is not None and "lone UTF-16 surrogate" in problem


@pytest.mark.parametrize("digits", [399, 400, 401, 402, 1000])
def test_long_numbers_are_found_where_they_begin(digits: int) -> None:
    """A number of more than MAX_NUMBER_DIGITS digits is refused, one of as many passes,
    whether alone, after a sign or among others; the search is tried only where a run of
    digits begins (from every digit, 400-digit runs had cost 0.4 s per MB)."""
    from cds_service.input_guard import MAX_NUMBER_DIGITS, json_body_problem

    for body in (
        b"[" + b"7" * digits + b"]",
        b"[1,-" + b"7" * digits + b",2]",
        b"[" + (b"3" * 400 + b",") * 1000 + b"7" * digits + b"]",
    ):
        problem = json_body_problem(body, 64)
        assert (problem is not None) == (digits > MAX_NUMBER_DIGITS), body[:20]
