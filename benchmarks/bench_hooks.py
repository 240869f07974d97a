"""Hook latency and throughput against a running service, acting as the EHR over real HTTP.

Starts ``ecg-cds serve`` (and, with ``--mode distributed``, a private ``redis-server`` and an
``ecg-cds worker``) in a temporary folder, trusts a freshly generated ES384 key, and sends
``patient-view`` calls whose prefetch holds a PTB-XL record (10 s, 12 leads, 500 Hz) as a
FHIR Observation, the way an EHR would. Reports:

* (a) cached: the same ECG again and again (its result is already stored);
* (b) new: a different, never-seen ECG each call (store, classify, wait up to the hook
  budget), and how many of those calls got their result within the budget;
* (c) sustained requests/s of cached calls from several concurrent clients.

Tokens are signed before timing starts (an EHR signs its own; that cost is not ours).

    .venv/bin/python benchmarks/bench_hooks.py                     # embedded mode
    .venv/bin/python benchmarks/bench_hooks.py --mode distributed  # Redis + Celery worker
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ISS = "urn:ecg-cds:bench-ehr"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(name: str, latencies_ms: list[float]) -> dict[str, Any]:
    return {
        "case": name,
        "n": len(latencies_ms),
        "p50_ms": round(percentile(latencies_ms, 50), 1),
        "p95_ms": round(percentile(latencies_ms, 95), 1),
        "p99_ms": round(percentile(latencies_ms, 99), 1),
        "mean_ms": round(statistics.fmean(latencies_ms), 1),
    }


def observation_bundle(record: Path, index: int) -> dict[str, Any]:
    from adapters import load_ecg, to_fhir_observation

    ecg = load_ecg(record)
    observation = to_fhir_observation(
        ecg, patient_ref="Patient/bench", observation_id=f"bench-{record.stem}"
    )
    observation["effectiveDateTime"] = f"2024-01-{1 + index % 28:02d}T10:00:00Z"
    return {
        "ecgObservations": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": observation, "search": {"mode": "match"}}],
        },
        "ecgDocuments": None,
        "ecgImagingStudies": None,
    }


class Service:
    """The service (and its helpers) as child processes, stopped by PID."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        from cds_service.commands.ehr import DevKeys

        self.workdir = workdir
        self.keys = DevKeys(workdir / "keys", "ES384")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []
        env = {
            **os.environ,
            "ECG_CDS_DATA_DIR": str(workdir / "var"),
            "ECG_CDS_PUBLIC_BASE_URL": self.base,
            "ECG_CDS_AUTH__TRUSTED_ISSUERS": json.dumps(
                [{"iss": ISS, "jwks_file": str(self.keys.jwks_path)}]
            ),
            "ECG_CDS_JOBS__MODE": args.mode,
            "ECG_CDS_JOBS__HOOK_WAIT_BUDGET_S": str(args.budget),
            "ECG_CDS_LOG_LEVEL": "WARNING",
        }
        if args.model_dir:
            env["ECG_CDS_MODEL_DIR"] = str(args.model_dir)
        bin_dir = Path(sys.executable).parent
        if args.mode == "distributed":
            redis_port = free_port()
            redis = shutil.which("redis-server")
            if redis is None:
                raise SystemExit("redis-server is not installed (needed for --mode distributed)")
            self._spawn(
                [redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"],
                env, "redis.log",
            )  # fmt: skip
            env["ECG_CDS_JOBS__BROKER_URL"] = f"redis://127.0.0.1:{redis_port}/0"
            env["ECG_CDS_JOBS__RESULT_BACKEND"] = f"redis://127.0.0.1:{redis_port}/1"
            self._spawn(
                [str(bin_dir / "ecg-cds"), "worker", "--concurrency", str(args.workers),
                 "--loglevel", "warning"],
                env, "worker.log",
            )  # fmt: skip
        self._spawn(
            [str(bin_dir / "ecg-cds"), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env, "serve.log",
        )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # never leave a worker or Redis behind
            raise

    def _spawn(self, argv: list[str], env: dict[str, str], log: str) -> None:
        handle = (self.workdir / log).open("wb")
        self.processes.append(
            subprocess.Popen(argv, env=env, cwd=self.workdir, stdout=handle, stderr=handle)
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"service did not start; see {self.workdir}/serve.log")

    def token(self, service: str = "ecg-review") -> str:
        return self.keys.sign(iss=ISS, aud=f"{self.base}/cds-services/{service}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()


def hook_body(prefetch: dict[str, Any]) -> bytes:
    """A ``patient-view`` request body carrying ``prefetch``, with a fresh hookInstance."""
    return json.dumps(
        {
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/bench", "patientId": "bench"},
            "prefetch": prefetch,
        }
    ).encode()


def post(client: httpx.Client, url: str, content: bytes, token: str) -> httpx.Response:
    return client.post(
        url,
        content=content,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def call(client: httpx.Client, svc: Service, prefetch: dict[str, Any], token: str) -> Any:
    return post(client, f"{svc.base}/cds-services/ecg-review", hook_body(prefetch), token)


def pending(response: httpx.Response) -> bool:
    return any(c["summary"].startswith("AI analysis pending") for c in response.json()["cards"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["embedded", "distributed"], default="embedded")
    parser.add_argument("--cached", type=int, default=200, help="cached calls (sequential)")
    parser.add_argument("--new", type=int, default=30, help="new-ECG calls (sequential)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0, help="sustained phase, seconds")
    parser.add_argument("--budget", type=float, default=0.35, help="jobs.hook_wait_budget_s")
    parser.add_argument("--workers", type=int, default=1, help="distributed: worker processes")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "ptbxl" / "records500"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    records = sorted(args.data.glob("*/*_hr.hea"))
    if len(records) < args.new + 2:
        raise SystemExit(f"need {args.new + 2} records under {args.data}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    svc = Service(args, workdir)
    results: list[dict[str, Any]] = []
    try:
        with httpx.Client(timeout=60.0) as client:
            cached_prefetch = observation_bundle(records[0], 0)
            started = time.monotonic()
            while True:  # warm-up: model load and the first classification
                response = call(client, svc, cached_prefetch, svc.token())
                response.raise_for_status()
                if not pending(response):
                    break
                if time.monotonic() - started > 300:
                    raise SystemExit("the first classification did not finish in 300 s")
                time.sleep(0.5)
            print(f"warm-up (model load + first ECG): {time.monotonic() - started:.1f} s")

            tokens = [svc.token() for _ in range(args.cached)]
            latencies = []
            for token in tokens:
                t0 = time.perf_counter()
                response = call(client, svc, cached_prefetch, token)
                latencies.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200 and not pending(response)
            results.append(summary("(a) cached ECG", latencies))

            new_prefetches = [
                observation_bundle(r, i) for i, r in enumerate(records[1 : 1 + args.new])
            ]
            tokens = [svc.token() for _ in new_prefetches]
            latencies, in_budget = [], 0
            for prefetch, token in zip(new_prefetches, tokens, strict=True):
                t0 = time.perf_counter()
                response = call(client, svc, prefetch, token)
                latencies.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, response.text
                in_budget += 0 if pending(response) else 1
                time.sleep(0.2)  # let a late job finish so calls do not queue behind each other
            row = summary("(b) new ECG", latencies)
            row["result_within_budget"] = f"{in_budget}/{len(new_prefetches)}"
            results.append(row)

        tokens_needed = int(args.duration * 400) + 100
        token_pool = [svc.token() for _ in range(tokens_needed)]
        lock = threading.Lock()
        done: list[float] = []
        stop_at = time.monotonic() + args.duration

        def worker() -> None:
            with httpx.Client(timeout=60.0) as client:
                while time.monotonic() < stop_at:
                    with lock:
                        if not token_pool:
                            return
                        token = token_pool.pop()
                    t0 = time.perf_counter()
                    response = call(client, svc, cached_prefetch, token)
                    elapsed = (time.perf_counter() - t0) * 1000
                    if response.status_code == 200:
                        with lock:
                            done.append(elapsed)

        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        t0 = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - t0
        row = summary(f"(c) sustained, {args.concurrency} clients", done)
        row["requests_per_s"] = round(len(done) / wall, 1)
        results.append(row)
    finally:
        svc.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nmode={args.mode} budget={args.budget}s cores={os.cpu_count()} "
          f"payload=PTB-XL 10 s 12-lead 500 Hz as FHIR Observation prefetch")  # fmt: skip
    for row in results:
        extra = {
            k: v
            for k, v in row.items()
            if k not in ("case", "n", "p50_ms", "p95_ms", "p99_ms", "mean_ms")
        }
        print(
            f"{row['case']:<28} n={row['n']:<5} p50={row['p50_ms']:>7} ms  "
            f"p95={row['p95_ms']:>7} ms  p99={row['p99_ms']:>7} ms  "
            + " ".join(f"{k}={v}" for k, v in extra.items())
        )


if __name__ == "__main__":
    main()
