"""Public keys of trusted EHRs: JWKS from allow-listed URLs or local files, cached.

Keys are looked up by ``kid``. A URL's key set is cached for ``jwks_cache_s``; an unknown
``kid`` triggers one early refetch (the EHR rotated its keys), at most once per
``MIN_REFETCH_S`` per URL so that tokens with random kids cannot make us hammer the EHR.
A local file is re-read when its mtime changes, looked at within ``FILE_RECHECK_S``.
Only URLs listed for the token's issuer are ever fetched: a ``jku`` header is a hint
checked against that list, never a place to go.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt

from cds_service.auth.errors import TokenRejected
from cds_service.settings import AuthSettings, TrustedIssuer

log = logging.getLogger(__name__)

#: Fastest an unknown kid may trigger a refetch of the same URL.
MIN_REFETCH_S = 10.0
#: A key set larger than this is not a key set.
MAX_JWKS_BYTES = 256 * 1024
FETCH_TIMEOUT_S = 5.0
#: A local key file's mtime is looked at once per this interval for a known kid (a stat
#: per request was a visible share of a cached hook call); an unknown kid looks at once.
FILE_RECHECK_S = 1.0


@dataclass
class _KeySet:
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float = 0.0
    mtime: float | None = None  # local files: reloaded when changed
    checked_at: float = 0.0  # local files: when the mtime was last looked at


def parse_jwks(data: Any, source: str) -> dict[str, jwt.PyJWK]:
    """The usable asymmetric keys of a JWKS document, by kid. Symmetric keys are dropped."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f"{source}: not a JWKS document (no 'keys' list)")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in data["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") not in ("EC", "RSA", "OKP"):
            continue  # "oct" (HMAC) keys are never accepted
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if entry.get("use") not in (None, "sig"):
            continue
        try:
            keys[kid] = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            log.warning("%s: key %r skipped (%s)", source, kid, type(exc).__name__)
    return keys


class JwksCache:
    """Finds the verification key for (issuer, kid, jku)."""

    def __init__(
        self,
        settings: AuthSettings,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        min_refetch_s: float = MIN_REFETCH_S,
    ) -> None:
        self._settings = settings
        self._min_refetch_s = min_refetch_s
        self._sets: dict[str, _KeySet] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._transport = transport

    async def key_for(self, issuer: TrustedIssuer, kid: str, jku: str | None) -> jwt.PyJWK:
        if jku is not None:
            if jku not in issuer.jwks_urls:
                raise TokenRejected(
                    f"jku {jku!r} is not on the allow-list of issuer {issuer.iss!r}"
                )
            sources: list[str] = [jku]
        else:
            sources = list(issuer.jwks_urls)
            if issuer.jwks_file is not None:
                sources.append(f"file:{issuer.jwks_file}")
        if not sources:
            raise TokenRejected(f"issuer {issuer.iss!r} has no JWKS URL or file configured")
        for source in sources:
            key = await self._lookup(source, kid)
            if key is not None:
                return key
        raise TokenRejected(f"no key with kid {kid!r} for issuer {issuer.iss!r}")

    async def _lookup(self, source: str, kid: str) -> jwt.PyJWK | None:
        if source.startswith("file:"):
            return self._from_file(Path(source[5:]), kid)
        lock = self._locks.setdefault(source, asyncio.Lock())
        async with lock:
            now = time.monotonic()
            cached = self._sets.get(source)
            fresh = cached is not None and now - cached.fetched_at < self._settings.jwks_cache_s
            if cached is not None and fresh and kid in cached.keys:
                return cached.keys[kid]
            may_refetch = (
                cached is None or not fresh or now - cached.fetched_at >= self._min_refetch_s
            )
            if may_refetch:
                keys = await self._fetch(source)
                if keys is not None:
                    cached = _KeySet(keys=keys, fetched_at=now)
                    self._sets[source] = cached
            return cached.keys.get(kid) if cached is not None else None

    async def _fetch(self, url: str) -> dict[str, jwt.PyJWK] | None:
        """Download one JWKS; None (and the stale cache kept) when the EHR is unreachable."""
        try:
            async with httpx.AsyncClient(
                timeout=FETCH_TIMEOUT_S, follow_redirects=False, transport=self._transport
            ) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
            if response.status_code != 200:
                log.warning("JWKS %s answered HTTP %d", url, response.status_code)
                return None
            if len(response.content) > MAX_JWKS_BYTES:
                log.warning("JWKS %s is over %d bytes; ignored", url, MAX_JWKS_BYTES)
                return None
            return parse_jwks(response.json(), url)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("JWKS %s could not be fetched (%s)", url, type(exc).__name__)
            return None

    def _from_file(self, path: Path, kid: str) -> jwt.PyJWK | None:
        source = f"file:{path}"
        cached = self._sets.get(source)
        now = time.monotonic()
        if cached is not None and kid in cached.keys and now - cached.checked_at < FILE_RECHECK_S:
            return cached.keys[kid]  # a key removed from the file stops working within 1 s
        try:
            mtime = path.stat().st_mtime
        except OSError:
            log.warning("JWKS file %s is missing", path)
            self._sets.pop(source, None)
            return None
        if cached is not None:
            cached.checked_at = now
        if cached is None or cached.mtime != mtime:
            try:
                keys = parse_jwks(json.loads(path.read_text(encoding="utf-8")), str(path))
            except (OSError, ValueError) as exc:
                log.warning("JWKS file %s unreadable (%s)", path, exc)
                return None
            cached = _KeySet(keys=keys, fetched_at=now, mtime=mtime, checked_at=now)
            self._sets[source] = cached
        return cached.keys.get(kid)
