"""Input no handler should ever see: refused at the edge with a 400 OperationOutcome.

One pure ASGI middleware, :class:`InputGuard`, for every route:

* request URLs (path and query) and URL-encoded form bodies holding NUL (``%00``): no id,
  filter, token or comment has one, and databases refuse them mid-query (PostgreSQL) or
  store them truncated;
* JSON bodies (``application/json``, ``application/fhir+json``, ``*+json``) that are not
  UTF-8 (the stdlib parser would read UTF-16 and UTF-32 past the checks below), nested
  deeper than ``max_json_depth`` (parsers and every recursive walk after them have a
  stack), hold a number of more than :data:`MAX_NUMBER_DIGITS` digits (Python refuses to
  convert those, and they are never data), or escape a NUL or a lone UTF-16 surrogate
  (``\\u0000``, ``\\ud800``: they cannot be stored or encoded as UTF-8), or hold more than
  :data:`MAX_JSON_VALUES` values (parsed, each is a Python object ten times its text) or
  :data:`MAX_JSON_STRINGS` strings (the checks take the strings out, a piece each).

Reading JSON and form bodies here also means a chunked body over the size limit is
answered 413 by the size limit outside, not an "error parsing the body" 400 from FastAPI.
The body check scans the bytes without parsing them (strings are skipped, escapes read in
order), so a hostile body costs a linear scan, not a parse. It sits inside the size limit
(which bounds what is buffered) and inside the hook authentication (so unauthenticated hook
callers cannot make it scan).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: A JSON number this long is not data (Python refuses to convert over 4,300 digits).
MAX_NUMBER_DIGITS = 400
#: JSON values (counted by their separators) one body may hold. Parsed, each costs 30-70
#: bytes of Python objects for 2-3 bytes of text: 30 MB of ``[],`` took 700 MB. ECG data
#: travels as strings (base64 attachments, SampledData), so real bodies hold far fewer.
MAX_JSON_VALUES = 2_000_000
#: JSON strings (keys and values) one body may hold, counted by their quotes before anything
#: else: removing the strings for the checks below makes a Python object per string (about
#: 40 bytes for every 3 bytes of ``"",``), which would turn 32 MB of empty strings into a
#: gigabyte. A hook body holds a few thousand; ECG data travels as a few long strings.
MAX_JSON_STRINGS = 500_000

_HIGH_SURROGATE = rb"\\u[dD][89abAB][0-9a-fA-F]{2}"
_LOW_SURROGATE = rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
#: What a JSON string may not escape, each with its message (see :func:`_escape_problem`).
_ESCAPE_PROBLEMS = (
    (re.compile(rb"\\u0000"), "a string holds a NUL character (\\u0000)"),
    (
        re.compile(_HIGH_SURROGATE + rb"(?!" + _LOW_SURROGATE + rb")"),
        "a string holds a lone UTF-16 surrogate (\\ud800-\\udbff unpaired)",
    ),
    (
        re.compile(rb"(?<!" + _HIGH_SURROGATE + rb")" + _LOW_SURROGATE),
        "a string holds a lone UTF-16 surrogate (\\udc00-\\udfff unpaired)",
    ),
)
#: A run of more digits than allowed, tried only where a run begins: ``[0-9]{401,}`` alone
#: is tried from every digit and rescans the run each time (0.4 s per MB of 400-digit runs).
_LONG_NUMBER = re.compile(rb"(?<![0-9])[0-9]{%d}" % (MAX_NUMBER_DIGITS + 1))
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NUL_IN_URL = re.compile(rb"%00|\x00")
_JSON_TYPES = ("application/json", "application/fhir+json")
_INLINE_SCAN_BYTES = 256 * 1024


def _without_escaped_backslashes(body: bytes) -> bytes:
    """``body`` with each escaped backslash (``\\\\``) blanked to two other bytes: every
    backslash left then starts an escape, and nothing else moves. Both checks below read
    this; it is made once per body."""
    return body.replace(b"\\\\", b"__") if b"\\" in body else body


def _escape_problem(escapes: bytes) -> str | None:
    """The first escaped NUL or lone surrogate of a body whose escaped backslashes are
    blanked (:func:`_without_escaped_backslashes`: ``\\u0000`` is a backslash and text,
    not a NUL).

    Three searches (C scans for a backslash) find a NUL escape, a high surrogate not followed
    at once by a low one, and a low one not preceded at once by a high one. Stepping through
    every escape in Python took 5 s for a 32 MB body of ``\\n`` escapes; the searches take
    a fraction of a second.
    """
    if b"\\u" not in escapes:  # only \\u escapes can be either
        return None
    found = [
        (match.start(), message)
        for pattern, message in _ESCAPE_PROBLEMS
        if (match := pattern.search(escapes)) is not None
    ]
    return min(found)[1] if found else None


def without_strings(body: bytes) -> bytes:
    """``body`` with every JSON string replaced by ``""``, in time linear in its length."""
    return _strings_out(_without_escaped_backslashes(body))


def _strings_out(escapes: bytes) -> bytes:
    """:func:`without_strings` of a body whose escaped backslashes are already blanked.

    Escaped quotes are blanked too (two other bytes each, so that nothing else moves and no
    bracket, comma or digit changes); every quote left then opens or closes a string, and
    ``bytes.split`` at the quotes finds them (a C scan). A last string left open keeps its
    quote and the rest of the body. The regular expression this replaced
    (``"[^"\\\\]*(?:\\\\.[^"\\\\]*)*"``) stepped through every character, 1.9 ms for a 300 KB
    hook body (now 0.05), and on escaped quotes outside a string backtracked over the rest of
    the body from every one of them: 32 KB of ``\\"`` took 3.8 s, a megabyte hours. Each
    string becomes a piece: :func:`json_body_problem` bounds their number first
    (:data:`MAX_JSON_STRINGS`).
    """
    text = escapes.replace(b'\\"', b"__") if b"\\" in escapes else escapes
    parts = text.split(b'"')
    if len(parts) % 2 == 1:  # an even number of quotes: every string is closed
        return b'""'.join(parts[0::2])
    return b'""'.join(parts[0:-1:2]) + b'"' + parts[-1]


def _max_depth(structure: bytes, limit: int) -> int:
    """The deepest nesting of ``structure`` (JSON with its strings removed), or any value
    over ``limit`` as soon as it is seen."""
    brackets = structure.translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return len(brackets)  # cannot nest deeper than it has brackets
    opens = frozenset(b"[{")
    depth = deepest = 0
    step = 1 << 20
    for start in range(0, len(brackets), step):
        chunk = np.frombuffer(brackets, dtype=np.uint8, count=min(step, len(brackets) - start),
                              offset=start)  # fmt: skip
        steps = np.where(np.isin(chunk, list(opens)), 1, -1).astype(np.int32)
        running = depth + np.cumsum(steps)
        deepest = max(deepest, int(running.max()))
        if deepest > limit:
            return deepest
        depth = int(running[-1])
    return deepest


def json_body_problem(body: bytes, max_depth: int) -> str | None:
    """Why a JSON body must be refused, naming the limit; None when it may be parsed."""
    if b"\x00" in body:
        # UTF-8 JSON never holds a NUL byte; UTF-16 and UTF-32 always do. The parsers
        # read those encodings too, but every check here scans UTF-8 bytes.
        return (
            "the JSON body is not UTF-8 (it holds NUL bytes, as UTF-16 or UTF-32 text does); "
            "send it UTF-8 encoded (RFC 8259 section 8.1)"
        )
    escapes = _without_escaped_backslashes(body)
    problem = _escape_problem(escapes)
    if problem:
        return problem
    strings = body.count(b'"') // 2
    if strings > MAX_JSON_STRINGS:
        return (
            f"the JSON body holds about {strings} strings, over the limit of "
            f"{MAX_JSON_STRINGS} (send ECG samples as base64 attachments or SampledData strings)"
        )
    structure = _strings_out(escapes)
    depth = _max_depth(structure, max_depth)
    if depth > max_depth:
        return (
            f"JSON nested at least {depth} levels deep, over the limit of {max_depth} "
            "(setting max_json_depth)"
        )
    if _LONG_NUMBER.search(structure):
        return f"a JSON number has more than {MAX_NUMBER_DIGITS} digits"
    values = structure.count(b",") + 1
    if values > MAX_JSON_VALUES:
        return (
            f"the JSON body holds about {values} values, over the limit of {MAX_JSON_VALUES} "
            "(send ECG samples as base64 attachments or SampledData strings)"
        )
    return None


def _body_kind(scope: Scope) -> str | None:
    """``json`` or ``form`` (URL-encoded) for the bodies this guard reads, else None."""
    for key, value in scope.get("headers") or []:
        if key == b"content-type":
            media = value.decode("latin-1").split(";")[0].strip().lower()
            if media in _JSON_TYPES or media.endswith("+json"):
                return "json"
            return "form" if media == "application/x-www-form-urlencoded" else None
    return None


class InputGuard:
    """See the module docstring. ``max_json_depth`` comes from the settings."""

    def __init__(self, app: ASGIApp, *, max_json_depth: int = 64) -> None:
        self.app = app
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        url_bytes = (
            bytes(scope.get("raw_path") or b"") + b"?" + bytes(scope.get("query_string", b""))
        )
        if _NUL_IN_URL.search(url_bytes):
            await self._refuse(scope, receive, send, "the URL holds a NUL character (%00)")
            return
        kind = _body_kind(scope) if scope.get("method") in ("POST", "PUT", "PATCH") else None
        if kind is None:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()  # the size limit outside raises when over it
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if kind == "form":
            problem = (
                "a form field holds a NUL character (%00)" if _NUL_IN_URL.search(body) else None
            )
        elif len(body) > _INLINE_SCAN_BYTES:  # a long scan must not stall the event loop
            problem = await run_in_threadpool(json_body_problem, body, self.max_json_depth)
        else:
            problem = json_body_problem(body, self.max_json_depth)
        if problem:
            await self._refuse(scope, receive, send, problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, problem: str) -> None:
        from cds_service.errors import HOOKS_PREFIX, audit_refusal, operation_outcome

        app: Any = scope.get("app")
        if app is not None and str(scope.get("path", "")).startswith(HOOKS_PREFIX):
            await run_in_threadpool(audit_refusal, app, scope, 400, [problem])
        await operation_outcome(400, [problem], code="too-costly" if "limit" in problem else None)(
            scope, receive, send
        )
