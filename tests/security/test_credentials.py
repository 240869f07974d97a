"""Findings 2, 3, 8 and 9 (credentials), header fields of the wrong JSON type, and the token
attacks that already held.

All against the real service process (``live``); a loopback listener stands in for the
attacker's key server, to prove that nothing is fetched from where a token points.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm

from tests.security.conftest import AUDIT_HASH, AUDIT_SECRET, ISS, LiveService
from tests.service.ehr import EhrKey, RecordingServer, jwks, sandbox_claims, unsigned_token

DISCOVERY = "/cds-services"


def _discovery(live: LiveService, token: str, source: str = "127.0.0.1", **headers: str) -> Any:
    with live.client(source) as client:
        return client.get(DISCOVERY, headers={"Authorization": f"Bearer {token}", **headers})


def _assert_bare_401(response: Any) -> None:
    assert response.status_code == 401, response.text[:300]
    assert response.content == b""


# -- finding 2: the audience comes from configuration, never from the request ---------------


def test_token_for_another_service_is_refused_whatever_the_host_header(live: LiveService) -> None:
    """A JWT our EHR issued to another CDS service, replayed with that service's Host."""
    other = "http://other-cds.example"
    for headers in (
        {"Host": "other-cds.example"},
        {"Host": "other-cds.example", "X-Forwarded-Proto": "http"},
        {"X-Forwarded-Host": "other-cds.example", "X-Forwarded-Proto": "http"},
        {"Forwarded": "host=other-cds.example;proto=http"},
    ):
        token = live.key.sign(sandbox_claims(ISS, other + DISCOVERY))
        _assert_bare_401(_discovery(live, token, "127.0.0.21", **headers))
    # the same EHR's token for us (aud = public_base_url + path) is accepted
    assert _discovery(live, live.token(DISCOVERY), "127.0.0.21").status_code == 200


# -- finding 3: one token matcher; sha256: entries work everywhere, the hash never signs in --


def test_hashed_audit_token_signs_in_with_the_secret_not_the_hash(live: LiveService) -> None:
    with live.client("127.0.0.31") as client:
        refused = client.post("/viewer/login", data={"audit_token": AUDIT_HASH})
        assert refused.status_code == 401
        assert "set-cookie" not in refused.headers
        listed = client.get("/viewer/", follow_redirects=False)
        assert listed.status_code != 200
    with live.client("127.0.0.32") as client:
        signed_in = client.post(
            "/viewer/login", data={"audit_token": AUDIT_SECRET}, follow_redirects=False
        )
        assert signed_in.status_code == 303
        assert "set-cookie" in signed_in.headers
        assert client.get("/viewer/").status_code == 200
    with live.client("127.0.0.33") as client:
        ok = client.get("/audit", headers={"Authorization": f"Bearer {AUDIT_SECRET}"})
        assert ok.status_code == 200
        hashed = client.get("/audit", headers={"Authorization": f"Bearer {AUDIT_HASH}"})
        assert hashed.status_code == 401


# -- finding 8: viewer sign-in throttled, and refused when posted from another origin --------


def test_repeated_wrong_logins_get_429(live: LiveService) -> None:
    with live.client("127.0.0.41") as client:
        statuses = [
            client.post("/viewer/login", data={"audit_token": f"guess-{i}"}).status_code
            for i in range(40)
        ]
        assert statuses[0] == 401
        assert 429 in statuses
        first_429 = statuses.index(429)
        assert all(s == 429 for s in statuses[first_429:])
        throttled = client.post("/viewer/login", data={"audit_token": AUDIT_SECRET})
        assert throttled.status_code == 429  # even the right token, until the window ends
        assert int(throttled.headers["Retry-After"]) > 0
    # another address is not affected
    with live.client("127.0.0.42") as client:
        assert client.post("/viewer/login", data={"audit_token": "x"}).status_code == 401


