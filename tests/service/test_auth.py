"""Security: every way a token can be wrong is a bare 401; real EHR token shapes pass.

Tokens are built the way the CDS Hooks sandbox (ES384, 5 minutes, jku) and Epic's
documentation (RS384, sub, nbf, 15 minutes, keys out of band) build them.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import BASE, EPIC_ISS, SANDBOX_ISS, Ehr
from tests.service.ehr import (
    EhrKey,
    RecordingServer,
    epic_claims,
    jwks,
    sandbox_claims,
    unsigned_token,
)

DISCOVERY = "/cds-services"
AUD = BASE + DISCOVERY


def _get(client: TestClient, token: str | None, path: str = DISCOVERY) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get(path, headers=headers)


def _assert_bare_401(response: Any) -> None:
    assert response.status_code == 401
    assert response.content == b""


def test_sandbox_style_es384_token_with_jku_is_accepted(ehr: Ehr, sandbox_key: EhrKey) -> None:
    token = sandbox_key.sign(sandbox_claims(SANDBOX_ISS, AUD), jku=ehr.jku)
    response = _get(ehr.client, token)
    assert response.status_code == 200
    assert response.json()["services"]


def test_epic_style_rs384_token_with_sub_nbf_15_minutes_is_accepted(
    ehr: Ehr, epic_key: EhrKey
) -> None:
    token = epic_key.sign(epic_claims(EPIC_ISS, AUD, tenant="hospital-a", epic_user="x"))
    assert jwt.get_unverified_header(token)["alg"] == "RS384"
    assert _get(ehr.client, token).status_code == 200


def test_missing_or_non_bearer_authorization_is_401(ehr: Ehr) -> None:
    _assert_bare_401(_get(ehr.client, None))
    _assert_bare_401(ehr.client.get(DISCOVERY, headers={"Authorization": "Basic dXNlcjpwdw=="}))
    _assert_bare_401(ehr.client.get(DISCOVERY, headers={"Authorization": "Bearer "}))
    _assert_bare_401(_get(ehr.client, "not-a-jwt"))


def test_every_route_requires_the_token(ehr: Ehr) -> None:
    _assert_bare_401(ehr.client.post("/cds-services/ecg-review", json={}))
    _assert_bare_401(ehr.client.post("/cds-services/ecg-review/feedback", json={}))
    _assert_bare_401(ehr.client.post("/cds-services/no-such-service", json={}))
    # checked before the body is read: a malformed body without a token is 401, not 400
    _assert_bare_401(
        ehr.client.post(
            "/cds-services/ecg-review",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
    )


def test_wrong_signature_is_401(ehr: Ehr, sandbox_key: EhrKey) -> None:
    impostor = EhrKey.generate("ES384", kid=sandbox_key.kid)  # same kid, other key
    _assert_bare_401(_get(ehr.client, impostor.sign(sandbox_claims(SANDBOX_ISS, AUD), jku=ehr.jku)))


def test_tampered_payload_is_401(ehr: Ehr, sandbox_key: EhrKey) -> None:
    token = sandbox_key.sign(sandbox_claims(SANDBOX_ISS, AUD), jku=ehr.jku)
    header, payload, signature = token.split(".")
    other = sandbox_key.sign(sandbox_claims(SANDBOX_ISS, AUD, sub="admin"), jku=ehr.jku)
    _assert_bare_401(_get(ehr.client, f"{header}.{other.split('.')[1]}.{signature}"))
    assert payload  # the original was well formed


def test_alg_none_is_401(ehr: Ehr, sandbox_key: EhrKey) -> None:
    claims = sandbox_claims(SANDBOX_ISS, AUD)
    for alg in ("none", "None", "NONE"):
        token = unsigned_token(claims, {"alg": alg, "typ": "JWT", "kid": sandbox_key.kid})
        _assert_bare_401(_get(ehr.client, token))


def test_hs256_even_keyed_with_the_public_key_is_401(ehr: Ehr, sandbox_key: EhrKey) -> None:
    # The classic algorithm-confusion attack: HMAC keyed with the issuer's public key.
    from cryptography.hazmat.primitives import serialization

    public_pem = sandbox_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = sandbox_claims(SANDBOX_ISS, AUD)
    headers = {"kid": sandbox_key.kid, "typ": "JWT", "jku": ehr.jku}
    forged = _hmac_token(claims, headers, public_pem)
    _assert_bare_401(_get(ehr.client, forged))
    _assert_bare_401(_get(ehr.client, _hmac_token(claims, headers, b"shared-secret")))


def _hmac_token(claims: dict[str, Any], headers: dict[str, Any], secret: bytes) -> str:
    import base64
    import hashlib
    import hmac
    import json

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps({"alg": "HS256", **headers}).encode())
        + "."
        + b64(json.dumps(claims).encode())
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def test_unknown_issuer_is_401(ehr: Ehr, sandbox_key: EhrKey) -> None:
    token = sandbox_key.sign(sandbox_claims("https://evil.example", AUD), jku=ehr.jku)
    _assert_bare_401(_get(ehr.client, token))


def test_jku_not_on_the_allow_list_is_401_and_never_fetched(ehr: Ehr) -> None:
    attacker = EhrKey.generate("ES384")
    rogue = RecordingServer(jwks(attacker)).start()
    try:
        token = attacker.sign(sandbox_claims(SANDBOX_ISS, AUD), jku=f"{rogue.url}/jwks.json")
        _assert_bare_401(_get(ehr.client, token))
        assert rogue.requests == []
    finally:
        rogue.stop()


def test_missing_kid_is_tried_against_the_issuers_keys_only(ehr: Ehr, sandbox_key: EhrKey) -> None:
    """kid is optional in RFC 7515: without one, the issuer's own keys that fit alg are tried
    (tests/service/test_token_shapes.py has the key-set shapes); a stranger's key fails."""
    claims = sandbox_claims(SANDBOX_ISS, AUD)
    token = jwt.encode(claims, sandbox_key.private, algorithm="ES384", headers={"jku": ehr.jku})
    assert _get(ehr.client, token).status_code == 200
    stranger = EhrKey.generate("ES384")
    forged = jwt.encode(
        sandbox_claims(SANDBOX_ISS, AUD), stranger.private, algorithm="ES384",
        headers={"jku": ehr.jku},
    )  # fmt: skip
    _assert_bare_401(_get(ehr.client, forged))


