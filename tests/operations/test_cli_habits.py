"""CLI habits: help text, empty or image-only folders, an unreachable PACS, long label lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.operations.conftest import CliRun, clean_env


def test_help_shows_no_types_on_flags_and_explains_training_options(cli: CliRun) -> None:
    for command in ("classify", "inspect", "ingest", "audit query", "check-config", "train"):
        result = cli(*command.split(), "--help")
        assert result.returncode == 0, result.stderr
        assert "<bool>" not in result.stdout and "<list[" not in result.stdout, command
    train = cli("train", "--help").stdout
    for option, words in (
        ("--epochs", "Passes"),
        ("--lr", "learning rate"),
        ("--batch-size", "ECGs per step"),
    ):
        line = next(line for line in train.splitlines() if line.strip().startswith(option))
        assert words in train[train.index(line) :][:300], option


def test_ingest_empty_or_image_only_folder_says_so_exit_2(cli: CliRun, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("ingest", str(empty), "--no-progress")
    assert result.returncode == 2
    assert f"error: no ECG files in {empty} (empty)" in result.stderr
    images = tmp_path / "scans"
    images.mkdir()
    (images / "ecg.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (images / "ecg2.PDF").write_bytes(b"%PDF-1.4")
    result = cli("ingest", str(images), "--no-progress")
    assert result.returncode == 2
    assert "skipped 2 files that are not ECG signals (.pdf 1, .png 1)" in result.stderr
    assert "images of ECGs" in result.stderr


def test_ingest_reports_skipped_files_beside_the_ecgs(
    cli: CliRun, tmp_path: Path, formats_dir: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "ecg.dcm").write_bytes((formats_dir / "dicom/pydicom_waveform_ecg.dcm").read_bytes())
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = cli("ingest", str(folder), "--no-progress", "--no-wait")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 files that are not ECG signals (.png 1)" in result.stderr
    assert "1 ECGs (1 new, 0 already stored)" in result.stdout


def test_ingest_from_an_unreachable_pacs_is_one_clean_line(cli: CliRun, tmp_path: Path) -> None:
    url = "http://127.0.0.1:1/dicom-web"  # nothing listens on port 1
    env = clean_env(tmp_path, ECG_CDS_FHIR__ALLOWED_DICOMWEB=json.dumps([url]))
    result = cli("ingest", "--dicomweb", url, "--no-progress", env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: QIDO-RS query to {url} failed: unreachable (ConnectError)"]


@pytest.mark.slow
def test_many_free_text_labels_show_progress(cli: CliRun, ptbxl_dir: Path) -> None:
    labels = [x for i in range(40) for x in ("--label", f"finding number {i} on the ECG")]
    result = cli("classify", str(ptbxl_dir / "records500/00000/00009_hr.hea"), *labels, "--json")
    assert result.returncode == 0, result.stderr
    assert "embed labels" in result.stderr  # tqdm's bar on stderr, stdout stays JSON
    assert len(json.loads(result.stdout)["scores"]) == 40


def test_ehr_waits_briefly_for_a_service_that_is_starting_then_says_why(
    cli: CliRun, tmp_path: Path, formats_dir: Path
) -> None:
    from tests.servers import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    ecg = str(formats_dir / "dicom" / "pydicom_waveform_ecg.dcm")
    result = cli("ehr", ecg, "--url", url, "--wait", "1", "--key-dir", str(tmp_path / "keys"))
    assert result.returncode == 1
    assert f"waiting for the service at {url} to start" in result.stderr
    assert f"error: could not reach {url} (nothing listening)" in result.stderr
