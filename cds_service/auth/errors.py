"""The auth package's exceptions (a leaf module: the error handlers import it)."""

from __future__ import annotations


class TokenRejected(Exception):
    """A bearer token that must not be trusted.

    ``reason`` is for the service's own log and audit trail (never the token itself); the
    caller only ever sees a bare 401, so a probing client learns nothing.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class AuthFailed(Exception):
    """Raised by :func:`cds_service.auth.require_ehr_token`; answered with a bare 401 (no body)."""
