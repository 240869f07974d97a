"""`ecg-cds serve`: run the service with uvicorn.

``--host``/``--port`` (``make run`` passes ``HOST``/``PORT``) also set ``public_base_url``
unless it is configured, so card links, the model-card link and the tokens' audience name the
port the service really listens on. Settings are checked before uvicorn starts: a problem is
one line naming the setting, not a traceback from a worker process.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import typer

from cds_service.settings import ENV_PREFIX

if TYPE_CHECKING:
    from cds_service.settings import Settings


def default_public_base_url(host: str, port: int) -> str:
    """The URL a browser on this machine uses to reach ``host:port``."""
    if host in ("0.0.0.0", "::", ""):  # every interface: loopback reaches it from here
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def serve(
    host: str = typer.Option(
        "127.0.0.1", help="Interface to bind; keep loopback unless behind TLS."
    ),
    port: int = typer.Option(8080, min=1, max=65535, help="TCP port."),
    workers: int = typer.Option(1, min=1, help="Web worker processes."),
) -> None:
    import uvicorn

    from cds_service.config_check import settings_problems
    from cds_service.logs import configure_logging
    from cds_service.settings import get_settings

    # The web processes read their settings from the environment (uvicorn may fork them),
    # so what the command line decides goes there, before the settings are first read.
    os.environ[ENV_PREFIX + "HOST"] = host
    os.environ[ENV_PREFIX + "PORT"] = str(port)
    get_settings.cache_clear()
    settings = get_settings()
    if "public_base_url" not in settings.model_fields_set:
        os.environ[ENV_PREFIX + "PUBLIC_BASE_URL"] = default_public_base_url(host, port)
        get_settings.cache_clear()
        settings = get_settings()
    problems = settings_problems(settings)
    for problem in problems:
        typer.echo(problem.line(), err=True)
    database = _database_problem(settings)
    if database:
        typer.echo(f"error   database_url: {database}", err=True)
    if database or any(p.level == "error" for p in problems):
        typer.echo(
            "Not starting: fix the settings above (`ecg-cds check-config` checks them all).",
            err=True,
        )
        raise typer.Exit(2)
    configure_logging(settings)
    base = settings.public_base_url.rstrip("/")
    typer.echo(f"ECG CDS service on http://{host}:{port}  (Ctrl-C stops it)")
    typer.echo(f"  start page {base}/   discovery {base}/cds-services   API docs {base}/docs")
    typer.echo(f"  data in {settings.data_dir}")
    uvicorn.run(
        "cds_service.app:create_served_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep the service's logging (plain or JSON lines) for uvicorn too
        access_log=False,  # access lines carry query strings (patient ids): keep PHI out of logs
        # uvicorn believes X-Forwarded-* from loopback by default; only configured proxies here
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
    )


def _database_problem(settings: Settings) -> str | None:
    """Whether the database opens at all (the schema is migrated at start-up), so that a
    wrong URL or an unwritable data folder is one line here, not a traceback from uvicorn."""
    from sqlalchemy.exc import SQLAlchemyError

    from cds_service.probes import database_problem
    from cds_service.storage.base import make_engine

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the data folder {settings.data_dir} ({exc.strerror or exc})"
    try:
        engine = make_engine(settings.resolved_database_url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        return f"not a usable database URL ({exc})"
    try:
        return database_problem(engine, expect_schema=False)
    finally:
        engine.dispose()