@pytest.mark.parametrize(
    "aud",
    [
        BASE + "/cds-services/ecg-review",  # another endpoint of ours
        "http://other-host/cds-services",
        BASE + "/cds-services/ecg-review/feedback",
        ["http://other-host/cds-services"],  # a list naming only others
    ],
)
def test_wrong_audience_is_401(ehr: Ehr, sandbox_key: EhrKey, aud: Any) -> None:
    token = sandbox_key.sign(sandbox_claims(SANDBOX_ISS, aud), jku=ehr.jku)
    _assert_bare_401(_get(ehr.client, token))


def test_expired_token_is_401(ehr: Ehr, sandbox_key: EhrKey) -> None:
    now = int(time.time())
    claims = sandbox_claims(SANDBOX_ISS, AUD, iat=now - 900, exp=now - 600)
    _assert_bare_401(_get(ehr.client, sandbox_key.sign(claims, jku=ehr.jku)))


def test_iat_in_the_future_beyond_skew_is_401(ehr: Ehr, sandbox_key: EhrKey) -> None:
    now = int(time.time())
    claims = sandbox_claims(SANDBOX_ISS, AUD, iat=now + 600, exp=now + 900)
    _assert_bare_401(_get(ehr.client, sandbox_key.sign(claims, jku=ehr.jku)))


def test_small_clock_skew_is_tolerated(ehr: Ehr, sandbox_key: EhrKey) -> None:
    now = int(time.time())
    claims = sandbox_claims(SANDBOX_ISS, AUD, iat=now + 20, exp=now + 320)
    assert _get(ehr.client, sandbox_key.sign(claims, jku=ehr.jku)).status_code == 200


def test_lifetime_over_the_maximum_is_401(ehr: Ehr, sandbox_key: EhrKey) -> None:
    now = int(time.time())
    claims = sandbox_claims(SANDBOX_ISS, AUD, iat=now, exp=now + 7200)  # max is 3600
    _assert_bare_401(_get(ehr.client, sandbox_key.sign(claims, jku=ehr.jku)))


