"""`ecg-cds inspect`: what an ECG file holds (format, leads, rate, statements), and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cds_service.commands._inputs import fail, require_ecg_files

if TYPE_CHECKING:
    from adapters import Ecg


def summary(ecg: Ecg) -> dict[str, Any]:
    """The facts `inspect` reports, as plain JSON-ready values."""
    from dataclasses import asdict

    import numpy as np

    from adapters.record import STANDARD_LEADS
    from models.lead_coverage import not_assessable, present_leads

    signal = ecg.signal
    present = present_leads(ecg.leads)
    recorded = set(ecg.leads)
    return {
        "format": ecg.source.format,
        "source": ecg.source.uri,
        "sha256": ecg.source.sha256,
        "leads": list(ecg.leads),
        "fs_hz": float(ecg.fs),
        "n_samples": ecg.n_samples,
        "duration_s": round(ecg.duration_s, 3),
        "amplitude_mv": {
            "min": round(float(signal.min()), 4),
            "max": round(float(signal.max()), 4),
            "per_lead_peak_to_peak": {
                name: round(float(np.ptp(signal[i])), 4) for i, name in enumerate(ecg.leads)
            },
        },
        "standard_leads_missing": [lead for lead in STANDARD_LEADS if lead not in present],
        "standard_leads_derived": [
            lead for lead in STANDARD_LEADS if lead in present and lead not in recorded
        ],
        "not_assessable": _not_assessable(not_assessable, present),
        "statements": list(ecg.statements),
        "diagnosis_codes": list(ecg.diagnosis_codes),
        "patient_id": ecg.patient_id,
        "device": ecg.device,
        "start_time": ecg.start_time.isoformat() if ecg.start_time else None,
        "median_beats": None
        if ecg.median_beats is None
        else {
            "leads": list(ecg.median_beats.leads),
            "fs_hz": float(ecg.median_beats.fs),
            "n_samples": int(ecg.median_beats.signal.shape[1]),
        },
        # what the extra entries filter_low_hz/filter_high_hz used to show, for every format
        "filters": None if ecg.filters is None else asdict(ecg.filters),
        "extra": dict(ecg.extra),
    }


def _not_assessable(check: Any, present: frozenset[str]) -> dict[str, list[str]]:
    """Catalog findings the leads present cannot support: ``{label name: missing leads}``."""
    from models.catalog import load_catalog

    catalog = load_catalog()
    names = {label.id: label.name for label in catalog}
    return {names[i]: list(m) for i, m in check(names, present).items()}


def _print_table(facts: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from cds_service.commands._text import plain

    table = Table(title=plain(facts["source"] or "ECG"), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    amplitude = facts["amplitude_mv"]
    rows = [
        ("format", facts["format"]),
        ("leads", f"{len(facts['leads'])}: {' '.join(facts['leads'])}"),
        ("not recorded", " ".join(facts["standard_leads_missing"]) or "-"),
        ("sampling rate", f"{facts['fs_hz']:g} Hz"),
        ("duration", f"{facts['duration_s']:g} s ({facts['n_samples']} samples)"),
        ("amplitude", f"{amplitude['min']:.3f} .. {amplitude['max']:.3f} mV"),
        ("start time", facts["start_time"] or "-"),
        ("patient", facts["patient_id"] or "-"),
        ("device", facts["device"] or "-"),
        ("statements", "\n".join(facts["statements"]) or "-"),
        ("codes", "\n".join(facts["diagnosis_codes"]) or "-"),
    ]
    if facts["standard_leads_derived"]:
        rows.insert(3, ("derived", " ".join(facts["standard_leads_derived"]) + " (from I, II)"))
    if facts["not_assessable"]:
        names = list(facts["not_assessable"])
        rows.append(
            (
                "cannot assess",
                f"{len(names)} catalog findings need leads not recorded: {', '.join(names)} "
                "(--json: the leads each needs)",
            )
        )
    median = facts["median_beats"]
    if median:
        rows.append(("median beats", f"{len(median['leads'])} leads x {median['n_samples']}"))
    if facts["filters"]:
        stated = {"low-pass": "low_pass_hz", "high-pass": "high_pass_hz", "notch": "notch_hz"}
        filters = facts["filters"]
        parts = [f"{label} {filters[key]:g} Hz" for label, key in stated.items() if filters[key]]
        rows.append(("filters", ", ".join(parts)))
    rows.extend((key, value) for key, value in facts["extra"].items())
    rows.append(("sha256", facts["sha256"]))
    for field, value in rows:
        # The file wrote most of these (statements, patient, device, extra fields).
        table.add_row(plain(str(field)), plain(str(value)))
    Console().print(table)


def inspect(
    file: Path = typer.Argument(
        ..., help="ECG file in any format the adapters read (WFDB: the .hea or record name)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="Also draw the standard 12-lead paper print (first 10 s; leads not recorded are "
        "labelled, not drawn) to this PNG/PDF/SVG.",
    ),
    input_format: str | None = typer.Option(
        None, "--format", help="Input format name instead of detection."
    ),
) -> None:
    """Summarise an ECG file: format, leads (and which standard ones are missing, and the
    findings they leave unassessable), sampling rate, duration, amplitude range, statements,
    diagnosis codes, patient, device and start time. Exit 2 if it is missing or not an ECG."""
    require_ecg_files([file])
    from adapters import EcgFormatError, load_ecg

    try:
        ecg = load_ecg(file, input_format)
    except EcgFormatError as exc:
        raise fail(str(exc)) from None
    facts = summary(ecg)
    if plot is not None:
        from adapters.plot import plot_paper

        try:
            plot_paper(ecg, plot, title=file.name)
        except (OSError, ValueError) as exc:
            raise fail(f"{plot}: cannot draw the plot ({exc})") from None
        facts["plot"] = str(plot)
    if json_output:
        typer.echo(json.dumps(facts, indent=2))
    else:
        _print_table(facts)
        if plot is not None:
            typer.echo(f"plot: {plot}")
