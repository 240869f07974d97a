"""Draw an ECG on standard paper as SVG, on the server, from the stored signal.

The drawing is in millimetres (the SVG user unit is 1 mm of paper), so the standard scales
hold exactly whatever the on-screen size: 25 mm/s, 10 mm/mV, 1 mm minor and 5 mm major
grid. The page scales the picture with its ``viewBox``.

Two layouts:

- ``3x4``: the usual printout. Three rows of four 2.5 s columns (I, II, III | aVR, aVL, aVF
  | V1, V2, V3 | V4, V5, V6), each column showing *its own* 2.5 s of the recording, and a
  10 s lead II rhythm strip underneath.
- ``stacked``: all twelve leads, each over the full 10 s, one under the other.

Each row starts with a 1 mV x 200 ms calibration pulse. Leads derived from I and II (the
cart did not store them) are labelled with an asterisk, and leads neither recorded nor
derivable are labelled "not recorded" and not drawn (a flat line would read as asystole).

Polylines are reduced for size without losing what a reader looks at: first a min/max
decimation into 0.1 mm bins (keeps every peak), then Ramer-Douglas-Peucker with a tolerance
of 0.05 mm, far below a screen pixel at any usual zoom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from adapters.record import Ecg, standard_12_lead

Layout = Literal["3x4", "stacked"]

MM_PER_S = 25.0
MM_PER_MV = 10.0
#: Where the trace area starts: room for the calibration pulse on the left.
TRACE_X0_MM = 10.0
RIGHT_MARGIN_MM = 5.0
STRIP_S = 10.0
COLUMN_S = 2.5
ROW_MM_3X4 = 40.0
ROW_MM_STACKED = 25.0
FOOTER_MM = 8.0
#: Keep traces this far from the paper's edge; never pad more than MAX_PAD_MM.
EDGE_MM = 1.0
MAX_PAD_MM = 40.0
#: Decimation bin and simplification tolerance, in mm of paper.
BIN_MM = 0.1
TOLERANCE_MM = 0.05

GRID_3X4: tuple[tuple[str, str, str, str], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
RHYTHM_LEAD = "II"


@dataclass(frozen=True)
class Trace:
    """One lead segment to draw: where, which samples, how to label it."""

    lead: str
    x_mm: float
    baseline_mm: float
    samples: np.ndarray  # millivolts
    fs: float
    derived: bool
    missing: bool


def render_ecg_svg(ecg: Ecg, layout: Layout = "3x4", *, title: str | None = None) -> str:
    """The ECG on standard paper as a standalone ``<svg>`` element (a string)."""
    view = standard_12_lead(ecg)
    signal = _remove_baseline(view.ecg.signal)
    fs = float(view.ecg.fs)
    leads = view.ecg.leads
    strip = min(STRIP_S, view.ecg.duration_s)
    n_strip = round(strip * fs)

    def lead_samples(name: str, start_s: float, stop_s: float) -> np.ndarray:
        row: np.ndarray = signal[leads.index(name)]
        shown: np.ndarray = row[round(start_s * fs) : min(round(stop_s * fs), n_strip)]
        return shown

    traces: list[Trace] = []
    if layout == "3x4":
        for r, row_leads in enumerate(GRID_3X4):
            baseline = ROW_MM_3X4 * (r + 0.5)
            for c, name in enumerate(row_leads):
                start = c * COLUMN_S
                traces.append(
                    Trace(
                        lead=name,
                        x_mm=TRACE_X0_MM + start * MM_PER_S,
                        baseline_mm=baseline,
                        samples=lead_samples(name, start, start + COLUMN_S),
                        fs=fs,
                        derived=name in view.derived,
                        missing=name in view.missing,
                    )
                )
        traces.append(
            Trace(
                lead=RHYTHM_LEAD,
                x_mm=TRACE_X0_MM,
                baseline_mm=ROW_MM_3X4 * 3.5,
                samples=lead_samples(RHYTHM_LEAD, 0.0, STRIP_S),
                fs=fs,
                derived=RHYTHM_LEAD in view.derived,
                missing=RHYTHM_LEAD in view.missing,
            )
        )
        rows, row_mm = 4, ROW_MM_3X4
    elif layout == "stacked":
        for r, name in enumerate(leads):
            traces.append(
                Trace(
                    lead=name,
                    x_mm=TRACE_X0_MM,
                    baseline_mm=ROW_MM_STACKED * (r + 0.5),
                    samples=lead_samples(name, 0.0, STRIP_S),
                    fs=fs,
                    derived=name in view.derived,
                    missing=name in view.missing,
                )
            )
        rows, row_mm = len(leads), ROW_MM_STACKED
    else:
        raise ValueError(f"unknown layout {layout!r}; use '3x4' or 'stacked'")

    # Tall complexes in the first row (or deep ones in the last) would be cut off by the
    # edge of the paper: add whole 5 mm squares above or below so they fit.
    top_pad, bottom_pad = _edge_padding(traces, rows * row_mm)
    if top_pad:
        traces = [replace(t, baseline_mm=t.baseline_mm + top_pad) for t in traces]
    width = TRACE_X0_MM + STRIP_S * MM_PER_S + RIGHT_MARGIN_MM
    height = top_pad + rows * row_mm + bottom_pad + FOOTER_MM
    baselines = sorted({t.baseline_mm for t in traces})
    notes = [f"{MM_PER_S:g} mm/s", f"{MM_PER_MV:g} mm/mV", f"{fs:g} Hz"]
    if view.ecg.duration_s < STRIP_S:
        notes.append(f"recording {view.ecg.duration_s:.1f} s")
    elif view.ecg.duration_s > STRIP_S + 1e-6:
        notes.append(f"first {STRIP_S:g} s of {view.ecg.duration_s:.1f} s")
    if view.derived:
        notes.append("* derived from I and II")
    if view.missing:
        notes.append("not recorded: " + ", ".join(n for n in leads if n in view.missing))
    label = title or f"12-lead ECG, {layout} layout"

    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ecg-paper ecg-{layout}" '
        f'viewBox="0 0 {width:g} {height:g}" preserveAspectRatio="xMinYMin meet" '
        f'role="img" aria-label={quoteattr(label)} data-layout="{layout}" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif">',
        f"<title>{escape(label)}</title>",
        f'<rect class="paper" x="0" y="0" width="{width:g}" height="{height:g}" fill="#fff7f7"/>',
        _grid(width, height),
        '<g class="calibration" fill="none" stroke="#111" stroke-width="0.3" '
        'stroke-linejoin="miter">',
        *(_calibration_pulse(b) for b in baselines),
        "</g>",
    ]
    for trace in traces:
        parts.append(_trace(trace))
    if layout == "3x4":
        parts.append(_column_ticks(rows=3, row_mm=row_mm, top_mm=top_pad))
    parts.append(
        f'<text class="scale-note" x="{TRACE_X0_MM:g}" y="{height - 2.5:g}" font-size="3" '
        f'fill="#444">{escape("   ·   ".join(notes))}</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _edge_padding(traces: list[Trace], rows_height_mm: float) -> tuple[float, float]:
    """Millimetres to add above and below (multiples of 5, at most 40) so no trace is cut."""
    drawn = [t for t in traces if not t.missing and t.samples.size]
    if not drawn:
        return 0.0, 0.0
    highest = min(t.baseline_mm - float(t.samples.max()) * MM_PER_MV for t in drawn)
    lowest = max(t.baseline_mm - float(t.samples.min()) * MM_PER_MV for t in drawn)

    def squares(overshoot_mm: float) -> float:
        return min(MAX_PAD_MM, 5.0 * math.ceil(max(0.0, overshoot_mm) / 5.0))

    return squares(EDGE_MM - highest), squares(lowest - (rows_height_mm - EDGE_MM))


def _remove_baseline(signal: np.ndarray) -> np.ndarray:
    """Centre each lead on its row: subtract the lead's median (a DC offset, not a filter)."""
    centred: np.ndarray = signal - np.median(signal, axis=1, keepdims=True)
    return centred


