"""`ecg-cds classify`: zero-shot scores for ECG files, against the catalog or free-text labels."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer


def _error_line(file: str, message: str) -> dict[str, Any]:
    return {"file": file, "error": message}


def classify(
    files: list[Path] = typer.Argument(
        ..., help="ECG files in any format the adapters read (WFDB: the .hea file)."
    ),
    label: list[str] = typer.Option(
        [], "--label", "-l", help="A free-text label to score (repeatable); replaces the catalog."
    ),
    catalog: Path | None = typer.Option(
        None, "--catalog", help="A label catalog YAML file (default: the shipped catalog)."
    ),
    json_output: bool = typer.Option(False, "--json", help="One JSON object per input line."),
    model: Path | None = typer.Option(
        None, "--model", help="A saved model folder (default: the shipped weights)."
    ),
    top: int = typer.Option(8, "--top", help="Labels shown per file in the table output."),
    threads: int = typer.Option(2, "--threads", help="Torch CPU threads."),
) -> None:
    """Classify ECG files. A file that cannot be read or scored becomes an error line; the
    run goes on, and the exit status is 1 if any file failed."""
    from adapters import EcgFormatError, load_ecg
    from models.catalog import CatalogError, load_catalog
    from models.classifier import ZeroShotClassifier

    try:
        labels = load_catalog(catalog) if catalog is not None and not label else None
        clf = ZeroShotClassifier.from_pretrained(model, threads=threads)
        label_set = clf.resolve_labels(label or labels)
    except (CatalogError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    names = {lab.id: lab.name for lab in label_set}

    loaded: dict[int, Any] = {}
    lines: list[dict[str, Any] | None] = [None] * len(files)
    for i, path in enumerate(files):
        try:
            loaded[i] = load_ecg(path)
        except EcgFormatError as exc:
            lines[i] = _error_line(str(path), str(exc))
    order = sorted(loaded)
    results = []
    if order:
        try:
            results = clf.classify([loaded[i] for i in order], label_set)
        except Exception:  # one bad record must not sink the batch: retry one by one
            results = []
            for i in order:
                try:
                    results.extend(clf.classify([loaded[i]], label_set))
                except Exception as exc:
                    results.append(exc)  # type: ignore[arg-type]
    for i, result in zip(order, results, strict=True):
        if isinstance(result, Exception):
            lines[i] = _error_line(str(files[i]), f"classification failed: {result}")
            continue
        lines[i] = {
            "file": str(files[i]),
            "model_version": result.model_version,
            "quality": asdict(result.quality),
            "measurements": {k: asdict(v) for k, v in result.measurements.items()},
            "scores": {
                names.get(s.label_id, s.label_id): round(s.probability, 4) for s in result.scores
            },
            "evidence": {
                names.get(s.label_id, s.label_id): list(s.measured_evidence)
                for s in result.scores
                if s.measured_evidence
            },
            "calibration": result.calibration,
        }
    failed = 0
    for line in lines:
        assert line is not None
        failed += "error" in line
        if json_output:
            typer.echo(json.dumps(line))
        else:
            _print_table(line, top)
    if failed:
        raise typer.Exit(1)


def _print_table(line: dict[str, Any], top: int) -> None:
    typer.echo(f"== {line['file']}")
    if "error" in line:
        typer.echo(f"   error: {line['error']}")
        return
    quality = line["quality"]
    status = "acceptable" if quality["acceptable"] else "rejected: " + "; ".join(quality["reasons"])
    if quality.get("out_of_distribution"):
        status += " (out of distribution: unlike the training ECGs)"
    typer.echo(f"   model {line['model_version']}, quality {status}")
    for name, m in line["measurements"].items():
        if m["value"] is not None:
            unit = "" if m["unit"] == "1" else f" {m['unit']}"  # UCUM "1": dimensionless
            typer.echo(f"   {m['display'] or name}: {m['value']:.3g}{unit}")
    evidence = line.get("evidence", {})
    for text, p in list(line["scores"].items())[:top]:
        shown = "; ".join(evidence.get(text, [])[:3])
        typer.echo(f"   {p:6.3f}  {text}" + (f"  [{shown}]" if shown else ""))
