"""Viewer sign-in: reviewers (audit token -> session cookie) and the SMART on FHIR EHR launch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from cds_service.allow_list import UrlMalformed, normalise_url
from cds_service.api.deps import SettingsDep, get_runtime
from cds_service.api.viewer_access import (
    REVIEWER_COOKIE,
    audit_refused,
    audit_viewer,
    ecg_url,
    redirect,
    render_page,
    set_reviewer_cookie,
)
from cds_service.auth.static_tokens import token_matches
from cds_service.auth.throttle import client_address, gate_for
from cds_service.runtime import Runtime
from cds_service.settings import Settings
from cds_service.viewer import smart
from cds_service.viewer.links import make_token

router = APIRouter()


def _launch_failed(
    runtime: Runtime, request: Request, message: str, *, signed_in: bool = False
) -> HTMLResponse:
    """The launch refused, audited: in full once the EHR has signed the user in (the ECG is
    missing or another patient's), else as a refused credential (anyone can send those)."""
    if signed_in:
        audit_viewer(
            runtime,
            "auth-failure",
            outcome="failure",
            client="viewer-smart",
            detail={"where": "viewer-launch", "reason": message},
        )
    else:
        audit_refused(
            runtime, request, where="viewer-launch", reason=message, client="viewer-smart"
        )
    response = render_page(
        "denied.html",
        runtime.settings,
        status_code=403,
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
    runtime: Runtime = Depends(get_runtime),
) -> Response:
    settings = runtime.settings
    redirect_uri = settings.public_base_url.rstrip("/") + "/viewer/launch/callback"
    try:
        authorize_url, state = smart.begin(settings, iss, launch, redirect_uri)
    except smart.LaunchError as exc:
        return _launch_failed(runtime, request, str(exc))
    response = redirect(authorize_url)
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
    runtime: Runtime = Depends(get_runtime),
) -> Response:
    settings = runtime.settings
    if error:
        return _launch_failed(runtime, request, "the EHR did not authorise the launch")
    try:
        launch = smart.open_state(settings, request.cookies.get(smart.STATE_COOKIE), state)
        context = smart.finish(settings, launch, code)
    except smart.LaunchError as exc:
        return _launch_failed(runtime, request, str(exc))
    info = runtime.ecgs.get_info(context.ecg_id)
    if info is None:
        return _launch_failed(
            runtime, request, "the launched ECG is not stored on this service", signed_in=True
        )
    if not smart.same_patient(info.patient_ref, context.patient):
        return _launch_failed(
            runtime, request, "the launched ECG belongs to another patient", signed_in=True
        )
    audit_viewer(
        runtime,
        "viewer-access",
        client="viewer-smart",
        patient=info.patient_ref,
        ecg_id=info.id,
        detail={"access": "smart-launch", "iss": launch.iss},
    )
    token = make_token(settings, "ecg", info.id)
    # Relative to /viewer/launch/callback: the page is /viewer/ecg/{id}.
    response = redirect("../ecg/" + ecg_url(info.id, token, None, None))
    response.delete_cookie(smart.STATE_COOKIE, path="/viewer/launch")
    return response


@router.get(
    "/login",
    summary="Reviewer sign-in form (audit token)",
    response_class=HTMLResponse,
)
def login_form(request: Request, settings: SettingsDep) -> HTMLResponse:
    return render_page("login.html", settings, root="../")


@router.post(
    "/login",
    summary="Sign in with an audit token; sets the reviewer session cookie",
    responses={
        303: {"description": "Signed in; on to the list"},
        401: {"description": "Not an audit token"},
        403: {"description": "Posted from another origin (login CSRF)"},
        429: {"description": "Too many wrong tokens from this address (auth.max_login_failures)"},
    },
)
def login(
    request: Request,
    audit_token: Annotated[str, Form(max_length=512)] = "",
    runtime: Runtime = Depends(get_runtime),
) -> Response:
    settings = runtime.settings
    foreign = foreign_origin(request, settings)
    if foreign is not None:
        # Login CSRF: a page elsewhere signing the browser in as the attacker's reviewer.
        audit_refused(
            runtime, request, where="viewer-login", reason=f"posted from another origin ({foreign})"
        )
        return render_page(
            "login.html",
            settings,
            status_code=403,
            root="../",
            error="Sign in from this service's own sign-in page.",
        )
    gate = gate_for(request.app)
    source = client_address(request)
    retry = gate.retry_after(source, family="login")
    if retry is not None:
        throttled = render_page(
            "login.html",
            settings,
            status_code=429,
            root="../",
            error=f"Too many wrong tokens from this address; try again in {retry} s.",
        )
        throttled.headers["Retry-After"] = str(retry)
        return throttled
    tokens = settings.auth.audit_tokens
    # the one matcher every endpoint uses: plain or sha256: entries, constant time
    if token_matches(audit_token, tokens) is None:
        gate.refused(
            source,
            family="login",
            reason="not an audit token",
            endpoint=request.url.path,
            audit_in_full=lambda: audit_viewer(
                runtime,
                "auth-failure",
                outcome="failure",
                client="viewer",
                detail={"where": "viewer-login", "reason": "not an audit token"},
            ),
        )
        error = (
            "That is not an audit token for this service."
            if tokens
            else "No audit tokens are configured; ask for a reviewer link instead."
        )
        return render_page("login.html", settings, status_code=401, root="../", error=error)
    response = redirect("./")
    set_reviewer_cookie(response, settings)
    return response


def foreign_origin(request: Request, settings: Settings) -> str | None:
    """Where a browser says a form was posted from, when that is not this service
    (``public_base_url``); None when it is ours or not stated (non-browser clients).

    A real ``Origin`` must be ours. Pages sent with ``Referrer-Policy: no-referrer`` (ours
    are) make browsers post ``Origin: null``; ``Sec-Fetch-Site`` then tells same-origin
    from cross-site. Without either, a ``Referer`` must be ours."""
    ours = _origin(settings.public_base_url)
    stated = request.headers.get("origin")
    if stated and stated != "null":
        return None if _origin(stated) == ours else stated[:100]
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return None if fetch_site in ("same-origin", "none") else fetch_site[:40]
    if stated == "null":
        return "null"
    referer = request.headers.get("referer")
    if referer is None:
        return None
    return None if _origin(referer) == ours else referer[:100]


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        return normalise_url(url.strip()).origin
    except UrlMalformed:
        return None


@router.post("/logout", summary="End the reviewer session", responses={303: {}})
def logout() -> Response:
    response = redirect("login")
    response.delete_cookie(REVIEWER_COOKIE, path="/viewer")
    return response
