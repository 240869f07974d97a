"""What the audit trail costs: append latency (the hook path records several entries per call),
concurrent append throughput, and ``verify`` speed, on SQLite (WAL) and PostgreSQL.

Each ``record`` is its own serialised transaction (``BEGIN IMMEDIATE`` on SQLite, an advisory
lock on PostgreSQL) so the chain cannot fork; this measures what that costs, and what
``record_many`` saves when a hook call records its fetch, call and card together.

Run: ``.venv/bin/python benchmarks/bench_audit.py [--n 300] [--threads 4]
[--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]`` (PostgreSQL is skipped when it
cannot be reached). A fresh SQLite file / PostgreSQL database is made and removed per run.
The machine is shared, so medians and percentiles are reported.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from cds_service.audit import Actor, AuditRecord, AuditTrail
from cds_service.storage.base import make_engine, make_session_factory

ACTOR = Actor(iss="https://ehr.example.org", sub="clinician-7", user="Practitioner/123")
DETAIL = {"service": "ecg-review", "hook": "patient-view", "hookInstance": str(uuid.uuid4())}


def bench(url: str, n: int, threads: int) -> None:
    engine = make_engine(url)
    trail = AuditTrail(make_session_factory(engine))
    trail.create_table()
    for _ in range(20):  # warm the pool and caches
        trail.record("hook-call", actor=ACTOR, patient="p1", detail=DETAIL)

    latencies = []
    for i in range(n):
        t0 = time.perf_counter()
        trail.record("card", actor=ACTOR, patient=f"p{i % 50}", ecg_id=f"e{i}", detail=DETAIL)
        latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]

    batched = []
    for i in range(n // 3):
        t0 = time.perf_counter()
        trail.record_many(
            [
                AuditRecord("fetch", actor=ACTOR, patient="p1", detail=DETAIL),
                AuditRecord("hook-call", actor=ACTOR, patient="p1", detail=DETAIL),
                AuditRecord("card", actor=ACTOR, patient="p1", ecg_id=f"b{i}", detail=DETAIL),
            ]
        )
        batched.append((time.perf_counter() - t0) * 1000)

    per_thread = n // threads

    def work() -> None:
        for i in range(per_thread):
            trail.record("classification", ecg_id=f"t{i}", model_version="m", detail=DETAIL)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    concurrent_rate = per_thread * threads / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    report = trail.verify()
    verify_s = time.perf_counter() - t0
    assert report.ok, report
    print(
        f"{engine.dialect.name:10s} append median {statistics.median(latencies):6.2f} ms, "
        f"p95 {p95:6.2f} ms (n={n}, one thread) | 3 in one record_many: "
        f"{statistics.median(batched):6.2f} ms | {threads} threads: "
        f"{concurrent_rate:7.0f} appends/s | verify {report.n_entries} entries: "
        f"{verify_s * 1000:7.1f} ms ({report.n_entries / verify_s:8.0f} entries/s)"
    )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        bench(f"sqlite:///{Path(folder) / 'audit.db'}", args.n, args.threads)

    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
    name = f"ecg_cds_bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        print(f"postgresql skipped: {exc.orig}")
        return
    try:
        bench(f"{args.pg.rpartition('/')[0]}/{name}", args.n, args.threads)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
