"""The tests act as the EHR: key pairs, a JWKS server on loopback, signed JWTs, hook bodies.

Nothing here imports the service: tokens are built with PyJWT the way the CDS Hooks
sandbox (ES384, 5-minute expiry, ``jku``) and Epic's documentation (RS384, ``sub``,
``nbf``, 15 minutes, keys exchanged out of band) build them.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


@dataclass
class EhrKey:
    """One signing key of a test EHR."""

    alg: str
    kid: str
    private: Any = field(repr=False)

    @classmethod
    def generate(cls, alg: str, kid: str | None = None) -> EhrKey:
        private: Any
        if alg == "ES384":
            private = ec.generate_private_key(ec.SECP384R1())
        else:
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(alg=alg, kid=kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}", private=private)

    def public_jwk(self) -> dict[str, Any]:
        algorithm = ECAlgorithm if self.alg.startswith("ES") else RSAAlgorithm
        jwk = json.loads(algorithm.to_jwk(self.private.public_key()))
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return dict(jwk)

    def sign(
        self,
        claims: dict[str, Any],
        *,
        jku: str | None = None,
        extra_headers: dict[str, Any] | None = None,
    ) -> str:
        headers: dict[str, Any] = {"kid": self.kid, "typ": "JWT"}
        if jku:
            headers["jku"] = jku
        headers.update(extra_headers or {})
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)


def jwks(*keys: EhrKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk() for key in keys]}


def sandbox_claims(iss: str, aud: str, **overrides: Any) -> dict[str, Any]:
    """What the public CDS Hooks sandbox signs: 5-minute tokens."""
    now = int(time.time())
    claims = {"iss": iss, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    claims.update(overrides)
    return claims


def epic_claims(iss: str, aud: str, **overrides: Any) -> dict[str, Any]:
    """Epic's documented shape: RS384, sub and nbf, a 15-minute lifetime."""
    now = int(time.time())
    claims = {
        "iss": iss,
        "sub": "ehr-client-id-1234",
        "aud": aud,
        "jti": uuid.uuid4().hex,
        "nbf": now,
        "iat": now,
        "exp": now + 900,
    }
    claims.update(overrides)
    return claims


def unsigned_token(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


class _JsonHandler(BaseHTTPRequestHandler):
    server: RecordingServer

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, dict(self.headers)))
        body = json.dumps(self.server.document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.server.requests.append(("POST", self.path, dict(self.headers)))
        self.send_response(500)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class RecordingServer(ThreadingHTTPServer):
    """A loopback HTTP server answering every GET with ``document``; records requests."""

    def __init__(self, document: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), _JsonHandler)
        self.document = document
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def hook_body(
    patient_id: str = "test-patient",
    prefetch: dict[str, Any] | None = None,
    *,
    hook: str = "patient-view",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/test-user", "patientId": patient_id},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(extra)
    return body


def fhir_authorization(access_token: str, **fields: Any) -> dict[str, Any]:
    """A request's ``fhirAuthorization``: the EHR's token for its own fhirServer."""
    base = {"token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read"}
    return {"access_token": access_token, **base, "subject": "cds-service", **fields}


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def document_reference(
    doc_id: str, data: bytes, content_type: str, date: str = "2024-05-01T10:00:00Z"
) -> dict[str, Any]:
    """A DocumentReference carrying an ECG file inline (base64)."""
    return {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11524-6"}]},
        "subject": {"reference": "Patient/test-patient"},
        "date": date,
        "content": [
            {
                "attachment": {
                    "contentType": content_type,
                    "data": base64.b64encode(data).decode("ascii"),
                }
            }
        ],
    }


def find_empty(value: Any, path: str = "$") -> list[str]:
    """Paths of nulls and empty strings/lists/objects (forbidden in CDS Hooks JSON)."""
    found: list[str] = []
    if value is None or (isinstance(value, str | list | dict) and len(value) == 0):
        found.append(path)
    if isinstance(value, dict):
        for key, item in value.items():
            found += find_empty(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += find_empty(item, f"{path}[{index}]")
    return found


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


#: A hook call's prefetch with every ECG template answered as empty (nothing to classify).
ALL_NULL = {"ecgObservations": None, "ecgDocuments": None, "ecgImagingStudies": None}


def outcome_diagnostics(response: Any, status: int) -> str:
    """The diagnostics of an OperationOutcome answered with ``status``, checked as one: the
    status, the resource type, no empty elements (FHIR forbids them)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert find_empty(body) == []
    return " ".join(issue["diagnostics"] for issue in body["issue"])
