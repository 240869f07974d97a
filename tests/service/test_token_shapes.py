"""Token and key-set shapes of other EHRs that CDS Hooks 2.0.1 and the JOSE RFCs allow.

Each test builds an app trusting one EHR whose key set is written the way that EHR might
publish it (a file, or a JWKS URL on loopback), signs calls with real keys generated here,
and calls discovery or a service through the app (no lifespan: authentication needs none).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.service.conftest import BASE
from tests.service.ehr import RecordingServer

ISS = "https://other-ehr.test"
DISCOVERY = "/cds-services"
SERVICE = "/cds-services/ecg-review"


def _ec(curve: ec.EllipticCurve) -> Any:
    return ec.generate_private_key(curve)


def _rsa() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(private: Any, **fields: Any) -> dict[str, Any]:
    """The public JWK of ``private`` with exactly ``fields`` added (no kid/alg/use unless
    given)."""
    algorithm = RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else ECAlgorithm
    jwk = json.loads(algorithm.to_jwk(private.public_key()))
    jwk.update(fields)
    return dict(jwk)


def _claims(aud: Any = BASE + DISCOVERY, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
    claims.update(extra)
    return claims


def _sign(private: Any, alg: str, claims: dict[str, Any] | None = None, **header: Any) -> str:
    return jwt.encode(claims or _claims(), private, algorithm=alg, headers=header or None)


def _client(tmp_path: Path, *keys: dict[str, Any], jwks_url: str | None = None) -> TestClient:
    from cds_service.app import create_app
    from cds_service.settings import Settings

    issuer: dict[str, Any] = {"iss": ISS}
    if jwks_url is not None:
        issuer["jwks_urls"] = [jwks_url]
    else:
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps({"keys": list(keys)}), encoding="utf-8")
        issuer["jwks_file"] = str(path)
    settings = Settings(
        data_dir=tmp_path / "var",
        public_base_url=BASE,
        auth={"trusted_issuers": [issuer], "failure_window_s": 0},
    )
    return TestClient(create_app(settings), base_url=BASE)


def _status(client: TestClient, token: str, path: str = DISCOVERY) -> int:
    return client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code


# -- keys and kids --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "make"),
    [
        ("ES256", lambda: _ec(ec.SECP256R1())),
        ("ES384", lambda: _ec(ec.SECP384R1())),
        ("ES512", lambda: _ec(ec.SECP521R1())),
        ("RS256", _rsa),
        ("RS384", _rsa),
        ("PS384", _rsa),
    ],
)
def test_a_token_without_kid_verifies_against_a_single_key(
    tmp_path: Path, alg: str, make: Any
) -> None:
    """RFC 7515 makes kid optional: one key published (with or without kid, alg, use), a
    token without kid verifies against it; a stranger's key still does not."""
    private = make()
    client = _client(tmp_path, _jwk(private))  # no kid, no alg, no use
    assert _status(client, _sign(private, alg)) == 200
    assert _status(client, _sign(private, alg, kid="any-kid")) == 200  # a kid the set lacks
    assert _status(client, _sign(make(), alg)) == 401


def test_mixed_key_sets_find_the_key_that_fits_the_token(tmp_path: Path) -> None:
    """RSA and EC keys side by side, one with alg, one with use only, one with neither, two
    under one kid: each token verifies with the key of its own algorithm."""
    rsa_key, p256, p384 = _rsa(), _ec(ec.SECP256R1()), _ec(ec.SECP384R1())
    client = _client(
        tmp_path,
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},  # never used
        _jwk(rsa_key, kid="shared", use="sig"),
        _jwk(p384, kid="shared", alg="ES384"),
        _jwk(p256, kid="p256"),
        _jwk(_rsa(), kid="enc", use="enc"),  # an encryption key is not a signing key
    )
    assert _status(client, _sign(rsa_key, "RS384", kid="shared")) == 200
    assert _status(client, _sign(rsa_key, "PS256", kid="shared")) == 200
    assert _status(client, _sign(p384, "ES384", kid="shared")) == 200
    assert _status(client, _sign(p256, "ES256", kid="p256")) == 200
    assert _status(client, _sign(p256, "ES256")) == 200  # no kid: the one P-256 key
    # a curve fits only its own algorithm; a key's own alg pins it
    assert _status(client, _sign(p384, "ES384", kid="p256")) == 401
    assert _status(client, _sign(_ec(ec.SECP521R1()), "ES512", kid="shared")) == 401


