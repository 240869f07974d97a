"""The server-side ECG drawing: standard scales, layouts, labels, and faithful simplification.

Every geometric check reads the drawn path back into paper coordinates and compares it with
the real signal through the standard scales (25 mm/s, 10 mm/mV), so the expectations come
from the ECG and the standard, not from the renderer's own output.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from adapters import Ecg, load_ecg
from cds_service.viewer.svg import render_ecg_svg

SVG = "{http://www.w3.org/2000/svg}"
MM_PER_S, MM_PER_MV = 25.0, 10.0
TRACE_X0 = 10.0  # where the traces start, after the calibration pulse
SIMPLIFY_TOLERANCE_MM = 0.05
ROUNDING_MM = 0.01


@pytest.fixture(scope="session")
def ptbxl_500(ptbxl_dir: Path) -> Ecg:
    return load_ecg(ptbxl_dir / "records500" / "00000" / "00001_hr.hea")


@pytest.fixture(scope="session")
def ptb_diagnostic(formats_dir: Path) -> Ecg:
    """15 leads (12 + Frank X/Y/Z) at 1 kHz, 38.4 s."""
    return load_ecg(formats_dir / "wfdb" / "s0010_re.hea")


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def _path_points(d: str) -> np.ndarray:
    """Absolute (x, y) in mm from ``M x y l dx dy ...`` written in hundredths of a mm."""
    match = re.fullmatch(r"M(-?\d+) (-?\d+)l(.*)", d)
    assert match, d[:80]
    start = np.array([int(match.group(1)), int(match.group(2))])
    steps = np.array([int(v) for v in match.group(3).split()], dtype=np.int64).reshape(-1, 2)
    return np.vstack([start, start + np.cumsum(steps, axis=0)]) / 100.0


def _lead_groups(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if "lead" in (g.get("class") or "").split()]


def _trace_points(group: ET.Element) -> np.ndarray:
    path = next(p for p in group.iter(f"{SVG}path") if p.get("class") == "trace")
    assert path.get("transform") == "scale(.01)"
    return _path_points(path.get("d") or "")


def _label(group: ET.Element) -> str:
    return "".join(next(group.iter(f"{SVG}text")).itertext())


def test_3x4_layout_has_the_standard_leads_columns_and_rhythm_strip(ptbxl_500: Ecg) -> None:
    root = _parse(render_ecg_svg(ptbxl_500, "3x4"))
    groups = _lead_groups(root)
    assert [g.get("data-lead") for g in groups] == [
        "I", "aVR", "V1", "V4", "II", "aVL", "V2", "V5", "III", "aVF", "V3", "V6", "II",
    ]  # fmt: skip
    # viewBox: 10 s at 25 mm/s plus the calibration margin, in mm.
    _, _, width, _ = (float(v) for v in (root.get("viewBox") or "").split())
    assert width >= TRACE_X0 + 10 * MM_PER_S
    for index, group in enumerate(groups[:12]):
        column = index % 4
        points = _trace_points(group)
        start_x = TRACE_X0 + column * 2.5 * MM_PER_S
        assert points[0, 0] == pytest.approx(start_x, abs=ROUNDING_MM)
        # 2.5 s of signal per column: the last sample sits one sample short of the next column.
        assert points[-1, 0] == pytest.approx(start_x + 2.5 * MM_PER_S - MM_PER_S / 500, abs=0.02)
    rhythm = _trace_points(groups[12])
    assert rhythm[-1, 0] - rhythm[0, 0] == pytest.approx(10 * MM_PER_S - MM_PER_S / 500, abs=0.02)


def test_amplitude_and_time_follow_25_mm_per_s_and_10_mm_per_mv(ptbxl_500: Ecg) -> None:
    """The R peak of lead V2 in its column lands where the standard scales put it."""
    root = _parse(render_ecg_svg(ptbxl_500, "3x4"))
    group = next(g for g in _lead_groups(root) if g.get("data-lead") == "V2")
    points = _trace_points(group)
    v2 = ptbxl_500.lead("V2").astype(np.float64)
    centred = v2 - np.median(v2)
    column = centred[2500:3750]  # V2 is drawn in the third column: 5 s .. 7.5 s
    # The sample farthest from the baseline (QRS), and its drawn position.
    peak = int(np.argmax(np.abs(column)))
    x_expected = TRACE_X0 + (2500 + peak) / 500 * MM_PER_S
    drawn = points[np.argmin(np.abs(points[:, 0] - x_expected))]
    assert drawn[0] == pytest.approx(x_expected, abs=ROUNDING_MM)
    # The row's calibration pulse starts on the row's 0 mV line; the peak sits 10 mm per mV
    # away from it (the lead's median is its 0 mV, a DC offset removed for display).
    calibration = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "calibration")
    row_2_pulse = list(calibration.iter(f"{SVG}path"))[1].get("d") or ""
    zero_mv_y = float(re.match(r"M[\d.]+ ([\d.]+)", row_2_pulse).group(1))  # type: ignore[union-attr]
    assert drawn[1] == pytest.approx(zero_mv_y - column[peak] * MM_PER_MV, abs=ROUNDING_MM)


def _distance_to_polyline(points: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Perpendicular distance of each (x, y) to the drawn chord spanning its x position."""
    right = np.clip(np.searchsorted(points[:, 0], x, side="right"), 1, len(points) - 1)
    a, b = points[right - 1], points[right]
    dx, dy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    norm = np.hypot(dx, dy)
    return np.abs(dx * (y - a[:, 1]) - dy * (x - a[:, 0])) / norm