@pytest.mark.parametrize("claim", ["iss", "aud", "exp", "iat", "jti"])
def test_missing_required_claim_is_401(ehr: Ehr, sandbox_key: EhrKey, claim: str) -> None:
    claims = sandbox_claims(SANDBOX_ISS, AUD)
    del claims[claim]
    _assert_bare_401(_get(ehr.client, sandbox_key.sign(claims, jku=ehr.jku)))


def test_replayed_jti_is_401(ehr: Ehr, sandbox_key: EhrKey) -> None:
    token = sandbox_key.sign(sandbox_claims(SANDBOX_ISS, AUD), jku=ehr.jku)
    assert _get(ehr.client, token).status_code == 200
    _assert_bare_401(_get(ehr.client, token))
    # a fresh jti from the same EHR is fine
    assert (
        _get(
            ehr.client, sandbox_key.sign(sandbox_claims(SANDBOX_ISS, AUD), jku=ehr.jku)
        ).status_code
        == 200
    )


def test_same_jti_from_another_issuer_is_not_a_replay(
    ehr: Ehr, sandbox_key: EhrKey, epic_key: EhrKey
) -> None:
    jti = str(uuid.uuid4())
    first = sandbox_key.sign(sandbox_claims(SANDBOX_ISS, AUD, jti=jti), jku=ehr.jku)
    second = epic_key.sign(epic_claims(EPIC_ISS, AUD, jti=jti))
    assert _get(ehr.client, first).status_code == 200
    assert _get(ehr.client, second).status_code == 200


def test_auth_failures_are_audited_without_the_token(ehr: Ehr, sandbox_key: EhrKey) -> None:
    from cds_service.audit import AuditFilter

    marker = f"https://evil-{uuid.uuid4().hex}.example"
    token = sandbox_key.sign(sandbox_claims(marker, AUD), jku=ehr.jku)
    _assert_bare_401(_get(ehr.client, token))
    page = ehr.runtime.audit.query(AuditFilter(events=("auth-failure",)), limit=50)
    details = [str(entry.to_dict()) for entry in page.entries]
    assert any(marker in d for d in details)
    assert not any(token in d for d in details)


def test_trust_comes_from_environment_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, epic_key: EhrKey, model_dir: Any
) -> None:
    """An operator adds an EHR with environment variables only (no code)."""
    import json

    from cds_service.app import create_app
    from cds_service.settings import Settings

    key = EhrKey.generate("ES384")
    jwks_file = tmp_path / "new-ehr.json"
    jwks_file.write_text(json.dumps(jwks(key)), encoding="utf-8")
    monkeypatch.setenv(
        "ECG_CDS_AUTH__TRUSTED_ISSUERS",
        json.dumps([{"iss": "https://new-ehr.test", "jwks_file": str(jwks_file)}]),
    )
    monkeypatch.setenv("ECG_CDS_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ECG_CDS_PUBLIC_BASE_URL", BASE)
    settings = Settings()
    app = create_app(settings)
    client = TestClient(app, base_url=BASE)  # no lifespan: discovery needs no runtime
    good = key.sign(sandbox_claims("https://new-ehr.test", AUD))
    assert client.get(DISCOVERY, headers={"Authorization": f"Bearer {good}"}).status_code == 200
    # the EHR trusted by the session app is not trusted here
    other = epic_key.sign(epic_claims(EPIC_ISS, AUD))
    _assert_bare_401(client.get(DISCOVERY, headers={"Authorization": f"Bearer {other}"}))


def test_nothing_is_trusted_by_default(sandbox_key: EhrKey, tmp_path: Any) -> None:
    from cds_service.app import create_app
    from cds_service.settings import Settings

    settings = Settings(data_dir=tmp_path, public_base_url=BASE)
    client = TestClient(create_app(settings), base_url=BASE)
    token = sandbox_key.sign(sandbox_claims(SANDBOX_ISS, AUD))
    _assert_bare_401(client.get(DISCOVERY, headers={"Authorization": f"Bearer {token}"}))


def test_unknown_kid_refetches_the_jwks_once_for_rotation(sandbox_key: EhrKey) -> None:
    """A rotated key is found by refetching; a flood of unknown kids does not refetch."""
    import asyncio

    asyncio.run(_rotation(sandbox_key))


