"""`ecg-cds classify --json`: one JSON object per input, errors as objects, run goes on."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cds_service.cli import app


def test_classify_json_with_free_text_and_a_bad_file(
    tmp_path: Path, ptbxl_dir: Path, formats_dir: Path
) -> None:
    bad = tmp_path / "not_an_ecg.xml"
    bad.write_text("<hello>world</hello>")
    files = [
        str(ptbxl_dir / "records500/00000/00009_hr.hea"),
        str(bad),
        str(formats_dir / "hl7_aecg/Example_aECG_HL7_2003-12.xml"),
    ]
    labels = ["atrial fibrillation", "sinus bradycardia with first degree AV block"]
    args = ["classify", *files, "--json"] + [x for lab in labels for x in ("--label", lab)]
    result = CliRunner().invoke(app, args)
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert result.exit_code == 1  # one file failed, the others were scored
    assert "not_an_ecg.xml" in result.stderr  # errors also on stderr, one line each
    assert [line["file"] for line in lines] == files
    assert "error" in lines[1] and "not_an_ecg.xml" in lines[1]["error"]
    for line in (lines[0], lines[2]):
        assert set(line) == {
            "file", "model_version", "quality", "measurements", "scores", "evidence",
            "calibration", "not_assessable",
        }  # fmt: skip
        assert line["calibration"].startswith("shipped")
        assert line["not_assessable"] == {}  # 12 leads: every catalog finding assessable
        assert line["model_version"].startswith("ecg-clip-")
        if line["quality"]["acceptable"]:
            assert set(line["scores"]) == set(labels)
            assert all(0.0 <= p <= 1.0 for p in line["scores"].values())


def test_classify_catalog_table_output(ptbxl_dir: Path) -> None:
    result = CliRunner().invoke(app, ["classify", str(ptbxl_dir / "records500/00000/00009_hr.hea")])
    assert result.exit_code == 0, result.output
    assert "ecg-clip-" in result.stdout and "Normal ECG" in result.stdout
