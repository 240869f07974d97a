"""Cached-hook latency while an unauthenticated client floods the service with bad tokens.

Starts ``ecg-cds serve`` as :mod:`bench_hooks` does, warms it up, then measures cached
``patient-view`` calls (a) alone and (b) while ``--flooders`` threads send bad bearer tokens
as fast as they can from another loopback address (127.0.0.2). Reports p50/p95 of both, the
p95 ratio (same run), the flood's rate and answers (401 until the source is throttled, then
429), and how many ``auth-failure`` audit rows the flood added (one per burst and window,
not one per request).

    .venv/bin/python benchmarks/bench_auth_flood.py [--calls 100] [--flooders 4]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hooks import REPO, Service, call, observation_bundle, pending, summary


def _auth_failure_rows(workdir: Path) -> int:
    with sqlite3.connect(workdir / "var" / "ecg-cds.db") as db:
        row = db.execute("SELECT count(*) FROM audit_events WHERE event = 'auth-failure'")
        return int(row.fetchone()[0])


def _cached_latencies(svc: Service, prefetch: dict, n: int) -> list[float]:
    tokens = [svc.token() for _ in range(n)]
    latencies = []
    with httpx.Client(timeout=60.0) as client:
        for token in tokens:
            t0 = time.perf_counter()
            response = call(client, svc, prefetch, token)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200 and not pending(response), response.text[:300]
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100, help="cached calls per phase")
    parser.add_argument("--flooders", type=int, default=4, help="flooding threads")
    parser.add_argument("--budget", type=float, default=0.35)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "ptbxl" / "records500"
    )
    args = parser.parse_args()
    args.mode, args.workers = "embedded", 1
    record = sorted(args.data.glob("*/*_hr.hea"))[0]
    workdir = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    svc = Service(args, workdir)
    try:
        prefetch = observation_bundle(record, 0)
        with httpx.Client(timeout=60.0) as client:
            started = time.monotonic()
            while pending(call(client, svc, prefetch, svc.token())):
                if time.monotonic() - started > 300:
                    raise SystemExit("the first classification did not finish in 300 s")
                time.sleep(0.5)
        alone = _cached_latencies(svc, prefetch, args.calls)

        rows_before = _auth_failure_rows(workdir)
        stop = threading.Event()
        answers: Counter[int] = Counter()
        lock = threading.Lock()

        def flood(index: int) -> None:
            transport = httpx.HTTPTransport(local_address="127.0.0.2")
            with httpx.Client(transport=transport, timeout=30.0) as client:
                while not stop.is_set():
                    status = client.post(
                        f"{svc.base}/cds-services/ecg-review",
                        content=b"{}",
                        headers={"Authorization": f"Bearer junk.{index}.{time.time_ns()}"},
                    ).status_code
                    with lock:
                        answers[status] += 1

        threads = [threading.Thread(target=flood, args=(i,)) for i in range(args.flooders)]
        flood_started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # the flood is under way (and throttled) before measuring
        during = _cached_latencies(svc, prefetch, args.calls)
        stop.set()
        for thread in threads:
            thread.join()
        flood_s = time.monotonic() - flood_started
        rows_added = _auth_failure_rows(workdir) - rows_before
    finally:
        svc.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    a, b = summary("(a) cached, alone", alone), summary("(b) cached, during flood", during)
    for row in (a, b):
        p50, p95 = row["p50_ms"], row["p95_ms"]
        print(f"{row['case']:<26} n={row['n']:<4} p50={p50:>6} ms  p95={p95:>6} ms")
    total = sum(answers.values())
    print(f"p95 ratio (b)/(a): {b['p95_ms'] / a['p95_ms']:.2f}")
    print(
        f"flood: {total} requests in {flood_s:.1f} s ({total / flood_s:.0f}/s), answers "
        f"{dict(sorted(answers.items()))}, auth-failure audit rows added: {rows_added}"
    )


if __name__ == "__main__":
    main()