async def _rotation(sandbox_key: EhrKey) -> None:
    from cds_service.auth.jwks import JwksCache
    from cds_service.settings import AuthSettings, TrustedIssuer

    server = RecordingServer(jwks(sandbox_key)).start()
    try:
        url = f"{server.url}/jwks.json"
        issuer = TrustedIssuer(iss=SANDBOX_ISS, jwks_urls=[url])
        cache = JwksCache(AuthSettings(trusted_issuers=[issuer]), min_refetch_s=0.0)
        assert (await cache.key_for(issuer, sandbox_key.kid, None)) is not None
        rotated = EhrKey.generate("ES384")
        server.document = jwks(sandbox_key, rotated)
        assert (await cache.key_for(issuer, rotated.kid, url)) is not None
        assert len(server.requests) == 2

        slow = JwksCache(AuthSettings(trusted_issuers=[issuer]), min_refetch_s=60.0)
        await slow.key_for(issuer, sandbox_key.kid, None)
        before = len(server.requests)
        for _ in range(5):
            with pytest.raises(Exception, match="no key"):
                await slow.key_for(issuer, uuid.uuid4().hex, None)
        assert len(server.requests) == before
    finally:
        server.stop()


def test_trust_comes_from_a_settings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The same through a YAML settings file (ECG_CDS_SETTINGS_FILE)."""
    import json

    from cds_service.app import create_app
    from cds_service.settings import Settings

    key = EhrKey.generate("RS384")
    jwks_file = tmp_path / "ehr.json"
    jwks_file.write_text(json.dumps(jwks(key)), encoding="utf-8")
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(
        "auth:\n"
        "  trusted_issuers:\n"
        "    - iss: https://file-ehr.test\n"
        f"      jwks_file: {jwks_file}\n"
        "  max_token_lifetime_s: 900\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("ECG_CDS_SETTINGS_FILE", str(settings_file))
    monkeypatch.delenv("ECG_CDS_AUTH__TRUSTED_ISSUERS", raising=False)
    settings = Settings(data_dir=tmp_path / "var", public_base_url=BASE)
    client = TestClient(create_app(settings), base_url=BASE)
    good = key.sign(epic_claims("https://file-ehr.test", AUD))
    assert client.get(DISCOVERY, headers={"Authorization": f"Bearer {good}"}).status_code == 200
    too_long = key.sign(
        epic_claims("https://file-ehr.test", AUD, exp=int(time.time()) + 1800)
    )  # over this file's 900 s maximum lifetime
    _assert_bare_401(client.get(DISCOVERY, headers={"Authorization": f"Bearer {too_long}"}))


def test_a_key_file_change_is_honoured_for_known_and_new_kids(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A local key file is looked at once per FILE_RECHECK_S for a kid it holds, at once for
    a kid it does not: a removed key stops verifying, an added one verifies at once."""
    import asyncio
    import json
    import os

    from cds_service.auth import jwks as jwks_module
    from cds_service.auth.errors import TokenRejected
    from cds_service.auth.jwks import JwksCache
    from cds_service.settings import AuthSettings, TrustedIssuer

    old, new = EhrKey.generate("ES384"), EhrKey.generate("ES384")
    path = tmp_path / "ehr.json"

    def write(*keys: EhrKey, mtime: int) -> None:
        path.write_text(json.dumps(jwks(*keys)), encoding="utf-8")
        os.utime(path, (mtime, mtime))

    async def check() -> None:
        issuer = TrustedIssuer(iss="https://file-ehr.test", jwks_file=path)
        cache = JwksCache(AuthSettings(trusted_issuers=[issuer]))
        write(old, mtime=1_000_000)
        assert await cache.key_for(issuer, old.kid, None) is not None
        write(old, new, mtime=1_000_100)  # rotation: the new kid is looked up at once
        assert await cache.key_for(issuer, new.kid, None) is not None
        write(new, mtime=1_000_200)  # the old key withdrawn
        monkeypatch.setattr(jwks_module, "FILE_RECHECK_S", 0.0)  # the recheck interval passed
        with pytest.raises(TokenRejected, match="no key"):
            await cache.key_for(issuer, old.kid, None)
        path.unlink()
        with pytest.raises(TokenRejected, match="no key"):
            await cache.key_for(issuer, new.kid, None)

    asyncio.run(check())
