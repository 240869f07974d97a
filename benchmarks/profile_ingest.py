"""Where an embedded ``ecg-cds ingest FOLDER`` spends its time, thread by thread (issue 11).

Runs what ``bench_throughput``'s ingest row runs (store_all + wait_all, model already
loaded, SQLite in a temporary data dir) on PTB-XL 500 Hz records, and reports:

* wall time, and CPU seconds of every thread of this process (main thread: reading, parsing,
  storing; ``ecg-job-*``: classification jobs: encoder, scoring, result storage, audit) and
  of the signal-work processes (read from /proc), per ECG;
* a sampling profile: every ``--interval`` seconds each thread's Python stack is sampled;
  a sample whose innermost frame is a wait (lock, queue, future) counts as idle; the others
  are added up per function (inclusive) and per innermost frame, per thread group.

Run: ``PYTHONPATH=$PWD .venv/bin/python benchmarks/profile_ingest.py [--n 192] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

#: Innermost frames that mean the thread waits (holds no CPU).
_IDLE = {"wait", "_wait_for_tstate_lock", "get", "result", "sleep", "select", "acquire", "poll"}


def _group(name: str) -> str:
    if name.startswith("ecg-job"):
        return "job"
    if name == "MainThread":
        return "main"
    return "other"


def _label(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for root in (str(REPO) + "/", "/site-packages/", "/lib/python3"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    return f"{path}:{code.co_name}"


class Sampler:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.leaf: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.samples: collections.Counter[str] = collections.Counter()
        self.busy: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval):
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                group = _group(names.get(ident, "?"))
                self.samples[group] += 1
                if frame.f_code.co_name in _IDLE:
                    continue
                self.busy[group] += 1
                self.leaf[group][_label(frame)] += 1
                seen: set[str] = set()
                f: FrameType | None = frame
                while f is not None:
                    label = _label(f)
                    if label not in seen:
                        seen.add(label)
                        self.inclusive[group][label] += 1
                    f = f.f_back


def _worker_gc() -> tuple[int, int]:
    import gc

    stats = gc.get_stats()
    return os.getpid(), stats[2]["collections"]


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children() -> list[int]:
    pid = os.getpid()
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = task / "children"
        if children.exists():
            out += [int(c) for c in children.read_text().split()]
    return out


def _thread_cpu() -> dict[str, float]:
    out: dict[str, float] = collections.defaultdict(float)
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            out[_group(thread.name) + ":" + thread.name] += time.clock_gettime(clock)
        except OSError:
            pass
    return out


GC: dict[str, float] = {"s": 0.0, "n": 0, "t": 0.0}


def _gc_callback(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        GC["t"] = time.perf_counter()
    elif info.get("generation") == 2:
        GC["s"] += time.perf_counter() - GC["t"]
        GC["n"] += 1


EVENTS: list[tuple[str, str, float, float, int]] = []


def _trace(owner: object, name: str) -> None:
    """Record each call of ``owner.name`` (thread, name, start, end, batch size)."""
    original = getattr(owner, name)

    def traced(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            size = next((len(a) for a in args if isinstance(a, list)), 0)
            EVENTS.append((threading.current_thread().name, name, start, time.perf_counter(), size))

    setattr(owner, name, traced)


def _timeline(t0: float) -> None:
    for thread, name, start, end, size in sorted(EVENTS, key=lambda e: e[2]):
        print(
            f"  {thread:12s} {name:22s} {1000 * (start - t0):7.0f} -> {1000 * (end - t0):7.0f} ms"
            f" ({1000 * (end - start):5.0f} ms, {size})"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from bench_throughput import copy_records, ptbxl_500hz

    from adapters import load_ecg
    from cds_service.audit import Actor, AuditTrail
    from cds_service.commands.ingest import ingest_settings, store_all, wait_all
    from cds_service.jobs import work as work_module
    from cds_service.runtime import Runtime
    from cds_service.settings import Settings
    from cds_service.storage.ecgs import EcgStore
    from cds_service.storage.jobs import JobLedger
    from models import ZeroShotClassifier

    _trace(EcgStore, "accept_paths")
    _trace(JobLedger, "store_results")
    _trace(AuditTrail, "record_many")
    _trace(work_module, "_classify_each")
    _trace(work_module, "classify_ecgs")
    import gc

    gc.callbacks.append(_gc_callback)
    headers = ptbxl_500hz(args.n)
    clf = ZeroShotClassifier.from_pretrained(threads=2)
    clf.classify([load_ecg(h) for h in headers[:64]])  # warm, as bench_throughput does
    ecgs = [load_ecg(h) for h in headers]
    for _ in range(2):
        kids = _children()
        k0 = {pid: _proc_cpu_s(pid) for pid in kids}
        t, c = time.perf_counter(), time.process_time()
        for i in range(0, len(ecgs), 64):
            clf.classify(ecgs[i : i + 64])
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        kcpu = sum(_proc_cpu_s(pid) - k0[pid] for pid in kids)
        print(
            f"classify alone: {len(ecgs) / wall:.1f} ECGs/s, main process CPU "
            f"{cpu * 1000 / len(ecgs):.2f} ms/ECG, signal-work processes "
            f"{kcpu * 1000 / len(ecgs):.2f} ms/ECG"
        )
    work = Path(tempfile.mkdtemp(prefix="profile-ingest-"))
    folder = copy_records(headers, work / "records")
    sampler = Sampler(args.interval)
    walls: list[float] = []
    main_cpu: dict[str, float] = collections.defaultdict(float)
    worker_cpu = 0.0
    try:
        for repeat in range(args.repeats):
            data = work / f"var{repeat}"
            settings = ingest_settings(
                Settings(data_dir=data, database_url=f"sqlite:///{data / 'ecg-cds.db'}")
            )
            runtime = Runtime.start(settings, role="cli", classifier=clf, resume=False)
            try:
                kids = _children()
                k0 = {pid: _proc_cpu_s(pid) for pid in kids}
                if repeat == 1 or args.repeats == 1:
                    sampler.start()
                EVENTS.clear()
                GC.update(s=0.0, n=0)
                before = _thread_cpu()
                t0 = time.perf_counter()
                c0 = time.process_time()
                files = sorted(folder.glob("*.hea"))
                outcome = store_all(runtime, files, None, Actor(client="profile"), False)
                results = wait_all(runtime, outcome.ids, 1800.0, False)
                wall = time.perf_counter() - t0
                threads = _thread_cpu()
                cpu = time.process_time() - c0
                if repeat == 1 or args.repeats == 1:
                    sampler.stop()
                assert sum(results.values()) == len(headers), results
                from models.signal_work import _SHARED

                pool = next(iter(_SHARED.values()))
                print(
                    "  worker gen-2 collections so far:",
                    sorted({pool.submit(_worker_gc).result() for _ in range(8)}),
                )
                kcpu = sum(_proc_cpu_s(pid) - k0[pid] for pid in kids)
                walls.append(wall)
                if repeat == args.repeats - 1:
                    _timeline(t0)
                if repeat >= 1 or args.repeats == 1:
                    worker_cpu += kcpu
                    main_cpu["process"] += cpu
                    for name, value in threads.items():
                        main_cpu[name] += value - before.get(name, 0.0)
                print(
                    f"run {repeat}: {len(headers) / wall:.1f} ECGs/s, wall {wall:.2f} s, "
                    f"main process CPU {cpu * 1000 / len(headers):.2f} ms/ECG, "
                    f"signal-work processes {kcpu * 1000 / len(headers):.2f} ms/ECG "
                    f"({len(kids)} processes), load {os.getloadavg()[0]:.2f}, "
                    f"gen-2 GC {GC['n']} x, {GC['s'] * 1000:.0f} ms, "
                    f"tracked {len(__import__('gc').get_objects())}"
                )
            finally:
                runtime.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    measured = max(1, args.repeats - 1)
    n = len(headers) * measured
    print("\nthread CPU, ms/ECG:")
    for name, value in sorted(main_cpu.items()):
        if name != "process":
            print(f"  {name}: {value * 1000 / n:.2f}")
    print(f"  process total (measured runs): {main_cpu['process'] * 1000 / n:.2f}")
    print(f"  signal-work processes: {worker_cpu * 1000 / n:.2f}")
    for group in sorted(sampler.samples):
        total, busy = sampler.samples[group], sampler.busy[group]
        print(f"\n== {group}: {busy}/{total} samples busy ({busy / max(total, 1):.0%})")
        print("  inclusive:")
        for label, count in sampler.inclusive[group].most_common(args.top):
            print(f"    {count / max(busy, 1):6.1%} {label}")
        print("  innermost:")
        for label, count in sampler.leaf[group].most_common(args.top):
            print(f"    {count / max(busy, 1):6.1%} {label}")


if __name__ == "__main__":
    main()
