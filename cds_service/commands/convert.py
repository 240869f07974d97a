"""`ecg-cds convert`: placeholder until its issue lands."""

from __future__ import annotations

import typer


def convert() -> None:
    typer.echo("ecg-cds convert is not available yet in this build.", err=True)
    raise typer.Exit(2)
