"""Answers of an allow-listed server that inflate far past their bound (gzip bombs), or come in
a coding nothing here decodes: refused while they are read, within bounded memory.

A compromised or misconfigured FHIR server, PACS or key server can answer a few hundred KB
of gzip that inflate to hundreds of MB. The reads (search, Binary attachment) go through
the real :class:`~cds_service.fhir_client.FhirFetcher` to a loopback listener; the memory
bound is Python's own allocation peak (tracemalloc) during the read.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cds_service.capped_body import CappedBody, FetchFailed
from cds_service.fhir_client import FhirFetcher
from cds_service.settings import Settings
from tests.security.listener import Listener

#: The bounds the reads run under here: small, so that an unbounded read is obvious.
MAX_JSON = 1024 * 1024
MAX_ECG = 1024 * 1024
#: What each bomb inflates to: 64 times its bound.
INFLATED = 64 * 1024 * 1024
#: A bounded read holds its bound and a piece or two; an unbounded one holds the whole.
MAX_PEAK_MB = 12.0


def _gzip_of_zeros(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    block = b"0" * (1024 * 1024)
    out = [packer.compress(block) for _ in range(size // len(block))]
    return b"".join([*out, packer.flush()])


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _gzip_of_zeros(INFLATED)


def _settings(tmp_path: Path, listener: Listener) -> Settings:
    return Settings(
        data_dir=tmp_path,
        max_request_bytes=MAX_JSON,
        max_ecg_bytes=MAX_ECG,
        fhir={"allowed_servers": [f"{listener.url}/fhir"]},
    )


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Callable[..., tuple[Listener, FhirFetcher]]]:
    started: list[Listener] = []

    def start(body: bytes, content_type: str, **headers: str) -> tuple[Listener, FhirFetcher]:
        listener = Listener(200, body=body, content_type=content_type, headers=headers)
        started.append(listener)
        fetcher = FhirFetcher(_settings(tmp_path, listener), f"{listener.url}/fhir", None)
        return listener, fetcher

    yield start
    for listener in started:
        listener.close()


def _peak_mb(read: Callable[[], Awaitable[Any]]) -> tuple[float, BaseException | Any]:
    tracemalloc.start()
    try:
        try:
            outcome: BaseException | Any = asyncio.run(read())  # type: ignore[arg-type]
        except FetchFailed as exc:
            outcome = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 1e6, outcome


def test_a_search_answered_with_a_gzip_bomb_is_refused_within_bounded_memory(
    serving: Callable[..., tuple[Listener, FhirFetcher]], bomb: bytes
) -> None:
    """Before: fhirpy (aiohttp) inflated the whole answer and decoded it to text, then
    failed it as "not JSON", after holding it twice over (a 64 KB answer: ~130 MB)."""
    listener, fetcher = serving(bomb, "application/fhir+json", **{"Content-Encoding": "gzip"})
    peak, outcome = _peak_mb(lambda: fetcher.search("Observation", {"patient": "p1"}))
    assert isinstance(outcome, FetchFailed), outcome
    assert f"larger than {MAX_JSON} bytes" in outcome.problem
    assert peak < MAX_PEAK_MB, f"peak {peak:.1f} MB for a {len(bomb)}-byte answer"
    assert listener.requests  # it was read, not refused unseen


def test_an_attachment_answered_with_a_gzip_bomb_is_refused_within_bounded_memory(
    serving: Callable[..., tuple[Listener, FhirFetcher]], bomb: bytes
) -> None:
    """Before: httpx inflated each received chunk whole before the size check saw it (one
    64 KiB chunk of this bomb is 64 MiB)."""
    listener, fetcher = serving(bomb, "application/octet-stream", **{"Content-Encoding": "gzip"})
    attachment = {"url": f"{listener.url}/fhir/Binary/bomb", "contentType": "application/dicom"}
    peak, outcome = _peak_mb(lambda: fetcher.attachment_bytes(attachment))
    assert isinstance(outcome, FetchFailed), outcome
    assert f"larger than {MAX_ECG} bytes" in outcome.problem
    assert peak < MAX_PEAK_MB, f"peak {peak:.1f} MB for a {len(bomb)}-byte answer"


def test_compressed_answers_within_bounds_are_read(
    serving: Callable[..., tuple[Listener, FhirFetcher]],
) -> None:
    """Servers that compress (gzip, or zlib as HTTP's "deflate") are still read, and
    what is read is exactly what was sent."""
    observation = {"resourceType": "Observation", "id": "o1", "status": "final"}
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": observation}]}
    raw = json.dumps(bundle).encode()
    for coding, packed in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
        _, fetcher = serving(packed, "application/fhir+json", **{"Content-Encoding": coding})
        assert asyncio.run(fetcher.search("Observation", {"patient": "p1"})) == [observation]
    payload = bytes(range(256)) * 2048  # 512 KiB of DICOM-like bytes, under the bound
    listener, fetcher = serving(gzip.compress(payload), "application/dicom", **{
        "Content-Encoding": "gzip"})  # fmt: skip
    attachment = {"url": f"{listener.url}/fhir/Binary/1", "contentType": "application/dicom"}
    assert asyncio.run(fetcher.attachment_bytes(attachment)) == payload


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, gzip", "compress"])
def test_an_answer_in_a_coding_not_read_here_is_refused_by_name(
    serving: Callable[..., tuple[Listener, FhirFetcher]], coding: str
) -> None:
    """Only gzip and deflate are offered; an answer in another coding is not read as if it
    were plain (garbage JSON at best)."""
    _, fetcher = serving(b"\x00" * 64, "application/fhir+json", **{"Content-Encoding": coding})
    with pytest.raises(FetchFailed, match="content coding"):
        asyncio.run(fetcher.search("Observation", {"patient": "p1"}))


def test_a_plain_answer_over_the_bound_is_refused_while_it_streams(
    serving: Callable[..., tuple[Listener, FhirFetcher]],
) -> None:
    listener, fetcher = serving(b" " * (2 * MAX_JSON), "application/fhir+json")
    peak, outcome = _peak_mb(lambda: fetcher.read("Observation/1"))
    assert isinstance(outcome, FetchFailed) and "larger than" in outcome.problem
    assert peak < MAX_PEAK_MB
    assert listener.requests == ["/fhir/Observation/1"]


def test_corrupt_compressed_bytes_are_named() -> None:
    body = CappedBody("Binary/1", MAX_ECG, "gzip")
    with pytest.raises(FetchFailed, match="corrupt"):
        body.add_raw(gzip.compress(b"x" * 1000)[:20] + b"\xff" * 40)
        body.data()
