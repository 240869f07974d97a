"""`ecg-cds viewer-link`: print a signed viewer link (one ECG, or the reviewers' list).

The link is signed with the same secret the service uses (``link_secret``, or the one the
service generated in ``data_dir``), so run it with the service's settings.
"""

from __future__ import annotations

from typing import Annotated

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
    url = (
        reviewer_link(settings, ttl_s=ttl)
        if reviewer
        else make_link(settings, str(ecg_id), ttl_s=ttl)
    )
    typer.echo(url)
