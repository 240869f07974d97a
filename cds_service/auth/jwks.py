"""Public keys of trusted EHRs: JWKS from allow-listed URLs or local files, cached.

Keys are looked up by ``kid`` and by the token's ``alg`` (a JWK's own ``alg``, else its
``kty`` and curve, must fit it), so a key set mixing RSA and EC keys, or two keys under one
kid, finds the key that can verify the token. A token without ``kid`` (RFC 7515 makes it
optional; CDS Hooks asks for it) is tried against the issuer's keys that fit its ``alg``,
at most :data:`MAX_CANDIDATES` of them; keys published without a ``kid`` are used the same
way. A URL's key set is cached for ``jwks_cache_s``; an unknown ``kid`` triggers one early
refetch (the EHR rotated its keys). Every download attempt of a URL, failed or not, is at
most once per ``MIN_REFETCH_S``, so tokens with random kids cannot make us hammer the EHR,
nor queue every call behind a download while it is unreachable (its last key set is kept).
A download is bounded in size (read in chunks) and in total time.
A local file is re-read when its mtime changes, looked at within ``FILE_RECHECK_S``.
Only URLs listed for the token's issuer are ever fetched: a ``jku`` header is a hint
checked against that list (in normal form), never a place to go. An issuer with JWKS URLs
has its ``jku`` allow-listed (CDS Hooks 2.0.1: services SHOULD allow-list ``jku``): another
is refused. An issuer whose keys were exchanged out of band (a file, no URLs) has no such
list: its ``jku`` is ignored, never fetched, and the file's keys decide.
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

from cds_service.allow_list import UrlMalformed, normalise_url, redact_url
from cds_service.auth.errors import TokenRejected
from cds_service.capped_body import ACCEPT_ENCODING, FetchFailed, aread_body
from cds_service.settings import AuthSettings, TrustedIssuer

log = logging.getLogger(__name__)

#: Fastest an unknown kid may trigger a refetch of the same URL.
MIN_REFETCH_S = 10.0
#: A key set larger than this is not a key set.
MAX_JWKS_BYTES = 256 * 1024
#: The whole download (connect, headers, body), not just each read.
FETCH_TIMEOUT_S = 5.0
#: Keys a token without a usable kid is tried against (each try is one signature check).
MAX_CANDIDATES = 8
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
#: A local key file's mtime is looked at once per this interval for a known kid (a stat
#: per request was a visible share of a cached hook call); an unknown kid looks at once.
FILE_RECHECK_S = 1.0


@dataclass(frozen=True)
class _Key:
    kid: str | None  # None: published without a kid
    jwk: jwt.PyJWK
    data: dict[str, Any]

    def fits(self, alg: str | None) -> bool:
        """Whether this key may verify ``alg`` (None: any)."""
        if alg is None:
            return True
        explicit = self.data.get("alg")
        if explicit is not None:  # a JWK's own "alg" pins it (no algorithm confusion)
            return bool(explicit == alg)
        if alg[:2] in ("RS", "PS"):
            return self.data.get("kty") == "RSA"
        return self.data.get("kty") == "EC" and self.data.get("crv") == _CURVES.get(alg)


@dataclass
class _KeySet:
    keys: list[_Key] = field(default_factory=list)
    fetched_at: float = 0.0
    mtime: float | None = None  # local files: reloaded when changed
    checked_at: float = 0.0  # local files: when the mtime was last looked at

    def find(self, kid: str | None, alg: str | None) -> list[jwt.PyJWK]:
        """The keys that may verify a token with this kid and alg: those with its kid, else
        (no kid, or a kid this set does not hold) the keys published without one, or, for a
        token without kid, every key that fits."""
        fitting = [key for key in self.keys if key.fits(alg)]
        if kid is not None:
            named = [key.jwk for key in fitting if key.kid == kid]
            if named or any(key.kid == kid for key in self.keys):
                return named
            return [key.jwk for key in fitting if key.kid is None]
        return [key.jwk for key in fitting]

    def holds(self, kid: str | None) -> bool:
        return kid is None or any(key.kid == kid for key in self.keys)


def parse_jwks(data: Any, source: str) -> list[_Key]:
    """The usable asymmetric signing keys of a JWKS document. Symmetric keys, and keys
    whose ``use`` or ``key_ops`` say they are not for verifying signatures, are dropped."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f"{source}: not a JWKS document (no 'keys' list)")
    keys: list[_Key] = []
    for entry in data["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") not in ("EC", "RSA", "OKP"):
            continue  # "oct" (HMAC) keys are never accepted
        kid = entry.get("kid")
        if entry.get("use") not in (None, "sig") or not isinstance(kid, str | None):
            continue
        # RFC 7517 section 4.3: key_ops says what a key is for, as use does; a key
        # published for encryption only is no more a signing key than one with use "enc".
        # "sign" alone on a published public key is a common slip for "verify": still a
        # signature key, so kept (refusing it would refuse every token of that EHR).
        ops = entry.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or not {"verify", "sign"} & set(ops)):
            continue
        try:
            keys.append(_Key(kid or None, jwt.PyJWK(entry), entry))
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            log.warning("%s: key %r skipped (%s)", source, kid, type(exc).__name__)
    return keys


def _listed(jku: str, urls: list[str]) -> str | None:
    """The configured URL that ``jku`` names (compared in normal form: scheme and host
    case, default port), or None."""
    try:
        wanted = normalise_url(jku).url
    except UrlMalformed:
        return None
    for url in urls:
        try:
            if normalise_url(url).url == wanted:
                return url
        except UrlMalformed:
            continue
    return None


