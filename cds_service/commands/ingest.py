"""`ecg-cds ingest`: placeholder until its issue lands."""

from __future__ import annotations

import typer


def ingest() -> None:
    typer.echo("ecg-cds ingest is not available yet in this build.", err=True)
    raise typer.Exit(2)
