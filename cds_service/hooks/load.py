"""Step 2 of a hook call: each candidate's bytes, inline or fetched concurrently.

A candidate that cannot be fetched becomes a problem on the "could not be read" card, never
a failed call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from cds_service.fhir_client import FetchFailed, FhirFetcher, OutboundRefused
from cds_service.hooks.cache import quick_key
from cds_service.hooks.context import Gathered
from cds_service.hooks.sources import EcgCandidate, canonical_json


class Loaded:
    """A candidate's bytes: given, or (a prefetched Observation) serialised when first asked
    for, which a call about an already known ECG never does (see ``hooks.cache``)."""

    __slots__ = ("_data", "_quick", "_quick_made", "candidate")

    def __init__(self, candidate: EcgCandidate, data: bytes | None = None) -> None:
        if data is None and candidate.resource is None:
            raise ValueError("a candidate without a resource needs its bytes")
        self.candidate = candidate
        self._data = data
        self._quick: str | None = None
        self._quick_made = False

    def quick_key(self) -> str | None:
        """:func:`~cds_service.hooks.cache.quick_key` of the prefetched resource (None for
        bytes given or fetched), made once: a new ECG's call asks on the cached path, misses,
        and asks again on the full path."""
        if not self._quick_made:
            resource = self.candidate.resource
            self._quick = quick_key(resource) if resource is not None else None
            self._quick_made = True
        return self._quick

    @property
    def data(self) -> bytes:
        if self._data is None:
            assert self.candidate.resource is not None  # checked at construction
            self._data = canonical_json(self.candidate.resource)
        return self._data


async def load(
    candidates: list[EcgCandidate], fetcher: FhirFetcher | None, gathered: Gathered
) -> list[Loaded]:
    """Bytes for each candidate: inline, or fetched concurrently (attachments, WADO-RS)."""

    async def one(candidate: EcgCandidate) -> Loaded | None:
        if candidate.resource is not None:
            return Loaded(candidate)
        if candidate.attachment is not None and candidate.attachment.get("data"):
            if fetcher is not None:
                return Loaded(candidate, await fetcher.attachment_bytes(candidate.attachment))
            return Loaded(candidate, inline_bytes(candidate.attachment))
        if fetcher is None:
            gathered.problems.append(f"{candidate.origin}: not fetched (no usable fhirServer)")
            return None
        if candidate.dicomweb is not None:
            parts = await fetcher.wado(candidate.dicomweb)
            gathered.fetched.append("DICOMweb")
            return Loaded(candidate, parts[0])
        if candidate.attachment is not None:
            data = await fetcher.attachment_bytes(candidate.attachment)
            gathered.fetched.append("attachment")
            return Loaded(candidate, data)
        return None

    async def guarded(candidate: EcgCandidate) -> Loaded | None:
        try:
            return await one(candidate)
        except (FetchFailed, OutboundRefused) as exc:
            gathered.problems.append(f"{candidate.origin}: {exc}")
            return None

    results = await asyncio.gather(*(guarded(c) for c in candidates))
    return [r for r in results if r is not None]


def inline_bytes(attachment: dict[str, Any]) -> bytes:
    """Decodes inline attachment data without any server (no fhirServer given)."""
    try:
        return base64.b64decode(str(attachment.get("data")), validate=True)
    except (binascii.Error, ValueError):
        raise FetchFailed("attachment", "inline data is not valid base64") from None
