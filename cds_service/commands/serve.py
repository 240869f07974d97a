"""`ecg-cds serve`: run the service with uvicorn."""

from __future__ import annotations

import typer


def serve(
    host: str = typer.Option(
        "127.0.0.1", help="Interface to bind; keep loopback unless behind TLS."
    ),
    port: int = typer.Option(8080, help="TCP port."),
    workers: int = typer.Option(1, help="Web worker processes."),
) -> None:
    import uvicorn

    from cds_service.settings import get_settings

    settings = get_settings()
    settings.host, settings.port = host, port
    typer.echo(f"ECG CDS service on http://{host}:{port}/cds-services  (Ctrl-C stops it)")
    uvicorn.run(
        "cds_service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=False,  # access lines carry query strings (patient ids): keep PHI out of logs
        # uvicorn believes X-Forwarded-* from loopback by default; only configured proxies here
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
    )
