"""Ingest throughput (ECGs/s): embedded mode, and one and two ``ecg-cds worker`` processes on Redis.

"Ingest" is the whole path an ECG takes: read the file, parse and validate it, store the
original bytes (SHA-256 dedupe), record the audit entry, queue classification, classify
(quality gate, measurements, 46-label zero-shot scores), store the result, audit it. The
clock runs from the first upload to the last stored result; worker start-up (model load) is
excluded, as it happens once per process.

Also measured: the model's own cost per ECG in this process (``classify([ecg])``, one ECG per
call as a task does) -- the basis of the per-core capacity figures in deploy/CAPACITY.md.

Data: PTB-XL records (100 Hz, 10 s, 12 leads) from ``../shared/data/ptbxl/records100``,
stored as WFDB bundles (header + signal file).

``--modes outside-model`` measures what ingest costs besides the model: the embedded
pipeline of ``ecg-cds ingest FOLDER`` (read, parse, SHA-256, bundle, store, audit, queue,
store the result, audit) over PTB-XL 500 Hz records, with a classifier that hands back real
results computed beforehand (same shape and size): this process's CPU per ECG is then
everything but the model, the figure issue 11 asks to cut (median of 3 runs).

Run: ``.venv/bin/python benchmarks/bench_ingest.py [--n 100] [--modes embedded,1,2]
[--pg postgresql+psycopg://postgres@127.0.0.1:5432/test] [--redis redis://127.0.0.1:6379/9]``.
Distributed runs use PostgreSQL (a fresh database, dropped afterwards) when reachable, else a
SQLite file. Each worker is a separate process with one pool process and one torch thread.
The figures depend on the machine and on what else runs on it: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LATENCY_SAMPLES = 15
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from adapters import load_ecg  # noqa: E402
from cds_service.runtime import Runtime  # noqa: E402
from cds_service.settings import Settings  # noqa: E402


def ptbxl_headers(n: int) -> list[Path]:
    data = Path(os.environ.get("ECG_DATA_DIR", REPO.parent / "shared" / "data"))
    headers = sorted((data / "ptbxl" / "records100").rglob("*_lr.hea"))
    if len(headers) < n:
        raise SystemExit(f"only {len(headers)} PTB-XL records under {data}; lower --n")
    return headers[:n]


def run_ingest(runtime: Runtime, headers: list[Path], timeout_s: float) -> tuple[float, int]:
    """Accept + submit every header, wait for every result; (seconds, results stored)."""
    started = time.perf_counter()
    ids = []
    for header in headers:
        info = runtime.ecgs.accept_path(header)
        runtime.jobs.submit(info.id)
        ids.append(info.id)
    accepted = time.perf_counter() - started
    if len(headers) > 10:
        print(f"  upload side (accept + submit, one thread): {len(ids) / accepted:.1f} ECGs/s")
    deadline = time.monotonic() + timeout_s
    done: dict[str, Any] = {}
    while len(done) < len(ids) and time.monotonic() < deadline:
        pending = [i for i in ids if i not in done]
        got = runtime.jobs.wait(pending, timeout_s=min(5.0, deadline - time.monotonic()))
        done.update({k: v for k, v in got.items() if v is not None})
    return time.perf_counter() - started, len(done)


def miss_latency(runtime: Runtime, headers: list[Path]) -> float:
    """Median seconds from ``submit`` to the result being visible to ``wait`` for one ECG
    with an idle worker: what a hook pays on a cache miss (upload excluded)."""
    times = []
    for header in headers:
        info = runtime.ecgs.accept_path(header)
        t0 = time.perf_counter()
        runtime.jobs.submit(info.id)
        runtime.jobs.wait([info.id], timeout_s=30)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pg_database(admin_url: str) -> str | None:
    try:
        import psycopg

        with psycopg.connect(
            admin_url.replace("postgresql+psycopg://", "postgresql://"),
            autocommit=True,
            connect_timeout=3,
        ) as conn:
            name = f"ecgcds_bench_{uuid.uuid4().hex[:10]}"
            conn.execute(f'CREATE DATABASE "{name}"')
        return admin_url.rsplit("/", 1)[0] + "/" + name
    except Exception as exc:
        print(f"  (PostgreSQL unavailable: {exc}; using SQLite)")
        return None


def drop_pg(admin_url: str, url: str) -> None:
    import psycopg

    with psycopg.connect(
        admin_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def start_worker(env: dict[str, str], name: str, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "cds_service.cli", "worker",
        "--concurrency", "1", "--loglevel", "warning", "--hostname", f"{name}@%h",
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop worker process groups: SIGTERM, then SIGKILL what is still there after 30 s."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def bench_distributed(
    headers: list[Path],
    warmup: list[Path],
    latency_set: list[Path],
    workers: int,
    args: argparse.Namespace,
) -> tuple[float, int]:
    folder = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    pg_url = pg_database(args.pg) if args.pg else None
    db_url = pg_url or f"sqlite:///{folder / 'ecg-cds.db'}"
    queue = f"ecg-cds-bench-{uuid.uuid4().hex[:8]}"
    jobs = {"mode": "distributed", "broker_url": args.redis, "queue": queue}
    settings = Settings(data_dir=folder, database_url=db_url, jobs=jobs)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_CDS_")}
    env.update(
        {
            "ECG_CDS_JOBS__MODE": "distributed",
            "ECG_CDS_JOBS__BROKER_URL": args.redis,
            "ECG_CDS_JOBS__QUEUE": queue,
            "ECG_CDS_DATABASE_URL": db_url,
            "ECG_CDS_DATA_DIR": str(folder),
        }
    )
    if settings.model_dir is not None:
        env["ECG_CDS_MODEL_DIR"] = str(settings.model_dir)
    runtime = Runtime.start(settings)
    processes = [start_worker(env, f"bench{i}", folder / f"w{i}.log") for i in range(workers)]
    try:
        # Warm-up: one ECG per worker, so every pool process has loaded the model.
        run_ingest(runtime, warmup, timeout_s=300)
        figures = run_ingest(runtime, headers, timeout_s=args.timeout)
        miss = miss_latency(runtime, latency_set)
        print(f"  one ECG, submit to result visible: median {miss * 1000:.0f} ms")
        rss = ", ".join(f"{mb:.0f}" for mb in worker_rss_mb(processes))
        print(f"  worker processes' resident memory (MB): {rss}")
        return figures
    finally:
        stop_workers(processes)
        runtime.stop()
        if pg_url:
            drop_pg(args.pg, pg_url)


def bench_embedded(
    headers: list[Path], warmup: list[Path], latency_set: list[Path], args: argparse.Namespace
) -> tuple[float, int]:
    folder = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    settings = Settings(data_dir=folder, database_url=f"sqlite:///{folder / 'ecg-cds.db'}")
    runtime = Runtime.start(settings)
    try:
        run_ingest(runtime, warmup, timeout_s=300)
        figures = run_ingest(runtime, headers, timeout_s=args.timeout)
        miss = miss_latency(runtime, latency_set)
        print(f"  one ECG, submit to result visible: median {miss * 1000:.0f} ms")
        with runtime.session_factory() as session:
            blob, result = session.execute(
                sa.text(
                    "SELECT (SELECT avg(length(data)) FROM ecg_blobs),"
                    " (SELECT avg(length(CAST(result AS TEXT))) FROM results)"
                )
            ).one()
        print(
            f"  stored per ECG: {blob / 1024:.0f} KiB original bytes, "
            f"{result / 1024:.1f} KiB result"
        )
        return figures
    finally:
        runtime.stop()


class _Replay:
    """A classifier that hands back the given results in turn (the model's cost left out)."""

    def __init__(self, model_version: str, results: list[Any]) -> None:
        self.model_version = model_version
        self._results = results
        self._next = 0

    def classify(self, ecgs: list[Any]) -> list[Any]:
        out = [self._results[(self._next + k) % len(self._results)] for k in range(len(ecgs))]
        self._next += len(ecgs)
        return out


def bench_outside_model(n: int, repeats: int = 3) -> None:
    """CPU per ECG of an embedded folder ingest besides the model (see the module docstring),
    and the bytes stored per result."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_throughput import copy_records, ptbxl_500hz

    from cds_service.audit import Actor
    from cds_service.commands.ingest import ingest_settings, store_all, wait_all
    from models.classifier import ZeroShotClassifier

    headers = ptbxl_500hz(n)
    clf = ZeroShotClassifier.from_pretrained(Settings().model_dir)
    results = [
        r for i in range(0, n, 64) for r in clf.classify([load_ecg(h) for h in headers[i : i + 64]])
    ]
    work = Path(tempfile.mkdtemp(prefix="bench-outside-model-"))
    folder = copy_records(headers, work / "records")
    cpu: list[float] = []
    try:
        for repeat in range(repeats):
            data = work / f"var{repeat}"
            settings = ingest_settings(  # as `ecg-cds ingest` runs
                Settings(data_dir=data, database_url=f"sqlite:///{data / 'ecg-cds.db'}")
            )
            replay = _Replay(clf.model_version, results)
            runtime = Runtime.start(settings, role="cli", classifier=replay, resume=False)
            try:
                started = time.process_time()
                stored = store_all(
                    runtime, sorted(folder.glob("*.hea")), None, Actor(client="bench"), False
                )
                done = wait_all(runtime, stored.ids, 600.0, False)
                cpu.append((time.process_time() - started) * 1000 / n)
                if sum(done.values()) != n:
                    raise SystemExit(f"ingest stored {sum(done.values())} results of {n}")
                with runtime.session_factory() as session:
                    result, parts = session.execute(
                        sa.text(
                            "SELECT (SELECT sum(length(CAST(result AS TEXT))) FROM results),"
                            " (SELECT coalesce(sum(length(CAST(body AS TEXT))), 0)"
                            " FROM result_parts)"
                        )
                    ).one()
            finally:
                runtime.stop()
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(
        f"outside the model, {n} PTB-XL 500 Hz ECGs: CPU {statistics.median(cpu):.2f} ms per ECG "
        f"(runs {', '.join(f'{c:.2f}' for c in cpu)}); result {result / n / 1024:.1f} KiB per ECG "
        f"+ {parts / 1024:.1f} KiB of shared parts"
    )


def model_cost(headers: list[Path]) -> tuple[float, float]:
    """Median seconds per ``classify([ecg])`` with 1 torch thread, and with the default."""
    from models.classifier import ZeroShotClassifier

    ecgs = [load_ecg(h) for h in headers]
    out = []
    for threads in (1, None):
        clf = ZeroShotClassifier.from_pretrained(Settings().model_dir, threads=threads)
        clf.classify(ecgs[:2])  # warm caches
        times = []
        for ecg in ecgs:
            t0 = time.perf_counter()
            clf.classify([ecg])
            times.append(time.perf_counter() - t0)
        out.append(statistics.median(times))
    return out[0], out[1]


def task_cost(headers: list[Path]) -> float:
    """Median seconds a worker core spends per ECG: the ``classify_ecg`` task body run
    sequentially (re-read the stored bytes, quality gate, measurements, scores, store the
    result, audit), one torch thread, SQLite -- what one pool process does per task."""
    import torch

    from cds_service.jobs import work

    folder = Path(tempfile.mkdtemp(prefix="bench-task-"))
    settings = Settings(data_dir=folder, database_url=f"sqlite:///{folder / 'ecg-cds.db'}")
    runtime = Runtime.start(settings, role="worker", resume=False)
    try:
        torch.set_num_threads(1)
        ids = [runtime.ecgs.accept_path(h).id for h in headers]
        work.classify_ecgs(runtime, ids[:2])  # warm up
        times = []
        for ecg_id in ids[2:]:
            t0 = time.perf_counter()
            work.classify_ecgs(runtime, [ecg_id])
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    finally:
        runtime.stop()


def worker_rss_mb(processes: list[subprocess.Popen[bytes]]) -> list[float]:
    """Resident memory of every process in the workers' process groups (Linux /proc)."""
    groups = {p.pid for p in processes}
    sizes = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) in groups:  # field 5 of stat: the process group id
                sizes.append(int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20)
        except (OSError, IndexError, ValueError):
            continue
    return sorted(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100, help="ECGs per run")
    parser.add_argument("--modes", default="embedded,1,2", help="embedded and/or worker counts")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    if args.modes == "outside-model":
        print(f"{os.cpu_count()} cores; load average {os.getloadavg()}")
        bench_outside_model(args.n)
        return

    headers = ptbxl_headers(args.n + 4 + LATENCY_SAMPLES)
    warmup, latency_set, headers = (
        headers[:4],
        headers[4 : 4 + LATENCY_SAMPLES],
        headers[4 + LATENCY_SAMPLES :],
    )
    print(f"{args.n} PTB-XL ECGs per run; {os.cpu_count()} cores; load average {os.getloadavg()}")
    one, default = model_cost(headers[:30])
    print(
        f"model alone, one ECG per call: median {one * 1000:.0f} ms with 1 torch thread "
        f"({1 / one:.1f} ECGs/s/core), {default * 1000:.0f} ms with the default threads"
    )
    task = task_cost(headers[:30])
    print(
        f"classify_ecg task body per ECG (storage + model + audit, 1 thread): median "
        f"{task * 1000:.0f} ms ({1 / task:.1f} ECGs/s per worker process)"
    )
    print(f"{'mode':<28}{'seconds':>10}{'ECGs/s':>10}{'stored':>10}")
    for mode in args.modes.split(","):
        if mode == "embedded":
            seconds, stored = bench_embedded(headers, warmup, latency_set, args)
            label = "embedded (thread, SQLite)"
        else:
            seconds, stored = bench_distributed(headers, warmup, latency_set, int(mode), args)
            label = f"{mode} worker(s) on Redis"
        print(f"{label:<28}{seconds:>10.1f}{stored / seconds:>10.2f}{stored:>10}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
