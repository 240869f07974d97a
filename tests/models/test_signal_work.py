"""The per-ECG signal work on worker processes gives exactly what the calling process gives."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adapters import Ecg, load_ecg
from models.classifier import ZeroShotClassifier
from models.config import EcgClipConfig
from models.signal_work import MIN_POOL_BATCH, SignalWorkPool, analyse_many


def _batch(ptbxl_dir: Path, formats_dir: Path) -> list:
    records = sorted((ptbxl_dir / "records500").rglob("*_hr.hea"))[: MIN_POOL_BATCH + 3]
    ecgs = [load_ecg(p) for p in records]
    # A rejected ECG in the middle (a flat recording): order and gaps must survive the pool.
    flat = ecgs[2].with_signal(np.zeros_like(ecgs[2].signal), list(ecgs[2].leads))
    return [*ecgs[:4], flat, *ecgs[4:], load_ecg(formats_dir / "wfdb" / "s0010_re.hea")]


def test_pool_results_equal_in_process_results(
    classifier: ZeroShotClassifier, ptbxl_dir: Path, formats_dir: Path
) -> None:
    ecgs = _batch(ptbxl_dir, formats_dir)
    pool = SignalWorkPool(2, shared=False)  # its own workers, stopped below
    try:
        pooled = pool.run(ecgs, classifier.config)
        assert pool._executor is not None  # the batch really went to worker processes
    finally:
        pool.close()
    local = analyse_many(ecgs, classifier.config)
    assert len(pooled) == len(local) == len(ecgs)
    assert not pooled[4].acceptable and pooled[4].windows is None
    for a, b in zip(pooled, local, strict=True):
        assert a.quality == b.quality
        assert a.measurements == b.measurements
        if b.windows is None:
            assert a.windows is None
        else:
            assert a.windows is not None and np.array_equal(a.windows, b.windows)


def test_classify_through_the_pool_matches_one_at_a_time(
    classifier: ZeroShotClassifier, ptbxl_dir: Path, formats_dir: Path
) -> None:
    ecgs = _batch(ptbxl_dir, formats_dir)
    batched = classifier.classify(ecgs)  # a pool-sized batch (2 threads: 2 processes)
    single = [classifier.classify([ecg])[0] for ecg in ecgs]  # below the pool's minimum
    for a, b in zip(batched, single, strict=True):
        assert a.quality == b.quality and a.measurements == b.measurements
        assert [s.label_id for s in a.scores] == [s.label_id for s in b.scores]
        for x, y in zip(a.scores, b.scores, strict=True):
            assert abs(x.probability - y.probability) < 1e-5


def test_single_process_pool_never_forks(classifier: ZeroShotClassifier, ptbxl_dir: Path) -> None:
    ecgs = [
        load_ecg(p) for p in sorted((ptbxl_dir / "records500").rglob("*_hr.hea"))[:MIN_POOL_BATCH]
    ]
    pool = SignalWorkPool(1)
    assert len(pool.run(ecgs, classifier.config)) == len(ecgs)
    assert pool._executor is None


def _daemonic_child(
    ecgs: list[Ecg], config: EcgClipConfig, out: multiprocessing.Queue[object]
) -> None:
    taken: list[bool] = []
    pool = SignalWorkPool(2, on_cores_taken=lambda: taken.append(True), shared=False)
    works = pool.run(ecgs, config)
    out.put((len(works), pool._executor is None, taken))


def test_a_daemonic_pool_process_works_in_place_and_gives_up_the_cores(
    classifier: ZeroShotClassifier, ptbxl_dir: Path
) -> None:
    """In a Celery prefork child (daemonic: no children of its own) the work runs in the
    caller, and the caller is told its siblings hold the cores (the encoder then takes one
    torch thread instead of contending with them)."""
    ecgs = [
        load_ecg(p) for p in sorted((ptbxl_dir / "records500").rglob("*_hr.hea"))[:MIN_POOL_BATCH]
    ]
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_daemonic_child, args=(ecgs, classifier.config, out))
    child.daemon = True
    child.start()
    try:
        n, in_place, taken = out.get(timeout=120)
    finally:
        child.join(30)
    assert (n, in_place, taken) == (len(ecgs), True, [True])


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]


def test_workers_run_blas_on_one_thread() -> None:
    """A worker is one of the processes that span the cores: BLAS threads of its own would
    only spin and wait for each other there."""
    pool = SignalWorkPool(2, shared=False)
    try:
        assert pool.start() and pool._executor is not None
        assert set(pool._executor.submit(_blas_threads).result(timeout=120)) <= {1}
    finally:
        pool.close()


_POOL_OWNER = """
import signal, sys, time
from models.signal_work import SignalWorkPool
signal.signal(signal.SIGTERM, lambda *_: None)  # as uvicorn's handler: only sets a flag
pool = SignalWorkPool(2, shared=False)
assert pool.start()
print(" ".join(str(pid) for pid in pool._executor._processes), flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_running(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if _running(pid)]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_workers_do_not_outlive_a_killed_parent() -> None:
    """A service killed outright (SIGKILL, out of memory) leaves no signal workers behind,
    and a worker does not inherit a SIGTERM handler that would make it ignore SIGTERM."""
    owner = subprocess.Popen(
        [sys.executable, "-c", _POOL_OWNER], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    workers: list[int] = []
    try:
        assert owner.stdout is not None
        workers = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(workers) == 2 and all(_running(pid) for pid in workers)
        os.kill(workers[0], signal.SIGTERM)  # the default action again: it ends
        assert _wait_gone(workers[:1], 20) == []
        owner.kill()  # no atexit, no shutdown: only the workers' own check can end them
        owner.wait(timeout=20)
        assert _wait_gone(workers[1:], 20) == []
    finally:
        owner.kill()
        owner.wait(timeout=20)
        for pid in workers:  # when the test fails, leave no orphans behind either
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_warm_up_runs_every_part_of_the_signal_work() -> None:
    """The warm-up of a service or pool worker runs the whole analysis (quality gate,
    measurements, preprocessing into model windows) on a synthetic ECG, so the first hook
    call pays no lazy import or first-call cost; the old warm-up ran one R-peak detection."""
    code = (
        "import sys\n"
        "from models.signal_work import warm_up\n"
        "work = warm_up()\n"
        "rate = work.measurements['heart_rate'].value\n"
        "print(work.quality.acceptable, work.windows is not None, round(rate),\n"
        "      'models.preprocessing' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[2],
        check=True,
    )
    assert done.stdout.split() == ["True", "True", "72", "True"]
