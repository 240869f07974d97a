"""Static bearer credentials for non-EHR callers (audit readers, ingest clients).

These are not the EHR's hook JWTs: each endpoint family has its own configured list, so an
EHR token never opens the audit trail and an audit token never uploads ECGs.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac

from fastapi import HTTPException, Request

from cds_service.audit import Actor, AuditError, AuditTrail


def token_matches(presented: str, configured: list[str]) -> int | None:
    """Index of the configured token that ``presented`` matches, else None.

    A configured entry is either the token itself or ``sha256:<hex digest>`` of it (so settings
    files need not hold the secret). Every entry is compared in constant time.
    """
    presented_bytes = presented.encode("utf-8")
    presented_digest = hashlib.sha256(presented_bytes).hexdigest().encode("ascii")
    found: int | None = None
    for index, entry in enumerate(configured):
        if entry.startswith("sha256:"):
            ok = hmac.compare_digest(presented_digest, entry[7:].strip().lower().encode("ascii"))
        else:
            ok = hmac.compare_digest(presented_bytes, entry.encode("utf-8"))
        if ok and found is None:
            found = index
    return found


def require_static_bearer(
    request: Request, configured: list[str], trail: AuditTrail, *, kind: str, setting: str
) -> Actor:
    """The caller as ``Actor(client="<kind>-token-<index>")``, or a bare 401.

    Every refusal is recorded as an ``auth-failure`` audit event; a refusal that cannot be
    recorded is still a refusal.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        reason = "no bearer credential"
    elif not configured:
        reason = f"{kind} endpoints have no credential configured ({setting})"
    else:
        index = token_matches(token, configured)
        if index is not None:
            return Actor(client=f"{kind}-token-{index}")
        reason = "credential not accepted"
    host = request.client.host if request.client else None
    with contextlib.suppress(AuditError):
        trail.record(
            "auth-failure",
            outcome="failure",
            actor=Actor(client=f"host:{host}" if host else None),
            detail={"endpoint": request.url.path, "reason": reason},
        )
    raise HTTPException(
        status_code=401, detail="Unauthorized", headers={"WWW-Authenticate": "Bearer"}
    )
