"""The FastAPI application factory. Routers live one per concern in :mod:`cds_service.api`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from cds_service.api import audit, ecgs, health, hooks, pages, viewer
from cds_service.auth import EhrAuthMiddleware
from cds_service.auth.throttle import gate_for
from cds_service.errors import RequestSizeLimit, body_limit, install_error_handlers
from cds_service.input_guard import InputGuard
from cds_service.metrics import install_metrics
from cds_service.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. Tests pass their own ``Settings``; production reads the environment."""
    from cds_service.sandbox import with_sandbox

    # With the sandbox on: its key trusted, its FHIR endpoint allow-listed (a copy).
    settings = with_sandbox(settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from cds_service.runtime import Runtime

        runtime = Runtime.start(settings)
        app.state.runtime = runtime
        # Load the model in the background: the service answers at once (discovery,
        # health) and the first hook call finds the model loaded or nearly so.
        if settings.preload_model:
            runtime.warm_up_in_background()
        try:
            yield
        finally:
            # refused sign-ins still being counted are audited, not lost
            gate_for(app).flush()
            runtime.stop()

    app = FastAPI(
        title="ECG CDS",
        summary="Zero-shot ECG classification as a CDS Hooks 2.0.1 service",
        version="0.1.0",
        lifespan=lifespan,
        # Served from local assets by the pages router: no CDN, nothing downloaded.
        docs_url=None,
        redoc_url=None,
        # No "/x/" -> "/x" redirects: Starlette builds their Location from the Host header
        # (a 307 that re-sends an upload, a viewer token or patient id in the query), and
        # each redirected path became its own metrics series, published without credentials.
        # No route ends in "/"; the hook paths' trailing slash is handled by the JWT check.
        redirect_slashes=False,
    )
    app.state.settings = settings
    for module in (pages, health, hooks, ecgs, audit, viewer):
        app.include_router(module.router)
    if settings.sandbox.enabled:
        from cds_service.api import sandbox
        from cds_service.sandbox import SandboxFhir

        app.state.sandbox_fhir = SandboxFhir()
        app.include_router(sandbox.router)
    install_metrics(app)
    install_error_handlers(app)
    # Innermost: NUL in URLs, JSON nested too deep, escaped NULs/lone surrogates: refused
    # before any handler parses them (inside the hook authentication, so only for callers).
    app.add_middleware(InputGuard, max_json_depth=settings.max_json_depth)
    # Then the EHR's JWT is checked before a hook request's body is read.
    app.add_middleware(EhrAuthMiddleware)
    # Outermost last: size limit first, then CORS (browser clients such as the CDS Hooks
    # sandbox send Authorization and Content-Type, so preflights must allow them).
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            max_age=600,
        )
    app.add_middleware(RequestSizeLimit, limit=body_limit(settings))
    _document_hook_errors_as_400(app)
    return app


def create_served_app() -> FastAPI:
    """The factory ``ecg-cds serve`` gives uvicorn: the process's logging, then the app
    (each web worker process runs it)."""
    from cds_service.logs import configure_logging

    settings = get_settings()
    configure_logging(settings)
    return create_app(settings)


def _document_hook_errors_as_400(app: FastAPI) -> None:
    """Hook routes answer malformed requests with 400 (CDS Hooks), never FastAPI's 422:
    keep the OpenAPI document truthful by dropping the 422 FastAPI adds to them."""

    def openapi() -> dict[str, Any]:
        schema = FastAPI.openapi(app)  # builds once and caches on app.openapi_schema
        for path, operations in schema.get("paths", {}).items():
            if path.startswith("/cds-services"):
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
