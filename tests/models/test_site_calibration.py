"""Site adaptation: `ecg-cds calibrate` fits a site file, the classifier loads and names it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters import load_ecg
from cds_service.cli import app
from models.classifier import ZeroShotClassifier
from models.site import SiteCalibration, SiteCalibrationError


def test_calibrate_writes_a_site_file_the_classifier_names(
    cinc_dir: Path, ptbxl_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site.json"
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["calibrate", "--data", str(cinc_dir / "cinc2021_more"), "--name", "Smoke hospital",
         "--out", str(out), "--threads", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    site = SiteCalibration.load(out)
    assert site.name == "Smoke hospital" and site.labels
    assert all(m.positives >= 3 and m.n - m.positives >= 3 for m in site.labels.values())

    clf = ZeroShotClassifier.from_pretrained(threads=1, site_calibration=out)
    [res] = clf.classify(load_ecg(ptbxl_dir / "records500/00000/00001_hr.hea"))
    assert "Smoke hospital" in res.calibration
    plain = ZeroShotClassifier.from_pretrained(threads=1)
    [base] = plain.classify(load_ecg(ptbxl_dir / "records500/00000/00001_hr.hea"))
    assert "Smoke hospital" not in base.calibration
    fitted = next(iter(site.labels))
    p_site = next(s.probability for s in res.scores if s.label_id == fitted)
    p_base = next(s.probability for s in base.scores if s.label_id == fitted)
    assert p_site != pytest.approx(p_base)


def test_calibrate_refuses_a_folder_without_labels(formats_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "none"
    empty.mkdir()
    result = CliRunner().invoke(
        app, ["calibrate", "--data", str(empty), "--out", str(tmp_path / "x.json")]
    )
    assert result.exit_code == 2 and "no labelled ECGs" in result.output


def test_a_broken_site_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    path.write_text("{}")
    with pytest.raises(SiteCalibrationError, match="ecg-cds calibrate"):
        SiteCalibration.load(path)