def _grid(width: float, height: float) -> str:
    """1 mm minor and 5 mm major lines, each set as one path (small and crisp)."""
    minor: list[str] = []
    major: list[str] = []
    for x in range(int(width) + 1):
        (major if x % 5 == 0 else minor).append(f"M{x} 0V{height:g}")
    for y in range(int(height) + 1):
        (major if y % 5 == 0 else minor).append(f"M0 {y}H{width:g}")
    return (
        '<g class="grid" fill="none">'
        f'<path class="grid-minor" stroke="#f4c2c2" stroke-width="0.08" d="{"".join(minor)}"/>'
        f'<path class="grid-major" stroke="#e48f8f" stroke-width="0.16" d="{"".join(major)}"/>'
        "</g>"
    )


def _calibration_pulse(baseline_mm: float) -> str:
    """A 1 mV, 200 ms square pulse before the trace, as a printed ECG has."""
    x0, rise = 2.0, MM_PER_MV
    return f'<path d="M{x0:g} {baseline_mm:g}h1.5v{-rise:g}h{0.2 * MM_PER_S:g}v{rise:g}h1.5"/>'


def _column_ticks(rows: int, row_mm: float, top_mm: float) -> str:
    """Short vertical marks where one lead's column ends and the next begins."""
    marks = []
    for r in range(rows):
        baseline = top_mm + row_mm * (r + 0.5)
        for c in range(1, 4):
            x = TRACE_X0_MM + c * COLUMN_S * MM_PER_S
            marks.append(f"M{x:g} {baseline - 4:g}v8")
    return f'<path class="column-ticks" stroke="#111" stroke-width="0.3" d="{"".join(marks)}"/>'


