"""`ecg-cds worker`: placeholder until its issue lands."""

from __future__ import annotations

import typer


def worker() -> None:
    typer.echo("ecg-cds worker is not available yet in this build.", err=True)
    raise typer.Exit(2)
