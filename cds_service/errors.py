"""Error answers and request limits for the whole app.

* Authentication failures on hook routes: a bare 401 (no body), as CDS Hooks requires.
* Other 4xx/5xx on ``/cds-services``: a FHIR ``OperationOutcome`` naming what is wrong;
  malformed hook requests are 400 (FastAPI's default would be 422).
* Unhandled exceptions anywhere: a 500 OperationOutcome without a stack trace.
* Request bodies over the configured size: 413, before the body is read into memory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cds_service.audit import Actor, running_trail
from cds_service.auth.errors import AuthFailed
from cds_service.hooks.problems import HookProblem
from cds_service.settings import Settings

log = logging.getLogger(__name__)

HOOKS_PREFIX = "/cds-services"
FHIR_JSON = "application/fhir+json"

_ISSUE_CODES = {
    400: "invalid",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    412: "not-found",
    413: "too-costly",
    415: "not-supported",
    429: "throttled",
    503: "transient",
}


def operation_outcome(
    status: int, messages: Sequence[str], *, code: str | None = None
) -> JSONResponse:
    """A FHIR OperationOutcome response, one issue per message."""
    issue_code = code or _ISSUE_CODES.get(status, "exception" if status >= 500 else "invalid")
    severity = "fatal" if status >= 500 else "error"
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": severity, "code": issue_code, "diagnostics": message}
            for message in messages
        ],
    }
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


def _is_hooks(request: Request) -> bool:
    return request.url.path.startswith(HOOKS_PREFIX)


def _bare_401() -> Response:
    return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})


def audit_refusal(app: object, scope: Scope, status: int, messages: Sequence[str]) -> None:
    """Record a hook request answered with an error as a ``hook-call`` audit entry.

    Bad input leaves a trace for compliance like any other call: who (when the JWT was
    verified), which route, the status and what was wrong. A refusal that cannot be recorded
    is still answered: the failure is logged, never turned into a different answer.
    """
    trail = running_trail(app)
    if trail is None:
        return
    token = (scope.get("state") or {}).get("ehr_token")
    actor = Actor(iss=getattr(token, "iss", None), sub=getattr(token, "sub", None))
    try:
        trail.record(
            "hook-call",
            outcome="error" if status >= 500 else "failure",
            actor=actor,
            detail={
                "path": scope.get("path", ""),
                "status": status,
                "problems": [m[:300] for m in messages[:5]],
            },
        )
    except Exception:
        log.exception("could not audit a refused hook request")


def _validation_messages(exc: RequestValidationError) -> list[str]:
    messages = []
    for error in exc.errors()[:20]:
        if tuple(error.get("loc", ())) == ("body",) and isinstance(error.get("input"), bytes):
            # FastAPI reads a body as JSON only when its Content-Type says so
            messages.append(
                "request body: not read as JSON because the Content-Type header is missing or "
                "is not JSON; send it with Content-Type: application/json"
            )
            continue
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        where = ".".join(loc) or "request body"
        messages.append(f"{where}: {error.get('msg', 'invalid')}")
    return messages or ["the request body is not valid"]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthFailed)
    async def _auth_failed(request: Request, exc: AuthFailed) -> Response:
        return _bare_401()

    async def _refuse(request: Request, status: int, messages: list[str], **kw: Any) -> Response:
        await run_in_threadpool(audit_refusal, request.app, request.scope, status, messages)
        return operation_outcome(status, messages, **kw)

    @app.exception_handler(HookProblem)
    async def _hook_problem(request: Request, exc: HookProblem) -> Response:
        return await _refuse(request, exc.status, [exc.message], code=exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if not _is_hooks(request):
            return await request_validation_exception_handler(request, exc)
        return await _refuse(request, 400, _validation_messages(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if not _is_hooks(request):
            return await http_exception_handler(request, exc)
        if exc.status_code == 401:
            return _bare_401()
        return await _refuse(request, exc.status_code, [str(exc.detail)])

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> Response:
        log.error(
            "unhandled %s on %s %s",
            type(exc).__name__,
            request.method,
            request.url.path,
            exc_info=exc,
        )
        messages = ["internal error; the service log has the details"]
        if _is_hooks(request):
            return await _refuse(request, 500, messages)
        return operation_outcome(500, messages)


def _over_limit_message(limit: int) -> str:
    return f"request body over the {limit}-byte limit (setting max_request_bytes)"


class BodyTooLarge(StarletteHTTPException):
    """Raised by the ``receive`` of :class:`RequestSizeLimit` once a body passes the limit.

    A route that reads the body itself (``POST /ecgs``) catches it to answer its own 413 and
    audit the refusal; anything that catches ``Exception`` around a body read must let it
    through or do the same, or the limit reads as a parse error. An HTTPException (413)
    because FastAPI does exactly that when it reads a body that is not JSON (no
    Content-Type, text/plain) but re-raises HTTPExceptions: the handlers answer it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _over_limit_message(limit))


class RequestSizeLimit:
    """Pure ASGI middleware: 413 for bodies over ``max_request_bytes``, by header or by
    counting, before a route reads them into memory. Nothing is read before the first
    ``receive``, so the 413 comes where the body would be read (after the hook JWT check).

    One limit for every body, hook calls and ECG uploads alike; ``POST /ecgs`` checks the
    same number again where it reads the body (a stream, or the multipart form).
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        try:
            declared_too_big = declared is not None and int(declared) > limit
        except ValueError:
            declared_too_big = False

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            if declared_too_big:
                # Refused when something first reads the body, not here: the hook
                # authentication inside answers a caller without a valid JWT 401 first,
                # so a stranger's oversized Content-Length cannot write audit rows.
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(scope, receive, send, limit)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        messages = [_over_limit_message(limit)]
        app = scope.get("app")
        if app is not None and str(scope.get("path", "")).startswith(HOOKS_PREFIX):
            await run_in_threadpool(audit_refusal, app, scope, 413, messages)
        await operation_outcome(413, messages)(scope, receive, send)


def body_limit(settings: Settings) -> int:
    """The one request-body limit (``max_request_bytes``): hook calls and ECG uploads."""
    return int(settings.max_request_bytes)
