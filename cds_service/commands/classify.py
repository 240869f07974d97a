"""`ecg-cds classify`: zero-shot scores for ECG files, against the catalog or free-text labels.

Results go to stdout (a table, or one JSON object per file with ``--json``); a file that
cannot be read or scored is an ``error:`` line on stderr (and, with ``--json``, an object
with ``error`` on stdout, so every input has its line). Exit 0 when every file was scored,
1 when some were not, 2 when none could be (a missing path is a 2 before anything runs).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from cds_service.commands._inputs import FAILED, USAGE_ERROR, fail, require_ecg_files

#: Free-text labels are embedded in chunks of this many prompts, with a progress bar when
#: there are more than one chunk's worth (each prompt is a MiniLM forward pass).
_PROMPT_CHUNK = 64


def _error_line(file: str, message: str) -> dict[str, Any]:
    return {"file": file, "error": message}


def classify(
    files: list[Path] = typer.Argument(
        ...,
        metavar="FILE",
        help="ECG files in any format the adapters read (WFDB: the .hea file or record name).",
        show_default=False,
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
    run goes on. Exit 1 if some file failed, 2 if none was an ECG or a path is missing."""
    require_ecg_files(files)
    if catalog is not None and not catalog.is_file():
        raise fail(f"{catalog}: no such catalog file")
    if model is not None and not model.is_dir():
        raise fail(f"{model}: no such model folder")
    from adapters import EcgFormatError, load_ecg
    from models.catalog import CatalogError, load_catalog
    from models.classifier import ZeroShotClassifier
    from models.lead_coverage import not_assessable

    try:
        labels = load_catalog(catalog) if catalog is not None and not label else None
        clf = ZeroShotClassifier.from_pretrained(model, threads=threads)
        label_set = clf.resolve_labels(label or labels)
    except (CatalogError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    if label:
        _embed_with_progress(clf, label_set)
    names = {lab.id: lab.name for lab in label_set}
    unreadable = 0

    loaded: dict[int, Any] = {}
    lines: list[dict[str, Any] | None] = [None] * len(files)
    for i, path in enumerate(files):
        try:
            loaded[i] = load_ecg(path)
        except EcgFormatError as exc:
            lines[i] = _error_line(str(path), str(exc))
            unreadable += 1
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
            # catalog findings whose criteria need leads this recording lacks
            "not_assessable": {
                names.get(label_id, label_id): list(needed)
                for label_id, needed in not_assessable(names, loaded[i].leads).items()
            },
        }
    failed = 0
    for line in lines:
        assert line is not None
        if "error" in line:
            failed += 1
            message = line["error"]
            shown = message if message.startswith(line["file"]) else f"{line['file']}: {message}"
            typer.echo(f"error: {shown}", err=True)
        if json_output:
            typer.echo(json.dumps(line))
        elif "error" not in line:
            _print_table(line, top)
    if failed:
        # nothing could be scored because no input was an ECG: as for `inspect`, a 2
        raise typer.Exit(USAGE_ERROR if unreadable == len(files) else FAILED)


def _embed_with_progress(clf: Any, label_set: Any) -> None:
    """Embed free-text prompts in chunks, with a progress bar on stderr for long lists."""
    prompts = list(dict.fromkeys(p for lab in label_set for p in clf.label_prompts(lab)))
    if len(prompts) <= _PROMPT_CHUNK:
        return  # quick: embedded with the first ECG
    import sys

    from tqdm import tqdm

    with tqdm(total=len(prompts), desc="embed labels", unit="text", file=sys.stderr) as bar:
        for start in range(0, len(prompts), _PROMPT_CHUNK):
            chunk = prompts[start : start + _PROMPT_CHUNK]
            clf.text_embeddings(chunk)
            bar.update(len(chunk))


def _print_table(line: dict[str, Any], top: int) -> None:
    typer.echo(f"== {line['file']}")
    quality = line["quality"]
    reasons = "; ".join(quality["reasons"])
    if quality["acceptable"]:
        status = f"acceptable ({reasons})" if reasons else "acceptable"
    else:
        status = "rejected: " + reasons
    if quality.get("out_of_distribution"):
        status += " (out of distribution: unlike the training ECGs)"
    typer.echo(f"   model {line['model_version']}, quality {status}")
    for name, m in line["measurements"].items():
        if m["value"] is not None:
            unit = "" if m["unit"] == "1" else f" {m['unit']}"  # UCUM "1": dimensionless
            typer.echo(f"   {m['display'] or name}: {m['value']:.3g}{unit}")
    evidence = line.get("evidence", {})
    missing = line["not_assessable"]
    for text, p in list(line["scores"].items())[:top]:
        shown = "; ".join(evidence.get(text, [])[:3])
        note = f"  (not assessable: needs {', '.join(missing[text])})" if text in missing else ""
        typer.echo(f"   {p:6.3f}  {text}" + (f"  [{shown}]" if shown else "") + note)
    if missing:
        typer.echo(f"   {len(missing)} catalog findings cannot be assessed from these leads")
