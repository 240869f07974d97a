"""Benchmark the shipped ECG-text model on this machine.

Prints: model load time (fresh process and in-process), single-ECG latency (file load +
preprocess + embed + score against the catalog, median of N), the same through the full
``classify()`` (quality gate and measurements included), batch throughput at batch 64,
the encoder forward at batch 64 on torch and on ONNX Runtime (``models/onnx_encoder.py``;
interleaved repeats, median, ratio), and peak resident memory.
Run: ``.venv/bin/python benchmarks/bench_model.py [--threads 2]``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "ptbxl" / "records500" / "00000"


def _median_ms(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    code = (
        "import time; t=time.perf_counter(); from models import ZeroShotClassifier; "
        f"c=ZeroShotClassifier.from_pretrained(threads={args.threads}); "
        "c.label_embeddings(c.catalog); print(time.perf_counter()-t)"
    )
    cold = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                cwd=REPO, check=True).stdout.strip().splitlines()[-1])  # fmt: skip

    import numpy as np
    import torch

    from adapters import load_ecg
    from models import ZeroShotClassifier
    from models.preprocessing import preprocess

    t0 = time.perf_counter()
    clf = ZeroShotClassifier.from_pretrained(threads=args.threads)
    labels = clf.catalog
    clf.label_embeddings(labels)
    warm_load = time.perf_counter() - t0
    files = sorted(DATA.glob("*_hr.hea"))
    record = files[8]

    def core_single() -> None:
        ecg = load_ecg(record)
        cos = clf.similarities([ecg], labels)
        for j, label in enumerate(labels):
            clf.probabilities(label, cos[:, j])

    def full_single() -> None:
        clf.classify([load_ecg(record)], labels)

    core_single()
    core_ms = _median_ms(core_single, args.repeats)
    ecg = load_ecg(record)
    load_ms = _median_ms(lambda: load_ecg(record), args.repeats)
    prep_ms = _median_ms(lambda: preprocess(ecg, clf.config), args.repeats)
    windows = torch.from_numpy(preprocess(ecg, clf.config).windows)
    with torch.no_grad():
        embed_ms = _median_ms(lambda: clf.model.encode_ecg(windows), args.repeats)
    full_ms = _median_ms(full_single, max(5, args.repeats // 5))

    ecgs = [load_ecg(p) for p in files[: args.batch]]
    clf.similarities(ecgs, labels)
    embed_s = _median_ms(lambda: clf.similarities(ecgs, labels), 5) / 1000
    classify_s = _median_ms(lambda: clf.classify(ecgs, labels), 3) / 1000
    stacked = np.concatenate([preprocess(e, clf.config).windows for e in ecgs])
    onnx = clf.onnx_encoder()
    torch_ms: list[float] = []
    onnx_ms: list[float] = []
    for _ in range(7):  # interleaved: both see the same machine load
        with torch.inference_mode():
            torch_ms.append(_median_ms(lambda: clf.model.encode_ecg(torch.from_numpy(stacked)), 1))
        if onnx is not None:
            onnx_ms.append(_median_ms(lambda: onnx(stacked), 1))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"model {clf.model_version}, {args.threads} torch threads, {len(labels)} catalog labels")
    print(f"record: {record.name} (12 leads, 500 Hz, 10 s)")
    print(f"model load, fresh process (imports + weights + catalog text):  {cold:8.2f} s")
    print(f"model load, in process:                                       {warm_load:8.2f} s")
    print(f"single ECG: load + preprocess + embed + score, median:        {core_ms:8.1f} ms")
    print(f"  of which: file load {load_ms:.1f} ms, preprocess {prep_ms:.1f} ms, "
          f"encoder forward {embed_ms:.1f} ms")  # fmt: skip
    print(f"single ECG: full classify() incl. quality + measurements:     {full_ms:8.1f} ms")
    print(f"batch {args.batch}: preprocess + embed + score:                      "
          f"{args.batch / embed_s:8.0f} ECGs/s")  # fmt: skip
    print(f"batch {args.batch}: full classify():                                 "
          f"{args.batch / classify_s:8.0f} ECGs/s")  # fmt: skip
    per_ecg = statistics.median(torch_ms) / len(ecgs)
    line = f"batch {len(ecgs)}: encoder forward, torch {per_ecg:.2f} ms/ECG"
    if onnx_ms:
        fast = statistics.median(onnx_ms) / len(ecgs)
        line += f", ONNX Runtime {fast:.2f} ms/ECG ({per_ecg / fast:.2f}x)"
    else:
        line += " (no ONNX export beside the weights)"
    print(line)
    print(f"peak resident memory:                                         {peak_mb:8.0f} MB")


if __name__ == "__main__":
    main()
