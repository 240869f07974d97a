"""Viewer feedback: a clinician agrees with or overrides the model's reading on the ECG page.

Stored like CDS Hooks feedback (``source=viewer``) and tied to a card: the card behind the
link, or one the viewer records for what the page showed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from cds_service.api.deps import get_runtime
from cds_service.api.viewer_access import (
    SECURITY_HEADERS,
    VIEWER_CARD_NAMESPACE,
    VIEWER_SERVICE_ID,
    audit_refused,
    audit_viewer,
    ecg_url,
    feedback_view,
    is_reviewer,
    page_headers,
    redirect,
    templates,
)
from cds_service.hooks.schemas import MAX_COMMENT_CHARS
from cds_service.runtime import Runtime
from cds_service.settings import Settings
from cds_service.storage.cards import CardStore
from cds_service.storage.records import EcgInfo, StoredResult
from cds_service.viewer.links import verify_feedback_token, verify_link_token
from cds_service.viewer.present import (
    OVERRIDE_REASON_SYSTEM,
    label_names,
    override_reason_display,
    result_view,
)

router = APIRouter()


def _feedback_error(
    settings: Settings, wants_json: bool, status_code: int, message: str
) -> Response:
    if wants_json:
        return JSONResponse({"detail": message}, status_code=status_code, headers=SECURITY_HEADERS)
    return HTMLResponse(
        templates.from_string(
            '<!doctype html><meta charset="utf-8"><title>Feedback not recorded</title>'
            "<p>Feedback not recorded: {{ message }}</p><p>Go back and try again.</p>"
        ).render(message=message),
        status_code=status_code,
        headers=page_headers(settings),
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
    runtime: Runtime = Depends(get_runtime),
) -> Response:
    settings = runtime.settings
    wants_json = "application/json" in request.headers.get("accept", "")
    card, service = card or None, service or None
    if not verify_feedback_token(settings, ecg_id, token, card_uuid=card, service_id=service):
        audit_refused(
            runtime, request, where="viewer-feedback", reason="invalid or expired link token"
        )
        return _feedback_error(
            settings, wants_json, 403, "the page's link has expired; reopen the ECG from the chart"
        )
    if outcome not in ("accepted", "overridden"):
        return _feedback_error(
            settings, wants_json, 422, "outcome must be 'accepted' or 'overridden'"
        )
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > MAX_COMMENT_CHARS:
        return _feedback_error(
            settings, wants_json, 422, f"the comment is over {MAX_COMMENT_CHARS} characters"
        )
    override: dict[str, Any] | None = None
    if outcome == "overridden":
        display = override_reason_display(reason or "")
        if display is None:
            return _feedback_error(settings, wants_json, 422, "choose a reason for the override")
        # Stored as the CDS Hooks feedback endpoint stores it: the reason Coding, with the
        # comment in its own field.
        override = {"system": OVERRIDE_REASON_SYSTEM, "code": reason, "display": display}
    info = runtime.ecgs.get_info(ecg_id)
    stored = runtime.jobs.result(ecg_id) if info else None
    if info is None or stored is None:
        return _feedback_error(settings, wants_json, 409, "there is no result for this ECG yet")

    card_uuid = card or _viewer_card(runtime.cards, info, stored, settings)
    saved = runtime.cards.save_feedback(
        card_uuid=card_uuid,
        service_id=service or VIEWER_SERVICE_ID,
        outcome=outcome,
        accepted_suggestions=[],
        override_reason=override,
        user_comment=comment,
        outcome_timestamp=datetime.now(UTC),
        source="viewer",
    )
    audit_viewer(
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
            {"stored": True, "feedback": feedback_view(saved)}, headers=SECURITY_HEADERS
        )
    # Without script: back to the page (relative to .../ecg/{id}/feedback), with the page's
    # own link while it is valid or through the reviewer session; never with a new link.
    if back and verify_link_token(settings, ecg_id, back, card_uuid=card, service_id=service):
        return redirect("../" + ecg_url(ecg_id, back, card, service, saved="1") + "#feedback")
    if is_reviewer(settings, request):
        return redirect(f"../{quote(ecg_id, safe='')}?saved=1#feedback")
    return HTMLResponse(
        '<!doctype html><meta charset="utf-8"><title>Feedback recorded</title>'
        "<p>Feedback recorded. Thank you.</p>",
        headers=page_headers(settings),
    )


def _viewer_card(cards: CardStore, info: EcgInfo, stored: StoredResult, settings: Settings) -> str:
    """The card the viewer stands in for when feedback comes without a card behind the link.

    One per (ECG, model version), recording what the page showed, so the feedback is tied to
    its ECG and to the result it judged, exactly like feedback on a CDS card.
    """
    card_uuid = str(uuid.uuid5(VIEWER_CARD_NAMESPACE, f"{info.id}|{stored.model_version}"))
    names = label_names(settings.catalog_file)
    view = result_view(stored.result, stored.model_version, names, settings.cards.finding_threshold)
    shown = [{"label": f.label_id, "probability": f.probability} for f in view.findings]
    top = view.top
    summary = f"Viewer review: {top.name} {top.percent}" if top else "Viewer review"
    cards.save_card(
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
