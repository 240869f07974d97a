"""The per-ECG signal work of a classification, spread over the machine's cores.

Everything :meth:`ZeroShotClassifier.classify` does to one ECG before the encoder (quality
gate, measurements, preprocessing into model windows) is plain numpy/scipy/neurokit2 and
mostly holds the GIL: threads cannot run it on two cores at once (measured: 1.3x CPU use at
best with two threads). :class:`SignalWorkPool` runs it in worker processes instead; the
encoder stays in the calling process (torch's own threads), so a batch uses every core.

The workers are forked (as torch's own DataLoader workers are) on the first batch of
:data:`MIN_POOL_BATCH` ECGs, then used for every batch. They never call torch. ``spawn``
would re-import the caller's main script in every worker, which breaks any script without
an ``if __name__ == "__main__"`` guard. Where child processes cannot be started (a daemonic
Celery pool process, a platform without fork), or the pool breaks, the work runs in the
caller, with the same results.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from adapters import Ecg, EcgSource
from models.config import EcgClipConfig
from models.results import Measurement, QualityReport

if TYPE_CHECKING:  # imported where used: scipy is not needed to import this module
    from models.resampling import Spectra

log = logging.getLogger(__name__)

#: A batch this large starts the pool (forking is quick, the workers' imports take a second
#: or two in the background); once started, every batch goes to it, even one ECG: the work
#: then leaves the caller's GIL to its other threads (the uploader, the web server).
MIN_POOL_BATCH = 2


@dataclass(frozen=True)
class SignalWork:
    """One ECG's quality report, measurements and model windows (None when rejected)."""

    quality: QualityReport
    measurements: dict[str, Measurement]
    windows: np.ndarray | None

    @property
    def acceptable(self) -> bool:
        return self.quality.acceptable

    def model_input(self) -> np.ndarray:
        if self.windows is None:
            raise ValueError("a rejected ECG has no model input")
        return self.windows


def analyse(ecg: Ecg, config: EcgClipConfig) -> SignalWork:
    """Quality gate, measurements and (for an acceptable ECG) preprocessing of one ECG."""
    from models.preprocessing import preprocess
    from models.quality import assess_quality
    from models.resampling import Spectra

    # The record's spectra, shared by both resamplings (100 and 250 Hz); the quality gate
    # leaves there how much mains hum the leads can carry.
    spectra = Spectra()
    quality = assess_quality(ecg, spectra)
    windows = preprocess(ecg, config, spectra).windows if quality.acceptable else None
    return SignalWork(quality=quality, measurements=measurements_of(ecg, spectra), windows=windows)


def analyse_many(ecgs: Sequence[Ecg], config: EcgClipConfig) -> list[SignalWork]:
    return [analyse(ecg, config) for ecg in ecgs]


def measurements_of(ecg: Ecg, spectra: Spectra | None = None) -> dict[str, Measurement]:
    """One ECG's measurements; a failure gives ``{}`` (it must not cost the classification)."""
    from models.measurements import measure

    try:
        return measure(ecg, spectra)
    except Exception as exc:  # a measurement failure must not cost the classification
        log.warning("measurements failed for %s: %s", ecg.source.uri or ecg.source.format, exc)
        return {}


#: How often a worker checks that the process which forked it is still there.
PARENT_CHECK_S = 0.5


def _start_worker(parent: int) -> None:
    """Worker start: never outlive the parent, then pay the heavy imports.

    A forked worker inherits the parent's Python signal handlers (uvicorn's SIGTERM handler
    only sets a flag, so a worker would ignore SIGTERM), and when the parent is killed
    outright (SIGKILL, out of memory) nothing tells the worker, which then waits on its queue
    for ever: orphans that hold memory and, in a service restarted many times, pile up. So
    SIGTERM gets its default action back, and a daemon thread exits the worker once its
    parent is gone. (``PR_SET_PDEATHSIG`` would fire when the parent's *thread* that forked
    the worker ends, which here is whichever thread ran the first batch.)
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    one_blas_thread()  # one of ``processes`` workers spanning the cores
    _warm_worker()


def one_blas_thread() -> None:
    """Limit numpy/scipy's BLAS (OpenBLAS) to one thread in this process.

    By default it starts a thread per core, which synchronise at every call and spin-wait
    between calls. A process whose siblings already hold the cores (a signal-work worker, the
    caller of a started pool, a Celery prefork child) gains nothing from them, and on shared
    cores a product as small as a batch's similarities to the label texts waits for a
    descheduled BLAS thread: 100 such products (8 x 256 by 256 x 353 and by 256 x 60) with
    5 ms pauses took 958 ms of CPU and 7.7 s on 2 cores at load average 11, 16 ms and 1.7 s
    on one BLAS thread. Without threadpoolctl (a scikit-learn dependency) nothing changes.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return
    with contextlib.suppress(Exception):  # a BLAS it cannot limit is left as it is
        threadpool_limits(1, user_api="blas")


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def _warm_worker() -> None:
    """Pay the heavy imports before the first batch arrives."""
    with contextlib.suppress(Exception):  # measured again (and reported) on the first ECG
        warm_up()