def test_simplified_trace_stays_within_tolerance_and_keeps_every_peak(ptbxl_500: Ecg) -> None:
    root = _parse(render_ecg_svg(ptbxl_500, "stacked"))
    for group in _lead_groups(root):
        name = group.get("data-lead") or ""
        points = _trace_points(group)
        signal = ptbxl_500.lead(name).astype(np.float64)
        signal = signal - np.median(signal)
        x = TRACE_X0 + np.arange(signal.size) / 500 * MM_PER_S
        baseline = points[0, 1] + signal[0] * MM_PER_MV
        y_true = baseline - signal * MM_PER_MV
        # Every sample lies within the tolerance of the line drawn through it (distance
        # measured across the line, as the eye sees it; steep QRS edges included).
        error = _distance_to_polyline(points, x, y_true).max()
        assert error <= SIMPLIFY_TOLERANCE_MM + 3 * ROUNDING_MM, (name, error)
        assert len(points) < signal.size / 2  # it did simplify
        # The extremes a reader measures survive exactly (to the 0.01 mm rounding).
        assert points[:, 1].min() == pytest.approx(y_true.min(), abs=2 * ROUNDING_MM)
        assert points[:, 1].max() == pytest.approx(y_true.max(), abs=2 * ROUNDING_MM)


def test_stacked_layout_shows_all_twelve_leads_over_ten_seconds(ptb_diagnostic: Ecg) -> None:
    svg = render_ecg_svg(ptb_diagnostic, "stacked")
    root = _parse(svg)
    groups = _lead_groups(root)
    assert [g.get("data-lead") for g in groups] == [
        "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
    ]  # fmt: skip
    baselines = []
    for group in groups:
        points = _trace_points(group)
        # 1 kHz over 10 s: min/max decimation applied, the span is still the full 10 s.
        assert points[-1, 0] - points[0, 0] == pytest.approx(10 * MM_PER_S, abs=0.05)
        baselines.append(np.median(points[:, 1]))
    assert np.all(np.diff(baselines) > 15)  # one under the other, not overlapping rows
    assert "first 10 s of 38.4 s" in svg  # longer recordings say what is shown
    assert "vx" not in svg  # Frank leads are not part of the 12-lead view


def test_calibration_pulse_is_1_mv_by_200_ms_on_every_row(ptbxl_500: Ecg) -> None:
    for layout, rows in (("3x4", 4), ("stacked", 12)):
        root = _parse(render_ecg_svg(ptbxl_500, layout))  # type: ignore[arg-type]
        group = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "calibration")
        pulses = list(group.iter(f"{SVG}path"))
        assert len(pulses) == rows
        for pulse in pulses:
            # M x y h.. v-H hW vH h..: height 10 mm (1 mV) and width 5 mm (200 ms).
            d = pulse.get("d") or ""
            heights = [float(v) for v in re.findall(r"v(-?[\d.]+)", d)]
            widths = [float(v) for v in re.findall(r"h(-?[\d.]+)", d)]
            assert heights == [-1 * MM_PER_MV, 1 * MM_PER_MV]
            assert 0.2 * MM_PER_S in widths


