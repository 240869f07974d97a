"""How long the quality gate and the measurements take per ECG.

For PTB-XL records (10 s, 12 leads) at 500 Hz and at 100 Hz: the median and 90th percentile
time per record of :func:`models.quality.assess_quality` (target: under 2 ms at 500 Hz) and
:func:`models.measurements.measure` (target: under 150 ms), plus the one-off start-up cost
that the first call pays (``models.signal_work.warm_up`` moves it to start-up).

Run: ``.venv/bin/python benchmarks/bench_quality_measurements.py [--records 100]
[--repeats 5] [--data ../shared/data] [--baseline-rev 1c1f2b1]``. With ``--baseline-rev``
the ``measure`` of the measurement modules (``models/measurements.py``, ``delineation.py``,
``t_wave.py``, ``lead_features.py``, ``pacing.py``, those that exist) at that git revision is
timed in the same run, on the same records, and the ratio of the medians is printed. Times are CPU
seconds of this process
(``time.process_time``) because the development machine is shared and wall time there mostly
measures the wait for a core; wall-time medians are printed beside them.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from adapters import Ecg, load_ecg
from models.measurements import measure
from models.quality import assess_quality
from models.signal_work import warm_up

REPO = Path(__file__).resolve().parent.parent


def _time(
    fn: Callable[[Ecg], object], ecgs: list[Ecg], repeats: int
) -> tuple[list[float], list[float]]:
    """Per record, the median over ``repeats`` calls: (CPU ms, wall ms)."""
    cpu, wall = [], []
    for ecg in ecgs:
        c, w = [], []
        for _ in range(repeats):
            c0, w0 = time.process_time(), time.perf_counter()
            fn(ecg)
            c.append(time.process_time() - c0)
            w.append(time.perf_counter() - w0)
        cpu.append(1000 * statistics.median(c))
        wall.append(1000 * statistics.median(w))
    return cpu, wall


#: The modules of the measurement code; at a baseline revision each that exists there is
#: imported from that revision, so the whole pipeline of that time is timed, not a mixture.
MEASUREMENT_MODULES = ("measurements", "delineation", "t_wave", "lead_features", "pacing")


def _baseline_measure(revision: str) -> Callable[[Ecg], object]:
    """``measure`` of the measurement modules at a git revision, imported as another package."""
    folder = Path(tempfile.mkdtemp()) / "baseline_models"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    present = []
    for name in MEASUREMENT_MODULES:
        shown = subprocess.run(
            ["git", "show", f"{revision}:models/{name}.py"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        if shown.returncode == 0:
            present.append(name)
            (folder / f"{name}.py").write_text(shown.stdout)
    if "measurements" not in present:
        raise SystemExit(f"{revision} has no models/measurements.py")
    pattern = re.compile(rf"\bmodels\.({'|'.join(present)})\b")
    for name in present:
        path = folder / f"{name}.py"
        path.write_text(pattern.sub(r"baseline_models.\1", path.read_text()))
    sys.path.insert(0, str(folder.parent))
    module = importlib.import_module("baseline_models.measurements")
    measure_at_revision: Callable[[Ecg], object] = module.measure
    return measure_at_revision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-rev", help="git revision whose measure() to compare with")
    args = parser.parse_args()
    baseline = _baseline_measure(args.baseline_rev) if args.baseline_rev else None

    ptbxl = args.data / "ptbxl"
    with (ptbxl / "ptbxl_database.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))[: args.records]

    c0, w0 = time.process_time(), time.perf_counter()
    warm_up()
    print(
        f"warm-up (once per process): {time.process_time() - c0:.2f} s CPU, "
        f"{time.perf_counter() - w0:.2f} s wall"
    )
    print(f"PTB-XL records 1-{len(rows)}, {args.repeats} repeats each, median per record")
    print(f"{'rate':>6} {'function':<15} {'CPU median':>11} {'CPU p90':>9} {'wall median':>12}")
    for column, rate in (("filename_hr", "500 Hz"), ("filename_lr", "100 Hz")):
        ecgs = [load_ecg(ptbxl / f"{row[column]}.hea") for row in rows]
        functions: list[tuple[str, Callable[[Ecg], object]]] = [
            ("assess_quality", assess_quality),
            ("measure", measure),
        ]
        if baseline is not None:
            functions.append((f"measure@{args.baseline_rev}", baseline))
        medians: dict[str, float] = {}
        for _, fn in functions:
            fn(ecgs[0])  # warm caches
        for name, fn in functions:
            cpu, wall = _time(fn, ecgs, args.repeats)
            medians[name] = float(np.median(cpu))
            print(
                f"{rate:>6} {name:<15} {np.median(cpu):>8.2f} ms {np.percentile(cpu, 90):>6.2f} ms"
                f" {np.median(wall):>9.2f} ms"
            )
        if baseline is not None:
            ratio = medians["measure"] / medians[f"measure@{args.baseline_rev}"]
            print(f"{rate:>6} measure / measure@{args.baseline_rev}: {ratio:.2f}")


if __name__ == "__main__":
    main()
