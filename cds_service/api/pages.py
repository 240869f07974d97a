"""Pages for people: the start page (``/``), the model card as HTML, and the API docs
(Swagger UI at ``/docs``) served from locally installed assets. (No ReDoc: its page loads
its logo from a CDN whatever the options.)

Nothing here loads anything from the internet: the docs' JavaScript and CSS come from the
``fastapi-offline`` package, the model card is rendered with markdown-it-py with raw HTML
disabled (so anything in the Markdown is escaped, never executed).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from jinja2 import Environment, FileSystemLoader, select_autoescape

import models
from cds_service.settings import Settings

router = APIRouter(tags=["pages"])

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MODEL_CARD = Path(models.__file__).parent / "weights" / "MODEL_CARD.md"
_DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
#: The only files served under /docs-assets/ and /static/ (no request path is ever joined).
_DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
_SITE_ASSETS = {
    "site.css": "text/css; charset=utf-8",
    "sandbox.js": "text/javascript; charset=utf-8",
}

_templates = Environment(
    loader=FileSystemLoader(WEB_DIR / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_PAGE_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
}


def to_folder(request: Request, segment: str) -> RedirectResponse:
    """ "/viewer" -> "/viewer/" by a *relative* Location ("viewer/", query kept): the app
    makes no trailing-slash redirects of its own (Starlette's take the Host header), and a
    relative one also holds behind a proxy that serves the app under a path prefix."""
    query = request.url.query
    return RedirectResponse(f"{segment}/" + (f"?{query}" if query else ""), status_code=307)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _root(request: Request) -> str:
    """Links relative to where the app is mounted (a proxy prefix keeps working)."""
    return str(request.scope.get("root_path", "")).rstrip("/") + "/"


@router.get("/", response_class=HTMLResponse, summary="Start page", include_in_schema=False)
def home(request: Request) -> HTMLResponse:
    settings = _settings(request)
    html = _templates.get_template("home.html").render(
        root=_root(request),
        version=request.app.version,
        sandbox=settings.sandbox.enabled,
        mode=settings.jobs.mode,
        n_issuers=len(settings.auth.trusted_issuers),
    )
    return HTMLResponse(html, headers=_PAGE_HEADERS)


@lru_cache(maxsize=1)
def _model_card_html(mtime: float) -> str:
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
    return str(renderer.render(MODEL_CARD.read_text(encoding="utf-8")))


@router.get(
    "/model-card",
    summary="The shipped model's card (data, training, metrics, limitations), as HTML",
    response_class=HTMLResponse,
    responses={404: {"description": "No model card shipped with this build"}},
)
def model_card(request: Request) -> HTMLResponse:
    if not MODEL_CARD.is_file():
        raise HTTPException(404, "No model card in this build.")
    body = _model_card_html(MODEL_CARD.stat().st_mtime)
    html = _templates.get_template("model_card.html").render(root=_root(request), body=body)
    return HTMLResponse(html, headers=_PAGE_HEADERS)


@router.get(
    "/model-card.md",
    summary="The model card as its Markdown source",
    response_class=PlainTextResponse,
    responses={404: {"description": "No model card shipped with this build"}},
)
def model_card_markdown() -> PlainTextResponse:
    if not MODEL_CARD.is_file():
        raise HTTPException(404, "No model card in this build.")
    return PlainTextResponse(
        MODEL_CARD.read_text(encoding="utf-8"), media_type="text/markdown; charset=utf-8"
    )


@router.get("/docs", include_in_schema=False)
def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}openapi.json",
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{root}docs-assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}docs-assets/swagger-ui.css",
        swagger_favicon_url=f"{root}docs-assets/favicon.png",
    )


def _asset(directory: Path, allowed: dict[str, str], name: str) -> Response:
    media_type = allowed.get(name)
    if media_type is None:
        raise HTTPException(404, "No such file.")
    return FileResponse(
        directory / name,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/docs-assets/{name}", include_in_schema=False)
def docs_asset(name: str) -> Response:
    return _asset(_DOCS_ASSETS_DIR, _DOCS_ASSETS, name)


@router.get("/static/{name}", include_in_schema=False)
def site_asset(name: str) -> Response:
    return _asset(WEB_DIR / "static", _SITE_ASSETS, name)
