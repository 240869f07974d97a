"""The ECG viewer's routes: the page each card links to, and its static files.

The viewer is one router (``/viewer``) made of: this module (the ECG page),
:mod:`~cds_service.api.viewer_list` (the reviewers' list),
:mod:`~cds_service.api.viewer_feedback` (agree/override on a page),
:mod:`~cds_service.api.viewer_auth` (reviewer sign-in, SMART launch); what they share
(access rules, audit, rendering) is :mod:`~cds_service.api.viewer_access`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from adapters import EcgFormatError, standard_12_lead
from cds_service.api import viewer_auth, viewer_feedback, viewer_list
from cds_service.api.deps import get_runtime
from cds_service.api.pages import to_folder
from cds_service.api.viewer_access import (
    STATIC_FILES,
    STATUS_TEXT,
    VIEWER_DIR,
    audit_viewer,
    denied,
    ecg_access,
    feedback_view,
    render_page,
)
from cds_service.runtime import Runtime
from cds_service.storage.ecgs import EcgStore
from cds_service.viewer.present import (
    OVERRIDE_REASONS,
    format_time,
    label_names,
    percent,
    result_view,
)
from cds_service.viewer.svg import render_ecg_svg

log = logging.getLogger(__name__)

router = APIRouter(prefix="/viewer", tags=["viewer"])

Layout = Literal["3x4", "stacked"]


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


def _tracing(ecgs: EcgStore, ecg_id: str, sha256: str) -> _Tracing:
    with _tracings_lock:
        cached = _tracings.get(sha256)
        if cached is not None:
            _tracings.move_to_end(sha256)
            return cached
    try:
        ecg = ecgs.load_ecg(ecg_id)
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


@router.get(
    "/static/{name}",
    summary="The viewer's stylesheet and script (served locally: no CDN, no web fonts)",
    response_class=FileResponse,
    responses={404: {"description": "No such file"}},
)
def static_file(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise HTTPException(404, "no such file")
    return FileResponse(
        VIEWER_DIR / "static" / name,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


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
    runtime: Runtime = Depends(get_runtime),
) -> HTMLResponse:
    settings = runtime.settings
    root = "../../"
    access = ecg_access(settings, request, ecg_id, token, card, service)
    if access is None:
        return denied(
            runtime, request, root, where="viewer-ecg", reason="invalid or expired link token"
        )
    info = runtime.ecgs.get_info(ecg_id)
    if info is None:
        return render_page("not_found.html", settings, status_code=404, root=root)

    tracing = _tracing(runtime.ecgs, ecg_id, info.sha256)

    stored = runtime.jobs.result(ecg_id)
    names = label_names(settings.catalog_file)
    threshold = settings.cards.finding_threshold
    result = result_view(stored.result, stored.model_version, names, threshold) if stored else None
    feedback = [feedback_view(fb) for fb in runtime.cards.feedback_for(ecg_id)]

    audit_viewer(
        runtime,
        "viewer-access",
        client="viewer-reviewer" if access.kind == "reviewer" else "viewer-link",
        sub=f"card:{card}" if card and access.kind == "link" else None,
        patient=info.patient_ref,
        ecg_id=ecg_id,
        model_version=stored.model_version if stored else None,
        detail={"access": access.kind, "service": service, "layout": layout},
    )
    return render_page(
        "ecg.html",
        settings,
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
            "status_text": STATUS_TEXT.get(info.status, info.status),
            "error": info.error,
        },
        result=result,
        threshold=percent(threshold),
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


@router.get("", include_in_schema=False)
def viewer_folder(request: Request) -> RedirectResponse:
    return to_folder(request, "viewer")


for _part in (viewer_list, viewer_feedback, viewer_auth):
    router.include_router(_part.router)
