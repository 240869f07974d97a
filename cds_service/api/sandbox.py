"""The EHR sandbox page and its helpers (mounted only while ``sandbox.enabled``).

``POST /sandbox/call`` and ``POST /sandbox/feedback`` sign with the sandbox's key and send
to this service's own public URL, exactly as an EHR would; they need the ``X-Sandbox: 1``
header, which a cross-site form cannot send, so another web page cannot make the service
sign calls. ``/sandbox/fhir/{type}`` is the FHIR server of FHIR-server mode.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field

from cds_service.api.pages import to_folder
from cds_service.sandbox import (
    HOOK_SERVICES,
    SANDBOX_ISS,
    SandboxFhir,
    build_call,
    render_markdown,
    sandbox_keys,
)
from cds_service.settings import Settings

router = APIRouter(prefix="/sandbox", tags=["sandbox"], include_in_schema=False)

_WEB = Path(__file__).resolve().parent.parent / "web"
_templates = Environment(
    loader=FileSystemLoader(_WEB / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
}
#: How long the sandbox waits for the service it calls (the first call loads the model).
CALL_TIMEOUT_S = 120.0
#: How long a call is re-sent while the service answers "analysis pending" (new ECG).
PENDING_WAIT_S = 60.0


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _fhir(request: Request) -> SandboxFhir:
    fhir: SandboxFhir = request.app.state.sandbox_fhir
    return fhir


def _runtime(request: Request) -> Any:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise HTTPException(503, "the service is starting; try again in a moment")
    return runtime


def _require_page_header(x_sandbox: str | None) -> None:
    if x_sandbox != "1":
        raise HTTPException(403, "sandbox calls come from the sandbox page (X-Sandbox header)")


@router.get("", include_in_schema=False)
def sandbox_folder(request: Request) -> RedirectResponse:
    return to_folder(request, "sandbox")


@router.get("/", response_class=HTMLResponse)
def page(request: Request) -> HTMLResponse:
    runtime = _runtime(request)
    stored = [info for info, _ in runtime.ecgs.list_ecgs(limit=50)]
    html = _templates.get_template("sandbox.html").render(
        root=str(request.scope.get("root_path", "")).rstrip("/") + "/",
        ecgs=stored,
        hooks=list(HOOK_SERVICES),
        iss=SANDBOX_ISS,
    )
    return HTMLResponse(html, headers=_HEADERS)


async def _send(settings: Settings, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST ``body`` to this service at ``path`` with a fresh sandbox JWT, as an EHR does."""
    target = settings.public_base_url.rstrip("/") + path
    token = sandbox_keys(settings).sign(iss=SANDBOX_ISS, aud=target)
    try:
        async with httpx.AsyncClient(timeout=CALL_TIMEOUT_S) as client:
            response = await client.post(
                target, json=body, headers={"Authorization": f"Bearer {token}"}
            )
    except httpx.HTTPError as exc:
        raise HTTPException(
            502,
            f"could not reach {target} ({type(exc).__name__}); is public_base_url this "
            "service's address?",
        ) from None
    try:
        answer: Any = response.json()
    except ValueError:
        answer = response.text
    return response.status_code, answer


def _shown(call: dict[str, Any]) -> dict[str, Any]:
    """The request as sent, with the long sample arrays shortened for the page."""
    text = json.dumps(call)
    shown: dict[str, Any] = json.loads(text)
    for entry in (shown.get("prefetch", {}).get("ecgObservations") or {}).get("entry", []):
        for component in entry.get("resource", {}).get("component", []):
            data = component.get("valueSampledData", {}).get("data")
            if isinstance(data, str) and len(data) > 60:
                component["valueSampledData"]["data"] = data[:60] + " ..."
    if "fhirAuthorization" in shown:
        shown["fhirAuthorization"]["access_token"] = "(sent; not shown)"
    return shown


