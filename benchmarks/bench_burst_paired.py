"""Paired, interleaved hook-burst benchmark: tells two (or more) builds apart on a noisy machine.

``bench_throughput``'s burst row is one burst of 48 calls against one build; on 2 shared
cores it moves from 4 % to 100 % on the same code, so two builds measured minutes apart
cannot be compared. This runs one service per build *at the same time* (each from its own
checkout, its own database) and sends many short bursts, alternating the builds within each
round (order swapped every round), with the same never-seen PTB-XL ECGs for every build in a
round. Whatever load the machine has then falls on the builds alike; the per-round paired
difference and its sign count say whether one build is better.

A burst: ``--clients`` concurrent EHR clients, each sending ``--calls`` / ``--clients``
``patient-view`` calls back to back, each call carrying a never-seen ECG as a FHIR
Observation prefetch (as ``bench_throughput``). Per call: the latency and whether the cards
carry the result (not "analysis pending"). Between two bursts the service just measured is
left to go quiet (its pending classifications finish: its processes' CPU time stops
growing), so one build's leftovers never run during the other's burst. Also per burst: the
CPU seconds the service's processes (web process and signal-work workers) spent on it.

    .venv/bin/python benchmarks/bench_burst_paired.py \\
        --build old=/work/wt-burst-old --build new=/work/wt-burst --rounds 20

``--budget`` sets ``jobs.hook_wait_budget_s`` on every service (default 0.35, the hook
budget; a larger one makes every call wait for its result, so latency = time to result).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_hooks import (  # noqa: E402
    ISS,
    free_port,
    hook_body,
    observation_bundle,
    pending,
    post,
)

TICKS = os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (from /proc)."""
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


@dataclass
class Build:
    label: str
    checkout: Path
    work: Path
    keys: Any
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    shares: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    answered_ms: list[float] = field(default_factory=list)  # latencies of calls with a result
    cpu_s: list[float] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/cds-services/ecg-review"

    def start(self, budget: float, extra: dict[str, str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_CDS_")}
        env.update(
            {
                "ECG_CDS_DATA_DIR": str(self.work / "var"),
                "ECG_CDS_PUBLIC_BASE_URL": self.base,
                "ECG_CDS_AUTH__TRUSTED_ISSUERS": json.dumps(
                    [{"iss": ISS, "jwks_file": str(self.keys.jwks_path)}]
                ),
                "ECG_CDS_JOBS__HOOK_WAIT_BUDGET_S": str(budget),
                "ECG_CDS_LOG_LEVEL": "WARNING",
                "PYTHONPATH": os.pathsep.join(
                    filter(None, (extra.get("PYTHONPATH"), str(self.checkout)))
                ),
            }
        )
        env.update(
            {k: v.replace("{label}", self.label) for k, v in extra.items() if k != "PYTHONPATH"}
        )
        command = [
            sys.executable, "-m", "uvicorn", "cds_service.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
            "--log-level", "warning",
        ]  # fmt: skip
        log = (self.work / "serve.log").open("wb")
        self.process = subprocess.Popen(command, env=env, cwd=self.checkout, stdout=log, stderr=log)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.process is not None
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"{self.label}: service did not start; see {self.work}/serve.log")
            time.sleep(0.2)

    def token(self) -> str:
        return str(self.keys.sign(iss=ISS, aud=self.url))

    def cpu_s_now(self) -> float:
        assert self.process is not None
        return _tree_cpu_s(self.process.pid)

    def quiet(self, timeout_s: float = 30.0) -> None:
        """Wait until the service's processes use under 3 % CPU over 0.2 s."""
        deadline = time.monotonic() + timeout_s
        before = self.cpu_s_now()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.cpu_s_now()
            if now - before < 0.006:
                return
            before = now

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def burst(build: Build, prefetches: list[dict[str, Any]], clients: int) -> list[tuple[float, bool]]:
    """One burst against ``build``: (latency ms, carried its result) per call."""
    bodies = [hook_body(p) for p in prefetches]
    tokens = [build.token() for _ in bodies]
    out: list[tuple[float, bool]] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client_loop(i: int) -> None:
        with httpx.Client(timeout=60.0) as client:
            for k in range(i, len(bodies), clients):
                t0 = time.perf_counter()
                response = post(client, build.url, bodies[k], tokens[k])
                elapsed = (time.perf_counter() - t0) * 1000
                if response.status_code != 200:
                    with lock:
                        errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    return
                with lock:
                    out.append((elapsed, not pending(response)))

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"{build.label}: {errors[0]}")
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def ptbxl_500hz(n: int) -> list[Path]:
    data = Path(os.environ.get("ECG_DATA_DIR", REPO.parent / "shared" / "data"))
    headers = sorted((data / "ptbxl" / "records500").rglob("*_hr.hea"))[:n]
    if len(headers) < 2:
        raise SystemExit(f"no PTB-XL 500 Hz records under {data}")
    return headers


def renamed(prefetch: dict[str, Any], suffix: str) -> dict[str, Any]:
    """The prefetch with its Observation under another id: a never-seen ECG again (the
    content hash covers the id), the same signal, so every round's ECGs are alike."""
    bundle = prefetch["ecgObservations"]
    entry = bundle["entry"][0]
    resource = {**entry["resource"], "id": f"{entry['resource']['id']}-{suffix}"}
    return {**prefetch, "ecgObservations": {**bundle, "entry": [{**entry, "resource": resource}]}}


