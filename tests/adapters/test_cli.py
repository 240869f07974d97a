"""`ecg-cds convert` and `ecg-cds inspect` on real files, through the real CLI app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
from fhir.resources.R4B.observation import Observation
from typer.testing import CliRunner

from adapters import load_ecg
from adapters.record import ASSUMED_SCALE_NOTE, STATED_SCALE_ASSUMPTION
from cds_service.cli import app

runner = CliRunner()


def test_convert_to_fhir_and_dicom_by_suffix(data_dir: Path, tmp_path: Path) -> None:
    record = data_dir / "cinc/cinc2021/E07500"
    as_json, as_dicom = tmp_path / "e.json", tmp_path / "e.dcm"
    result = runner.invoke(
        app, ["convert", str(record), str(as_json), "--patient-ref", "Patient/9"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(as_json.read_text())
    Observation.model_validate(document)
    assert document["subject"] == {"reference": "Patient/9"}

    result = runner.invoke(app, ["convert", str(as_json), str(as_dicom)])
    assert result.exit_code == 0, result.output
    assert pydicom.dcmread(as_dicom).Modality == "ECG"
    original, back = load_ecg(record), load_ecg(as_dicom)
    assert back.leads == original.leads
    np.testing.assert_allclose(back.signal, original.signal, atol=1e-4)


def test_an_assumed_amplitude_scale_is_carried_through_conversion(
    data_dir: Path, tmp_path: Path
) -> None:
    """QTDB sel820's header gives no ADC gain (read at WFDB's default 200 units per mV):
    its FHIR and DICOM conversions say so in a note, reading either back keeps the
    assumption (not as a statement), and the CLI warns. A calibrated record gets no note."""
    record = data_dir / "qtdb" / "sel820"
    original = load_ecg(record.with_suffix(".hea"))
    assert original.amplitude_assumed is not None
    as_json, as_dicom = tmp_path / "sel820.json", tmp_path / "sel820.dcm"
    result = runner.invoke(app, ["convert", str(record.with_suffix(".hea")), str(as_json)])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "not a measured scale" in result.output
    [note, *_] = json.loads(as_json.read_text())["note"]
    assert note["text"].startswith("Amplitude scale assumed") and "200 units per mV" in note["text"]
    result = runner.invoke(app, ["convert", str(as_json), str(as_dicom)])
    assert result.exit_code == 0, result.output
    for path in (as_json, as_dicom):
        back = load_ecg(path)
        assert back.amplitude_assumed == original.amplitude_assumed, path
        assert back.statements == original.statements, path
    # another text after the note's prefix is the file's own: never shown as it stands
    # (a lone surrogate, a terminal escape, words that read like a finding)
    document = json.loads(as_json.read_text())
    document["note"][0]["text"] = ASSUMED_SCALE_NOTE + "\ud800\x1b[2J no acute findings"
    spoofed = tmp_path / "spoofed.json"
    spoofed.write_text(json.dumps(document))
    back = load_ecg(spoofed)
    assert back.amplitude_assumed == STATED_SCALE_ASSUMPTION
    assert back.statements == original.statements
    calibrated = tmp_path / "e.json"
    result = runner.invoke(
        app, ["convert", str(data_dir / "cinc/cinc2021/E07500"), str(calibrated)]
    )
    assert result.exit_code == 0 and "warning" not in result.output
    notes = json.loads(calibrated.read_text()).get("note", [])
    assert not any(n["text"].startswith("Amplitude scale assumed") for n in notes)
    assert load_ecg(calibrated).amplitude_assumed is None


def test_convert_with_explicit_target(formats_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ecg.bin"
    result = runner.invoke(
        app, ["convert", str(formats_dir / "ge_muse_xml/muse-sinus.xml"), str(out), "--to", "dicom"]
    )
    assert result.exit_code == 0, result.output
    assert load_ecg(out).source.format == "dicom"


def test_convert_errors_exit_2_without_traceback(formats_dir: Path, tmp_path: Path) -> None:
    cases = [
        [str(formats_dir / "hl7_aecg/COPYING.CC0"), str(tmp_path / "x.json")],
        [str(formats_dir / "dicom/pydicom_waveform_ecg.dcm"), str(tmp_path / "x.txt")],
        [str(tmp_path / "missing.hea"), str(tmp_path / "x.json")],
    ]
    for args in cases:
        result = runner.invoke(app, ["convert", *args])
        assert result.exit_code == 2, result.output
        assert "error:" in result.output and "Traceback" not in result.output
        assert not (tmp_path / "x.json").exists()


def test_inspect_json_reports_the_file(formats_dir: Path) -> None:
    path = formats_dir / "dicom/pydicom_waveform_ecg.dcm"
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    ecg = load_ecg(path)
    assert facts["format"] == "dicom"
    assert facts["leads"] == list(ecg.leads)
    assert facts["fs_hz"] == 1000.0 and facts["n_samples"] == 10000
    assert facts["duration_s"] == 10.0
    assert facts["statements"] == ["RITMO SINUSALE", "ECG NORMALE"]
    assert facts["patient_id"] == "642341"
    assert facts["amplitude_mv"]["max"] == round(float(ecg.signal.max()), 4)
    # the channels' Filter High/Low Frequency (300 Hz, 0.05 Hz), no notch (0 in the file)
    assert facts["filters"] == {"low_pass_hz": 300.0, "high_pass_hz": 0.05, "notch_hz": None}


def test_inspect_table_and_plot(data_dir: Path, tmp_path: Path) -> None:
    plot = tmp_path / "ecg.png"
    record = data_dir / "cinc/cinc2021_more/smoke_data/PTB_PTBXL/S0001.hea"
    result = runner.invoke(app, ["inspect", str(record), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    for text in ("wfdb", "1000 Hz", "38.4 s", "snomed.info/sct|426783006", "2020-05-15T15:22:05"):
        assert text in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_table_shows_the_files_text_as_text(data_dir: Path, tmp_path: Path) -> None:
    """An ECG file's statements, patient and device reach the table: read as Rich markup
    (a hidden hyperlink) with terminal escapes passed through, a file could restyle or hide
    what the operator inspecting it sees."""
    from adapters import to_fhir_observation

    ecg = load_ecg(data_dir / "ptbxl" / "records500" / "00000" / "00001_hr.hea")
    observation = to_fhir_observation(ecg, patient_ref="Patient/p\x1b[2J")
    observation["note"] = [{"text": "sinus\x1b]0;title\x07 [link=https://evil.example]x[/link]"}]
    path = tmp_path / "ecg.json"
    path.write_text(json.dumps(observation), encoding="utf-8")
    result = runner.invoke(app, ["inspect", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "[link=https://evil.example]x[/link]" in result.output
    assert "sinus?]0;title?" in result.output and "p?[2J" in result.output


def test_inspect_bad_input_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceType": "Observation", "component": [')
    result = runner.invoke(app, ["inspect", str(bad)])
    assert result.exit_code == 2
    assert "not valid JSON" in result.output and "Traceback" not in result.output