@router.post("/call")
async def call(
    request: Request,
    hook: Annotated[str, Form()],
    mode: Annotated[str, Form()] = "prefetch",
    ecg_id: Annotated[str, Form()] = "",
    patient: Annotated[str, Form(max_length=64)] = "sandbox-patient",
    drug: Annotated[str, Form(max_length=200)] = "",
    upload: Annotated[UploadFile | None, File()] = None,
    x_sandbox: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    _require_page_header(x_sandbox)
    settings = _settings(request)
    if hook not in HOOK_SERVICES:
        raise HTTPException(400, f"hook must be one of {', '.join(HOOK_SERVICES)}")
    if mode not in ("prefetch", "fhir-server"):
        raise HTTPException(400, "mode must be prefetch or fhir-server")
    patient_id = "".join(ch for ch in patient if ch.isalnum() or ch in "-.") or "sandbox-patient"
    ecg = await _chosen_ecg(request, ecg_id, upload, settings)
    observation = await run_in_threadpool(_observation, ecg, patient_id)
    body = build_call(
        hook=hook,
        observation=observation,
        patient_id=patient_id,
        drug=drug or None,
        mode=mode,
        settings=settings,
        fhir=_fhir(request),
    )
    service = HOOK_SERVICES[hook]
    deadline = time.monotonic() + PENDING_WAIT_S
    while True:
        status, answer = await _send(settings, f"/cds-services/{service}", body)
        cards = answer.get("cards", []) if isinstance(answer, dict) else []
        pending = any(str(c.get("summary", "")).startswith("AI analysis pending") for c in cards)
        if not pending or time.monotonic() >= deadline:
            break
        # like an EHR that re-opens the chart: a new call once the analysis had time to run
        await asyncio.sleep(1.0)
        body = {**body, "hookInstance": str(uuid.uuid4())}
    rendered = [render_markdown(str(card.get("detail", ""))) for card in cards]
    return JSONResponse(
        {
            "service": service,
            "request": _shown(body),
            "status": status,
            "response": answer,
            "detail_html": rendered,
        },
        headers={"Cache-Control": "no-store"},
    )


async def _chosen_ecg(
    request: Request, ecg_id: str, upload: UploadFile | None, settings: Settings
) -> Any:
    from adapters import EcgFormatError, load_ecg

    if upload is not None and upload.filename:
        data = await upload.read(settings.max_ecg_bytes + 1)
        if len(data) > settings.max_ecg_bytes:
            raise HTTPException(413, f"the file is over max_ecg_bytes ({settings.max_ecg_bytes})")
        try:
            return await run_in_threadpool(load_ecg, data)
        except EcgFormatError as exc:
            raise HTTPException(400, f"{upload.filename}: {exc}") from None
    if not ecg_id:
        raise HTTPException(400, "choose a stored ECG or upload a file")
    runtime = _runtime(request)
    try:
        return await run_in_threadpool(runtime.ecgs.load_ecg, ecg_id)
    except (KeyError, EcgFormatError):
        raise HTTPException(404, f"no stored ECG {ecg_id!r}") from None


def _observation(ecg: Any, patient_id: str) -> dict[str, Any]:
    from adapters import to_fhir_observation

    return dict(
        to_fhir_observation(
            ecg,
            patient_ref=f"Patient/{patient_id}",
            observation_id=f"sandbox-{ecg.source.sha256[:16]}",
        )
    )


class SandboxFeedback(BaseModel):
    service: str = Field(max_length=64)
    card: str = Field(max_length=128)
    outcome: str = Field(pattern="^(accepted|overridden)$")
    suggestion: str | None = Field(default=None, max_length=128)
    reason: dict[str, str] | None = None
    comment: str | None = Field(default=None, max_length=2000)


@router.post("/feedback")
async def feedback(
    request: Request,
    body: SandboxFeedback,
    x_sandbox: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    _require_page_header(x_sandbox)
    if body.service not in HOOK_SERVICES.values():
        raise HTTPException(400, "unknown service")
    item: dict[str, Any] = {
        "card": body.card,
        "outcome": body.outcome,
        "outcomeTimestamp": datetime.now(UTC).isoformat(),
    }
    if body.outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": body.suggestion or ""}]
    else:
        reason: dict[str, Any] = {}
        if body.reason:
            reason["reason"] = {
                k: v for k, v in body.reason.items() if k in ("system", "code", "display")
            }
        if body.comment:
            reason["userComment"] = body.comment
        if reason:
            item["overrideReason"] = reason
    status, answer = await _send(
        _settings(request), f"/cds-services/{body.service}/feedback", {"feedback": [item]}
    )
    return JSONResponse({"status": status, "response": answer, "sent": item})


@router.get("/fhir/{resource_type}")
def fhir_search(
    request: Request,
    resource_type: str,
    patient: str | None = None,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """The FHIR server of FHIR-server mode: the ECG of the last such call, per patient."""
    fhir = _fhir(request)
    if authorization != f"Bearer {fhir.token}":
        return JSONResponse(
            {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]},
            status_code=401,
        )
    return JSONResponse(fhir.search(resource_type, patient), media_type="application/fhir+json")
