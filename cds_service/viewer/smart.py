"""SMART on FHIR EHR launch of the viewer: the ``smart`` card link variant.

The EHR opens ``/viewer/launch?iss=<FHIR base>&launch=<opaque>`` with the card link's
``appContext`` (the ECG id) held on its side. The viewer, a public client registered as
``settings.smart_client_id``:

1. accepts only an ``iss`` listed in ``fhir.allowed_servers``, reads its
   ``.well-known/smart-configuration``, and accepts a token endpoint only on the same origin
   as ``iss`` or in the allow-list (the server calls it);
2. redirects the browser to the authorization endpoint with PKCE (S256) and a random
   ``state``; the code verifier, the state and the endpoints stay in a signed, HttpOnly,
   short-lived cookie (``SameSite=Lax``: the authorization server's redirect back is a
   cross-site top-level navigation);
3. on the callback, checks the state, redeems the code, and takes the ECG id from the token
   response's ``appContext`` and the patient from ``patient``; the ECG must be stored here
   and belong to that patient (when the record names one). The browser then gets an
   ordinary signed link to the page.

The EHR's access token is not kept: the launch only proves who opened which ECG, in which
patient context.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from cds_service.allow_list import OutboundRefused, check_url
from cds_service.capped_body import FetchFailed, read_body
from cds_service.settings import Settings
from cds_service.viewer.links import link_secret

STATE_COOKIE = "ecg_viewer_smart"
#: How long a launch may take between the EHR's redirect and the callback.
LAUNCH_TTL_S = 600
SCOPE = "launch openid fhirUser"
_MAX_RESPONSE_BYTES = 256 * 1024


class LaunchError(Exception):
    """A launch that cannot go on; the message is safe to show (no PHI, no secrets)."""


@dataclass(frozen=True)
class LaunchState:
    state: str
    verifier: str
    iss: str
    token_endpoint: str
    redirect_uri: str
    expires_at: int


@dataclass(frozen=True)
class LaunchContext:
    ecg_id: str
    patient: str | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(settings: Settings, payload: bytes) -> str:
    key = hashlib.sha256(b"smart-launch|" + link_secret(settings)).digest()
    return _b64(hmac.new(key, payload, hashlib.sha256).digest())


def seal_state(settings: Settings, state: LaunchState) -> str:
    """The cookie value: the launch state, signed so its endpoints cannot be swapped."""
    payload = json.dumps(state.__dict__, separators=(",", ":")).encode("utf-8")
    return f"{_b64(payload)}.{_sign(settings, payload)}"


def open_state(settings: Settings, cookie: str | None, state: str | None) -> LaunchState:
    if not cookie or not state or len(cookie) > 4096:
        raise LaunchError("the launch expired or was started in another browser; launch again")
    body, _, signature = cookie.partition(".")
    try:
        payload = _unb64(body)
    except ValueError:
        raise LaunchError("the launch state is damaged; launch again") from None
    if not hmac.compare_digest(_sign(settings, payload), signature):
        raise LaunchError("the launch state is damaged; launch again")
    data = json.loads(payload)
    launch = LaunchState(**data)
    if launch.expires_at < time.time():
        raise LaunchError("the launch took too long; launch again from the EHR")
    if not hmac.compare_digest(launch.state, state):
        raise LaunchError("the launch state does not match; launch again from the EHR")
    return launch


def _bounded(client: httpx.Client, method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
    """Status and body of one call, the body read in chunks and refused past
    :data:`_MAX_RESPONSE_BYTES` (never buffered whole first, inflated piece by piece)."""
    with client.stream(method, url, headers={"Accept": "application/json"}, **kwargs) as answer:
        try:
            return answer.status_code, read_body(answer, "the EHR's answer", _MAX_RESPONSE_BYTES)
        except FetchFailed as exc:
            raise LaunchError(f"the EHR's answer is refused: {exc.problem}") from None


def _get_json(client: httpx.Client, url: str) -> dict[str, Any]:
    status, body = _bounded(client, "GET", url)
    if status != 200:
        raise LaunchError(f"the EHR's SMART configuration is unavailable ({status})")
    data = json.loads(body)
    if not isinstance(data, dict):
        raise LaunchError("the EHR's SMART configuration is not a JSON object")
    return data


def begin(
    settings: Settings, iss: str | None, launch: str | None, redirect_uri: str
) -> tuple[str, LaunchState]:
    """Where to send the browser (the authorization endpoint) and the state to keep."""
    if not settings.smart_client_id:
        raise LaunchError("SMART launch is not configured on this service")
    if not iss or not launch or len(launch) > 2048:
        raise LaunchError("the EHR did not send iss and launch")
    try:
        iss = check_url(iss, settings.fhir.allowed_servers, kind="iss")
    except OutboundRefused:
        raise LaunchError("this EHR's FHIR server is not on the service's allow-list") from None
    discovery = iss.rstrip("/") + "/.well-known/smart-configuration"
    try:
        with httpx.Client(timeout=settings.fhir.timeout_s, follow_redirects=False) as client:
            config = _get_json(client, discovery)
    except (httpx.HTTPError, ValueError, RecursionError) as exc:
        problem = type(exc).__name__
        raise LaunchError(f"the EHR's SMART configuration is unavailable ({problem})") from None
    authorize = config.get("authorization_endpoint")
    token = config.get("token_endpoint")
    if not isinstance(authorize, str) or not isinstance(token, str):
        raise LaunchError("the EHR's SMART configuration names no authorization/token endpoint")
    if urlsplit(authorize).scheme not in ("https", "http") or urlsplit(token).scheme not in (
        "https",
        "http",
    ):
        raise LaunchError("the EHR's SMART endpoints are not web URLs")
    iss_parts = urlsplit(iss)
    iss_origin = f"{iss_parts.scheme}://{iss_parts.netloc}"
    try:
        token = check_url(token, [iss_origin, *settings.fhir.allowed_servers], kind="token URL")
    except OutboundRefused:
        raise LaunchError("the EHR's token endpoint is not on the service's allow-list") from None
    verifier = _b64(secrets.token_bytes(32))
    state = LaunchState(
        state=_b64(secrets.token_bytes(16)),
        verifier=verifier,
        iss=iss,
        token_endpoint=token,
        redirect_uri=redirect_uri,
        expires_at=int(time.time()) + LAUNCH_TTL_S,
    )
    query = {
        "response_type": "code",
        "client_id": settings.smart_client_id,
        "redirect_uri": redirect_uri,
        "launch": launch,
        "scope": SCOPE,
        "state": state.state,
        "aud": iss,
        "code_challenge": _b64(hashlib.sha256(verifier.encode("ascii")).digest()),
        "code_challenge_method": "S256",
    }
    separator = "&" if urlsplit(authorize).query else "?"
    return f"{authorize}{separator}{urlencode(query)}", state


def finish(settings: Settings, launch: LaunchState, code: str | None) -> LaunchContext:
    """Redeem the code; the ECG id (``appContext``) and patient the EHR launched with."""
    if not code or len(code) > 4096:
        raise LaunchError("the EHR sent no authorization code")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": launch.redirect_uri,
        "client_id": settings.smart_client_id or "",
        "code_verifier": launch.verifier,
    }
    try:
        with httpx.Client(timeout=settings.fhir.timeout_s, follow_redirects=False) as client:
            status, body = _bounded(client, "POST", launch.token_endpoint, data=form)
    except httpx.HTTPError as exc:
        problem = type(exc).__name__
        raise LaunchError(f"the EHR's token endpoint is unreachable ({problem})") from None
    if status != 200:
        raise LaunchError(f"the EHR refused the launch ({status})")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise LaunchError("the EHR's token response is not JSON") from None
    if not isinstance(data, dict) or not data.get("access_token"):
        raise LaunchError("the EHR's token response has no access token")
    context = data.get("appContext")
    if isinstance(context, dict):  # some EHRs pass appContext as parsed JSON
        context = context.get("ecg") or context.get("ecg_id")
    if not isinstance(context, str) or not context or len(context) > 128:
        raise LaunchError("the EHR did not pass the ECG (appContext) with the launch")
    patient = data.get("patient")
    return LaunchContext(ecg_id=context, patient=patient if isinstance(patient, str) else None)


def same_patient(record_patient: str | None, launch_patient: str | None) -> bool:
    """The stored ECG's patient is the launch's patient (``Patient/`` prefix ignored).

    A record that names no patient, or a launch without patient context, cannot contradict.
    """
    if not record_patient or not launch_patient:
        return True
    return record_patient.removeprefix("Patient/") == launch_patient.removeprefix("Patient/")


def card_links(
    settings: Settings, ecg_id: str, *, card_uuid: str | None = None, service_id: str | None = None
) -> list[dict[str, Any]]:
    """The card ``links`` for one ECG: the signed link, plus the SMART launch when configured."""
    from cds_service.viewer.links import viewer_link

    links: list[dict[str, Any]] = [
        {
            "label": "View the ECG tracing",
            "url": viewer_link(settings, ecg_id, card_uuid=card_uuid, service_id=service_id),
            "type": "absolute",
        }
    ]
    if settings.smart_client_id:
        links.append(
            {
                "label": "Open in the ECG viewer (SMART)",
                "url": settings.public_base_url.rstrip("/") + "/viewer/launch",
                "type": "smart",
                "appContext": ecg_id,
            }
        )
    return links
