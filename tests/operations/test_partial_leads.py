"""A recording that is not a 12-lead resting ECG: MIT-BIH record 100 (MLII and V5, 30 min)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from adapters import load_ecg
from adapters.leads import normalize_lead_name
from adapters.plot import plot_paper
from models.lead_coverage import missing_for, not_assessable
from tests.operations.conftest import CliRun


@pytest.fixture
def mitbih_100(formats_dir: Path) -> Path:
    return formats_dir / "wfdb" / "100.hea"


@pytest.mark.parametrize(
    ("raw", "standard"),
    [("MLII", "II"), ("ML II", "II"), ("MLIII", "III"), ("DII", "II"), ("MV1", "V1"),
     ("V5", "V5"), ("CM5", "CM5"), ("vx", "vx")],
)  # fmt: skip
def test_lead_aliases(raw: str, standard: str) -> None:
    assert normalize_lead_name(raw) == standard


def test_mlii_is_read_as_lead_ii_and_the_alias_is_kept(mitbih_100: Path) -> None:
    ecg = load_ecg(mitbih_100)
    assert ecg.leads == ("II", "V5")
    assert ecg.extra["lead_aliases"] == "MLII -> II"


def _line_count(svg: str) -> int:
    """Plotted lines (matplotlib names each Line2D group); the grid is line collections."""
    return len(re.findall(r'<g id="line2d_\d+"', svg))


def test_plot_draws_only_recorded_leads_and_says_which_seconds(
    mitbih_100: Path, ptbxl_dir: Path, tmp_path: Path
) -> None:
    partial, full = tmp_path / "100.svg", tmp_path / "full.svg"
    plot_paper(load_ecg(mitbih_100), partial)
    plot_paper(load_ecg(ptbxl_dir / "records500/00000/00001_hr.hea"), full)
    svg, full_svg = partial.read_text(), full.read_text()
    # 12 lead columns + rhythm strip + 4 calibration pulses on a complete print...
    assert _line_count(full_svg) == 17
    # ...and only II, V5 and the II rhythm strip (+ 4 pulses) here: nothing drawn flat
    assert _line_count(svg) == 7
    for lead in ("I", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V6"):
        assert f"{lead} (not recorded)" in svg
    assert "(missing)" not in svg
    assert "0-10 s shown of 1,805.6 s recorded" in svg
    assert "10 of 12 leads not recorded" in svg and "MLII -&gt; II" in svg


def test_findings_needing_absent_leads_are_named() -> None:
    leads = ("II", "V5")
    assert missing_for("anterior_mi", leads) == ("V1 or V2", "V3", "V4")
    assert missing_for("atrial_fibrillation", leads) == ()  # rhythm: any lead
    assert missing_for("left_axis_deviation", ("I", "II")) == ()  # aVF derived from I, II
    assert not_assessable(["inferior_mi", "prolonged_qt"], ("II", "III", "aVF")) == {}


def test_inspect_reports_missing_leads_and_unassessable_findings(
    cli: CliRun, mitbih_100: Path
) -> None:
    result = cli("inspect", str(mitbih_100), "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["leads"] == ["II", "V5"]
    assert len(facts["standard_leads_missing"]) == 10
    assert facts["not_assessable"]["Anterior myocardial infarction (old)"] == [
        "V1 or V2", "V3", "V4"
    ]  # fmt: skip
    assert "Atrial fibrillation" not in facts["not_assessable"]
    table = cli("inspect", str(mitbih_100)).stdout
    assert "not recorded" in table and "cannot assess" in table


def test_missing_and_unreadable_files_exit_2_on_stderr_in_every_command(
    cli: CliRun, formats_dir: Path, tmp_path: Path
) -> None:
    not_ecg = formats_dir / "hl7_aecg" / "COPYING.CC0"
    for command in ("classify", "inspect"):
        for path in (tmp_path / "missing.hea", not_ecg):
            result = cli(command, str(path))
            assert result.returncode == 2, (command, path, result.stderr)
            assert result.stderr.startswith("error: ") and str(path) in result.stderr
            assert "Traceback" not in result.stderr and "error" not in result.stdout
