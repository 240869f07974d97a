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
from cds_service.auth.throttle import client_address, gate_for


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

    Refusals are audited as ``auth-failure`` events through the per-source
    :class:`~cds_service.auth.throttle.FailureGate` (the first of a window in full, the rest
    counted); a source over its limit gets 429. A refusal that cannot be recorded is still
    a refusal.
    """
    gate = gate_for(request.app)
    host = client_address(request)
    retry = gate.retry_after(host)
    if retry is not None:
        raise HTTPException(
            status_code=429,
            detail="Too many refused credentials from this address; try again later",
            headers={"Retry-After": str(retry)},
        )
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

    def audit_in_full() -> None:
        with contextlib.suppress(AuditError):
            trail.record(
                "auth-failure",
                outcome="failure",
                actor=Actor(client=f"host:{host}" if host else None),
                detail={"endpoint": request.url.path, "reason": reason},
            )

    gate.refused(
        host, family="bearer", reason=reason, endpoint=request.url.path, audit_in_full=audit_in_full
    )
    raise HTTPException(
        status_code=401, detail="Unauthorized", headers={"WWW-Authenticate": "Bearer"}
    )