class JwksCache:
    """Finds the verification keys for (issuer, kid, jku, alg)."""

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
        self._tried: dict[str, float] = {}  # URL -> when a download was last attempted
        self._locks: dict[str, asyncio.Lock] = {}
        self._transport = transport

    async def key_for(self, issuer: TrustedIssuer, kid: str, jku: str | None) -> jwt.PyJWK:
        """The first key with ``kid`` (any algorithm); :class:`TokenRejected` when none."""
        return (await self.keys_for(issuer, kid, jku, None))[0]

    async def keys_for(
        self, issuer: TrustedIssuer, kid: str | None, jku: str | None, alg: str | None
    ) -> list[jwt.PyJWK]:
        """The keys a token may be verified with (at most :data:`MAX_CANDIDATES`, at least
        one), or :class:`TokenRejected` saying why there are none."""
        listed = _listed(jku, issuer.jwks_urls) if jku is not None else None
        if listed is not None:
            sources: list[str] = [listed]  # the configured spelling is what is fetched
        elif jku is not None and issuer.jwks_urls:
            raise TokenRejected(
                f"jku {redact_url(jku)!r} is not on the allow-list of issuer {issuer.iss!r}"
            )
        else:  # no jku, or keys exchanged out of band (a file only): the jku is not fetched
            sources = list(issuer.jwks_urls)
            if issuer.jwks_file is not None:
                sources.append(f"file:{issuer.jwks_file}")
        if not sources:
            raise TokenRejected(f"issuer {issuer.iss!r} has no JWKS URL or file configured")
        found: list[jwt.PyJWK] = []
        for source in sources:
            found += await self._lookup(source, kid, alg)
        if not found:
            raise TokenRejected(f"no key with kid {kid!r} for {alg} of issuer {issuer.iss!r}")
        if len(found) > MAX_CANDIDATES:
            raise TokenRejected(
                f"{len(found)} keys of issuer {issuer.iss!r} fit a token without a known kid; "
                f"at most {MAX_CANDIDATES} are tried"
            )
        return found

    async def _lookup(self, source: str, kid: str | None, alg: str | None) -> list[jwt.PyJWK]:
        if source.startswith("file:"):
            return self._from_file(Path(source[5:]), kid, alg)
        lock = self._locks.setdefault(source, asyncio.Lock())
        async with lock:
            now = time.monotonic()
            cached = self._sets.get(source)
            fresh = cached is not None and now - cached.fetched_at < self._settings.jwks_cache_s
            if cached is not None and fresh and cached.holds(kid):
                return cached.find(kid, alg)
            last_try = self._tried.get(source)
            if last_try is None or now - last_try >= self._min_refetch_s:
                self._tried[source] = now
                keys = await self._fetch(source)
                if keys is not None:
                    cached = _KeySet(keys=keys, fetched_at=now)
                    self._sets[source] = cached
                elif cached is not None:
                    cached.fetched_at = now  # unreachable: its last keys, for another period
            return cached.find(kid, alg) if cached is not None else []

    async def _fetch(self, url: str) -> list[_Key] | None:
        """Download one JWKS; None (and the last key set kept) when the EHR is unreachable."""
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                body = await self._download(url)
            return None if body is None else parse_jwks(json.loads(body), url)
        # InvalidURL (a configured URL httpx cannot send, e.g. a control character) is not
        # an HTTPError: uncaught, every token naming the issuer was a 500.
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, RecursionError, TimeoutError) as exc:
            log.warning("JWKS %r could not be fetched (%s)", url, type(exc).__name__)
            return None

    async def _download(self, url: str) -> bytes | None:
        async with httpx.AsyncClient(
            timeout=FETCH_TIMEOUT_S,
            follow_redirects=False,
            transport=self._transport,
            headers={"Accept-Encoding": ACCEPT_ENCODING},
        ) as client:
            headers = {"Accept": "application/json"}
            async with client.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    log.warning("JWKS %s answered HTTP %d", url, response.status_code)
                    return None
                try:
                    return await aread_body(response, "JWKS", MAX_JWKS_BYTES)
                except FetchFailed as exc:
                    log.warning("JWKS %s ignored: %s", url, exc.problem)
                    return None

    def _from_file(self, path: Path, kid: str | None, alg: str | None) -> list[jwt.PyJWK]:
        source = f"file:{path}"
        cached = self._sets.get(source)
        now = time.monotonic()
        if cached is not None and cached.holds(kid) and now - cached.checked_at < FILE_RECHECK_S:
            return cached.find(kid, alg)  # a key removed from the file stops working within 1 s
        try:
            mtime = path.stat().st_mtime
        except OSError:
            log.warning("JWKS file %s is missing", path)
            self._sets.pop(source, None)
            return []
        if cached is not None:
            cached.checked_at = now
        if cached is None or cached.mtime != mtime:
            try:
                keys = parse_jwks(json.loads(path.read_text(encoding="utf-8")), str(path))
            except (OSError, ValueError, RecursionError) as exc:
                log.warning("JWKS file %s unreadable (%s)", path, exc)
                return []
            cached = _KeySet(keys=keys, fetched_at=now, mtime=mtime, checked_at=now)
            self._sets[source] = cached
        return cached.find(kid, alg)