def _trace(trace: Trace) -> str:
    label = trace.lead + ("*" if trace.derived else "")
    label_y = trace.baseline_mm - 8.0
    text_attrs = f'x="{trace.x_mm + 1:g}" y="{label_y:g}" font-size="3.5" font-weight="600"'
    head = (
        f'<g class="lead{" derived" if trace.derived else ""}{" missing" if trace.missing else ""}"'
        f" data-lead={quoteattr(trace.lead)}>"
    )
    if trace.missing or trace.samples.size < 2:
        return (
            f'{head}<text {text_attrs} fill="#8a1c1c">{escape(trace.lead)} (not recorded)</text>'
            "</g>"
        )
    path = trace_path(trace.samples, trace.fs, trace.x_mm, trace.baseline_mm)
    title = f"Lead {trace.lead}" + (" (derived from I and II)" if trace.derived else "")
    return (
        f"{head}<title>{escape(title)}</title>"
        f'<text {text_attrs} fill="#111">{escape(label)}</text>'
        f'<path class="trace" transform="scale(.01)" fill="none" stroke="#111" stroke-width="30" '
        f'stroke-linejoin="round" stroke-linecap="round" d="{path}"/></g>'
    )


def trace_path(samples: np.ndarray, fs: float, x0_mm: float, baseline_mm: float) -> str:
    """SVG path data for one lead segment, decimated and simplified.

    Coordinates are integers in hundredths of a millimetre (the path is drawn with
    ``transform="scale(.01)"``) and written as relative moves, which keeps the text short
    without accumulating rounding error.
    """
    x = x0_mm + np.arange(samples.size, dtype=np.float64) * (MM_PER_S / fs)
    y = baseline_mm - samples.astype(np.float64) * MM_PER_MV
    x, y = _minmax_decimate(x, y, BIN_MM)
    keep = _rdp_mask(x, y, TOLERANCE_MM)
    xs = np.round(x[keep] * 100).astype(np.int64)
    ys = np.round(y[keep] * 100).astype(np.int64)
    steps = np.column_stack((np.diff(xs), np.diff(ys))).ravel()
    return f"M{xs[0]} {ys[0]}l" + " ".join(map(str, steps.tolist()))


def _minmax_decimate(x: np.ndarray, y: np.ndarray, bin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep, per ``bin_mm`` of paper, the lowest and highest sample, in time order.

    Only applies when samples are denser than the bin; every local extremum survives.
    """
    if x.size < 3 or (x[1] - x[0]) * 2 >= bin_mm:
        return x, y
    bins = np.floor((x - x[0]) / bin_mm).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    ends = np.r_[starts[1:], x.size] - 1
    # Sorting by (bin, y) puts each bin's lowest sample first and highest last, in place.
    order = np.lexsort((y, bins))
    keep = np.zeros(x.size, dtype=bool)
    keep[order[starts]] = True
    keep[order[ends]] = True
    keep[0] = keep[-1] = True
    return x[keep], y[keep]


def _rdp_mask(x: np.ndarray, y: np.ndarray, tolerance: float) -> np.ndarray:
    """Ramer-Douglas-Peucker: which points to keep so that none strays > ``tolerance``.

    Breadth-first and vectorised: each pass splits every still-open segment at its
    farthest point, so the loop runs about log2(n) times rather than once per kept point,
    and segments already within tolerance drop out of later passes.
    """
    n = x.size
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    if n <= 2:
        keep[:] = True
        return keep
    open_points = np.arange(n)  # points inside segments not yet within tolerance
    while open_points.size:
        kept = np.flatnonzero(keep)
        slot = np.searchsorted(kept, open_points, side="right") - 1
        slot = np.minimum(slot, kept.size - 2)
        a, b = kept[slot], kept[slot + 1]
        dx, dy = x[b] - x[a], y[b] - y[a]
        norm = np.hypot(dx, dy)
        norm[norm == 0] = 1.0
        px, py = x[open_points] - x[a], y[open_points] - y[a]
        distance = np.abs(dx * py - dy * px) / norm
        distance[keep[open_points]] = 0.0
        # Per segment: its farthest distance, and the first point that reaches it.
        group_starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
        farthest = np.maximum.reduceat(distance, group_starts)
        group = np.repeat(np.arange(group_starts.size), np.diff(np.r_[group_starts, slot.size]))
        out = farthest[group] > tolerance
        candidates = np.flatnonzero(out & (distance == farthest[group]))
        if candidates.size == 0:
            break
        _, first = np.unique(group[candidates], return_index=True)
        keep[open_points[candidates[first]]] = True
        open_points = open_points[out & ~keep[open_points]]
    return keep
