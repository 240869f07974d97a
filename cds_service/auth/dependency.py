"""FastAPI dependency: every CDS Hooks route requires a verified EHR JWT.

The audience a token must carry is the exact URL being called, built from configuration
only: ``auth.audience_base_url`` (when the EHR addresses the service by another name, e.g.
behind a proxy) else ``public_base_url``, plus the request path. Never from the request's
``Host`` or forwarded headers: those are the caller's to choose, and a token the EHR issued
to another service (``aud=http://other-cds.example/...``) would pass with ``Host:
other-cds.example``. Feedback calls may also carry their service's URL, because some clients
sign every call to a service with the service URL. CDS Hooks 2.0.1: ``aud`` "MUST be the
URL of the CDS Service endpoint being invoked", so the discovery URL does not open a service.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from cds_service.audit import running_trail
from cds_service.auth.errors import AuthFailed, TokenRejected
from cds_service.auth.replay import (
    InMemoryReplayCache,
    RedisReplayCache,
    ReplayCache,
    SqlReplayCache,
)
from cds_service.auth.throttle import client_address, gate_for
from cds_service.auth.verify import TokenVerifier, VerifiedToken
from cds_service.settings import Settings

log = logging.getLogger(__name__)

_FEEDBACK_SUFFIX = "/feedback"


def get_verifier(request: Request) -> TokenVerifier:
    """The app's verifier (one per app: it holds the JWKS and replay caches)."""
    state = request.app.state
    verifier: TokenVerifier | None = getattr(state, "ehr_token_verifier", None)
    if verifier is None:
        settings: Settings = state.settings
        replay: ReplayCache
        broker = settings.jobs.broker_url
        runtime = getattr(state, "runtime", None)
        if settings.jobs.mode == "distributed" and broker.startswith(("redis://", "rediss://")):
            # shared by every web worker, so a token replayed to another worker is caught
            replay = RedisReplayCache(broker)
        elif runtime is not None:
            # the database: shared by `serve --workers N` and kept across restarts
            replay = SqlReplayCache(runtime.session_factory)
        else:
            replay = InMemoryReplayCache()
        verifier = TokenVerifier(settings.auth, replay=replay)
        state.ehr_token_verifier = verifier
    return verifier


def expected_audiences(request: Request, settings: Settings) -> list[str]:
    base = settings.auth.audience_base_url or settings.public_base_url
    called = base.rstrip("/") + request.url.path
    audiences = [called]
    if called.endswith(_FEEDBACK_SUFFIX):
        audiences.append(called[: -len(_FEEDBACK_SUFFIX)])
    return audiences


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def require_ehr_token(request: Request) -> VerifiedToken:
    """The caller's verified JWT (checked by :class:`EhrAuthMiddleware` before the body is
    read, or here when the middleware is not installed); :class:`AuthFailed` otherwise."""
    verified = getattr(request.state, "ehr_token", None)
    if isinstance(verified, VerifiedToken):
        return verified
    return await authenticate(request)


async def authenticate(request: Request) -> VerifiedToken:
    """Verify the caller's JWT; raise :class:`AuthFailed` (bare 401) on any problem."""
    settings: Settings = request.app.state.settings
    token = _bearer(request)
    try:
        if token is None:
            raise TokenRejected("no bearer token")
        verified = await get_verifier(request).verify(token, expected_audiences(request, settings))
    except TokenRejected as exc:
        # The reason goes to our log and audit trail; the token itself never does.
        log.info("hook call refused: %s (%s %s)", exc.reason, request.method, request.url.path)
        reason = exc.reason
        await run_in_threadpool(
            gate_for(request.app).refused,
            client_address(request),
            family="bearer",
            reason=reason,
            endpoint=request.url.path,
            audit_in_full=lambda: _audit_failure(request, reason),
        )
        raise AuthFailed(exc.reason) from None
    request.state.ehr_token = verified
    return verified


def _audit_failure(request: Request, reason: str) -> None:
    audit = running_trail(request.app)
    if audit is None:
        return
    try:
        audit.record(
            "auth-failure",
            outcome="failure",
            detail={"reason": reason[:300], "path": request.url.path},
        )
    except Exception:  # auditing must never turn a 401 into a 500
        log.exception("could not record auth failure in the audit trail")


def _too_many(retry_after: int) -> Response:
    from cds_service.errors import operation_outcome

    response = operation_outcome(
        429,
        [
            "too many refused credentials from this address; try again later "
            "(settings auth.max_failures_per_source, auth.failure_window_s)"
        ],
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


class EhrAuthMiddleware:
    """Checks the JWT of every ``/cds-services`` request before its body is read.

    FastAPI reads and parses a request body before running route dependencies, so without
    this an unauthenticated client could make the service parse large bodies, and a
    malformed body would be answered 400 instead of 401. CORS preflights pass through (the
    CORS middleware sits outside this one and answers them).
    """

    def __init__(self, app: ASGIApp, prefix: str = "/cds-services") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope.get("method") == "OPTIONS"
            or not (path == self.prefix or path.startswith(self.prefix + "/"))
        ):
            await self.app(scope, receive, send)
            return
        if path.endswith("/"):
            # An EHR that registered ".../cds-services/ecg-review/" is answered there: the
            # router's 307 to the path without the slash (built from the Host header) made
            # it send its single-use JWT, and the call's PHI, a second time, and be refused.
            raw = bytes(scope.get("raw_path") or path.encode())
            scope = {**scope, "path": path.rstrip("/"), "raw_path": raw.rstrip(b"/")}
        request = Request(scope)  # no receive: the body stays unread
        retry = gate_for(request.app).retry_after(client_address(request))
        if retry is not None:
            await _too_many(retry)(scope, receive, send)
            return
        try:
            verified = await authenticate(request)
        except AuthFailed:
            await Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})(
                scope, receive, send
            )
            return
        scope.setdefault("state", {})["ehr_token"] = verified
        await self.app(scope, receive, send)
