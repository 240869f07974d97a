"""Verification of one CDS Hooks bearer JWT (CDS Hooks 2.0.1, "Trusting CDS Clients").

Checks, in order: header shape and algorithm (asymmetric only: ``none`` and HMAC are never
accepted, whatever a key set says), ``iss`` on the allow-list, key by ``kid`` and ``alg``
(``jku`` only if allow-listed; ignored for keys exchanged out of band; a token without
``kid`` is tried against the issuer's keys that fit its ``alg``), signature, ``aud``,
``exp``/``nbf``/``iat`` with the configured skew, the maximum lifetime, and finally ``jti``
not seen before. Extra claims (``sub``,
``tenant``, Epic's additions) are tolerated and passed on.

``aud`` is a string or an array of strings (CDS Hooks 2.0.1 and RFC 7519 section 4.1.3):
the token passes when one of them is one of the expected audiences. URLs are compared in
normal form (scheme and host case, default port, one trailing slash), never by prefix.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt

from cds_service.allow_list import UrlMalformed, normalise_url
from cds_service.auth.errors import TokenRejected
from cds_service.auth.jwks import JwksCache
from cds_service.auth.replay import InMemoryReplayCache, ReplayCache
from cds_service.settings import AuthSettings, TrustedIssuer

log = logging.getLogger(__name__)

#: ES384 and RS384 are what the spec recommends; the other asymmetric algorithms of the
#: same families are accepted because real EHRs use them. No HMAC, no ``none``, ever.
ALLOWED_ALGORITHMS: frozenset[str] = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
#: A JWT longer than this is not a CDS Hooks token (and would only cost CPU).
MAX_TOKEN_CHARS = 16 * 1024


@dataclass(frozen=True)
class VerifiedToken:
    """What a verified token says about the caller."""

    iss: str
    jti: str
    exp: int
    sub: str | None = None
    tenant: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)


class TokenVerifier:
    """Verifies bearer tokens against :class:`~cds_service.settings.AuthSettings`."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        jwks: JwksCache | None = None,
        replay: ReplayCache | None = None,
    ) -> None:
        self.settings = settings
        self.jwks = jwks or JwksCache(settings)
        self.replay: ReplayCache = replay or InMemoryReplayCache()
        self._issuers = {issuer.iss: issuer for issuer in settings.trusted_issuers}

    def issuer(self, iss: str) -> TrustedIssuer | None:
        return self._issuers.get(iss)

    async def verify(self, token: str, audiences: Iterable[str]) -> VerifiedToken:
        """Return the token's claims, or raise :class:`TokenRejected` saying why."""
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise TokenRejected("not a compact JWS")
        try:
            # One read of the header and claims, to pick the issuer and key (trusting
            # neither until the signature is verified below).
            unread = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
            header, unverified = unread["header"], unread["payload"]
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"malformed token ({type(exc).__name__})") from None

        alg = header.get("alg")
        # A list or object is unhashable: checked for str first, or the set lookup raises.
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise TokenRejected(f"algorithm {alg!r} is not accepted")
        typ = header.get("typ")
        # RFC 7515 section 4.1.9: "application/" may be left out; media types ignore case.
        if typ is not None and str(typ).upper().removeprefix("APPLICATION/") != "JWT":
            raise TokenRejected(f"typ {typ!r} is not JWT")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("kid is not a string")
        jku = header.get("jku")
        if jku is not None and not isinstance(jku, str):
            raise TokenRejected("jku is not a string")

        iss = unverified.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise TokenRejected(f"issuer {iss!r} is not trusted")

        # Only keys that fit alg (a JWK's own "alg" pins it: no algorithm confusion).
        keys = await self.jwks.keys_for(issuer, kid or None, jku, alg)
        skew = self.settings.clock_skew_s
        # On the event loop, although OpenSSL checks the signature without the GIL (0.5 ms
        # for ES384): in a worker thread PyJWT's Python around it contends for the GIL,
        # and in alternating runs cached hook calls fell from 0.46-0.50x to 0.35-0.47x
        # the bare endpoint's requests/s (p95 from 1.75-2.12x to 1.91-2.71x its p95).
        claims = _decode(token, keys, alg, issuer.iss, skew)
        if not _names_us(claims["aud"], audiences):
            raise TokenRejected(f"aud {str(claims['aud'])[:300]!r} is not this endpoint's URL")

        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            raise TokenRejected("iat and exp must be numbers")
        if exp - iat > self.settings.max_token_lifetime_s:
            raise TokenRejected(
                f"token lifetime {exp - iat:.0f} s exceeds {self.settings.max_token_lifetime_s} s"
            )
        if exp <= iat:
            raise TokenRejected("exp is not after iat")

        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise TokenRejected("jti is empty")
        # Keep the jti until the token could no longer pass the exp check anyway.
        try:
            first = await self.replay.first_use(f"{issuer.iss}\x00{jti}", float(exp) + skew + 1)
        except Exception as exc:  # fail closed: a token we cannot check for replay is refused
            raise TokenRejected(f"replay cache unavailable ({type(exc).__name__})") from None
        if not first:
            raise TokenRejected("jti was already used (replay)")

        sub = claims.get("sub")
        tenant = claims.get("tenant")
        return VerifiedToken(
            iss=issuer.iss,
            jti=jti,
            exp=int(exp),
            sub=sub if isinstance(sub, str) else None,
            tenant=tenant if isinstance(tenant, str) else None,
            claims=claims,
        )


def _decode(token: str, keys: list[jwt.PyJWK], alg: str, iss: str, skew: int) -> dict[str, Any]:
    """The verified claims: the first key whose signature holds (several only for a token
    without a kid the key set holds); the audience is checked by :func:`_names_us`."""
    failure: jwt.PyJWTError | None = None
    for key in keys:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                issuer=iss,
                leeway=skew,
                options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_aud": False},
            )
            return claims
        except (jwt.InvalidSignatureError, jwt.InvalidKeyError) as exc:
            failure = exc  # another key may hold
        except jwt.PyJWTError as exc:
            failure = exc
            break  # the signature held: the claims are wrong, whatever the key
    raise TokenRejected(f"{type(failure).__name__}: {failure}")


#: Audience URLs up to this length have their normal form kept (an LRU of 1,024): the
#: same few URLs come in every call, and normalising them was 5 % of a cached hook call.
_KEPT_AUDIENCE_CHARS = 2048


def _audience_key(url: str) -> tuple[str, str, int, str, str] | None:
    if len(url) <= _KEPT_AUDIENCE_CHARS:
        return _kept_audience_key(url)
    return _normal_audience_key(url)


@functools.lru_cache(maxsize=1024)
def _kept_audience_key(url: str) -> tuple[str, str, int, str, str] | None:
    return _normal_audience_key(url)


def _normal_audience_key(url: str) -> tuple[str, str, int, str, str] | None:
    try:
        normal = normalise_url(url)
    except UrlMalformed:
        return None
    return normal.scheme, normal.host, normal.port, normal.path.rstrip("/"), normal.query


def _names_us(aud: Any, audiences: Iterable[str]) -> bool:
    """Whether ``aud`` (a string or a list of strings) holds one of ``audiences``."""
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise TokenRejected("aud is neither a string nor a list of strings")
    wanted = {_audience_key(url) for url in audiences} - {None}
    return any(_audience_key(value) in wanted for value in values[:20])
