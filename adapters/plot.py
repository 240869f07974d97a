"""Standard 12-lead ECG paper print of a canonical :class:`~adapters.record.Ecg`.

The layout clinicians read every day: 25 mm/s, 10 mm/mV, a 1 mm / 5 mm pink grid,
3 rows x 4 columns of 2.5 s each (I-III, aVR-aVF, V1-V3, V4-V6, every column a later
2.5 s of the same recording) and a 10 s lead II rhythm strip, a 1 mV calibration pulse
at the start of each row and a footer with rate, speed and gain. Drawing uses data
coordinates in millimetres on a figure sized in millimetres, so the saved image has true
paper geometry at any ``dpi``.

Leads derived by :func:`~adapters.record.standard_12_lead` are labelled with ``*``;
leads that are neither recorded nor derivable are labelled "(not recorded)" and not drawn:
a flat line would read as asystole (the same rule as the viewer's SVG). The footer says
which seconds of the recording are shown (the first 10 s) and which leads are missing.
Each lead's median is removed before drawing so a DC offset cannot push a trace out of its
row; amplitudes are otherwise untouched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from adapters.record import Ecg, standard_12_lead

#: Paper speed and gain of the standard print.
MM_PER_S = 25.0
MM_PER_MV = 10.0
#: Grid colours of ECG paper.
PAPER_COLOUR = "#fffafa"
MINOR_COLOUR = "#f6c9c9"
MAJOR_COLOUR = "#e27d7d"
TRACE_COLOUR = "#111111"

#: The 3 x 4 grid of the standard print, row by row.
LAYOUT: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
RHYTHM_LEAD = "II"
COLUMN_S = 2.5
STRIP_S = 10.0

CAL_WIDTH_MM = 10.0  # room for the calibration pulse at the start of each row
ROW_HEIGHT_MM = 35.0
N_ROWS = len(LAYOUT) + 1  # + rhythm strip
GRID_WIDTH_MM = CAL_WIDTH_MM + STRIP_S * MM_PER_S  # 260 mm
GRID_HEIGHT_MM = N_ROWS * ROW_HEIGHT_MM  # 140 mm
MARGIN_MM = 8.0
HEADER_MM = 10.0
FOOTER_MM = 10.0
PAGE_WIDTH_MM = GRID_WIDTH_MM + 2 * MARGIN_MM
PAGE_HEIGHT_MM = GRID_HEIGHT_MM + HEADER_MM + FOOTER_MM

_MM_PER_INCH = 25.4
#: What fits on one line across the page at the title's font size.
TITLE_MAX_CHARS = 120


def _draw_grid(ax: Axes) -> None:
    minor_x = np.arange(0.0, GRID_WIDTH_MM + 0.5, 1.0)
    minor_y = np.arange(0.0, GRID_HEIGHT_MM + 0.5, 1.0)
    for positions, vertical in ((minor_x, True), (minor_y, False)):
        minor = [p for p in positions if round(p) % 5]
        major = [p for p in positions if round(p) % 5 == 0]
        for lines, colour, width in ((minor, MINOR_COLOUR, 0.3), (major, MAJOR_COLOUR, 0.7)):
            if vertical:
                ax.vlines(lines, 0, GRID_HEIGHT_MM, colors=colour, linewidth=width, zorder=1)
            else:
                ax.hlines(lines, 0, GRID_WIDTH_MM, colors=colour, linewidth=width, zorder=1)


def _calibration_pulse(ax: Axes, baseline_mm: float) -> None:
    """The 1 mV x 200 ms square pulse carts print to show the gain."""
    x0 = 2.0
    width = 0.2 * MM_PER_S
    height = 1.0 * MM_PER_MV
    xs = [x0 - 1.5, x0, x0, x0 + width, x0 + width, x0 + width + 1.5]
    ys = [
        baseline_mm,
        baseline_mm,
        baseline_mm + height,
        baseline_mm + height,
        baseline_mm,
        baseline_mm,
    ]
    ax.plot(xs, ys, color=TRACE_COLOUR, linewidth=0.8, zorder=3)


def _trace(ax: Axes, samples: np.ndarray, fs: float, x0_mm: float, baseline_mm: float) -> None:
    if samples.size == 0:
        return
    t_mm = np.arange(samples.size) / fs * MM_PER_S
    limit = ROW_HEIGHT_MM * 0.95  # a wild lead may overlap its neighbours, never the page
    y = np.clip(samples * MM_PER_MV, -limit, limit) + baseline_mm
    ax.plot(t_mm + x0_mm, y, color=TRACE_COLOUR, linewidth=0.6, zorder=3)


MISSING_COLOUR = "#8a1c1c"


def _label(lead: str, derived: frozenset[str], missing: frozenset[str]) -> str:
    if lead in missing:
        return f"{lead} (not recorded)"
    return f"{lead}*" if lead in derived else lead


def plot_paper(ecg: Ecg, out: Path, *, title: str | None = None, dpi: int = 200) -> None:
    """Write ``ecg`` as a standard 12-lead paper print (PNG, PDF or SVG, by ``out``'s suffix)."""
    view = standard_12_lead(ecg)
    # readers that derive limb leads themselves (GE MUSE) say so in extra["derived_leads"]
    derived = view.derived | frozenset(ecg.extra.get("derived_leads", "").split())
    signal = view.ecg.signal.astype(np.float64)
    signal = signal - np.median(signal, axis=1, keepdims=True)
    leads = view.ecg.leads
    fs = float(ecg.fs)

    fig = Figure(figsize=(PAGE_WIDTH_MM / _MM_PER_INCH, PAGE_HEIGHT_MM / _MM_PER_INCH))
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")
    ax = fig.add_axes(
        (
            MARGIN_MM / PAGE_WIDTH_MM,
            FOOTER_MM / PAGE_HEIGHT_MM,
            GRID_WIDTH_MM / PAGE_WIDTH_MM,
            GRID_HEIGHT_MM / PAGE_HEIGHT_MM,
        )
    )
    ax.set_xlim(0, GRID_WIDTH_MM)
    ax.set_ylim(0, GRID_HEIGHT_MM)
    ax.set_facecolor(PAPER_COLOUR)
    ax.set_axis_off()
    _draw_grid(ax)

    column_samples = round(COLUMN_S * fs)
    for row, row_leads in enumerate(LAYOUT):
        baseline = GRID_HEIGHT_MM - (row + 0.5) * ROW_HEIGHT_MM
        _calibration_pulse(ax, baseline)
        for column, lead in enumerate(row_leads):
            start = column * column_samples
            x0 = CAL_WIDTH_MM + column * COLUMN_S * MM_PER_S
            if lead not in view.missing:
                segment = signal[leads.index(lead), start : start + column_samples]
                _trace(ax, segment, fs, x0, baseline)
            if column:  # the short divider printers draw between columns
                ax.vlines(
                    x0, baseline - 4, baseline + 4, colors=TRACE_COLOUR, linewidth=0.8, zorder=3
                )
            ax.text(
                x0 + 1.5, baseline + 0.33 * ROW_HEIGHT_MM, _label(lead, derived, view.missing),
                fontsize=8, fontweight="bold", zorder=4,
                color=MISSING_COLOUR if lead in view.missing else TRACE_COLOUR,
            )  # fmt: skip

    strip_baseline = 0.5 * ROW_HEIGHT_MM
    _calibration_pulse(ax, strip_baseline)
    if RHYTHM_LEAD not in view.missing:
        strip = signal[leads.index(RHYTHM_LEAD), : round(STRIP_S * fs)]
        _trace(ax, strip, fs, CAL_WIDTH_MM, strip_baseline)
    ax.text(
        CAL_WIDTH_MM + 1.5, strip_baseline + 0.33 * ROW_HEIGHT_MM,
        f"{_label(RHYTHM_LEAD, derived, view.missing)} (rhythm)",
        fontsize=8, fontweight="bold", zorder=4,
        color=MISSING_COLOUR if RHYTHM_LEAD in view.missing else TRACE_COLOUR,
    )  # fmt: skip

    heading = title or _default_title(ecg)
    fig.text(
        MARGIN_MM / PAGE_WIDTH_MM, 1 - 6.5 / PAGE_HEIGHT_MM, heading, fontsize=10, weight="bold"
    )
    footer = (
        f"{fs:g} Hz   {MM_PER_S:g} mm/s   {MM_PER_MV:g} mm/mV   {_shown_window(ecg.duration_s)}"
    )
    if derived:
        footer += "   * derived from I and II"
    if view.missing:
        footer += f"   {len(view.missing)} of 12 leads not recorded"
    if ecg.extra.get("lead_aliases"):
        footer += f"   leads read as standard: {ecg.extra['lead_aliases']}"
    if ecg.device:
        footer += f"   {ecg.device}"
    fig.text(MARGIN_MM / PAGE_WIDTH_MM, 3.5 / PAGE_HEIGHT_MM, footer, fontsize=7)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, facecolor=fig.get_facecolor())


def _shown_window(duration_s: float) -> str:
    """Which seconds the print shows: the first ``STRIP_S`` of the recording."""
    if duration_s <= STRIP_S + 1e-6:
        return f"{duration_s:.1f} s recorded, all shown"
    return f"0-{STRIP_S:g} s shown of {duration_s:,.1f} s recorded"


def _default_title(ecg: Ecg) -> str:
    parts = ["12-lead ECG"]
    if ecg.start_time is not None:
        parts.append(ecg.start_time.strftime("%Y-%m-%d %H:%M:%S"))
    parts.append(ecg.source.format)
    if ecg.statements:
        parts.append("; ".join(ecg.statements[:3]))
    title = "  |  ".join(parts)
    return title if len(title) <= TITLE_MAX_CHARS else title[: TITLE_MAX_CHARS - 1] + "…"
