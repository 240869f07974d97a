"""`ecg-cds convert`: one ECG file to a FHIR Observation (JSON) or a DICOM ECG waveform."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer


class Target(StrEnum):
    fhir = "fhir"
    dicom = "dicom"


#: Output suffix -> target format, used when --to is not given.
_BY_SUFFIX = {".json": Target.fhir, ".dcm": Target.dicom, ".dicom": Target.dicom}


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def convert(
    source: Path = typer.Argument(
        ..., help="ECG file in any format the adapters read (WFDB: the .hea or record name)."
    ),
    out: Path = typer.Argument(..., help="Output file: .json (FHIR) or .dcm (DICOM)."),
    to: Target | None = typer.Option(
        None, "--to", help="Output format; default from OUT's suffix (.json fhir, .dcm dicom)."
    ),
    input_format: str | None = typer.Option(
        None, "--format", help="Input format name instead of detection (see `inspect`)."
    ),
    patient_ref: str | None = typer.Option(
        None, "--patient-ref", help="FHIR subject reference (e.g. Patient/123) or DICOM PatientID."
    ),
) -> None:
    """Convert an ECG file. Samples are stored as integers with a per-lead step from the
    1-2-5 series (0.1 uV for leads under 3.2 mV), so values change by at most half a step."""
    from adapters import EcgFormatError, load_ecg, to_dicom_bytes, to_fhir_observation

    target = to or _BY_SUFFIX.get(out.suffix.lower())
    if target is None:
        raise _fail(f"{out}: cannot tell the output format from {out.suffix!r}; pass --to")
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise _fail(f"{out}: output would overwrite the input")
    try:
        ecg = load_ecg(source, input_format)
    except EcgFormatError as exc:
        raise _fail(str(exc)) from None
    if target is Target.fhir:
        document = to_fhir_observation(ecg, patient_ref=patient_ref)
        payload = json.dumps(document, indent=1).encode("utf-8")
        kind = "FHIR R4 Observation"
    else:
        patient_id = patient_ref.rsplit("/", 1)[-1] if patient_ref else None
        payload = to_dicom_bytes(ecg, patient_id=patient_id)
        kind = "DICOM ECG waveform"
    try:
        out.write_bytes(payload)
    except OSError as exc:
        raise _fail(f"{out}: cannot write ({exc.strerror or exc})") from None
    typer.echo(
        f"{out}: {kind}, {len(ecg.leads)} leads x {ecg.n_samples} samples at {ecg.fs:g} Hz "
        f"(from {ecg.source.format})"
    )
    if ecg.amplitude_assumed is not None:  # written into the file too, as its first note
        typer.echo(
            f"warning: {source}: amplitude {ecg.amplitude_assumed}; {out} says so in a note, "
            "and its millivolts are not a measured scale",
            err=True,
        )
