"""Signed, short-lived links to the viewer, so a card never carries an open URL to PHI.

A token is ``v1.<scope>.<expiry>.<signature>``: HMAC-SHA256 (key: ``settings.link_secret``)
over the scope, the subject (an ECG id, or ``*`` for the reviewer list) and the expiry in
Unix seconds. The ECG id is *in* the MAC, so a token for one ECG never opens another, and
the expiry is too, so a token cannot be stretched. Nothing secret or identifying is in the
token itself: the ECG id is already in the URL path and the token only proves the service
issued the link.

Scopes:

- ``ecg``: opens one ECG's page and lets its holder record feedback on it (card links).
- ``list``: opens the reviewer list (``/viewer/``) and every ECG page reached from it.
- ``feedback``: only records feedback on one ECG (and card); the page puts one in its forms,
  valid longer than the link (``FEEDBACK_TTL_S``) so a page left open can still be answered,
  without stretching who can *open* the ECG.

When ``link_secret`` is not configured, a random secret is generated once and kept in
``<data_dir>/viewer-link-secret`` (mode 0600), so links survive restarts of one instance.
Several instances behind a load balancer must share an explicit ``link_secret``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlencode

from cds_service.settings import Settings

Scope = Literal["ecg", "list", "feedback"]

_VERSION = "v1"
_SECRET_FILE = "viewer-link-secret"
#: The subject of a ``list`` token: it names no ECG.
LIST_SUBJECT = "*"
#: Lifetime of the feedback tokens a page embeds in its forms.
FEEDBACK_TTL_S = 8 * 3600
#: Upper bound on any requested lifetime: links are meant to be short-lived.
MAX_TTL_S = 7 * 24 * 3600

_secret_lock = threading.Lock()
#: How long a generated secret file is trusted without looking at it again (seconds).
SECRET_RECHECK_S = 1.0


@dataclass
class _CachedSecret:
    value: bytes
    identity: tuple[int, int, int]  # inode, mtime (ns), size: a rewrite or a rename changes it
    checked_at: float


#: Secret files read, by path (one per data directory in use).
_secrets: dict[str, _CachedSecret] = {}


@dataclass(frozen=True)
class LinkToken:
    """A verified token: what it grants and until when."""

    scope: Scope
    subject: str
    expires_at: int


def link_secret(settings: Settings, *, recheck: bool = False) -> bytes:
    """The HMAC key: ``settings.link_secret``, or one generated once into ``data_dir``.

    The file's secret is kept in memory and the file looked at (``stat``) at most once per
    ``SECRET_RECHECK_S``, re-read when it changed (a rotated or deleted file is seen within
    that time); ``recheck`` looks at once (a token that did not verify). Every card carries
    signed links, and reading the file for each was a measurable part of a cached hook call.
    """
    if settings.link_secret:
        return settings.link_secret.encode("utf-8")
    key = str(settings.data_dir)  # the Path is made only when the file is looked at
    now = time.monotonic()
    cached = _secrets.get(key)
    if cached is not None and not recheck and now - cached.checked_at < SECRET_RECHECK_S:
        return cached.value
    path = Path(settings.data_dir) / _SECRET_FILE
    with _secret_lock:
        try:
            seen = path.stat()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_new_secret(path)
            seen = path.stat()
        identity = (seen.st_ino, seen.st_mtime_ns, seen.st_size)
        cached = _secrets.get(key)
        if cached is not None and cached.identity == identity:
            cached.checked_at = now
            return cached.value
        text = path.read_text(encoding="ascii").strip()
        if len(text) < 32:
            raise RuntimeError(
                f"the viewer link secret in {path} is too short; delete the file to regenerate "
                "it or set ECG_CDS_LINK_SECRET"
            )
        value = text.encode("ascii")
        _secrets[key] = _CachedSecret(value=value, identity=identity, checked_at=now)
        return value


def _write_new_secret(path: Path) -> None:
    """Create the secret file with 0600 permissions, atomically (O_EXCL: first writer wins)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it between our check and now
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_urlsafe(48))


def _signature(secret: bytes, scope: str, subject: str, expires_at: int) -> str:
    message = f"{_VERSION}|{scope}|{subject}|{expires_at}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def make_token(
    settings: Settings,
    scope: Scope,
    subject: str,
    *,
    ttl_s: int | None = None,
    now: float | None = None,
) -> str:
    """A token granting ``scope`` on ``subject`` for ``ttl_s`` seconds (default ``link_ttl_s``)."""
    ttl = settings.link_ttl_s if ttl_s is None else ttl_s
    if not 0 < ttl <= MAX_TTL_S:
        raise ValueError(f"link lifetime {ttl} s is outside 1..{MAX_TTL_S} s")
    expires_at = int(now if now is not None else time.time()) + int(ttl)
    signature = _signature(link_secret(settings), scope, subject, expires_at)
    return f"{_VERSION}.{scope}.{expires_at}.{signature}"


