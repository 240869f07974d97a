"""CPU per ECG of the whole ``classify()`` in one process, against another revision.

Issue 11's classify goal (>= 1.5x the anchor with 2 cores) needs about 3 ms CPU per ECG in
all. This prints that CPU figure for the code as it is and for ``--baseline-rev``, side by
side: each revision runs in its own child process (the baseline from ``git archive`` in a
temporary folder, on this virtual environment), in alternating rounds, on the same PTB-XL
500 Hz records, signal work in the caller (no worker pool) and one torch thread, so the CPU
time of ``time.process_time`` is all the work. Split: the per-ECG signal work
(:func:`models.signal_work.analyse`: quality gate, measurements, model windows) and the
full ``classify()`` in batches of 64 (signal work + encoder + scoring).

Run: ``.venv/bin/python benchmarks/bench_classify_cpu.py [--baseline-rev 46e9d3d]
[--records 64] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import csv, json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from adapters import load_ecg
from models.classifier import ZeroShotClassifier
from models.signal_work import SignalWorkPool, analyse
try:  # the whole signal work's warm-up; older revisions (a --baseline-rev) warm measure() only
    from models.signal_work import warm_up
except ImportError:
    from models.measurements import warm_up
ptbxl = Path(sys.argv[1]) / "ptbxl"
rows = list(csv.DictReader((ptbxl / "ptbxl_database.csv").open(newline="")))[: int(sys.argv[2])]
ecgs = [load_ecg(ptbxl / f"{row['filename_hr']}.hea") for row in rows]
warm_up()
# threads=1: from_pretrained's default (2) would override the setting above; two torch
# threads on shared cores spin-wait (measured 3-5x the encoder's CPU on a loaded machine).
classifier = ZeroShotClassifier.from_pretrained(threads=1)
classifier._signal_pool = SignalWorkPool(1)
classifier.classify(ecgs[:4])
c0 = time.process_time()
for ecg in ecgs:
    analyse(ecg, classifier.config)
signal_ms = 1000 * (time.process_time() - c0) / len(ecgs)
c0 = time.process_time()
for start in range(0, len(ecgs), 64):
    classifier.classify(ecgs[start : start + 64])
classify_ms = 1000 * (time.process_time() - c0) / len(ecgs)
print(json.dumps({"signal_work": signal_ms, "classify": classify_ms}))
"""


def _tree(revision: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-classify-"))
    archive = subprocess.run(
        ["git", "archive", revision], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def _run(tree: Path, data: Path, records: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(data), str(records)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", default="46e9d3d")
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    trees = {"this tree": REPO, f"@{args.baseline_rev}": _tree(args.baseline_rev)}
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            figures[name].append(_run(tree, args.data.resolve(), args.records))
    print(f"PTB-XL 500 Hz records 1-{args.records}, {args.rounds} alternating rounds, CPU ms/ECG")
    print(f"{'revision':<12} {'signal work':>12} {'classify()':>11}")
    medians = {}
    for name, rounds in figures.items():
        medians[name] = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        row = medians[name]
        print(f"{name:<12} {row['signal_work']:>9.2f} ms {row['classify']:>8.2f} ms")
    base = medians[f"@{args.baseline_rev}"]
    now = medians["this tree"]
    print(
        f"ratio this tree / @{args.baseline_rev}: signal work "
        f"{now['signal_work'] / base['signal_work']:.2f}, classify() "
        f"{now['classify'] / base['classify']:.2f}; 1.5x the anchor needs ~3 ms/ECG in all"
    )


if __name__ == "__main__":
    main()
