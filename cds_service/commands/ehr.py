"""`ecg-cds ehr`: placeholder until its issue lands."""

from __future__ import annotations

import typer


def ehr() -> None:
    typer.echo("ecg-cds ehr is not available yet in this build.", err=True)
    raise typer.Exit(2)
