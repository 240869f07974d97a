"""Authentication of EHR calls: CDS Hooks 2.0.1 JWTs signed by allow-listed issuers.

:class:`TokenVerifier` checks one bearer token; :func:`require_ehr_token` is the FastAPI
dependency every hook route uses. Any failure is a bare 401 (:class:`AuthFailed`).
"""

from cds_service.auth.dependency import (
    AuthFailed,
    EhrAuthMiddleware,
    authenticate,
    get_verifier,
    require_ehr_token,
)
from cds_service.auth.jwks import JwksCache
from cds_service.auth.replay import (
    InMemoryReplayCache,
    RedisReplayCache,
    ReplayCache,
    SqlReplayCache,
)
from cds_service.auth.verify import ALLOWED_ALGORITHMS, TokenVerifier, VerifiedToken

__all__ = [
    "ALLOWED_ALGORITHMS",
    "AuthFailed",
    "EhrAuthMiddleware",
    "InMemoryReplayCache",
    "JwksCache",
    "RedisReplayCache",
    "ReplayCache",
    "SqlReplayCache",
    "TokenVerifier",
    "VerifiedToken",
    "authenticate",
    "get_verifier",
    "require_ehr_token",
]