def _parse(token: str | None, now: float | None) -> tuple[str, int, str] | None:
    """``(scope, expires_at, signature)`` of a well-formed, unexpired token; else None."""
    if not token or len(token) > 200:
        return None
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != _VERSION or parts[1] not in ("ecg", "list", "feedback"):
        return None
    scope, expiry_text, signature = parts[1], parts[2], parts[3]
    if not expiry_text.isdigit() or not signature:
        return None
    expires_at = int(expiry_text)
    if expires_at <= (now if now is not None else time.time()):
        return None
    return scope, expires_at, signature


def verify_token(
    settings: Settings, token: str | None, scope: Scope, subject: str, *, now: float | None = None
) -> LinkToken | None:
    """The token if well formed, unexpired and signed for exactly ``scope`` and ``subject``."""
    parsed = _parse(token, now)
    if parsed is None or parsed[0] != scope:
        return None
    _, expires_at, signature = parsed
    expected = _signature(link_secret(settings), scope, subject, expires_at)
    if not hmac.compare_digest(expected, signature):
        # The secret may have been rotated within the recheck time: look at the file now.
        expected = _signature(link_secret(settings, recheck=True), scope, subject, expires_at)
        if not hmac.compare_digest(expected, signature):
            return None
    return LinkToken(scope=scope, subject=subject, expires_at=expires_at)


def ecg_subject(ecg_id: str, card_uuid: str | None = None, service_id: str | None = None) -> str:
    """What an ``ecg`` token is bound to: the ECG, and the card and service when a card links."""
    if not card_uuid and not service_id:
        return str(ecg_id)
    return "\x1f".join((str(ecg_id), card_uuid or "", service_id or ""))


def verify_link_token(
    settings: Settings,
    ecg_id: str,
    token: str | None,
    *,
    card_uuid: str | None = None,
    service_id: str | None = None,
) -> bool:
    """True when ``token`` is an unexpired ``ecg`` token for this very ECG (and card, if any)."""
    subject = ecg_subject(ecg_id, card_uuid, service_id)
    return verify_token(settings, token, "ecg", subject) is not None


def feedback_token(
    settings: Settings, ecg_id: str, *, card_uuid: str | None = None, service_id: str | None = None
) -> str:
    """A token that only lets its holder record feedback on this ECG (and card)."""
    subject = ecg_subject(ecg_id, card_uuid, service_id)
    return make_token(settings, "feedback", subject, ttl_s=FEEDBACK_TTL_S)


def verify_feedback_token(
    settings: Settings,
    ecg_id: str,
    token: str | None,
    *,
    card_uuid: str | None = None,
    service_id: str | None = None,
) -> bool:
    """True for a ``feedback`` token, or an ``ecg`` link token, for this ECG (and card)."""
    subject = ecg_subject(ecg_id, card_uuid, service_id)
    return any(
        verify_token(settings, token, scope, subject) is not None for scope in ("feedback", "ecg")
    )


def verify_list_token(settings: Settings, token: str | None) -> bool:
    """True when ``token`` is an unexpired reviewer (``list``) token."""
    return verify_token(settings, token, "list", LIST_SUBJECT) is not None


def _base_url(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/")


def viewer_link(
    settings: Settings,
    ecg_id: str,
    *,
    ttl_s: int | None = None,
    card_uuid: str | None = None,
    service_id: str | None = None,
) -> str:
    """The full URL of one ECG's viewer page, with a signed token (for a card ``link``).

    ``card_uuid`` and ``service_id`` (optional) name the card the link sits on and the CDS
    service that issued it, so feedback given in the viewer is recorded against that card
    as the CDS Hooks feedback endpoint would. Both are bound into the token: editing them
    in the URL invalidates the link.
    """
    subject = ecg_subject(str(ecg_id), card_uuid, service_id)
    query = {"token": make_token(settings, "ecg", subject, ttl_s=ttl_s)}
    if card_uuid:
        query["card"] = card_uuid
    if service_id:
        query["service"] = service_id
    return f"{_base_url(settings)}/viewer/ecg/{quote(str(ecg_id), safe='')}?{urlencode(query)}"


def reviewer_link(settings: Settings, *, ttl_s: int | None = None) -> str:
    """The full URL of the reviewer list with a signed ``list`` token (e.g. from the CLI)."""
    token = make_token(settings, "list", LIST_SUBJECT, ttl_s=ttl_s)
    return f"{_base_url(settings)}/viewer/?{urlencode({'token': token})}"
