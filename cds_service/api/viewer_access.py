"""What every viewer page shares: access checks, the audit entry, page rendering, headers.

Access (see :mod:`cds_service.viewer.links`):

- ``/viewer/ecg/{id}`` opens with a signed, short-lived ``ecg`` link token bound to that ECG
  (and to the card and service, when a card made the link), or with a reviewer session.
- ``/viewer/`` (the list) needs a reviewer session: an HttpOnly, ``SameSite=Strict`` cookie
  holding a signed ``list`` token, set by signing in with an audit token
  (``auth.audit_tokens``) at ``/viewer/login`` or by opening a reviewer link
  (:func:`~cds_service.viewer.links.reviewer_link`).
- Feedback is a POST that must carry an ``ecg`` token for that ECG in its body, so a cookie
  alone never records anything (CSRF-safe).

Refusals are a 403 page that names nothing about the ECG or patient. Every page view and
every feedback is written to the audit trail.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from cds_service.audit import Actor
from cds_service.auth.throttle import client_address, gate_for
from cds_service.runtime import Runtime
from cds_service.settings import Settings
from cds_service.storage.records import FeedbackInfo
from cds_service.viewer.links import (
    feedback_token,
    make_token,
    verify_link_token,
    verify_list_token,
)
from cds_service.viewer.present import format_time

VIEWER_DIR = Path(__file__).resolve().parent.parent / "viewer"
templates = Environment(
    loader=FileSystemLoader(VIEWER_DIR / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
#: The only files served under /viewer/static/ (no path is ever joined from the request).
STATIC_FILES = {
    "viewer.css": "text/css; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
}
REVIEWER_COOKIE = "ecg_viewer_reviewer"
#: How long a reviewer session lasts after sign-in.
REVIEWER_SESSION_S = 8 * 3600
#: The service id recorded for feedback given in the viewer without a card behind the link.
VIEWER_SERVICE_ID = "ecg-viewer"
VIEWER_CARD_NAMESPACE = uuid.UUID("5b0f1b6e-2f5d-4c53-9d7e-6b1c9f0d7a11")

_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors "
)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": _CSP + "'none'",
}
STATUS_TEXT = {
    "done": "Classified",
    "rejected": "Quality rejected",
    "failed": "Failed",
    "pending": "Pending",
}


def page_headers(settings: Settings) -> dict[str, str]:
    """The headers of a viewer page: framed only by the EHRs in ``viewer_frame_ancestors``."""
    frames = " ".join(settings.viewer_frame_ancestors) or "'none'"
    return {**SECURITY_HEADERS, "Content-Security-Policy": _CSP + frames}


def render_page(
    template: str, settings: Settings, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    html = templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=page_headers(settings))


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def audit_viewer(
    runtime: Runtime,
    event: str,
    *,
    outcome: str = "success",
    client: str,
    sub: str | None = None,
    patient: str | None = None,
    ecg_id: str | None = None,
    model_version: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Write one audit entry. A failure propagates: PHI is not shown unaudited."""
    runtime.audit.record(
        event,
        outcome=outcome,
        actor=Actor(client=client, sub=sub),
        patient=patient,
        ecg_id=ecg_id,
        model_version=model_version,
        detail=detail or {},
    )


def is_reviewer(settings: Settings, request: Request) -> bool:
    return verify_list_token(settings, request.cookies.get(REVIEWER_COOKIE))


def audit_refused(
    runtime: Runtime, request: Request, *, where: str, reason: str, client: str = "viewer"
) -> None:
    """Audit a refused link, feedback token, launch or cross-origin sign-in like every
    refused credential: the first of a window per source in full, the rest counted in one
    entry (:class:`~cds_service.auth.throttle.FailureGate`). Anyone can send these without
    a credential, and audit rows are never removed. Counted, never throttled: signed links
    cannot be guessed, and a 429 would only shut out clinicians behind one address."""
    gate_for(request.app).refused(
        client_address(request),
        family="viewer",
        reason=reason,
        endpoint=request.url.path,
        audit_in_full=lambda: audit_viewer(
            runtime,
            "auth-failure",
            outcome="failure",
            client=client,
            detail={"where": where, "reason": reason},
        ),
    )


def denied(
    runtime: Runtime, request: Request, root: str, *, where: str, reason: str
) -> HTMLResponse:
    audit_refused(runtime, request, where=where, reason=reason)
    return render_page(
        "denied.html",
        runtime.settings,
        status_code=403,
        root=root,
        heading="This link has expired or is not valid",
        message="Viewer links are short-lived and work only for the ECG they were made for.",
    )


def ecg_url(ecg_id: str, token: str, card: str | None, service: str | None, **extra: str) -> str:
    query = {"token": token}
    if card:
        query["card"] = card
    if service:
        query["service"] = service
    query.update(extra)
    return f"{quote(ecg_id, safe='')}?{urlencode(query)}"


@dataclass(frozen=True)
class Access:
    kind: Literal["link", "reviewer"]
    token: str  # a feedback token for the page's forms


def ecg_access(
    settings: Settings,
    request: Request,
    ecg_id: str,
    token: str | None,
    card: str | None,
    service: str | None,
) -> Access | None:
    if token and verify_link_token(settings, ecg_id, token, card_uuid=card, service_id=service):
        return Access("link", feedback_token(settings, ecg_id, card_uuid=card, service_id=service))
    if is_reviewer(settings, request):
        return Access("reviewer", feedback_token(settings, ecg_id))
    return None


def feedback_view(fb: FeedbackInfo) -> dict[str, Any]:
    reason = None
    if isinstance(fb.override_reason, dict):
        coding = fb.override_reason.get("reason", fb.override_reason)
        if isinstance(coding, dict):
            reason = coding.get("display") or coding.get("code")
    return {
        "outcome": fb.outcome,
        "outcome_text": "Agreed" if fb.outcome == "accepted" else "Overridden",
        "reason": reason,
        "comment": fb.user_comment,
        "when": format_time(fb.outcome_timestamp or fb.created_at),
        "source": fb.source,
    }


def set_reviewer_cookie(response: Response, settings: Settings) -> None:
    response.set_cookie(
        REVIEWER_COOKIE,
        make_token(settings, "list", "*", ttl_s=REVIEWER_SESSION_S),
        max_age=REVIEWER_SESSION_S,
        path="/viewer",
        httponly=True,
        samesite="strict",
        secure=settings.public_base_url.startswith("https://"),
    )
