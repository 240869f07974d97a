"""`ecg-cds audit`: placeholder until the audit work lands."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("verify", help="Check the audit hash chain.")
def verify() -> None:
    typer.echo("ecg-cds audit is not available yet in this build.", err=True)
    raise typer.Exit(2)
