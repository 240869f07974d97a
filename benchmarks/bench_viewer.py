"""How long the viewer takes to draw an ECG, and how big the drawing is.

For real records at 100 Hz to 1 kHz: the median CPU time of ``render_ecg_svg`` per layout,
the SVG size, the points drawn against the samples shown (what the min/max + RDP
simplification saves), and the compressed size (what a gzip-ing proxy would send). The
baseline is the same SVG with every sample written (no simplification), to show what the
simplification buys.

Run: ``.venv/bin/python benchmarks/bench_viewer.py [--repeats 9] [--data ../shared/data]``.
Times are CPU seconds of this process (``time.process_time``): the development machine is
shared and wall time mostly measures the wait for a core.
"""

from __future__ import annotations

import argparse
import gzip
import re
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from adapters import load_ecg
from cds_service.viewer import svg as svg_module
from cds_service.viewer.svg import render_ecg_svg

RECORDS = {
    "PTB-XL 00001 (100 Hz)": "ptbxl/records100/00000/00001_lr.hea",
    "PTB-XL 00001 (500 Hz)": "ptbxl/records500/00000/00001_hr.hea",
    "GE MUSE sinus (500 Hz)": "formats/ge_muse_xml/muse-sinus.xml",
    "PTB s0010 (1 kHz, 38 s)": "formats/wfdb/s0010_re.hea",
}


def _points(svg: str) -> int:
    return sum(len(d.split()) // 2 + 1 for d in re.findall(r'class="trace"[^>]* d="([^"]+)"', svg))


def _cpu_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    args = parser.parse_args()
    header = (
        f"{'record':26} {'layout':8} {'ms (median)':>11} {'KB':>6} {'KB gz':>6} {'points':>7} "
        f"{'samples':>8} {'unsimplified KB':>15} {'ms':>6}"
    )
    print(header)
    for name, relative in RECORDS.items():
        ecg = load_ecg(args.data / relative)
        for layout in ("3x4", "stacked"):
            svg = render_ecg_svg(ecg, layout)
            ms = _cpu_ms(partial(render_ecg_svg, ecg, layout), args.repeats)
            # Samples shown: 3x4 is 12 leads x 2.5 s + a 10 s strip (= 4 x 10 s); stacked 12 x 10 s.
            samples = round(min(ecg.duration_s, 10.0) * ecg.fs) * (4 if layout == "3x4" else 12)
            # Baseline: no decimation, no simplification (every sample drawn).
            saved = (svg_module.BIN_MM, svg_module.TOLERANCE_MM)
            svg_module.BIN_MM, svg_module.TOLERANCE_MM = 0.0, -1.0
            try:
                raw = render_ecg_svg(ecg, layout)
                raw_ms = _cpu_ms(partial(render_ecg_svg, ecg, layout), max(3, args.repeats // 3))
            finally:
                svg_module.BIN_MM, svg_module.TOLERANCE_MM = saved
            print(
                f"{name:26} {layout:8} {ms:11.1f} {len(svg) / 1024:6.0f} "
                f"{len(gzip.compress(svg.encode())) / 1024:6.0f} {_points(svg):7d} {samples:8d} "
                f"{len(raw) / 1024:15.0f} {raw_ms:6.1f}"
            )


if __name__ == "__main__":
    main()
