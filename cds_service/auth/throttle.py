"""Refused sign-ins, per source: one audit entry per burst, and 429 after too many.

Every refused credential (hook JWT, audit/ingest bearer token, viewer sign-in) goes through
:meth:`FailureGate.refused`. Per source address (an IPv6 client's /64) and window
(``auth.failure_window_s``):

* the **first** refusal of the window is audited in full (reason, endpoint), as before;
* later ones are only counted; when the window closes (or the service stops) **one**
  ``auth-failure`` entry records the count, the reasons and endpoints seen, and the first
  and last time: a flood of bad tokens costs a handful of rows, not one row per request;
* after ``auth.max_failures_per_source`` refusals in the window (``auth.max_login_failures``
  for the viewer's sign-in form), the source is answered 429 with ``Retry-After`` until the
  window ends, before any token is checked. Throttled requests are counted too.

Audit entries are append-only and never removed, so this is what keeps an unauthenticated
client from filling the database. ``failure_window_s = 0`` turns both off (every refusal
audited on its own, nothing throttled). The source is the connecting address; forwarded
headers only count from ``trusted_proxies`` (see :mod:`cds_service.commands.serve`).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

#: Sources tracked at once; beyond this the oldest window is closed early (and audited).
MAX_SOURCES = 10_000
#: Distinct reasons/endpoints kept per aggregated entry.
MAX_KINDS = 10


@dataclass
class _Window:
    started: float
    first_at: datetime
    last_at: datetime
    refused: int = 0  # all refusals this window, the first (audited in full) included
    throttled: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    endpoints: Counter[str] = field(default_factory=Counter)

    def note(self, counter: Counter[str], key: str) -> None:
        if key in counter or len(counter) < MAX_KINDS:
            counter[key] += 1
        else:
            counter["(other)"] += 1


class FailureGate:
    """Per-source refusal windows (thread-safe; one per app)."""

    def __init__(
        self,
        *,
        window_s: float,
        max_failures: int,
        max_login_failures: int,
        record: Callable[..., Any] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.limits = {"login": max_login_failures}
        self.default_limit = max_failures
        self._record = record
        self._clock = clock
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    def retry_after(self, source: str | None, family: str = "bearer") -> int | None:
        """Seconds until ``source`` may try again, or None when it is not throttled."""
        if not self.enabled:
            return None
        now = self._clock()
        with self._lock:
            window = self._windows.get(_key(family, source))
            if window is None or now - window.started >= self.window_s:
                return None
            limit = self.limits.get(family, self.default_limit)
            if window.refused < limit:
                return None
            window.throttled += 1
            window.last_at = datetime.now(UTC)
            return max(1, int(window.started + self.window_s - now + 0.999))

    def refused(
        self,
        source: str | None,
        *,
        family: str,
        reason: str,
        endpoint: str,
        audit_in_full: Callable[[], None],
    ) -> None:
        """Count one refusal; ``audit_in_full`` (the caller's own audit entry) runs when
        it opens its source's window, or always when windows are off."""
        now = self._clock()
        stamp = datetime.now(UTC)
        key = _key(family, source)
        closed: list[tuple[str, _Window]] = []
        first = False
        with self._lock:
            closed = self._expired(now)
            window = self._windows.get(key)
            if window is None or not self.enabled:
                window = _Window(started=now, first_at=stamp, last_at=stamp)
                if self.enabled:
                    self._windows[key] = window
                    while len(self._windows) > MAX_SOURCES:
                        closed.append(self._windows.popitem(last=False))
                first = True
            window.refused += 1
            window.last_at = stamp
            if not first:  # the aggregate counts what was not audited in full
                window.note(window.reasons, reason[:200])
                window.note(window.endpoints, endpoint[:200])
        for closed_key, closed_window in closed:
            self._write_aggregate(closed_key, closed_window)
        if first:
            try:
                audit_in_full()
            except Exception:  # auditing must never turn a refusal into a 500
                log.exception("could not record a refused sign-in in the audit trail")

    def flush(self) -> None:
        """Close every window now (service shutdown): its count is audited, not lost."""
        with self._lock:
            closed = list(self._windows.items())
            self._windows.clear()
        for key, window in closed:
            self._write_aggregate(key, window)

    def _expired(self, now: float) -> list[tuple[str, _Window]]:
        closed = []
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if now - window.started < self.window_s:
                break
            closed.append((key, window))
            del self._windows[key]
        return closed

    def _write_aggregate(self, key: str, window: _Window) -> None:
        more = window.refused - 1  # the first was audited in full
        if more <= 0 and window.throttled == 0:
            return
        family, _, source = key.partition(" ")
        self._write(
            None if source == "-" else source,
            {
                "aggregated": True,
                "refused": more,
                "throttled": window.throttled,
                "window_s": self.window_s,
                "first_at": window.first_at.isoformat(),
                "last_at": window.last_at.isoformat(),
                "reasons": dict(window.reasons.most_common()),
                "endpoints": dict(window.endpoints.most_common()),
                "family": family,
            },
        )

    def _write(self, source: str | None, detail: dict[str, Any]) -> None:
        if self._record is None:
            return
        try:
            self._record(source, detail)
        except Exception:  # auditing must never turn a refusal into a 500
            log.exception("could not record a refused sign-in in the audit trail")


def _key(family: str, source: str | None) -> str:
    return f"{family} {source_group(source) or '-'}"


def source_group(source: str | None) -> str | None:
    """The source a window counts: the address, but for IPv6 its /64. One client holds a
    whole /64 (what a provider assigns to one line), so a new address per request would
    open a new window each time: every refusal an audit row of its own, never a 429."""
    if not source or ":" not in source:
        return source
    try:
        address = ipaddress.IPv6Address(source.split("%", 1)[0])
    except ValueError:
        return source
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


def gate_for(app: Any) -> FailureGate:
    """The app's gate, created on first use from its settings and audit trail."""
    state = app.state
    gate: FailureGate | None = getattr(state, "failure_gate", None)
    if gate is None:
        settings = state.settings

        def record(source: str | None, detail: dict[str, Any]) -> None:
            from cds_service.audit import Actor

            trail = getattr(getattr(state, "runtime", None), "audit", None)
            if trail is None:
                return
            trail.record(
                "auth-failure",
                outcome="failure",
                actor=Actor(client=f"host:{source}" if source else None),
                detail=detail,
            )

        gate = FailureGate(
            window_s=settings.auth.failure_window_s,
            max_failures=settings.auth.max_failures_per_source,
            max_login_failures=settings.auth.max_login_failures,
            record=record,
        )
        state.failure_gate = gate
    return gate


def client_address(scope_or_request: Any) -> str | None:
    """The connecting address (a trusted proxy's forwarded one when configured)."""
    client = getattr(scope_or_request, "client", None)
    if client is None and isinstance(scope_or_request, dict):
        client = scope_or_request.get("client")
    if not client:
        return None
    host = client[0] if isinstance(client, tuple | list) else getattr(client, "host", None)
    return str(host) if host else None
