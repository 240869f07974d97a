"""Token shapes of EHRs not seen yet, at the edges: key sets, headers, claims, framing.

Like tests/service/test_token_shapes.py (whose helpers this reuses): real keys generated
here, key sets in a file or served on loopback, calls through an app without a runtime
(authentication needs none). Every refusal is a bare 401, never a 500, and the log says
why without repeating what the caller sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from tests.service.conftest import BASE
from tests.service.ehr import RecordingServer
from tests.service.test_token_shapes import (
    DISCOVERY,
    ISS,
    _claims,
    _client,
    _ec,
    _jwk,
    _rsa,
    _sign,
    _status,
)

OTHER_ISS = "https://second-ehr.test"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _app(tmp_path: Path, issuers: list[dict[str, Any]], **auth: Any) -> TestClient:
    """An app trusting ``issuers`` as written; 500s come back as responses, not raised."""
    from cds_service.app import create_app
    from cds_service.settings import Settings

    settings = Settings(
        data_dir=tmp_path / "var",
        public_base_url=BASE,
        auth={"trusted_issuers": issuers, "failure_window_s": 0, **auth},
    )
    return TestClient(create_app(settings), base_url=BASE, raise_server_exceptions=False)


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("cds_service.auth")]


# -- key sets -------------------------------------------------------------------------------


def test_a_key_whose_key_ops_lack_verify_is_not_a_signing_key(tmp_path: Path) -> None:
    """RFC 7517 section 4.3: ``key_ops`` says what a key is for, as ``use`` does. A key
    published for encryption only (``["encrypt", "wrapKey"]``) verified signatures, where
    the same key marked ``use: enc`` did not; ``["verify"]`` (node-jose, some gateways)
    still passes, and so does a key with neither, and a public key published with the
    private key's ``["sign"]`` (a slip, but a signature key all the same: refusing it would
    refuse every token of that EHR)."""
    for_encryption, for_signing, plain, slipped = _rsa(), _rsa(), _rsa(), _rsa()
    client = _client(
        tmp_path,
        _jwk(for_encryption, kid="enc", key_ops=["encrypt", "wrapKey"]),
        _jwk(for_signing, kid="sig", key_ops=["verify"]),
        _jwk(plain, kid="plain"),
        _jwk(slipped, kid="slip", key_ops=["sign"]),
        _jwk(_rsa(), kid="odd", key_ops="verify"),  # not a list: not understood, not used
    )
    assert _status(client, _sign(slipped, "RS256", kid="slip")) == 200
    assert _status(client, _sign(for_encryption, "RS384", kid="enc")) == 401
    assert _status(client, _sign(for_encryption, "RS384")) == 401  # nor when no kid is sent
    assert _status(client, _sign(for_signing, "RS384", kid="sig")) == 200
    assert _status(client, _sign(plain, "PS256", kid="plain")) == 200


def test_a_key_of_another_trusted_issuer_opens_nothing(tmp_path: Path) -> None:
    """Two EHRs, each with its own JWKS URL: a token naming the first, signed with the
    second's key (its kid, its jku, or no kid), is refused; the second's server is not
    asked, and headers carrying a key (x5u, x5c, jwk) are ignored next to a good one."""
    first, second = _ec(ec.SECP384R1()), _ec(ec.SECP384R1())
    own = RecordingServer({"keys": [_jwk(first, kid="a")]}).start()
    other = RecordingServer({"keys": [_jwk(second, kid="b")]}).start()
    try:
        client = _app(
            tmp_path,
            [
                {"iss": ISS, "jwks_urls": [f"{own.url}/jwks.json"]},
                {"iss": OTHER_ISS, "jwks_urls": [f"{other.url}/jwks.json"]},
            ],
        )
        assert _status(client, _sign(second, "ES384", kid="b")) == 401
        assert _status(client, _sign(second, "ES384", kid="b", jku=f"{other.url}/jwks.json")) == 401
        assert _status(client, _sign(second, "ES384")) == 401
        assert other.requests == []
        stranger = _ec(ec.SECP384R1())
        embedded = _jwk(stranger, kid="a")
        assert _status(client, _sign(stranger, "ES384", kid="a", jwk=embedded)) == 401
        for header in ({"x5u": f"{other.url}/cert.pem"}, {"x5c": ["MIIB"]}, {"jwk": embedded}):
            assert _status(client, _sign(first, "ES384", kid="a", **header)) == 200
        assert other.requests == []
        assert [path for _, path, _ in own.requests] == ["/jwks.json"]
    finally:
        own.stop()
        other.stop()


@pytest.mark.parametrize("url", ["http://[::1/jwks.json", "http://127.0.0.1\x01/jwks.json"])
def test_a_malformed_jwks_url_in_the_settings_is_401_not_500(
    tmp_path: Path, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """httpx refuses such a URL with InvalidURL, which is not an HTTPError: every token
    naming that issuer (anyone can name it) was a 500 with a traceback. The URL is now an
    unreachable key set: 401 and a warning, no error."""
    client = _app(tmp_path, [{"iss": ISS, "jwks_urls": [url]}])
    private = _ec(ec.SECP384R1())
    with caplog.at_level(logging.INFO):
        assert _status(client, _sign(private, "ES384", kid="k")) == 401
        assert _status(client, _sign(private, "ES384", kid="k", jku=url)) == 401
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- framing and header fields --------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer ", "bearer ", "BEARER ", "Bearer   "])
def test_the_scheme_is_case_insensitive_and_spaces_are_tolerated(
    tmp_path: Path, scheme: str
) -> None:
    """RFC 7235 section 2.1: the auth scheme is case-insensitive; extra spaces are
    tolerated (some EHR HTTP stacks send them)."""
    private = _ec(ec.SECP384R1())
    client = _client(tmp_path, _jwk(private, kid="k"))
    token = _sign(private, "ES384", kid="k")
    response = client.get(DISCOVERY, headers={"Authorization": f"{scheme}{token}  "})
    assert response.status_code == 200


def _framing_cases(token: str) -> dict[str, str | bytes]:
    header, payload, signature = token.split(".")
    nested = _b64(b"[" * 5000 + b"]" * 5000)
    return {
        "2 segments": f"{header}.{payload}",
        "4 segments": f"{token}.{signature}",
        "no signature": f"{header}.{payload}.",
        "bad base64": f"{header}.{payload[:-1]}!.{signature}",
        "non-ASCII byte": f"Bearer {header}.{payload}\xe9.{signature}".encode("latin-1"),
        "header not an object": f"{_b64(b'[1]')}.{payload}.{signature}",
        "header nested 5000 deep": f"{nested}.{payload}.{signature}",
        "payload nested 5000 deep": f"{header}.{nested}.{signature}",
        "over 16 KiB": f"{header}.{payload}.{signature}{'A' * 17000}",
        "token in Basic": f"Basic {token}".encode(),
        "tab after Bearer": f"Bearer\t{token}".encode(),
    }


def test_malformed_framing_is_a_bare_401_and_the_token_stays_out_of_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private = _ec(ec.SECP384R1())
    client = _client(tmp_path, _jwk(private, kid="k"))
    token = _sign(private, "ES384", kid="k")
    with caplog.at_level(logging.DEBUG):
        for name, value in _framing_cases(token).items():
            header = value if isinstance(value, bytes) else f"Bearer {value}"
            response = client.get(DISCOVERY, headers={"Authorization": header})
            assert (response.status_code, response.content) == (401, b""), name
    assert token.split(".")[1] not in caplog.text
    assert "Traceback" not in caplog.text


def test_what_the_caller_sent_is_not_repeated_at_length_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused token's iss, kid, alg or typ went into the log line whole: 10,000
    characters of the caller's choosing per request, and the token's own text. The
    reason is bounded (the audit trail and the throttle already cut it)."""
    private = _ec(ec.SECP384R1())
    client = _client(tmp_path, _jwk(private, kid="k"))
    long = "x" * 10_000
    tokens = [
        _sign(private, "ES384", _claims(iss=long), kid="k"),
        _sign(private, "ES384", kid=long),
        _sign(private, "ES384", kid="k", typ=long),
        f"{_b64(json.dumps({'alg': long}).encode())}.e30.AA",
    ]
    with caplog.at_level(logging.INFO):
        for token in tokens:
            assert _status(client, token) == 401
    messages = _refusals(caplog)
    assert len(messages) == len(tokens)
    assert max(len(message) for message in messages) < 600, [m[:80] for m in messages]


