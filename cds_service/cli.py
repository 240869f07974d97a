"""The ``ecg-cds`` command line. Each subcommand lives in :mod:`cds_service.commands`.

Command modules import their heavy dependencies (torch, the web stack) inside the command
function, so ``ecg-cds --help`` stays fast.

Exit statuses, the same for every command: 0 success; 1 the command ran but some of its
work failed (one of several files, a broken audit chain, a configuration problem found);
2 nothing could be done as asked (a bad option, a missing path, no input that is an ECG,
settings that do not load). Errors go to stderr, one line each; results to stdout.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
import typer.main

from cds_service.commands import (
    audit,
    calibrate,
    check_config,
    classify,
    convert,
    ehr,
    evaluate,
    ingest,
    inspect,
    serve,
    train,
    viewer,
    worker,
)

app = typer.Typer(
    name="ecg-cds",
    help="Zero-shot ECG classification inside the EHR: service, workers, model and tools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help, like git's: flags show no type, options their value's kind.
    rich_markup_mode=None,
)

app.command("serve", help="Run the CDS Hooks service (embedded mode by default).")(serve.serve)
app.command("worker", help="Run a Celery worker for classification and write-back jobs.")(
    worker.worker
)
app.command("classify", help="Classify ECG files zero-shot against label texts.")(classify.classify)
app.command("train", help="Train the ECG-text model on a PTB-XL layout or an ECG archive.")(
    train.train
)
app.command("evaluate", help="Evaluate zero-shot AUROC on PTB-XL or CinC-format folders.")(
    evaluate.evaluate
)
app.command("calibrate", help="Fit a site calibration on your own labelled ECG archive.")(
    calibrate.calibrate
)
app.command("ingest", help="Ingest ECG files, folders or a DICOMweb PACS; classify and annotate.")(
    ingest.ingest
)
app.command("convert", help="Convert an ECG file to another format (FHIR JSON, DICOM).")(
    convert.convert
)
app.command("inspect", help="Summarise an ECG file (format, leads, fs, statements); plot it.")(
    inspect.inspect
)
app.command("ehr", help="Act as an EHR: sign a JWT and call a hook with an ECG file.")(ehr.ehr)
app.command("viewer-link", help="Print a signed viewer link for an ECG or the review list.")(
    viewer.viewer_link
)
app.command(
    "check-config",
    help="Validate the settings, trust, allow-lists, database, broker and model; "
    "one line per problem.",
)(check_config.check_config)
app.add_typer(audit.app, name="audit", help="Query and verify the tamper-evident audit trail.")


_KINDS = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "Path": "PATH", "bool": ""}


def _value_kind(param: Any) -> str | None:
    try:
        bare = str(param.bare_type())
    except Exception:  # a type Typer cannot name: keep its own display
        return None
    if bare.startswith("list[") and bare.endswith("]"):
        bare = bare[5:-1]
    return _KINDS.get(bare)


def _no_type(ctx: Any) -> None:
    return None


def _tidy_help(command: Any) -> None:
    """Classic help metavars: a value shows its kind in capitals (``PATH``, ``INTEGER``,
    ``TEXT``), not ``<list[str]>``. Typer's own click objects, duck-typed."""
    for param in command.params:
        if param.param_type_name == "argument":
            # its name (FILE...) says what it is; Typer would add "<list[Path]>"
            param.display_type_rich = _no_type
        elif param.metavar is None and param.param_type_name == "option":
            flag = getattr(param, "is_flag", False) or getattr(param, "count", False)
            param.metavar = "" if flag else _value_kind(param)
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)


def main() -> None:
    """The console entry point: the command, with settings errors as one-line messages."""
    from cds_service.settings import SettingsError

    command = typer.main.get_command(app)
    _tidy_help(command)
    try:
        command(prog_name="ecg-cds")
    except SettingsError as exc:
        for problem in exc.problems:
            typer.echo(f"error: settings: {problem}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
