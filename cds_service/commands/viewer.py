"""`ecg-cds viewer-link`: print a signed viewer link (one ECG, or the reviewers' list).

The link is signed with the same secret the service uses (``link_secret``, or the one the
service generated in ``data_dir``), so run it with the service's settings.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer


def viewer_link(
    ecg_id: Annotated[
        str | None, typer.Argument(help="The stored ECG's id (as GET /ecgs/{id} names it).")
    ] = None,
    reviewer: Annotated[
        bool, typer.Option("--reviewer", help="A link to the reviewers' list instead.")
    ] = False,
    ttl: Annotated[
        int | None,
        typer.Option(help="Lifetime in seconds (default: link_ttl_s from the settings)."),
    ] = None,
) -> None:
    from cds_service.settings import get_settings
    from cds_service.viewer.links import MAX_TTL_S, reviewer_link
    from cds_service.viewer.links import viewer_link as make_link

    if reviewer == (ecg_id is not None):
        typer.echo("Give an ECG id, or --reviewer for the list (not both).", err=True)
        raise typer.Exit(2)
    if ttl is not None and not 0 < ttl <= MAX_TTL_S:
        typer.echo(f"--ttl must be 1..{MAX_TTL_S} seconds.", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    if ecg_id is not None:
        _require_stored(settings, ecg_id)
    url = (
        reviewer_link(settings, ttl_s=ttl)
        if reviewer
        else make_link(settings, str(ecg_id), ttl_s=ttl)
    )
    typer.echo(url)


def _require_stored(settings: Any, ecg_id: str) -> None:
    """Exit 2 unless the service's database holds an ECG with this id: a link to nothing
    would only fail later, in a clinician's browser."""
    from sqlalchemy import inspect, select
    from sqlalchemy.exc import SQLAlchemyError

    from cds_service.allow_list import redact_url
    from cds_service.storage.base import make_engine
    from cds_service.storage.tables import EcgRow

    url = settings.resolved_database_url
    engine = make_engine(url)
    try:
        if not inspect(engine).has_table(EcgRow.__tablename__):
            found = False
        else:
            with engine.connect() as connection:
                found = connection.scalar(select(EcgRow.id).where(EcgRow.id == ecg_id)) is not None
    except SQLAlchemyError as exc:
        typer.echo(
            f"error: cannot open the database {redact_url(url)} ({type(exc).__name__})", err=True
        )
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    if not found:
        typer.echo(
            f"error: no stored ECG has id {ecg_id!r} in {redact_url(url)} "
            "(ids are printed by `ecg-cds ingest` and listed by GET /ecgs)",
            err=True,
        )
        raise typer.Exit(2)
