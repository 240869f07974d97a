"""Throughput of every path, each as a ratio to a bare ECG encoder measured in the same run.

The anchor is MERL's published ECG encoder (Liu et al., "Zero-Shot ECG Classification with
Multimodal Learning and Test-time Clinical Knowledge Enhancement", ICML 2024): a ResNet18-1D
(basic blocks of two kernel-3 convolutions, 2 blocks per stage, 64-128-256-512 channels, a
kernel-7 stride-2 stem with max-pool, global average pooling; 3.85 M parameters), written
out below from that architecture, random weights (speed does not depend on them), forward
only on 12 x 1000 inputs, batch 64, 2 torch threads. It stands for "as fast as the model".

Every path is measured between two anchor samples, and its ratio is taken to the mean of the
two: on a machine shared with other jobs the absolute figures move by a factor of two or more
within minutes, so only ratios measured side by side mean anything. Paths:

* ``classify``: :meth:`ZeroShotClassifier.classify` (quality gate, measurements, scores) in
  batches of 64, PTB-XL 500 Hz records already parsed;
* ``ingest``: what ``ecg-cds ingest FOLDER`` does in embedded mode (read each file, parse,
  SHA-256, store, audit, classify, store the result, audit), model already loaded, SQLite;
* ``backfill``: ``ecg-cds ingest --backfill`` over stored ECGs with 1 and 2 ``ecg-cds worker``
  processes (one pool process each) on Redis + PostgreSQL, clock from enqueue to the last
  stored result;
* ``hook burst``: 8 concurrent EHR clients, each ``patient-view`` call carrying a never-seen
  ECG as a FHIR Observation prefetch: the share of calls answered with their result within
  the hook budget (0.35 s);
* ``cached``: 8 concurrent clients calling with an already classified ECG: requests/s,
  p95 and the server process's CPU per call (all its threads, from /proc) against a bare
  endpoint in the same app that only reads and parses the same body.

Run: ``.venv/bin/python benchmarks/bench_throughput.py [--n 192] [--skip backfill,hooks]``
(Redis and PostgreSQL on loopback for the backfill; ``--pg``/``--redis`` point elsewhere).
Prints a Markdown table (the README's speed table) after the raw figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastapi import Request  # at module level: FastAPI resolves the endpoint's annotations here
from fastapi.responses import JSONResponse
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

ANCHOR_BATCH = 64
ANCHOR_THREADS = 2
HOOK_CLIENTS = 8


# -- the anchor: MERL's ResNet18-1D ECG encoder -------------------------------------------------


class _BasicBlock1d(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class AnchorResNet18_1d(nn.Module):
    """ResNet18-1D as published for MERL: (batch, 12, samples) -> (batch, 512)."""

    def __init__(self, leads: int = 12) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(leads, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm1d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        blocks: list[nn.Module] = []
        c_in = 64
        for stage, c_out in enumerate((64, 128, 256, 512)):
            blocks.append(_BasicBlock1d(c_in, c_out, 1 if stage == 0 else 2))
            blocks.append(_BasicBlock1d(c_out, c_out, 1))
            c_in = c_out
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(self.stem(x))).flatten(1)


class Anchor:
    """Samples the anchor's ECGs/s (median of 3 forwards of one batch) whenever asked."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = AnchorResNet18_1d().eval()
        self.batch = torch.randn(ANCHOR_BATCH, 12, 1000)
        self.samples: list[float] = []
        self.cpu_ms: list[float] = []  # process CPU time per ECG: steadier than wall time
        self.sample()  # first call pays one-off kernel selection

    @property
    def parameters_m(self) -> float:
        return sum(p.numel() for p in self.model.parameters()) / 1e6

    def sample(self) -> float:
        threads = torch.get_num_threads()
        torch.set_num_threads(ANCHOR_THREADS)
        try:
            times = []
            with torch.inference_mode():
                for _ in range(3):
                    t0, c0 = time.perf_counter(), time.process_time()
                    self.model(self.batch)
                    times.append(time.perf_counter() - t0)
                    self.cpu_ms.append((time.process_time() - c0) * 1000 / ANCHOR_BATCH)
        finally:
            torch.set_num_threads(threads)
        rate = ANCHOR_BATCH / statistics.median(times)
        self.samples.append(rate)
        return rate


@dataclass
class Row:
    """One path's figures: its own rate per repeat and the anchor beside each repeat."""

    path: str
    unit: str
    values: list[float] = field(default_factory=list)
    anchors: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # this process's CPU ms per ECG
    note: str = ""

    @property
    def value(self) -> float:
        return statistics.median(self.values)

    @property
    def ratio(self) -> float:
        return statistics.median(v / a for v, a in zip(self.values, self.anchors, strict=True))


