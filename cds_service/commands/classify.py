"""`ecg-cds classify`: placeholder until its issue lands."""

from __future__ import annotations

import typer


def classify() -> None:
    typer.echo("ecg-cds classify is not available yet in this build.", err=True)
    raise typer.Exit(2)
