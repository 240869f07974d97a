"""`ecg-cds train`: train the ECG-text model on a PTB-XL layout or an archive of ECG files."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    data: Path = typer.Option(
        ...,
        "--data",
        help="A PhysioNet PTB-XL folder (ptbxl_database.csv, records500/), or a folder of "
        "ECG files in any supported format.",
    ),
    reports: Path | None = typer.Option(
        None,
        "--reports",
        help="CSV with columns file,report[,split] for a folder of ECG files (default: the "
        "statements inside the files, e.g. MUSE/Philips).",
    ),
    out: Path = typer.Option(
        Path("runs/ecg-clip"), "--out", help="Run folder (checkpoints, model)."
    ),
    epochs: int = typer.Option(
        60, "--epochs", help="Passes over the training records (the schedule's length)."
    ),
    batch_size: int = typer.Option(
        64, "--batch-size", help="ECGs per step; also the contrastive negatives per step."
    ),
    lr: float = typer.Option(
        2e-3,
        "--lr",
        help="Peak learning rate of the one-cycle AdamW schedule (text projection: 1/10).",
    ),
    seed: int = typer.Option(0, "--seed", help="Same seed and threads: same model."),
    threads: int = typer.Option(2, "--threads", help="Torch CPU threads."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoints/last.pt."),
    max_records: int | None = typer.Option(None, "--max-records", help="Use only N records."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after N steps."),
    stop_after_epochs: int | None = typer.Option(
        None,
        "--stop-after-epochs",
        help="End this session after N epochs, keeping the --epochs schedule (then --resume).",
    ),
    report_loss_weight: float = typer.Option(
        0.0, "--report-loss-weight", help="Weight of the whole-report CLIP loss (0: off)."
    ),
    variance_weight: float = typer.Option(
        0.5, "--variance-weight", help="Embedding variance hinge (keeps its rank; 0: off)."
    ),
    covariance_weight: float = typer.Option(
        1.0,
        "--covariance-weight",
        help="Embedding spread: penalises a low participation ratio (0: off).",
    ),
    hard_negative_weight: float = typer.Option(
        0.0,
        "--hard-negative-weight",
        help="Extra weight of negative facts that often co-occur with the ECG's facts (0: off).",
    ),
    machine_statements: Path | None = typer.Option(
        None,
        "--machine-statements",
        help="PTB-XL+ labels folder (12sl_statements.csv, mapping/): also train on the facts "
        "GE 12SL's statements state, for training records only (default: off).",
    ),
    catalog: Path | None = typer.Option(
        None, "--catalog", help="Catalog whose labels are calibrated (default: shipped)."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Train, then calibrate on the validation split and write a servable model to OUT/model."""
    from models.catalog import load_catalog
    from models.release import prepare_release
    from models.training import TrainArgs, index_data
    from models.training import train as run_training

    if not data.is_dir():
        typer.echo(f"error: --data {data}: not a folder", err=True)
        raise typer.Exit(2)
    args = TrainArgs(
        data=data,
        out_dir=out,
        reports_csv=reports,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        threads=threads,
        resume=resume,
        max_records=max_records,
        max_steps=max_steps,
        stop_after_epochs=stop_after_epochs,
        report_loss_weight=report_loss_weight,
        variance_weight=variance_weight,
        covariance_weight=covariance_weight,
        hard_negative_weight=hard_negative_weight,
        machine_statements=machine_statements,
        progress=not quiet,
    )
    try:
        model_dir = run_training(args)
        prepare_release(model_dir, data, refs=index_data(args), catalog=load_catalog(catalog))
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"model written to {model_dir}")
