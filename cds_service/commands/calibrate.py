"""`ecg-cds calibrate`: fit a site calibration on a hospital's own labelled ECG archive."""

from __future__ import annotations

from pathlib import Path

import typer


def calibrate(
    data: Path = typer.Option(
        ...,
        "--data",
        help="A folder of labelled ECGs: files with statements inside (MUSE, Philips), "
        "files plus --reports, a CinC-format folder (# Dx codes) or a PTB-XL layout.",
    ),
    reports: Path | None = typer.Option(
        None, "--reports", help="CSV with columns file,report (paths relative to --data)."
    ),
    name: str | None = typer.Option(None, "--name", help="Name shown on results and cards."),
    model: Path | None = typer.Option(None, "--model", help="Model folder (default: shipped)."),
    out: Path | None = typer.Option(
        None, "--out", help="Site file (default: site_calibration.json beside the model)."
    ),
    threads: int = typer.Option(2, "--threads"),
) -> None:
    """Fit per-label calibration of the served scores; point ECG_CDS_SITE_CALIBRATION at it."""
    from models.classifier import ZeroShotClassifier
    from models.site import SITE_CALIBRATION_NAME
    from models.site_fit import fit_site_calibration

    if not data.is_dir():
        typer.echo(f"error: --data {data}: not a folder", err=True)
        raise typer.Exit(2)
    if reports is not None and not reports.is_file():
        typer.echo(f"error: --reports {reports}: no such file", err=True)
        raise typer.Exit(2)
    clf = ZeroShotClassifier.from_pretrained(model, threads=threads)
    try:
        site = fit_site_calibration(clf, data, name=name or data.name, reports_csv=reports)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    target = out or clf.directory / SITE_CALIBRATION_NAME
    site.save(target)
    for label_id, fitted in sorted(site.labels.items()):
        typer.echo(
            f"{label_id:<40} n={fitted.n:<5} positives={fitted.positives:<4} "
            f"slope={fitted.slope:.3f} intercept={fitted.intercept:+.3f}"
        )
    typer.echo(f"{site.description} written to {target}")
    typer.echo(f"use it: ECG_CDS_SITE_CALIBRATION={target}")