def test_login_posted_from_a_foreign_origin_is_refused(live: LiveService) -> None:
    """Login CSRF: an attacker's page signs the browser in as the attacker's reviewer."""
    with live.client("127.0.0.43") as client:
        for headers in (
            {"Origin": "https://attacker.example"},
            {"Origin": "null"},
            {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
            {"Origin": "https://attacker.example", "Sec-Fetch-Site": "same-origin"},
            {"Referer": "https://attacker.example/form.html"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
        ):
            response = client.post(
                "/viewer/login",
                data={"audit_token": AUDIT_SECRET},
                headers=headers,
                follow_redirects=False,
            )
            assert response.status_code == 403, headers
            assert "set-cookie" not in response.headers
        for headers in (
            {"Origin": live.base_url},
            # what Chromium sends from our no-referrer sign-in page
            {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
            {"Referer": live.base_url + "/viewer/login"},
        ):
            same_origin = client.post(
                "/viewer/login",
                data={"audit_token": AUDIT_SECRET},
                headers=headers,
                follow_redirects=False,
            )
            assert same_origin.status_code == 303, headers


# -- finding 9: refused-auth flood: aggregated audit rows, 429 per source -------------------


def _auth_failures(live: LiveService) -> int:
    with live.client("127.0.0.1") as client:
        page = client.get(
            "/audit",
            params={"event": "auth-failure", "limit": 1},
            headers={"Authorization": f"Bearer {AUDIT_SECRET}"},
        )
    assert page.status_code == 200
    return int(page.json()["total"])


def test_a_flood_of_bad_tokens_writes_one_row_and_gets_429(live: LiveService) -> None:
    before = _auth_failures(live)
    with live.client("127.0.0.51") as client:
        statuses = [
            client.get(DISCOVERY, headers={"Authorization": f"Bearer junk.{i}.x"}).status_code
            for i in range(100)
        ]
    after = _auth_failures(live)
    assert statuses[0] == 401
    assert statuses.count(429) >= 50
    # one full entry for the burst; the count follows as one entry when the window closes
    assert after - before <= 2, (before, after)
    # a valid EHR token from another address still gets in
    assert _discovery(live, live.token(DISCOVERY), "127.0.0.52").status_code == 200


@pytest.mark.parametrize(
    ("source", "method", "path", "form"),
    [
        ("127.0.0.53", "GET", "/viewer/ecg/any-id?token=v1.ecg.9999999999.forged", None),
        ("127.0.0.54", "GET", "/viewer/ecg/any-id", None),  # no token, no session
        ("127.0.0.55", "GET", "/viewer/?token=v1.list.9999999999.forged", None),
        ("127.0.0.56", "POST", "/viewer/ecg/any-id/feedback", {"outcome": "accepted"}),
        ("127.0.0.57", "GET", "/viewer/launch?iss=https://elsewhere.example/fhir", None),
        ("127.0.0.58", "POST", "/viewer/login", {"audit_token": "x"}),  # from another origin
    ],
)
def test_a_flood_of_refused_viewer_links_writes_a_row_or_two_not_one_each(
    live: LiveService, source: str, method: str, path: str, form: dict[str, str] | None
) -> None:
    """Anyone may send these, with no credential at all; each refusal was an audit row of
    its own, and audit rows are never removed: a loop filled the database."""
    before = _auth_failures(live)
    origin = {"Origin": "https://elsewhere.example"}
    with live.client(source) as client:
        statuses = {
            client.request(method, path, data=form, headers=origin).status_code for _ in range(100)
        }
    assert statuses == {403}
    assert _auth_failures(live) - before <= 2


# -- header fields of the wrong JSON type: 401 before any signature work, never 500 ------------


@pytest.mark.parametrize("alg", [["ES384"], {"ES384": True}, 384, None, True])
def test_an_alg_that_is_not_a_string_is_a_bare_401(live: LiveService, alg: Any) -> None:
    """An unhashable ``alg`` (a list or an object) used to be looked up in the set of
    accepted algorithms as it was: TypeError, 500, and the refusal neither throttled nor
    audited. Anyone on the network could send it, no key needed."""
    claims = sandbox_claims(ISS, live.base_url + DISCOVERY)
    token = unsigned_token(claims, {"alg": alg, "typ": "JWT", "kid": live.key.kid})
    _assert_bare_401(_discovery(live, token, "127.0.0.65"))
    with live.client("127.0.0.65") as client:
        hook = client.post(
            "/cds-services/ecg-review", json={}, headers={"Authorization": f"Bearer {token}"}
        )
    _assert_bare_401(hook)


# -- attacks that already held ----------------------------------------------------------------


def test_alg_none_is_refused(live: LiveService) -> None:
    claims = sandbox_claims(ISS, live.base_url + DISCOVERY)
    token = unsigned_token(claims, {"alg": "none", "typ": "JWT", "kid": live.key.kid})
    _assert_bare_401(_discovery(live, token, "127.0.0.61"))


def test_hs256_signed_with_the_public_key_is_refused(live: LiveService) -> None:
    """Algorithm confusion: HMAC keyed with the EHR's published public key."""
    public_pem = live.key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = sandbox_claims(ISS, live.base_url + DISCOVERY)
    header = {"alg": "HS256", "typ": "JWT", "kid": live.key.kid}
    signing_input = _b64(json.dumps(header)) + "." + _b64(json.dumps(claims))
    import hashlib
    import hmac

    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    _assert_bare_401(_discovery(live, token, "127.0.0.61"))


def test_key_headers_pointing_elsewhere_are_never_followed(live: LiveService) -> None:
    """jku, x5u and an embedded jwk naming the attacker's key: refused, nothing fetched."""
    attacker = EhrKey.generate("ES384")
    listener = RecordingServer(jwks(attacker)).start()
    try:
        claims = lambda: sandbox_claims(ISS, live.base_url + DISCOVERY)  # noqa: E731
        jwk = json.loads(ECAlgorithm.to_jwk(attacker.private.public_key()))
        for extra in (
            {"jku": f"{listener.url}/jwks.json"},
            {"x5u": f"{listener.url}/cert.pem"},
            {"jwk": {**jwk, "kid": attacker.kid}},
        ):
            token = attacker.sign(claims(), extra_headers=extra)
            _assert_bare_401(_discovery(live, token, "127.0.0.62"))
        # the real EHR key with a foreign jku: this issuer's keys were exchanged out of band
        # (a file, no jku list), so the jku is ignored, never fetched, and the file decides
        # (tests/service/test_token_shapes.py: an issuer with URLs refuses a foreign jku)
        token = live.key.sign(claims(), jku=f"{listener.url}/jwks.json")
        assert _discovery(live, token, "127.0.0.62").status_code == 200
        assert listener.requests == []
    finally:
        listener.stop()


def test_replayed_jti_is_refused(live: LiveService) -> None:
    token = live.key.sign(sandbox_claims(ISS, live.base_url + DISCOVERY, jti=str(uuid.uuid4())))
    assert _discovery(live, token, "127.0.0.63").status_code == 200
    _assert_bare_401(_discovery(live, token, "127.0.0.63"))


def test_expired_and_overlong_tokens_are_refused(live: LiveService) -> None:
    now = int(time.time())
    aud = live.base_url + DISCOVERY
    expired = live.key.sign(sandbox_claims(ISS, aud, iat=now - 900, exp=now - 600))
    forever = live.key.sign(sandbox_claims(ISS, aud, iat=now, exp=now + 10 * 86400))
    for token in (expired, forever, jwt.encode({"iss": ISS}, "k" * 32, algorithm="HS256")):
        _assert_bare_401(_discovery(live, token, "127.0.0.64"))


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
