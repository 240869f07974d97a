"""The 12-lead paper print: real geometry (mm grid, 10 mm/mV pulse) measured on the image."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from adapters import load_ecg
from adapters.plot import (
    CAL_WIDTH_MM,
    GRID_HEIGHT_MM,
    GRID_WIDTH_MM,
    HEADER_MM,
    MARGIN_MM,
    PAGE_HEIGHT_MM,
    PAGE_WIDTH_MM,
    ROW_HEIGHT_MM,
    plot_paper,
)

DPI = 200
PX_PER_MM = DPI / 25.4


@pytest.fixture(scope="module")
def muse_png(formats_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    out = tmp_path_factory.mktemp("plot") / "muse.png"
    plot_paper(load_ecg(formats_dir / "ge_muse_xml/muse-sinus.xml"), out, dpi=DPI)
    with Image.open(out) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


def _grid_px(x_mm: float, y_mm_from_grid_bottom: float) -> tuple[int, int]:
    """Pixel (row, column) of a point given in grid millimetres."""
    column = (MARGIN_MM + x_mm) * PX_PER_MM
    row = (HEADER_MM + GRID_HEIGHT_MM - y_mm_from_grid_bottom) * PX_PER_MM
    return round(row), round(column)


@pytest.mark.parametrize(
    "relative",
    [
        "hl7_aecg/Example_aECG_HL7_2003-12.xml",
        "philips_xml/3191723_ZZDEMOPTONLY_1-04_orig.xml",
    ],
)
def test_writes_a_png_with_paper_proportions(
    formats_dir: Path, artifacts_dir: Path, relative: str
) -> None:
    out = artifacts_dir / f"paper_{Path(relative).stem}.png"
    out.unlink(missing_ok=True)
    plot_paper(load_ecg(formats_dir / relative), out, title=f"test print: {relative}", dpi=DPI)
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        width, height = image.size
    assert width / height == pytest.approx(PAGE_WIDTH_MM / PAGE_HEIGHT_MM, rel=0.01)
    assert width == pytest.approx(PAGE_WIDTH_MM * PX_PER_MM, abs=2)


def test_major_grid_lines_are_5_mm_apart(muse_png: np.ndarray) -> None:
    # a horizontal scan 1.5 mm above the grid's bottom edge, between minor lines, below any trace
    row, _ = _grid_px(0, 1.5)
    line = muse_png[row]
    reddish = (line[:, 0] > 200) & (line[:, 1] < 160) & (line[:, 2] < 160)
    columns = np.nonzero(reddish)[0]
    runs = np.split(columns, np.nonzero(np.diff(columns) > 1)[0] + 1)
    centres = np.array([run.mean() for run in runs if run.size])
    spacing_mm = np.diff(centres) / PX_PER_MM
    assert len(centres) == pytest.approx(GRID_WIDTH_MM / 5 + 1, abs=1)
    assert np.median(spacing_mm) == pytest.approx(5.0, abs=0.15)


def test_minor_grid_lines_are_1_mm_apart(muse_png: np.ndarray) -> None:
    row, _ = _grid_px(0, 1.5)
    start = round((MARGIN_MM + 100) * PX_PER_MM)
    segment = muse_png[row, start : start + round(50 * PX_PER_MM)]
    pinkish = (segment[:, 0] > 200) & (segment[:, 1] < 235) & (segment[:, 1] > 100)
    columns = np.nonzero(pinkish)[0]
    runs = np.split(columns, np.nonzero(np.diff(columns) > 1)[0] + 1)
    centres = np.array([run.mean() for run in runs if run.size])
    assert np.median(np.diff(centres)) / PX_PER_MM == pytest.approx(1.0, abs=0.1)


def test_calibration_pulse_is_10_mm_tall(muse_png: np.ndarray) -> None:
    # first row's pulse: rising edge at x = 2 mm, baseline at the row's centre
    baseline_mm = GRID_HEIGHT_MM - 0.5 * ROW_HEIGHT_MM
    top, column = _grid_px(2.0, baseline_mm + 12)
    bottom, _ = _grid_px(2.0, baseline_mm - 2)
    strip = muse_png[top:bottom, column - 1 : column + 2].min(axis=1)
    dark = np.nonzero(strip.max(axis=1) < 90)[0]
    assert (dark.max() - dark.min()) / PX_PER_MM == pytest.approx(10.0, abs=0.4)
    assert CAL_WIDTH_MM > 0.2 * 25 + 2  # the 200 ms pulse fits before the traces start


def test_labels_mark_derived_and_missing_leads(formats_dir: Path, tmp_path: Path) -> None:
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # keep text as text in the SVG
        muse = tmp_path / "muse.svg"
        plot_paper(load_ecg(formats_dir / "ge_muse_xml/muse-sinus.xml"), muse)
        minimum = tmp_path / "minimum.svg"
        plot_paper(load_ecg(formats_dir / "hl7_aecg/minimum_aecg.xml"), minimum, title="minimal")
    muse_svg = muse.read_text()
    assert ">III*<" in muse_svg and ">aVF*<" in muse_svg and ">V1<" in muse_svg
    assert "derived from I and II" in muse_svg
    assert "25 mm/s" in muse_svg and "10 mm/mV" in muse_svg and "500 Hz" in muse_svg
    minimum_svg = minimum.read_text()
    assert "V1 (not recorded)" in minimum_svg  # labelled, not drawn (same words as the viewer)
    assert ">II<" in minimum_svg and ">minimal<" in minimum_svg