def bracketed(anchor: Anchor, row: Row, measure: Callable[[], float]) -> float:
    """Run ``measure`` between two anchor samples; record both in ``row``."""
    before = anchor.sample()
    value = measure()
    after = anchor.sample()
    row.values.append(value)
    row.anchors.append((before + after) / 2)
    return value


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) of another process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (process pools included)."""
    own = time.process_time()
    children = os.times()
    return own + children.children_user + children.children_system


# -- data ---------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name: the ratios depend on it (the anchor is torch's convolutions,
    the paths mostly numpy and Python; an AVX-512 Intel core and an AMD EPYC core rank them
    differently), so a table names the CPU it was measured on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def ptbxl_500hz(n: int) -> list[Path]:
    data = Path(os.environ.get("ECG_DATA_DIR", REPO.parent / "shared" / "data"))
    headers = sorted((data / "ptbxl" / "records500").rglob("*_hr.hea"))
    if len(headers) < n:
        raise SystemExit(f"only {len(headers)} PTB-XL 500 Hz records under {data}; lower --n")
    return headers[:n]


def copy_records(headers: list[Path], folder: Path) -> Path:
    """The records (header + signal file) copied into ``folder``: one folder to ingest."""
    folder.mkdir(parents=True, exist_ok=True)
    for header in headers:
        for part in header.parent.glob(header.stem + ".*"):
            shutil.copy2(part, folder / part.name)
    return folder


# -- paths --------------------------------------------------------------------------------------


def bench_classify(anchor: Anchor, clf: Any, headers: list[Path], repeats: int) -> Row:
    from adapters import load_ecg

    ecgs = [load_ecg(h) for h in headers]
    clf.classify(ecgs[:ANCHOR_BATCH])  # warm: label embeddings, measurement imports, pools
    row = Row("classify() in batches of 64 (quality + measurements + scores)", "ECGs/s")

    def run() -> float:
        t0, c0 = time.perf_counter(), _cpu_s()
        for start in range(0, len(ecgs), ANCHOR_BATCH):
            clf.classify(ecgs[start : start + ANCHOR_BATCH])
        row.cpu_ms.append((_cpu_s() - c0) * 1000 / len(ecgs))
        return len(ecgs) / (time.perf_counter() - t0)

    for _ in range(repeats):
        bracketed(anchor, row, run)
    return row


def bench_ingest(anchor: Anchor, clf: Any, headers: list[Path], repeats: int) -> Row:
    from cds_service.audit import Actor
    from cds_service.commands.ingest import ingest_settings, store_all, wait_all
    from cds_service.runtime import Runtime
    from cds_service.settings import Settings

    row = Row("ingest, embedded (parse, hash, store, classify, result, audit)", "ECGs/s")
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    folder = copy_records(headers, work / "records")
    try:
        for repeat in range(repeats):
            data = work / f"var{repeat}"
            settings = ingest_settings(  # as `ecg-cds ingest` runs
                Settings(data_dir=data, database_url=f"sqlite:///{data / 'ecg-cds.db'}")
            )
            runtime = Runtime.start(settings, role="cli", classifier=clf, resume=False)

            def run(runtime: Runtime = runtime) -> float:
                t0, c0 = time.perf_counter(), _cpu_s()
                files = sorted(folder.glob("*.hea"))  # what `ecg-cds ingest FOLDER` reads
                outcome = store_all(runtime, files, None, Actor(client="bench"), False)
                results = wait_all(runtime, outcome.ids, 1800.0, False)
                elapsed = time.perf_counter() - t0
                row.cpu_ms.append((_cpu_s() - c0) * 1000 / len(headers))
                done = sum(results.values())  # True: a result stored
                if done != len(headers):
                    raise SystemExit(f"ingest stored {done} results of {len(headers)}")
                return done / elapsed

            try:
                bracketed(anchor, row, run)
            finally:
                runtime.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return row


def bench_backfill(
    anchor: Anchor, headers: list[Path], warmup: list[Path], workers: int, args: argparse.Namespace
) -> Row:
    """Store the ECGs without classifying, start ``workers`` workers, time the backfill."""
    import sqlalchemy as sa
    from bench_ingest import drop_pg, pg_database, start_worker, stop_workers

    from cds_service.runtime import Runtime
    from cds_service.settings import Settings
    from cds_service.storage.tables import ResultRow

    row = Row(f"backfill, {workers} worker process(es), Redis + PostgreSQL", "ECGs/s")
    pg_url = pg_database(args.pg)
    if pg_url is None:
        row.note = "PostgreSQL unavailable: not measured"
        return row
    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    folder = copy_records(headers, work / "records")
    queue = f"ecg-cds-bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=work,
        database_url=pg_url,
        jobs={"mode": "distributed", "broker_url": args.redis, "queue": queue},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_CDS_")}
    env.update(
        {
            "ECG_CDS_JOBS__MODE": "distributed",
            "ECG_CDS_JOBS__BROKER_URL": args.redis,
            "ECG_CDS_JOBS__QUEUE": queue,
            "ECG_CDS_DATABASE_URL": pg_url,
            "ECG_CDS_DATA_DIR": str(work),
        }
    )
    runtime = Runtime.start(settings, role="cli", resume=False)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        ids = [runtime.ecgs.accept_path(p).id for p in sorted(folder.glob("*.hea"))]
        processes = [start_worker(env, f"bf{i}", work / f"w{i}.log") for i in range(workers)]
        warm = [runtime.ecgs.accept_path(p).id for p in warmup]
        for ecg_id in warm:  # every pool process loads the model before the clock starts
            runtime.jobs.submit(ecg_id)
        if None in runtime.jobs.wait(warm, timeout_s=300).values():
            raise SystemExit(f"workers did not warm up; see {work}/w*.log")

        def run() -> float:
            t0 = time.perf_counter()
            runtime.dispatcher.enqueue(
                "backfill", bulk=True, source_prefix=folder.resolve().as_uri() + "/"
            )
            deadline = time.monotonic() + args.timeout
            count = 0
            while time.monotonic() < deadline:
                with runtime.session_factory() as session:
                    count = (
                        session.scalar(
                            sa.select(sa.func.count())
                            .select_from(ResultRow)
                            .where(ResultRow.ecg_id.in_(ids))
                        )
                        or 0
                    )
                if count == len(ids):
                    break
                time.sleep(0.05)
            if count != len(ids):
                raise SystemExit(f"backfill stored {count} of {len(ids)} results in time")
            return len(ids) / (time.perf_counter() - t0)

        bracketed(anchor, row, run)
    finally:
        stop_workers(processes)
        runtime.stop()
        drop_pg(args.pg, pg_url)
        shutil.rmtree(work, ignore_errors=True)
    return row


# -- hooks: the service over real HTTP, with a bare endpoint beside it ---------------------------

FLOOR_PATH = "/bench/floor"


def app_with_floor() -> Any:
    """The service's app plus ``POST /bench/floor``: read the body, parse it, answer an empty
    card list (the HTTP + JSON floor every hook call pays). Used only by this benchmark."""
    from cds_service.app import create_app

    app = create_app()

    @app.post(FLOOR_PATH, include_in_schema=False)
    async def floor(request: Request) -> JSONResponse:
        json.loads(await request.body())
        return JSONResponse({"cards": []})

    return app


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def bench_hooks(anchor: Anchor, headers: list[Path], args: argparse.Namespace) -> list[Row]:
    import httpx
    from bench_hooks import ISS, free_port, hook_body, observation_bundle, pending, post

    from cds_service.commands.ehr import DevKeys

    work = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    keys = DevKeys(work / "keys", "ES384")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_CDS_")}
    env.update(
        {
            "ECG_CDS_DATA_DIR": str(work / "var"),
            "ECG_CDS_PUBLIC_BASE_URL": base,
            "ECG_CDS_AUTH__TRUSTED_ISSUERS": json.dumps(
                [{"iss": ISS, "jwks_file": str(keys.jwks_path)}]
            ),
            "ECG_CDS_LOG_LEVEL": "WARNING",
            "PYTHONPATH": f"{REPO / 'benchmarks'}{os.pathsep}{REPO}",
        }
    )
    command = [
        sys.executable, "-m", "uvicorn", "bench_throughput:app_with_floor", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen(command, env=env, cwd=work, stdout=log, stderr=log)
    url = f"{base}/cds-services/ecg-review"

    def token() -> str:
        return str(keys.sign(iss=ISS, aud=url))

    burst = Row(f"hook burst: {HOOK_CLIENTS} clients, new ECGs, result within 0.35 s", "share")
    cached_rps = Row(f"cached hook calls, {HOOK_CLIENTS} clients", "requests/s")
    cached_p95 = Row(f"cached hook calls, {HOOK_CLIENTS} clients, p95", "ms")
    floor_rps = Row(f"bare endpoint (read + parse the same body), {HOOK_CLIENTS} clients", "req/s")
    floor_p95 = Row(f"bare endpoint, {HOOK_CLIENTS} clients, p95", "ms")
    # The server's CPU per answered call (all its threads, not its child processes, which
    # cached calls do not use; work still running after a phase's last answer counts in the
    # next one): what the requests/s ratio is made of where the event loop is the limit.
    cached_cpu = Row(f"cached hook calls, {HOOK_CLIENTS} clients, server CPU", "CPU ms/call")
    floor_cpu = Row(f"bare endpoint, {HOOK_CLIENTS} clients, server CPU", "CPU ms/call")
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"service did not start; see {work}/serve.log")
            time.sleep(0.2)
        cached_prefetch = observation_bundle(headers[0], 0)
        cached_body = hook_body(cached_prefetch)
        with httpx.Client(timeout=60.0) as client:
            started = time.monotonic()
            while pending(post(client, url, hook_body(cached_prefetch), token())):
                if time.monotonic() - started > 300:
                    raise SystemExit("the first classification did not finish in 300 s")
                time.sleep(0.3)
            for warm in headers[1:3]:  # the first new-ECG calls pay one-off imports
                post(client, url, hook_body(observation_bundle(warm, 1)), token())

        def clients(work_of: Callable[[int, httpx.Client], None]) -> float:
            threads = [
                threading.Thread(target=lambda i=i: _client(work_of, i))
                for i in range(HOOK_CLIENTS)
            ]
            t0 = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return time.perf_counter() - t0

        def _client(work_of: Callable[[int, httpx.Client], None], i: int) -> None:
            with httpx.Client(timeout=60.0) as client:
                work_of(i, client)

        # (1) burst of new ECGs: each client sends its own never-seen ECGs, back to back.
        per_client = max(1, args.burst_calls // HOOK_CLIENTS)
        fresh = headers[3 : 3 + per_client * HOOK_CLIENTS]
        bodies = [hook_body(observation_bundle(h, i)) for i, h in enumerate(fresh)]
        tokens = [token() for _ in bodies]
        answered: list[bool] = []
        lock = threading.Lock()

        def send_new(i: int, client: httpx.Client) -> None:
            for k in range(i, len(bodies), HOOK_CLIENTS):
                response = post(client, url, bodies[k], tokens[k])
                response.raise_for_status()
                with lock:
                    answered.append(not pending(response))

        def burst_share() -> float:
            clients(send_new)
            return sum(answered) / max(1, len(answered))

        bracketed(anchor, burst, burst_share)

        # (2) cached calls against the bare endpoint, alternated, each for --hook-seconds.
        def sustained(target: str) -> tuple[float, float, float]:
            pool = [token() for _ in range(int(args.hook_seconds * 600) + 50)]
            latencies: list[float] = []
            refused: list[str] = []
            cpu_before = _process_cpu_s(server.pid)
            stop_at = time.monotonic() + args.hook_seconds

            def loop(_: int, client: httpx.Client) -> None:
                while time.monotonic() < stop_at:
                    with lock:
                        if not pool:
                            return
                        tok = pool.pop()
                    t0 = time.perf_counter()
                    response = post(client, target, cached_body, tok)
                    elapsed = (time.perf_counter() - t0) * 1000
                    with lock:
                        if response.status_code == 200:
                            latencies.append(elapsed)
                        else:
                            refused.append(f"HTTP {response.status_code}: {response.text[:300]}")
                            return

            wall = clients(loop)
            cpu_ms = 1000 * (_process_cpu_s(server.pid) - cpu_before) / max(1, len(latencies))
            if refused or not latencies:
                raise SystemExit(f"{target}: {refused[:1] or 'no answer'}")
            return len(latencies) / wall, percentile(latencies, 95), cpu_ms

        for _ in range(args.hook_rounds):
            for target, rps_row, p95_row, cpu_row in (
                (url, cached_rps, cached_p95, cached_cpu),
                (base + FLOOR_PATH, floor_rps, floor_p95, floor_cpu),
            ):
                box: list[float] = []

                def measure(target: str = target, box: list[float] = box) -> float:
                    rps, p95, cpu_ms = sustained(target)
                    box.extend((p95, cpu_ms))
                    return rps

                bracketed(anchor, rps_row, measure)
                for row, value in ((p95_row, box[0]), (cpu_row, box[1])):
                    row.values.append(value)
                    row.anchors.append(rps_row.anchors[-1])
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(work, ignore_errors=True)
    return [burst, cached_rps, cached_p95, cached_cpu, floor_rps, floor_p95, floor_cpu]


# -- report -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=192, help="ECGs per classify/ingest/backfill run")
    parser.add_argument("--repeats", type=int, default=3, help="classify and ingest repeats")
    parser.add_argument("--skip", default="", help="comma list of: classify,ingest,backfill,hooks")
    parser.add_argument("--workers", default="1,2", help="backfill worker counts")
    parser.add_argument("--burst-calls", type=int, default=48, help="new-ECG hook calls in all")
    parser.add_argument("--hook-seconds", type=float, default=6.0)
    parser.add_argument("--hook-rounds", type=int, default=2)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import logging

    logging.basicConfig(level=logging.WARNING)
    from models import ZeroShotClassifier

    headers = ptbxl_500hz(min(500, args.n + 8 + args.burst_calls))
    print(
        f"{os.cpu_count()} cores ({cpu_model()}), load average {os.getloadavg()}, "
        f"torch {torch.__version__}"
    )
    anchor = Anchor()
    print(
        f"anchor: ResNet18-1D (MERL), {anchor.parameters_m:.2f} M parameters, 12 x 1000, "
        f"batch {ANCHOR_BATCH}, {ANCHOR_THREADS} torch threads: {anchor.samples[0]:.0f} ECGs/s"
    )
    clf = ZeroShotClassifier.from_pretrained(threads=2)
    rows: list[Row] = []
    if "classify" not in skip:
        rows.append(bench_classify(anchor, clf, headers[: args.n], args.repeats))
        _print(rows[-1])
    if "ingest" not in skip:
        rows.append(bench_ingest(anchor, clf, headers[: args.n], args.repeats))
        _print(rows[-1])
    if "backfill" not in skip:
        for workers in (int(w) for w in args.workers.split(",")):
            rows.append(bench_backfill(anchor, headers[: args.n], headers[-8:-4], workers, args))
            _print(rows[-1])
    if "hooks" not in skip:
        for row in bench_hooks(anchor, headers[args.n :], args):
            rows.append(row)
            _print(row)
    print(f"load average after: {os.getloadavg()}")
    print()
    report(anchor, rows)


def _print(row: Row) -> None:
    if not row.values:
        print(f"{row.path}: {row.note}")
        return
    figures = ", ".join(f"{v:.3g}" for v in row.values)
    anchors = ", ".join(f"{a:.0f}" for a in row.anchors)
    cpu = ""
    if row.cpu_ms:  # worker processes of the signal-work pool are not in this figure
        cpu = f"; this process's CPU {statistics.median(row.cpu_ms):.1f} ms per ECG"
    print(f"{row.path}: {figures} {row.unit} (anchor beside each: {anchors} ECGs/s){cpu}")


def report(anchor: Anchor, rows: list[Row]) -> None:
    """The Markdown table: medians, and each path's ratio to the anchor beside it."""
    median_anchor = statistics.median(anchor.samples)
    spread = f"{min(anchor.samples):.0f}-{max(anchor.samples):.0f}"
    print("| path | median | ratio to the anchor beside it |")
    print("|---|---|---|")
    print(
        f"| anchor: MERL ResNet18-1D forward, batch 64, 2 threads | {median_anchor:.0f} ECGs/s "
        f"(range {spread} over {len(anchor.samples)} samples) | 1 |"
    )
    for row in rows:
        if not row.values:
            print(f"| {row.path} | {row.note} | |")
            continue
        if row.unit == "ECGs/s":
            print(f"| {row.path} | {row.value:.0f} ECGs/s | {row.ratio:.2f}x |")
        elif row.unit == "share":
            print(f"| {row.path} | {row.value:.0%} of calls | |")
        elif "bare" in row.path:
            print(f"| {row.path} | {row.value:.3g} {row.unit} | |")
        elif row.unit == "requests/s":
            ratio = _paired(row, _floor_row(rows, "req/s"))
            print(f"| {row.path} | {row.value:.0f} requests/s | {ratio:.2f}x the bare endpoint |")
        elif row.unit == "CPU ms/call":
            ratio = _paired(row, _floor_row(rows, row.unit))
            print(
                f"| {row.path} | {row.value:.2f} ms per call | {ratio:.2f}x the bare endpoint's |"
            )
        else:
            ratio = _paired(row, _floor_row(rows, "ms"))
            print(f"| {row.path} | {row.value:.0f} ms | {ratio:.2f}x the bare endpoint's |")


def _floor_row(rows: list[Row], unit: str) -> Row | None:
    return next((r for r in rows if r.path.startswith("bare endpoint") and r.unit == unit), None)


def _paired(row: Row, floor: Row | None) -> float:
    """Median over rounds of the path's figure over the bare endpoint's in the same round."""
    if floor is None or not floor.values:
        return float("nan")
    return statistics.median(a / b for a, b in zip(row.values, floor.values, strict=False))


if __name__ == "__main__":
    main()