def test_grid_has_1_mm_minor_and_5_mm_major_lines(ptbxl_500: Ecg) -> None:
    root = _parse(render_ecg_svg(ptbxl_500, "3x4"))
    paths = {p.get("class"): p.get("d") or "" for p in root.iter(f"{SVG}path")}
    major_x = {int(v) for v in re.findall(r"M(\d+) 0V", paths["grid-major"])}
    minor_x = {int(v) for v in re.findall(r"M(\d+) 0V", paths["grid-minor"])}
    assert major_x and all(x % 5 == 0 for x in major_x)
    assert sorted(major_x | minor_x) == list(range(min(minor_x | major_x), max(major_x) + 1))


def test_derived_and_missing_leads_are_marked(ptbxl_500: Ecg) -> None:
    """A cart that stores I, II, V1, V2, V4-V6: limb leads derived, V3 absent."""
    kept = ("I", "II", "V1", "V2", "V4", "V5", "V6")
    partial = ptbxl_500.with_signal(np.stack([ptbxl_500.lead(name) for name in kept]), kept)
    svg = render_ecg_svg(partial, "3x4")
    root = _parse(svg)
    by_lead = {g.get("data-lead"): g for g in _lead_groups(root)}
    for name in ("III", "aVR", "aVL", "aVF"):
        assert "derived" in (by_lead[name].get("class") or "")
        assert _label(by_lead[name]) == f"{name}*"
    assert _label(by_lead["I"]) == "I"
    missing = by_lead["V3"]
    assert "missing" in (missing.get("class") or "")
    assert "not recorded" in _label(missing)
    assert not [p for p in missing.iter(f"{SVG}path")]  # no flat line that reads as asystole
    assert "* derived from I and II" in svg
    # Derived III equals II - I, drawn at 10 mm/mV.
    points = _trace_points(by_lead["III"])
    lead_iii = (ptbxl_500.lead("II") - ptbxl_500.lead("I")).astype(np.float64)[:1250]
    lead_iii -= np.median(ptbxl_500.lead("II") - ptbxl_500.lead("I"))
    span_drawn = points[:, 1].max() - points[:, 1].min()
    assert span_drawn == pytest.approx((lead_iii.max() - lead_iii.min()) * MM_PER_MV, abs=0.05)


def test_two_lead_holter_record_draws_what_exists(formats_dir: Path) -> None:
    """MIT-BIH 100: MLII (read as II) and V5 only, so most leads are not recorded."""
    ecg = load_ecg(formats_dir / "wfdb" / "100.hea")
    root = _parse(render_ecg_svg(ecg, "3x4"))
    drawn = {
        g.get("data-lead")
        for g in _lead_groups(root)
        if [p for p in g.iter(f"{SVG}path") if p.get("class") == "trace"]
    }
    assert drawn == {"II", "V5"}  # MLII is a modified lead II, read as II


def test_size_stays_reasonable_for_a_500_hz_record(ptbxl_500: Ecg) -> None:
    raw_points = 12 * 5000
    for layout in ("3x4", "stacked"):
        svg = render_ecg_svg(ptbxl_500, layout)
        # Far smaller than writing every sample (~12 bytes a point).
        assert len(svg) < raw_points * 12 / 3, (layout, len(svg))


def test_unknown_layout_is_refused(ptbxl_500: Ecg) -> None:
    with pytest.raises(ValueError, match="unknown layout"):
        render_ecg_svg(ptbxl_500, "6x2")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "relative", ["cinc2021/E07500.hea", "cinc2021/JS20000.hea", "cinc2021/E07501.hea"]
)
def test_tall_complexes_stay_on_the_paper(cinc_dir: Path, relative: str) -> None:
    """Georgia/Ningbo records with tall precordial R waves: nothing is cut at the edges."""
    ecg = load_ecg(cinc_dir / relative)
    for layout in ("3x4", "stacked"):
        root = _parse(render_ecg_svg(ecg, layout))
        _, _, width, height = (float(v) for v in (root.get("viewBox") or "").split())
        for group in _lead_groups(root):
            points = _trace_points(group)
            assert points[:, 1].min() >= 0 and points[:, 1].max() <= height, (
                layout,
                group.get("data-lead"),
            )
            assert points[:, 0].max() <= width
