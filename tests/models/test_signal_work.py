"""The per-ECG signal work on worker processes gives exactly what the calling process gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adapters import load_ecg
from models.classifier import ZeroShotClassifier
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
