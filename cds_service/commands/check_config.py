"""`ecg-cds check-config`: validate the settings before starting the service."""

from __future__ import annotations

import json

import typer


def check_config(
    model: bool = typer.Option(
        True, "--model/--no-model", help="Also load the model (a few seconds)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the problems as one JSON object."),
) -> None:
    """Check the settings (file and environment), trust (key files readable, issuers
    well-formed), allow-lists, the database, the broker (distributed mode) and the model.
    Prints one line per problem naming the setting; exit 1 when any is an error."""
    from cds_service.config_check import find_problems, problems_from_settings_error
    from cds_service.settings import SettingsError, load_settings

    try:
        settings = load_settings()
        problems = find_problems(settings, model=model)
    except SettingsError as exc:
        problems = problems_from_settings_error(exc.problems)
    errors = sum(p.level == "error" for p in problems)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": errors == 0,
                    "problems": [
                        {"level": p.level, "setting": p.setting, "message": p.message}
                        for p in problems
                    ],
                }
            )
        )
    else:
        for problem in problems:
            typer.echo(problem.line(), err=problem.level == "error")
        warnings = len(problems) - errors
        if errors:
            typer.echo(f"{errors} error(s), {warnings} warning(s).", err=True)
        else:
            typer.echo(f"Configuration OK ({warnings} warning(s)).")
    raise typer.Exit(1 if errors else 0)
