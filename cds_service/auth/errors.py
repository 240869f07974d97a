"""The auth package's exceptions (a leaf module: the error handlers import it)."""

from __future__ import annotations

#: Longest reason kept. Reasons quote what the caller sent (its iss, kid, alg, typ), up to
#: a 16 KiB token's worth of text of its choosing: the log line got it all.
MAX_REASON_CHARS = 300


class TokenRejected(Exception):
    """A bearer token that must not be trusted.

    ``reason`` is for the service's own log and audit trail (never the token itself); the
    caller only ever sees a bare 401, so a probing client learns nothing.
    """

    def __init__(self, reason: str) -> None:
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 3] + "..."
        self.reason = reason
        super().__init__(reason)


class AuthFailed(Exception):
    """Raised by :func:`cds_service.auth.require_ehr_token`; answered with a bare 401 (no body)."""
