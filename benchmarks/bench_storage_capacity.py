"""What the database and the audit chain sustain under concurrent writers: the storage side of
a backfill, measured on PostgreSQL, for deploy/CAPACITY.md.

Each writer is a separate process (as ``ecg-cds worker`` pool processes are) doing exactly
what a classification batch does after the model: :meth:`JobLedger.mark_jobs` (running),
:meth:`JobLedger.store_results` (one transaction for the batch's results, the shipped
model's real result for a PTB-XL record as the payload) and one
:meth:`AuditTrail.record_many` with one entry per classification (the chain's lock taken
once per batch). Reported per (writers, batch size): stored ECGs/s and audit entries/s, and,
apart, the audit chain alone (``record_many`` of ``batch`` entries) under the same writers.

Run: ``.venv/bin/python benchmarks/bench_storage_capacity.py [--seconds 4]
[--writers 1,2,4,8] [--batches 1,16,64] [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]``.
A fresh PostgreSQL database is created and dropped. The writers share this machine's cores
with PostgreSQL itself (and, here, with other jobs): on a dedicated database server the
figures are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def _sample_result() -> dict[str, Any]:
    from adapters import load_ecg
    from models import ZeroShotClassifier

    data = Path(os.environ.get("ECG_DATA_DIR", REPO.parent / "shared" / "data"))
    record = sorted((data / "ptbxl" / "records500").rglob("*_hr.hea"))[0]
    clf = ZeroShotClassifier.from_pretrained(threads=1)
    return clf.classify([load_ecg(record)])[0].to_dict()


def _seed(url: str, n: int) -> list[str]:
    """``n`` ECG rows (no blobs: the writers only need rows to attach results to)."""
    from sqlalchemy import insert

    from cds_service.storage.base import make_engine
    from cds_service.storage.migrate import upgrade
    from cds_service.storage.tables import EcgRow, utcnow

    engine = make_engine(url)
    upgrade(engine)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    now = utcnow()
    rows = [
        {
            "id": i, "sha256": uuid.uuid4().hex * 2, "source_uri": f"file:///bench/{i}",
            "format": "wfdb", "container": "zip", "n_leads": 12, "fs": 500.0,
            "duration_s": 10.0, "size_bytes": 120_000, "status": "pending",
            "created_at": now, "updated_at": now,
        }
        for i in ids
    ]  # fmt: skip
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(EcgRow.__table__), rows[start : start + 5000])  # type: ignore[arg-type]
    engine.dispose()
    return ids


class _NoDispatch:
    """The ledger's dispatcher is used only by ``submit``, which this benchmark never calls."""

    in_process = False

    def enqueue(self, task: str, *args: Any, bulk: bool = False, **kwargs: Any) -> None:
        raise AssertionError("not used")

    def shutdown(self) -> None:
        pass


def _writer(
    url: str,
    ids: list[str],
    batch: int,
    result: dict[str, Any],
    audit_only: bool,
    start_at: float,
    stop_at: float,
    out: Any,
) -> None:
    from cds_service.audit import AuditRecord, AuditTrail
    from cds_service.settings import Settings
    from cds_service.storage.base import make_engine, make_session_factory
    from cds_service.storage.jobs import JobLedger
    from models.results import ClassificationResult

    engine = make_engine(url)
    sessions = make_session_factory(engine)
    trail = AuditTrail(sessions)
    version = str(result["model_version"])
    ledger = JobLedger(Settings(), sessions, _NoDispatch(), lambda: version)
    parsed = ClassificationResult.from_dict(result)
    while time.time() < start_at:
        time.sleep(0.001)
    done = 0
    for offset in range(0, len(ids), batch):
        if time.time() >= stop_at:
            break
        chunk = ids[offset : offset + batch]
        records = [
            AuditRecord(
                "classification", ecg_id=i, model_version=version, patient="Patient/bench",
                detail={"acceptable": True, "top": ["normal_ecg", "sinus_rhythm", "lvh"]},
            )
            for i in chunk
        ]  # fmt: skip
        if not audit_only:
            ledger.mark_jobs("classify", chunk, version, "running")
            ledger.store_results([(i, parsed) for i in chunk])
        trail.record_many(records)
        done += len(chunk)
    out.put((done, time.time()))
    engine.dispose()


def run(
    url: str, ids: list[str], writers: int, batch: int, seconds: float, result: dict[str, Any],
    audit_only: bool,
) -> float:  # fmt: skip
    """ECGs (or audit entries) per second over all writers, each on its own slice of ids."""
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    share = len(ids) // writers
    start_at = time.time() + 1.0  # every writer connected before the clock starts
    stop_at = start_at + seconds
    processes = [
        context.Process(
            target=_writer,
            args=(
                url,
                ids[k * share : (k + 1) * share],
                batch,
                result,
                audit_only,
                start_at,
                stop_at,
                out,
            ),
        )
        for k in range(writers)
    ]
    for process in processes:
        process.start()
    reports = [out.get(timeout=seconds + 120) for _ in processes]
    for process in processes:
        process.join()
    total = sum(done for done, _ in reports)
    elapsed = max(end for _, end in reports) - start_at
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--writers", default="1,2,4,8")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    from bench_ingest import drop_pg, pg_database

    result = _sample_result()
    import json

    size_kib = len(json.dumps(result)) / 1024
    url = pg_database(args.pg)
    if url is None:
        raise SystemExit("PostgreSQL is needed for this benchmark")
    writers = [int(w) for w in args.writers.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()}; result payload {size_kib:.1f} KiB"
    )

    def need(batch: int, w: int) -> int:  # enough ids that no writer runs out in time
        return int((2500 if batch > 1 else 400) * args.seconds * w)

    try:
        ids = _seed(url, sum(need(b, w) for b in batches for w in writers))
        cursor = 0
        rows = []
        for audit_only in (False, True):
            for batch in batches:
                for w in writers:
                    n = need(batch, w)
                    slice_ids = ids[cursor : cursor + n]
                    if len(slice_ids) < n:
                        cursor, slice_ids = 0, ids[:n]  # reused only by the audit-only runs
                    cursor += n
                    rate = run(url, slice_ids, w, batch, args.seconds, result, audit_only)
                    what = "audit chain alone" if audit_only else "results + jobs + audit"
                    rows.append((what, batch, w, rate))
                    print(
                        f"{what:<24} batch {batch:>3}  writers {w}:  {rate:8.0f} ECGs/s", flush=True
                    )
    finally:
        drop_pg(args.pg, url)
    print(f"load average after: {os.getloadavg()}")
    print()
    print("| storage path | batch | writers | ECGs/s |")
    print("|---|---|---|---|")
    for what, batch, w, rate in rows:
        print(f"| {what} | {batch} | {w} | {rate:.0f} |")


if __name__ == "__main__":
    main()
