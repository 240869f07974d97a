"""`ecg-cds evaluate`: placeholder until its issue lands."""

from __future__ import annotations

import typer


def evaluate() -> None:
    typer.echo("ecg-cds evaluate is not available yet in this build.", err=True)
    raise typer.Exit(2)
