"""`ecg-cds evaluate`: zero-shot macro AUROC on PTB-XL tasks or CinC-format folders."""

from __future__ import annotations

from pathlib import Path

import typer

TASKS = ("super", "sub", "form", "rhythm", "cinc", "heldout", "validation")


def evaluate(
    data: Path = typer.Option(..., "--data", help="PTB-XL folder, or a CinC-format folder."),
    task: list[str] = typer.Option(..., "--task", help=f"One of {', '.join(TASKS)} (repeatable)."),
    model: Path | None = typer.Option(None, "--model", help="Model folder (default: shipped)."),
    splits: Path | None = typer.Option(
        None,
        "--splits",
        help="merl_splits folder with the PTB-XL class sets "
        "(default: DATA/../ptbxl_labels/merl_splits).",
    ),
    split: str = typer.Option("test", "--split", help="PTB-XL split: test (fold 10) or val."),
    cinc: Path | None = typer.Option(
        None,
        "--cinc",
        help="heldout: the CinC folder (default: DATA/../cinc); pooled with PTB-XL fold 10, "
        "test sources only, then one table per source (leave-source-out). validation: the "
        "same folder's validation sources, pooled with PTB-XL fold 9.",
    ),
    min_positives: int = typer.Option(3, "--min-positives", help="CinC: labels with fewer skip."),
    out: Path = typer.Option(Path("runs/evaluation.json"), "--out", help="JSON results file."),
    threads: int = typer.Option(2, "--threads"),
) -> None:
    """Print a table per task and write all results (data, split, metric, n, positives) as JSON.

    Every table shows the embedding (cosine), the measurement channel (criteria margin) and
    the fused (served) score side by side, with bootstrap 95 % intervals.
    """
    from models.classifier import ZeroShotClassifier
    from models.evaluation import TaskResult, evaluate_cinc, evaluate_ptbxl, write_results
    from models.evaluation_channels import ChannelTask, evaluate_heldout, evaluate_validation
    from models.fusion_fit import TEST_SOURCES, VALIDATION_SOURCES
    from models.labelled import labelled_records

    unknown = [t for t in task if t not in TASKS]
    if unknown:
        typer.echo(f"error: unknown task {unknown}; use {', '.join(TASKS)}", err=True)
        raise typer.Exit(2)
    clf = ZeroShotClassifier.from_pretrained(model, threads=threads)
    splits_dir = splits or data.parent / "ptbxl_labels" / "merl_splits"
    results: list[TaskResult | ChannelTask] = []
    try:
        for name in task:
            if name == "heldout":
                cinc_root = cinc or data.parent / "cinc"
                records = labelled_records(data, clf.catalog, split="test")
                records += labelled_records(cinc_root, clf.catalog, sources=TEST_SOURCES)
                # The per-source tables cover every CinC source (validation ones marked).
                records += [
                    r
                    for r in labelled_records(cinc_root, clf.catalog)
                    if r.source not in TEST_SOURCES
                ]
                tables = evaluate_heldout(
                    clf, records, data=f"{data} fold 10 + {cinc_root}", min_positives=min_positives
                )
                for table in tables:
                    typer.echo(table.table() + "\n")
                results.extend(tables)
                continue
            if name == "validation":
                cinc_root = cinc or data.parent / "cinc"
                records = labelled_records(data, clf.catalog, split="val")
                records += labelled_records(cinc_root, clf.catalog, sources=VALIDATION_SOURCES)
                table = evaluate_validation(
                    clf, records, data=f"{data} fold 9 + {cinc_root}", min_positives=min_positives
                )
                typer.echo(table.table() + "\n")
                results.append(table)
                continue
            if name == "cinc":
                result = evaluate_cinc(clf, data, min_positives=min_positives)
            else:
                result = evaluate_ptbxl(clf, data, name, splits_dir, split=split)
            typer.echo(result.table() + "\n")
            results.append(result)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    write_results(results, out)
    typer.echo(f"results written to {out}")
