"""The ``ecg-cds`` command line. Each subcommand lives in :mod:`cds_service.commands`.

Command modules import their heavy dependencies (torch, the web stack) inside the command
function, so ``ecg-cds --help`` stays fast.
"""

from __future__ import annotations

import typer

from cds_service.commands import (
    audit,
    calibrate,
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
app.add_typer(audit.app, name="audit", help="Query and verify the tamper-evident audit trail.")


if __name__ == "__main__":
    app()
