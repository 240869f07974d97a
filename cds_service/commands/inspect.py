"""`ecg-cds inspect`: placeholder until its issue lands."""

from __future__ import annotations

import typer


def inspect() -> None:
    typer.echo("ecg-cds inspect is not available yet in this build.", err=True)
    raise typer.Exit(2)