# -- claims ---------------------------------------------------------------------------------


def test_time_claims_at_the_edges(tmp_path: Path) -> None:
    """Clock skew 60 s, maximum lifetime 3600 s (the defaults). RFC 7519 NumericDates may
    be fractional (JavaScript's Date.now() / 1000)."""
    private = _ec(ec.SECP384R1())
    client = _client(tmp_path, _jwk(private, kid="k"))
    now = time.time()

    def status(**claims: Any) -> int:
        return _status(client, _sign(private, "ES384", _claims(**claims), kid="k"))

    assert status(iat=now, nbf=now - 0.5, exp=now + 300.25) == 200
    assert status(iat=int(now) + 30, exp=int(now) + 330) == 200  # iat within the skew
    assert status(iat=int(now) - 300, exp=int(now) - 30) == 200  # expired within the skew
    assert status(iat=int(now) - 300, exp=int(now) - 90) == 401  # expired beyond it
    assert status(iat=int(now) + 120, exp=int(now) + 420) == 401  # iat in the future
    assert status(nbf=int(now) + 120) == 401
    # iat given with exp: a default iat is read when the claims are built, which on a loaded
    # machine can be seconds after ``now`` (the lifetime then read 3599 s: CI, this stop).
    assert status(iat=int(now), exp=int(now) + 3601) == 401  # lifetime over the maximum
    assert status(iat=int(now), exp=int(now)) == 401  # exp not after iat
    assert status(iat=str(int(now))) == 401  # a NumericDate is a number
    claims = _claims()
    del claims["exp"]
    assert _status(client, _sign(private, "ES384", claims, kid="k")) == 401


