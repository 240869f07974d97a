"""The ECG viewer: the page each card links to, the reviewers' list, and viewer feedback.

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

import hmac
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from adapters import EcgFormatError, standard_12_lead
from cds_service.settings import Settings
from cds_service.viewer import smart
from cds_service.viewer.links import (
    feedback_token,
    make_token,
    verify_feedback_token,
    verify_link_token,
    verify_list_token,
)
from cds_service.viewer.present import (
    FINDING_THRESHOLD,
    OVERRIDE_REASON_SYSTEM,
    OVERRIDE_REASONS,
    format_time,
    label_names,
    override_reason_display,
    percent,
    result_view,
)
from cds_service.viewer.svg import render_ecg_svg

log = logging.getLogger(__name__)

router = APIRouter(prefix="/viewer", tags=["viewer"])

VIEWER_DIR = Path(__file__).resolve().parent.parent / "viewer"
_templates = Environment(
    loader=FileSystemLoader(VIEWER_DIR / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
#: The only files served under /viewer/static/ (no path is ever joined from the request).
_STATIC = {
    "viewer.css": "text/css; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
}
REVIEWER_COOKIE = "ecg_viewer_reviewer"
#: How long a reviewer session lasts after sign-in.
REVIEWER_SESSION_S = 8 * 3600
#: The service id recorded for feedback given in the viewer without a card behind the link.
VIEWER_SERVICE_ID = "ecg-viewer"
#: The list filters look at the newest this-many ECGs in the date window.
LIST_SCAN_LIMIT = 1000
PAGE_SIZE = 25
_VIEWER_CARD_NAMESPACE = uuid.UUID("5b0f1b6e-2f5d-4c53-9d7e-6b1c9f0d7a11")

_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'"
    ),
}
_STATUS_TEXT = {
    "done": "Classified",
    "rejected": "Quality rejected",
    "failed": "Failed",
    "pending": "Pending",
}

Layout = Literal["3x4", "stacked"]


# ---------------------------------------------------------------------------- helpers


def _runtime(request: Request) -> Any:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise HTTPException(503, "the service is starting; try again in a moment")
    return runtime


def _page(template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=_SECURITY_HEADERS)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=_SECURITY_HEADERS)


def _audit(
    runtime: Any,
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
    from cds_service.audit import Actor

    runtime.audit.record(
        event,
        outcome=outcome,
        actor=Actor(client=client, sub=sub),
        patient=patient,
        ecg_id=ecg_id,
        model_version=model_version,
        detail=detail or {},
    )


def _is_reviewer(settings: Settings, request: Request) -> bool:
    return verify_list_token(settings, request.cookies.get(REVIEWER_COOKIE))


def _denied(runtime: Any, root: str, *, where: str, reason: str) -> HTMLResponse:
    _audit(
        runtime,
        "auth-failure",
        outcome="failure",
        client="viewer",
        detail={"where": where, "reason": reason},
    )
    return _page(
        "denied.html",
        status_code=403,
        root=root,
        heading="This link has expired or is not valid",
        message="Viewer links are short-lived and work only for the ECG they were made for.",
    )


def _ecg_url(ecg_id: str, token: str, card: str | None, service: str | None, **extra: str) -> str:
    query = {"token": token}
    if card:
        query["card"] = card
    if service:
        query["service"] = service
    query.update(extra)
    return f"{quote(ecg_id, safe='')}?{urlencode(query)}"


@dataclass(frozen=True)
class _Access:
    kind: Literal["link", "reviewer"]
    token: str  # a feedback token for the page's forms


def _ecg_access(
    settings: Settings,
    request: Request,
    ecg_id: str,
    token: str | None,
    card: str | None,
    service: str | None,
) -> _Access | None:
    if token and verify_link_token(settings, ecg_id, token, card_uuid=card, service_id=service):
        return _Access("link", feedback_token(settings, ecg_id, card_uuid=card, service_id=service))
    if _is_reviewer(settings, request):
        return _Access("reviewer", feedback_token(settings, ecg_id))
    return None


def _feedback_view(fb: Any) -> dict[str, Any]:
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


@dataclass(frozen=True)
class _Tracing:
    svg_3x4: str
    svg_stacked: str
    notes: tuple[str, ...]


_UNREADABLE = '<p class="warn">The stored tracing could not be read.</p>'
#: Drawn tracings by the SHA-256 of the stored bytes (the drawing depends on nothing else),
#: so a reload or the redirect after feedback does not parse and draw the ECG again.
_tracings: OrderedDict[str, _Tracing] = OrderedDict()
_tracings_lock = threading.Lock()
TRACING_CACHE_SIZE = 32


def _tracing(pipeline: Any, ecg_id: str, sha256: str) -> _Tracing:
    with _tracings_lock:
        cached = _tracings.get(sha256)
        if cached is not None:
            _tracings.move_to_end(sha256)
            return cached
    try:
        ecg = pipeline.load_ecg(ecg_id)
    except (EcgFormatError, KeyError) as exc:
        # The message may name the source file; the id is enough to find it (no PHI in logs).
        log.warning("viewer: stored ECG %s is unreadable (%s)", ecg_id, type(exc).__name__)
        return _Tracing(_UNREADABLE, _UNREADABLE, ())
    view = standard_12_lead(ecg)
    notes: list[str] = []
    if view.derived:
        notes.append(
            "Derived from I and II (not stored by the cart): "
            + ", ".join(n for n in view.ecg.leads if n in view.derived)
        )
    if view.missing:
        notes.append("Not recorded: " + ", ".join(n for n in view.ecg.leads if n in view.missing))
    if ecg.duration_s > 10.0 + 1e-6:
        notes.append(f"Showing the first 10 s of {ecg.duration_s:.1f} s")
    tracing = _Tracing(
        svg_3x4=render_ecg_svg(ecg, "3x4", title="12-lead ECG, 3x4 and rhythm strip"),
        svg_stacked=render_ecg_svg(ecg, "stacked", title="12-lead ECG, leads stacked"),
        notes=tuple(notes),
    )
    with _tracings_lock:
        _tracings[sha256] = tracing
        while len(_tracings) > TRACING_CACHE_SIZE:
            _tracings.popitem(last=False)
    return tracing


# ---------------------------------------------------------------------------- static


@router.get(
    "/static/{name}",
    summary="The viewer's stylesheet and script (served locally: no CDN, no web fonts)",
    response_class=FileResponse,
    responses={404: {"description": "No such file"}},
)
def static_file(name: str) -> Response:
    media_type = _STATIC.get(name)
    if media_type is None:
        raise HTTPException(404, "no such file")
    return FileResponse(
        VIEWER_DIR / "static" / name,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


# ---------------------------------------------------------------------------- ECG page


@router.get(
    "/ecg/{ecg_id}",
    summary="One ECG on standard paper with the model's findings (signed link or reviewer)",
    response_class=HTMLResponse,
    responses={
        403: {"description": "No valid link token for this ECG and no reviewer session"},
        404: {"description": "The ECG is not stored here"},
    },
)
def ecg_page(
    request: Request,
    ecg_id: str,
    token: Annotated[str | None, Query(max_length=200)] = None,
    card: Annotated[str | None, Query(max_length=64)] = None,
    service: Annotated[str | None, Query(max_length=128)] = None,
    layout: Layout = "3x4",
    saved: bool = False,
) -> HTMLResponse:
    runtime = _runtime(request)
    settings: Settings = runtime.settings
    root = "../../"
    access = _ecg_access(settings, request, ecg_id, token, card, service)
    if access is None:
        return _denied(runtime, root, where="viewer-ecg", reason="invalid or expired link token")
    pipeline = runtime.pipeline
    info = pipeline.get_info(ecg_id)
    if info is None:
        return _page("not_found.html", status_code=404, root=root)

    tracing = _tracing(pipeline, ecg_id, info.sha256)

    stored = pipeline.result(ecg_id)
    names = label_names(settings.catalog_file)
    result = result_view(stored.result, stored.model_version, names) if stored else None
    feedback = [_feedback_view(fb) for fb in pipeline.feedback_for(ecg_id)]

    _audit(
        runtime,
        "viewer-access",
        client="viewer-reviewer" if access.kind == "reviewer" else "viewer-link",
        sub=f"card:{card}" if card and access.kind == "link" else None,
        patient=info.patient_ref,
        ecg_id=ecg_id,
        model_version=stored.model_version if stored else None,
        detail={"access": access.kind, "service": service, "layout": layout},
    )
    return _page(
        "ecg.html",
        root=root,
        reviewer=access.kind == "reviewer",
        info={
            "id": info.id,
            "patient": info.patient_ref or info.file_patient_id or "—",
            "acquired": format_time(info.acquired_at),
            "received": format_time(info.created_at),
            "format": info.format,
            "fs": f"{info.fs:g} Hz" if info.fs else "—",
            "duration": f"{info.duration_s:.1f} s" if info.duration_s else "—",
            "status": info.status,
            "status_text": _STATUS_TEXT.get(info.status, info.status),
            "error": info.error,
        },
        result=result,
        threshold=percent(FINDING_THRESHOLD),
        svg_3x4=Markup(tracing.svg_3x4),
        svg_stacked=Markup(tracing.svg_stacked),
        layout=layout,
        lead_notes=tracing.notes,
        feedback=feedback,
        saved=saved,
        reasons=OVERRIDE_REASONS,
        feedback_action=f"{quote(ecg_id, safe='')}/feedback",
        form={"token": access.token, "card": card if access.kind == "link" else None,
              "service": service if access.kind == "link" else None,
              # Where the no-script form returns to: the page's own link, while it lasts.
              "back": token if access.kind == "link" else None},
    )  # fmt: skip


# ---------------------------------------------------------------------------- feedback


def _feedback_error(wants_json: bool, status_code: int, message: str) -> Response:
    if wants_json:
        return JSONResponse({"detail": message}, status_code=status_code, headers=_SECURITY_HEADERS)
    return HTMLResponse(
        _templates.from_string(
            '<!doctype html><meta charset="utf-8"><title>Feedback not recorded</title>'
            "<p>Feedback not recorded: {{ message }}</p><p>Go back and try again.</p>"
        ).render(message=message),
        status_code=status_code,
        headers=_SECURITY_HEADERS,
    )


@router.post(
    "/ecg/{ecg_id}/feedback",
    summary="Record a clinician's agreement or override, like the CDS Hooks feedback endpoint",
    description=(
        "Form fields: `token` (the page's signed ECG token; required even with a reviewer "
        "session), `card`/`service` when the link came from a card, `outcome` "
        "(`accepted` or `overridden`), `reason` (an override reason code, required for "
        "`overridden`), `comment` (optional, up to 2000 characters). Stored with "
        "`source=viewer`. Answers JSON when asked (`Accept: application/json`), else "
        "redirects back to the page."
    ),
    responses={
        303: {"description": "Stored; back to the ECG page"},
        403: {"description": "No valid ECG token in the form"},
        409: {"description": "No result to give feedback on yet"},
        422: {"description": "Missing or invalid outcome, reason or comment"},
    },
)
def ecg_feedback(
    request: Request,
    ecg_id: str,
    token: Annotated[str | None, Form(max_length=200)] = None,
    card: Annotated[str | None, Form(max_length=64)] = None,
    service: Annotated[str | None, Form(max_length=128)] = None,
    outcome: Annotated[str | None, Form(max_length=32)] = None,
    reason: Annotated[str | None, Form(max_length=64)] = None,
    comment: Annotated[str | None, Form(max_length=4000)] = None,
    back: Annotated[str | None, Form(max_length=200)] = None,
) -> Response:
    runtime = _runtime(request)
    settings: Settings = runtime.settings
    wants_json = "application/json" in request.headers.get("accept", "")
    card, service = card or None, service or None
    if not verify_feedback_token(settings, ecg_id, token, card_uuid=card, service_id=service):
        _audit(
            runtime,
            "auth-failure",
            outcome="failure",
            client="viewer",
            detail={"where": "viewer-feedback", "reason": "invalid or expired link token"},
        )
        return _feedback_error(
            wants_json, 403, "the page's link has expired; reopen the ECG from the chart"
        )
    if outcome not in ("accepted", "overridden"):
        return _feedback_error(wants_json, 422, "outcome must be 'accepted' or 'overridden'")
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > 2000:
        return _feedback_error(wants_json, 422, "the comment is over 2000 characters")
    override: dict[str, Any] | None = None
    if outcome == "overridden":
        display = override_reason_display(reason or "")
        if display is None:
            return _feedback_error(wants_json, 422, "choose a reason for the override")
        # Stored as the CDS Hooks feedback endpoint stores it: the reason Coding, with the
        # comment in its own field.
        override = {"system": OVERRIDE_REASON_SYSTEM, "code": reason, "display": display}

    pipeline = runtime.pipeline
    info = pipeline.get_info(ecg_id)
    stored = pipeline.result(ecg_id) if info else None
    if info is None or stored is None:
        return _feedback_error(wants_json, 409, "there is no result for this ECG yet")

    card_uuid = card or _viewer_card(pipeline, info, stored, settings)
    saved = pipeline.save_feedback(
        card_uuid=card_uuid,
        service_id=service or VIEWER_SERVICE_ID,
        outcome=outcome,
        accepted_suggestions=[],
        override_reason=override,
        user_comment=comment,
        outcome_timestamp=datetime.now(UTC),
        source="viewer",
    )
    _audit(
        runtime,
        "feedback",
        client="viewer",
        sub=f"card:{card_uuid}",
        patient=info.patient_ref,
        ecg_id=ecg_id,
        model_version=stored.model_version,
        detail={
            "outcome": outcome,
            "reason": reason if outcome == "overridden" else None,
            "service": service or VIEWER_SERVICE_ID,
            "source": "viewer",
        },
    )
    if wants_json:
        return JSONResponse(
            {"stored": True, "feedback": _feedback_view(saved)}, headers=_SECURITY_HEADERS
        )
    # Without script: back to the page (relative to .../ecg/{id}/feedback), with the page's
    # own link while it is valid or through the reviewer session; never with a new link.
    if back and verify_link_token(settings, ecg_id, back, card_uuid=card, service_id=service):
        return _redirect("../" + _ecg_url(ecg_id, back, card, service, saved="1") + "#feedback")
    if _is_reviewer(settings, request):
        return _redirect(f"../{quote(ecg_id, safe='')}?saved=1#feedback")
    return HTMLResponse(
        '<!doctype html><meta charset="utf-8"><title>Feedback recorded</title>'
        "<p>Feedback recorded. Thank you.</p>",
        headers=_SECURITY_HEADERS,
    )


def _viewer_card(pipeline: Any, info: Any, stored: Any, settings: Settings) -> str:
    """The card the viewer stands in for when feedback comes without a card behind the link.

    One per (ECG, model version), recording what the page showed, so the feedback is tied to
    its ECG and to the result it judged, exactly like feedback on a CDS card.
    """
    card_uuid = str(uuid.uuid5(_VIEWER_CARD_NAMESPACE, f"{info.id}|{stored.model_version}"))
    view = result_view(stored.result, stored.model_version, label_names(settings.catalog_file))
    shown = [{"label": f.label_id, "probability": f.probability} for f in view.findings]
    top = view.top
    summary = f"Viewer review: {top.name} {top.percent}" if top else "Viewer review"
    pipeline.save_card(
        card_uuid=card_uuid,
        service_id=VIEWER_SERVICE_ID,
        ecg_id=info.id,
        patient_ref=info.patient_ref,
        summary=summary,
        indicator="info",
        card={
            "uuid": card_uuid,
            "summary": summary,
            "indicator": "info",
            "source": {"label": "ECG viewer"},
            "modelVersion": stored.model_version,
            "findings": shown,
        },
    )
    return card_uuid


# ---------------------------------------------------------------------------- SMART launch


def _launch_failed(runtime: Any, message: str, *, status_code: int = 403) -> HTMLResponse:
    _audit(
        runtime,
        "auth-failure",
        outcome="failure",
        client="viewer-smart",
        detail={"where": "viewer-launch", "reason": message},
    )
    response = _page(
        "denied.html",
        status_code=status_code,
        root="../",
        heading="The ECG viewer could not be launched",
        message=message[:1].upper() + message[1:] + ".",
    )
    response.delete_cookie(smart.STATE_COOKIE, path="/viewer/launch")
    return response


@router.get(
    "/launch",
    summary="SMART on FHIR EHR launch (the cards' `smart` link); redirects to the EHR's login",
    responses={
        303: {"description": "On to the EHR's authorization endpoint"},
        403: {"description": "Not configured, or the EHR is not allow-listed"},
    },
)
def smart_launch(
    request: Request,
    iss: Annotated[str | None, Query(max_length=2048)] = None,
    launch: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    runtime = _runtime(request)
    settings: Settings = runtime.settings
    redirect_uri = settings.public_base_url.rstrip("/") + "/viewer/launch/callback"
    try:
        authorize_url, state = smart.begin(settings, iss, launch, redirect_uri)
    except smart.LaunchError as exc:
        return _launch_failed(runtime, str(exc))
    response = _redirect(authorize_url)
    response.set_cookie(
        smart.STATE_COOKIE,
        smart.seal_state(settings, state),
        max_age=smart.LAUNCH_TTL_S,
        path="/viewer/launch",
        httponly=True,
        samesite="lax",
        secure=settings.public_base_url.startswith("https://"),
    )
    return response


@router.get(
    "/launch/callback",
    summary="SMART launch redirect target: redeems the code and opens the launched ECG",
    responses={
        303: {"description": "On to the ECG's page"},
        403: {"description": "State, code, ECG or patient context not valid"},
    },
)
def smart_callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=256)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    runtime = _runtime(request)
    settings: Settings = runtime.settings
    if error:
        return _launch_failed(runtime, "the EHR did not authorise the launch")
    try:
        launch = smart.open_state(settings, request.cookies.get(smart.STATE_COOKIE), state)
        context = smart.finish(settings, launch, code)
    except smart.LaunchError as exc:
        return _launch_failed(runtime, str(exc))
    info = runtime.pipeline.get_info(context.ecg_id)
    if info is None:
        return _launch_failed(runtime, "the launched ECG is not stored on this service")
    if not smart.same_patient(info.patient_ref, context.patient):
        return _launch_failed(runtime, "the launched ECG belongs to another patient")
    _audit(
        runtime,
        "viewer-access",
        client="viewer-smart",
        patient=info.patient_ref,
        ecg_id=info.id,
        detail={"access": "smart-launch", "iss": launch.iss},
    )
    token = make_token(settings, "ecg", info.id)
    # Relative to /viewer/launch/callback: the page is /viewer/ecg/{id}.
    response = _redirect("../ecg/" + _ecg_url(info.id, token, None, None))
    response.delete_cookie(smart.STATE_COOKIE, path="/viewer/launch")
    return response


# ---------------------------------------------------------------------------- reviewers


def _set_reviewer_cookie(response: Response, settings: Settings) -> None:
    response.set_cookie(
        REVIEWER_COOKIE,
        make_token(settings, "list", "*", ttl_s=REVIEWER_SESSION_S),
        max_age=REVIEWER_SESSION_S,
        path="/viewer",
        httponly=True,
        samesite="strict",
        secure=settings.public_base_url.startswith("https://"),
    )


@router.get(
    "/login",
    summary="Reviewer sign-in form (audit token)",
    response_class=HTMLResponse,
)
def login_form(request: Request) -> HTMLResponse:
    return _page("login.html", root="../")


@router.post(
    "/login",
    summary="Sign in with an audit token; sets the reviewer session cookie",
    responses={
        303: {"description": "Signed in; on to the list"},
        401: {"description": "Not an audit token"},
    },
)
def login(request: Request, audit_token: Annotated[str, Form(max_length=512)] = "") -> Response:
    runtime = _runtime(request)
    settings: Settings = runtime.settings
    tokens = settings.auth.audit_tokens
    given = audit_token.encode("utf-8")
    matched = any(hmac.compare_digest(given, t.encode("utf-8")) for t in tokens)
    if not matched:
        _audit(
            runtime,
            "auth-failure",
            outcome="failure",
            client="viewer",
            detail={"where": "viewer-login", "reason": "not an audit token"},
        )
        error = (
            "That is not an audit token for this service."
            if tokens
            else "No audit tokens are configured; ask for a reviewer link instead."
        )
        return _page("login.html", status_code=401, root="../", error=error)
    response = _redirect("./")
    _set_reviewer_cookie(response, settings)
    return response


@router.post("/logout", summary="End the reviewer session", responses={303: {}})
def logout() -> Response:
    response = _redirect("login")
    response.delete_cookie(REVIEWER_COOKIE, path="/viewer")
    return response


@dataclass(frozen=True)
class _Filters:
    finding: str | None
    min_prob: float | None
    date_from: date | None
    date_to: date | None
    feedback: Literal["yes", "no"] | None
    page: int

    @property
    def min_prob_text(self) -> str:
        return "" if self.min_prob is None else f"{self.min_prob * 100:g}"

    @property
    def date_from_text(self) -> str:
        return self.date_from.isoformat() if self.date_from else ""

    @property
    def date_to_text(self) -> str:
        return self.date_to.isoformat() if self.date_to else ""

    def query(self, page: int) -> str:
        params = {
            "finding": self.finding or "",
            "min_prob": self.min_prob_text,
            "date_from": self.date_from_text,
            "date_to": self.date_to_text,
            "feedback": self.feedback or "",
            "page": str(page),
        }
        return "?" + urlencode({k: v for k, v in params.items() if v})


def _parse_filters(
    finding: str | None,
    min_prob: str | None,
    date_from: str | None,
    date_to: str | None,
    feedback: str | None,
    page: int,
) -> _Filters:
    """Validated list filters; ``ValueError`` names the field and what is wrong."""
    prob: float | None = None
    if min_prob:
        try:
            prob = float(min_prob) / 100
        except ValueError:
            raise ValueError("Probability must be a number from 0 to 100.") from None
        if not 0 <= prob <= 1:
            raise ValueError("Probability must be from 0 to 100.")

    def day(value: str | None, name: str) -> date | None:
        if not value:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name} must be a date (YYYY-MM-DD).") from None

    start, end = day(date_from, "Received from"), day(date_to, "Received to")
    if start and end and end < start:
        raise ValueError("The 'to' date is before the 'from' date.")
    if feedback not in (None, "", "yes", "no"):
        raise ValueError("Feedback must be 'yes', 'no' or empty.")
    return _Filters(
        finding=finding or None,
        min_prob=prob,
        date_from=start,
        date_to=end,
        feedback=feedback or None,  # type: ignore[arg-type]
        page=max(1, page),
    )


@router.get(
    "/",
    summary="Recent ECGs for reviewers, with filters (reviewer session or reviewer link)",
    response_class=HTMLResponse,
    responses={
        303: {"description": "Sign in first, or a reviewer link was just exchanged for a session"},
        400: {"description": "A filter is not valid"},
    },
)
def ecg_list(
    request: Request,
    token: Annotated[str | None, Query(max_length=200)] = None,
    finding: Annotated[str | None, Query(max_length=64)] = None,
    min_prob: Annotated[str | None, Query(max_length=8)] = None,
    date_from: Annotated[str | None, Query(max_length=10)] = None,
    date_to: Annotated[str | None, Query(max_length=10)] = None,
    feedback: Annotated[str | None, Query(max_length=3)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    runtime = _runtime(request)
    settings: Settings = runtime.settings
    if token is not None:
        if not verify_list_token(settings, token):
            return _denied(runtime, "../", where="viewer-list", reason="invalid reviewer link")
        response = _redirect("./")  # the token leaves the address bar and history
        _set_reviewer_cookie(response, settings)
        return response
    if not _is_reviewer(settings, request):
        return _redirect("login")

    names = label_names(settings.catalog_file)
    context: dict[str, Any] = {"root": "../", "label_options": sorted(names.items(),
                               key=lambda kv: kv[1].lower())}  # fmt: skip
    try:
        filters = _parse_filters(finding, min_prob, date_from, date_to, feedback, page)
    except ValueError as exc:
        empty = _Filters(None, None, None, None, None, 1)
        return _page("list.html", status_code=400, error=str(exc), filters=empty, rows=[],
                     page_text="", finding_name="", **context)  # fmt: skip

    pipeline = runtime.pipeline
    since = (
        datetime.combine(filters.date_from, datetime.min.time(), UTC) if filters.date_from else None
    )
    until = (
        datetime.combine(filters.date_to + timedelta(days=1), datetime.min.time(), UTC)
        if filters.date_to
        else None
    )
    rows: list[dict[str, Any]] = []
    for info, stored in pipeline.list_ecgs(since=since, limit=LIST_SCAN_LIMIT):
        if until is not None and info.created_at >= until:
            continue
        shown = None
        if stored is not None:
            scores = sorted(stored.result.scores, key=lambda s: s.probability, reverse=True)
            if filters.finding:
                shown = next((s for s in scores if s.label_id == filters.finding), None)
            else:
                shown = scores[0] if scores else None
        if (filters.finding or filters.min_prob is not None) and shown is None:
            continue
        if (
            filters.min_prob is not None
            and shown is not None
            and shown.probability < filters.min_prob
        ):
            continue
        rows.append({"info": info, "score": shown})

    if filters.feedback:
        wanted = filters.feedback == "yes"
        rows = [r for r in rows if bool(pipeline.feedback_for(r["info"].id)) == wanted]
    total = len(rows)
    start = (filters.page - 1) * PAGE_SIZE
    page_rows = rows[start : start + PAGE_SIZE]
    shown_rows = []
    for row in page_rows:
        info, score = row["info"], row["score"]
        fb = pipeline.feedback_for(info.id)
        shown_rows.append(
            {
                "href": f"ecg/{quote(info.id, safe='')}",
                "received": format_time(info.created_at),
                "acquired": format_time(info.acquired_at),
                "patient": info.patient_ref or info.file_patient_id or "—",
                "finding": (names.get(score.label_id) or score.text) if score else None,
                "severity": score.severity if score else "info",
                "percent": percent(score.probability) if score else "—",
                "status": info.status,
                "feedback": ", ".join(_feedback_view(f)["outcome_text"] for f in fb) or "—",
            }
        )
    _audit(
        runtime,
        "viewer-access",
        client="viewer-reviewer",
        detail={"list": True, "shown": len(shown_rows), "page": filters.page},
    )
    last = start + len(page_rows)
    return _page(
        "list.html",
        filters=filters,
        rows=shown_rows,
        finding_name=names.get(filters.finding or "", filters.finding or ""),
        page_text=f"{start + 1}–{last} of {total}" if total else "",
        prev_href=filters.query(filters.page - 1) if filters.page > 1 else None,
        next_href=filters.query(filters.page + 1) if last < total else None,
        **context,
    )
