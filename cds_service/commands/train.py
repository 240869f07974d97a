"""`ecg-cds train`: placeholder until its issue lands."""

from __future__ import annotations

import typer


def train() -> None:
    typer.echo("ecg-cds train is not available yet in this build.", err=True)
    raise typer.Exit(2)