def start_all(
    builds: list[Build],
    args: argparse.Namespace,
    extra: dict[str, str],
    warm: list[dict[str, Any]],
    *,
    warm_burst: bool,
) -> None:
    """Start every build's service and warm it as ``bench_throughput`` does (the first ECG
    until its result is there, then two new ECGs), plus one burst with ``warm_burst``."""
    for build in builds:
        build.work.mkdir(exist_ok=True)
        build.start(args.budget, extra)
    for build in builds:
        build.wait_ready()
    for build in builds:
        with httpx.Client(timeout=60.0) as client:
            started = time.monotonic()
            while pending(post(client, build.url, hook_body(warm[0]), build.token())):
                if time.monotonic() - started > 300:
                    raise SystemExit(f"{build.label}: first classification took > 300 s")
                time.sleep(0.3)
            for prefetch in warm[1:3]:
                post(client, build.url, hook_body(prefetch), build.token())
        if warm_burst:
            burst(build, warm[3 : 3 + args.calls], args.clients)
        build.quiet()


def stop_all(builds: list[Build]) -> None:
    for build in builds:
        build.stop()
        shutil.rmtree(build.work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="append", required=True, help="LABEL=CHECKOUT")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=16, help="new-ECG calls per burst")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--budget", type=float, default=0.35, help="jobs.hook_wait_budget_s")
    parser.add_argument("--records", type=int, default=200, help="PTB-XL records to cycle over")
    parser.add_argument("--seed", type=int, default=0, help="order of builds within rounds")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start the services again for every round (the first burst after a start)",
    )
    parser.add_argument("--json", type=Path, help="write every call's figures here")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        help="KEY=VALUE for every service ({label}: the build's label; PYTHONPATH is prepended)",
    )
    args = parser.parse_args()
    # A plain ``kill`` still stops the services (the finally below), never leaves them behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from cds_service.commands.ehr import DevKeys

    root = Path(tempfile.mkdtemp(prefix="bench-burst-paired-"))
    keys = DevKeys(root / "keys", "ES384")
    builds: list[Build] = []
    for spec in args.build:
        label, _, checkout = spec.partition("=")
        work = root / label
        work.mkdir()
        builds.append(Build(label, Path(checkout).resolve(), work, keys))
    warm_n = 3 + args.calls
    records = ptbxl_500hz(args.records)
    bundles = [observation_bundle(h, i) for i, h in enumerate(records)]
    rng = random.Random(args.seed)
    load_before = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load_before}", flush=True)
    rows: list[dict[str, Any]] = []
    extra = dict(item.partition("=")[::2] for item in args.server_env)
    try:
        if not args.fresh:
            start_all(builds, args, extra, [renamed(b, "warm") for b in bundles], warm_burst=True)
        for r in range(args.rounds):
            first = warm_n + r * args.calls
            prefetches = [
                renamed(bundles[(first + i) % len(bundles)], f"r{r}") for i in range(args.calls)
            ]
            if args.fresh:  # bench_throughput's case: the first burst after a start
                stop_all(builds)
                warm = [renamed(b, f"warm{r}") for b in bundles]
                start_all(builds, args, extra, warm, warm_burst=False)
            order = list(builds)
            rng.shuffle(order)
            line = []
            for build in order:
                build.quiet()
                cpu0 = build.cpu_s_now()
                calls = burst(build, prefetches, args.clients)
                build.quiet()
                cpu = build.cpu_s_now() - cpu0
                share = sum(ok for _, ok in calls) / len(calls)
                build.shares.append(share)
                build.cpu_s.append(cpu)
                build.latencies_ms.extend(ms for ms, _ in calls)
                build.answered_ms.extend(ms for ms, ok in calls if ok)
                rows.append(
                    {"round": r, "build": build.label, "share": share, "cpu_s": cpu,
                     "calls": [[round(ms, 1), ok] for ms, ok in calls],
                     "load": os.getloadavg()[0]}
                )  # fmt: skip
                p50 = percentile([ms for ms, _ in calls], 50)
                line.append(f"{build.label} {share:4.0%} p50 {p50:4.0f} ms cpu {cpu:4.2f} s")
            print(f"round {r:2d} (load {os.getloadavg()[0]:.2f}): " + " | ".join(line), flush=True)
    finally:
        stop_all(builds)
        if args.json is not None:
            args.json.write_text(json.dumps(rows))
        shutil.rmtree(root, ignore_errors=True)
    report(builds, args, load_before)


def report(builds: list[Build], args: argparse.Namespace, load_before: tuple[float, ...]) -> None:
    print()
    print(
        f"{len(builds[0].shares)} rounds x {args.calls} calls per build, {args.clients} clients, "
        f"budget {args.budget} s; load average before {load_before[0]:.2f}, "
        f"after {os.getloadavg()[0]:.2f}"
    )
    print("| build | median share | mean share | latency p50 / p90 ms | CPU s per burst |")
    print("|---|---|---|---|---|")
    for b in builds:
        print(
            f"| {b.label} | {statistics.median(b.shares):.0%} | {statistics.fmean(b.shares):.0%} "
            f"| {percentile(b.latencies_ms, 50):.0f} / {percentile(b.latencies_ms, 90):.0f} "
            f"| {statistics.median(b.cpu_s):.2f} |"
        )
    base = builds[0]
    for other in builds[1:]:
        diffs = [o - a for a, o in zip(base.shares, other.shares, strict=True)]
        wins = sum(d > 0 for d in diffs)
        losses = sum(d < 0 for d in diffs)
        median = statistics.median(diffs)
        print(
            f"{other.label} - {base.label}: median paired difference {median:+.0%}"
            f" (mean {statistics.fmean(diffs):+.1%}); {other.label} higher in {wins} rounds, "
            f"lower in {losses}, equal in {len(diffs) - wins - losses}"
        )


if __name__ == "__main__":
    main()