def test_none_and_hmac_with_the_public_key_are_refused_without_kid(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    private = _rsa()
    client = _client(tmp_path, _jwk(private))
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    body = json.dumps(_claims()).encode()
    import base64
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{b64(header)}.{b64(body)}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert _status(client, f"{signing_input}.{b64(mac)}") == 401
    none_header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    assert _status(client, f"{none_header}.{b64(body)}.") == 401


def test_typ_may_be_the_full_media_type(tmp_path: Path) -> None:
    """RFC 7515 section 4.1.9: ``application/jwt`` is ``JWT`` spelled out."""
    private = _ec(ec.SECP384R1())
    client = _client(tmp_path, _jwk(private, kid="k"))
    assert _status(client, _sign(private, "ES384", kid="k", typ="application/jwt")) == 200
    assert _status(client, _sign(private, "ES384", kid="k", typ="at+jwt")) == 401


# -- aud ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aud", "path"),
    [
        ([BASE + DISCOVERY], DISCOVERY),
        ([BASE + DISCOVERY, "https://other-cds.example/cds-services"], DISCOVERY),
        (BASE + DISCOVERY + "/", DISCOVERY),  # one trailing slash
        ("HTTP://TESTSERVER:80/cds-services", DISCOVERY),  # the same URL in other case
        (BASE + SERVICE, SERVICE),
        (BASE + SERVICE + "/", SERVICE),
        ([BASE + SERVICE, BASE + DISCOVERY], SERVICE),
        (BASE + SERVICE, SERVICE + "/feedback"),
    ],
)
def test_aud_shapes_the_spec_allows_pass(tmp_path: Path, aud: Any, path: str) -> None:
    """CDS Hooks 2.0.1: aud is a string or an array of strings and MUST be the URL of the
    endpoint invoked (the service answers with or without a trailing slash, so both are);
    RFC 7519 4.1.3: the token passes when one of them identifies us."""
    private = _ec(ec.SECP384R1())
    client = _client(tmp_path, _jwk(private, kid="k"))
    token = _sign(private, "ES384", _claims(aud), kid="k")
    if path == DISCOVERY:
        assert _status(client, token, path) == 200
    else:  # past authentication (this app has no runtime: "starting", 503)
        response = client.post(path, json={}, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 503, response.text


@pytest.mark.parametrize(
    ("aud", "path"),
    [
        ("https://other-cds.example/cds-services", DISCOVERY),
        (["https://other-cds.example/cds-services"], DISCOVERY),
        (BASE + SERVICE, DISCOVERY),  # another endpoint of ours
        (BASE + DISCOVERY, SERVICE),  # aud MUST be the endpoint invoked (CDS Hooks 2.0.1)
        (BASE + "/cds-services/qt-drug-check", SERVICE),
        (BASE + SERVICE + "-evil", SERVICE),
        (BASE + SERVICE + "?x=1", SERVICE),
        (BASE, DISCOVERY),
        ("http://testserver.evil/cds-services", DISCOVERY),
        (5, DISCOVERY),
        ([5, BASE + DISCOVERY], DISCOVERY),
        ([], DISCOVERY),
        ({"url": BASE + DISCOVERY}, DISCOVERY),
    ],
)
def test_aud_for_someone_else_is_refused(tmp_path: Path, aud: Any, path: str) -> None:
    private = _ec(ec.SECP384R1())
    client = _client(tmp_path, _jwk(private, kid="k"))
    token = _sign(private, "ES384", _claims(aud), kid="k")
    response = (
        client.post(path, json={}, headers={"Authorization": f"Bearer {token}"})
        if (path != DISCOVERY)
        else client.get(path, headers={"Authorization": f"Bearer {token}"})
    )
    assert response.status_code == 401
    assert response.content == b""


# -- JWKS downloads -------------------------------------------------------------------------


def test_an_unreachable_jwks_url_is_tried_once_per_interval_not_per_call(tmp_path: Path) -> None:
    """While the EHR's key set cannot be fetched, a flood of tokens (random kids, or none)
    makes one download attempt per MIN_REFETCH_S, not one each (every call used to wait on
    its own download, one at a time)."""
    private = _ec(ec.SECP384R1())
    server = RecordingServer({"not": "a key set"}).start()
    try:
        client = _client(tmp_path, jwks_url=f"{server.url}/jwks.json")
        for _ in range(10):
            assert _status(client, _sign(private, "ES384", kid=uuid.uuid4().hex)) == 401
            assert _status(client, _sign(private, "ES384")) == 401
        assert len(server.requests) == 1
    finally:
        server.stop()


def test_an_oversized_jwks_is_not_read_to_the_end(tmp_path: Path) -> None:
    """A key set over MAX_JWKS_BYTES is refused while it streams (the EHR's keys are never
    that large); the tokens are 401."""
    from cds_service.auth.jwks import MAX_JWKS_BYTES

    private = _ec(ec.SECP384R1())
    padding = [{"kty": "oct", "k": "x" * 1000, "kid": str(i)} for i in range(MAX_JWKS_BYTES // 900)]
    server = RecordingServer({"keys": [_jwk(private, kid="k"), *padding]}).start()
    try:
        client = _client(tmp_path, jwks_url=f"{server.url}/jwks.json")
        assert _status(client, _sign(private, "ES384", kid="k")) == 401
    finally:
        server.stop()


def test_a_jku_with_keys_exchanged_out_of_band_is_never_fetched_and_the_file_decides(
    tmp_path: Path,
) -> None:
    """An EHR whose key set was exchanged out of band (a file) but which sends its jku, as
    the CDS Hooks sandbox always does, was refused; the jku is now ignored (never fetched)
    and the token verified against the file's keys, so a stranger's key still fails."""
    private = _ec(ec.SECP384R1())
    rogue = RecordingServer({"keys": []}).start()
    try:
        client = _client(tmp_path, _jwk(private, kid="k"))
        jku = f"{rogue.url}/jwks.json"
        assert _status(client, _sign(private, "ES384", kid="k", jku=jku)) == 200
        stranger = _ec(ec.SECP384R1())
        assert _status(client, _sign(stranger, "ES384", kid="k", jku=jku)) == 401
        assert rogue.requests == []
    finally:
        rogue.stop()


def test_a_jku_off_an_issuers_url_list_is_refused_and_never_fetched(tmp_path: Path) -> None:
    private = _ec(ec.SECP384R1())
    own = RecordingServer({"keys": [_jwk(private, kid="k")]}).start()
    rogue = RecordingServer({"keys": [_jwk(private, kid="k")]}).start()
    try:
        client = _client(tmp_path, jwks_url=f"{own.url}/jwks.json")
        token = _sign(private, "ES384", kid="k", jku=f"{rogue.url}/jwks.json")
        assert _status(client, token) == 401
        assert rogue.requests == []
    finally:
        own.stop()
        rogue.stop()


def test_a_listed_jku_matches_in_normal_form_and_the_configured_url_is_fetched(
    tmp_path: Path,
) -> None:
    private = _ec(ec.SECP384R1())
    server = RecordingServer({"keys": [_jwk(private, kid="k")]}).start()
    try:
        url = f"{server.url}/jwks.json"
        client = _client(tmp_path, jwks_url=url)
        spelled = url.replace("http://127.0.0.1", "HTTP://127.0.0.1")
        assert _status(client, _sign(private, "ES384", kid="k", jku=spelled)) == 200
        assert [path for _, path, _ in server.requests] == ["/jwks.json"]
    finally:
        server.stop()


def test_a_key_file_nested_past_the_stack_is_401_not_500(tmp_path: Path) -> None:
    """A damaged key file (or JWKS URL answer) nested 100,000 deep raised RecursionError
    out of token verification (500); it is now an unreadable key set: 401."""
    private = _ec(ec.SECP384R1())
    client = _client(tmp_path, _jwk(private, kid="k"))
    (tmp_path / "jwks.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    assert _status(client, _sign(private, "ES384", kid="k")) == 401