def warm_up(config: EcgClipConfig | None = None) -> SignalWork:
    """Run the whole signal work once on a synthetic 12-lead ECG (10 s, 500 Hz, 72/min).

    Every lazy import, filter design and first-call cost of the quality gate, the
    measurements and the preprocessing is paid here rather than by the first ECG of a hook
    call, whichever modules they come to use (warming one part, such as the R-peak detector,
    leaves the others cold).
    """
    fs, seconds = 500.0, 10.0
    t = np.arange(int(fs * seconds)) / fs
    phase = (t * 1.2) % 1.0  # 72 beats per minute
    beat = (
        0.15 * np.exp(-(((phase - 0.20) / 0.020) ** 2))  # P
        + 1.0 * np.exp(-(((phase - 0.35) / 0.008) ** 2))  # QRS
        + 0.30 * np.exp(-(((phase - 0.62) / 0.040) ** 2))  # T
    )
    leads = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    gains = np.linspace(0.4, 1.2, len(leads))[:, None]
    signal = (gains * beat[None, :]).astype(np.float32)
    ecg = Ecg(signal, fs, leads, EcgSource("synthetic", None, "0" * 64))
    return analyse(ecg, config or EcgClipConfig())


class SignalWorkPool:
    """Runs :func:`analyse` over a batch on ``processes`` worker processes (or in the caller)."""

    def __init__(
        self,
        processes: int,
        on_cores_taken: Callable[[], None] | None = None,
        *,
        shared: bool = True,
    ) -> None:
        self.processes = max(1, processes)
        self._on_cores_taken = on_cores_taken
        self._shared = shared
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._disabled = self.processes < 2

    def run(self, ecgs: Sequence[Ecg], config: EcgClipConfig) -> list[SignalWork]:
        """One :class:`SignalWork` per ECG, in input order."""
        return [work for part in self.parts(ecgs, config) for work in part]

    def parts(self, ecgs: Sequence[Ecg], config: EcgClipConfig) -> Iterator[list[SignalWork]]:
        """The batch's work in consecutive parts, in input order, as each part finishes: the
        caller can run the encoder on one part while the workers prepare the next."""
        if self._disabled or (self._executor is None and len(ecgs) < MIN_POOL_BATCH):
            yield analyse_many(ecgs, config)
            return
        executor = self._start()
        if executor is None:
            yield analyse_many(ecgs, config)
            return
        # A few parts per process: enough to overlap, few enough IPC round trips.
        step = max(4, -(-len(ecgs) // (2 * self.processes)))
        starts = list(range(0, len(ecgs), step))
        done = 0
        try:
            futures = [
                executor.submit(analyse_many, list(ecgs[i : i + step]), config) for i in starts
            ]
            for future in futures:
                part = future.result()
                done += len(part)
                yield part
        except BrokenProcessPool:  # a worker died (killed, out of memory): finish it here
            log.warning("signal-work pool broke; the rest of this batch runs in this process")
            self.close()  # the next batch starts fresh workers
            yield analyse_many(ecgs[done:], config)

    def start(self) -> bool:
        """Start the worker processes now and wait until each has done its imports; False
        when the work runs in the caller (one process, or no fork here)."""
        executor = self._start()
        if executor is None:
            return False
        for future in [executor.submit(_warm_worker) for _ in range(self.processes)]:
            future.result()
        return True

    def _start(self) -> ProcessPoolExecutor | None:
        with self._lock:
            if self._executor is not None or self._disabled:
                return self._executor
            try:
                if multiprocessing.current_process().daemon:
                    # One of a pool of processes (a Celery prefork child) whose siblings
                    # already span the cores: the caller's threads would only contend.
                    if self._on_cores_taken is not None:
                        self._on_cores_taken()
                    raise RuntimeError("daemonic processes cannot have children")
                self._executor = (
                    _shared_executor(self.processes)
                    if self._shared
                    else _new_executor(self.processes)
                )
                if not self._shared:
                    atexit.register(self.close)
                if self._on_cores_taken is not None:
                    self._on_cores_taken()
            except (OSError, RuntimeError, ValueError) as exc:
                log.info("signal work runs in this process (%s)", exc)
                self._disabled = True
            return self._executor

    def close(self) -> None:
        """Stop using the workers (and stop them, unless they are the process's shared ones)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        if self._shared:
            _drop_shared(self.processes, executor)
        else:
            executor.shutdown(wait=True, cancel_futures=True)


def _new_executor(processes: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(os.getpid(),),
    )


#: One set of workers per process and size: every classifier in a process (tests load several)
#: shares them, so no classifier leaves idle workers behind. Stopped at exit.
_SHARED: dict[int, ProcessPoolExecutor] = {}
_SHARED_LOCK = threading.Lock()


def _shared_executor(processes: int) -> ProcessPoolExecutor:
    with _SHARED_LOCK:
        executor = _SHARED.get(processes)
        if executor is None:
            executor = _SHARED[processes] = _new_executor(processes)
            if len(_SHARED) == 1:
                atexit.register(_close_shared)
        return executor


def _drop_shared(processes: int, executor: ProcessPoolExecutor) -> None:
    """A broken shared pool is replaced on next use (the workers are not reused)."""
    with _SHARED_LOCK:
        if _SHARED.get(processes) is executor:
            del _SHARED[processes]
    executor.shutdown(wait=False, cancel_futures=True)


def _close_shared() -> None:
    with _SHARED_LOCK:
        executors = list(_SHARED.values())
        _SHARED.clear()
    for executor in executors:
        executor.shutdown(wait=True, cancel_futures=True)