def test_tenant_and_unknown_claims_are_passed_on(tmp_path: Path) -> None:
    """CDS Hooks 2.0.1's optional tenant, and claims no standard names, are tolerated; the
    verified token carries them."""
    from cds_service.auth import TokenVerifier
    from cds_service.settings import AuthSettings, TrustedIssuer

    private = _ec(ec.SECP384R1())
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [_jwk(private, kid="k")]}), encoding="utf-8")
    verifier = TokenVerifier(AuthSettings(trusted_issuers=[TrustedIssuer(iss=ISS, jwks_file=path)]))
    extra = {"tenant": "2ddc6f6d", "sub": "client-1", "epic.eci": {"nested": [1, 2]}}
    token = _sign(private, "ES384", _claims(**extra), kid="k")
    verified = asyncio.run(verifier.verify(token, [BASE + DISCOVERY]))
    assert (verified.tenant, verified.sub) == ("2ddc6f6d", "client-1")
    assert verified.claims["epic.eci"] == {"nested": [1, 2]}


@pytest.mark.parametrize("jti", [None, "", 7, ["a"]])
def test_a_missing_or_unusable_jti_is_refused(tmp_path: Path, jti: Any) -> None:
    from jwt.api_jws import PyJWS

    private = _ec(ec.SECP384R1())
    client = _client(tmp_path, _jwk(private, kid="k"))
    claims = _claims(jti=jti)
    if jti is None:
        del claims["jti"]
    # PyJWT will not encode a non-string jti: sign the bytes as an odd EHR would
    header = _b64(json.dumps({"alg": "ES384", "kid": "k", "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
    signature = PyJWS().get_algorithm_by_name("ES384").sign(signing_input.encode(), private)
    assert _status(client, f"{signing_input}.{_b64(signature)}") == 401


@pytest.mark.parametrize(
    ("iss", "aud", "expected"),
    [
        (ISS, [f"https://a.example{DISCOVERY}", BASE + DISCOVERY + "/", "b"], 200),
        (ISS, ["HTTP://TestServer" + DISCOVERY], 200),
        (ISS, BASE + DISCOVERY.upper(), 401),  # the path is case-sensitive
        (ISS + "/", BASE + DISCOVERY, 401),  # iss is compared as configured, exactly
        (ISS.upper(), BASE + DISCOVERY, 401),
    ],
)
def test_iss_and_aud_spellings(tmp_path: Path, iss: str, aud: Any, expected: int) -> None:
    private = _ec(ec.SECP384R1())
    client = _client(tmp_path, _jwk(private, kid="k"))
    assert _status(client, _sign(private, "ES384", _claims(aud, iss=iss), kid="k")) == expected


def test_refused_shapes_count_towards_the_throttle(tmp_path: Path) -> None:
    """Each malformed shape is a refusal like a bad signature: after
    max_failures_per_source of them the source waits (429, Retry-After), good token or
    not; another source is not affected."""
    private = _ec(ec.SECP384R1())
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [_jwk(private, kid="k")]}), encoding="utf-8")
    client = _app(
        tmp_path,
        [{"iss": ISS, "jwks_file": str(path)}],
        failure_window_s=60,
        max_failures_per_source=5,
    )
    cases = list(_framing_cases(_sign(private, "ES384", kid="k")).values())[:5]
    for value in cases:
        header = value if isinstance(value, bytes) else f"Bearer {value}"
        assert client.get(DISCOVERY, headers={"Authorization": header}).status_code == 401
    throttled = client.get(
        DISCOVERY, headers={"Authorization": f"Bearer {_sign(private, 'ES384', kid='k')}"}
    )
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    other = TestClient(client.app, base_url=BASE, client=("127.0.0.9", 50000))
    good = _sign(private, "ES384", kid="k")
    assert other.get(DISCOVERY, headers={"Authorization": f"Bearer {good}"}).status_code == 200
