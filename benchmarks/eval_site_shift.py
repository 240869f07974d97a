"""Site shift: held-out AUROC when the records look as another hospital's carts make them.

Another hospital's ECGs differ from ours less in their patients than in their equipment:
sampling rate, the cart's filters, mains hum at 50 or 60 Hz, electrode noise, baseline
wander, record length, the leads stored, the amplitude resolution. This applies each of those
to the held-out records (PTB-XL fold 10 plus the CinC test sources, none used for any fit or
choice) and prints, per shift, the macro AUROC of the fused, embedding-only and
criterion-only scores over the labels with >= 3 positives, and the labels that lost most.
A shift that costs more than a few thousandths points at a measurement that does not carry.

Run: ``PYTHONPATH=$PWD .venv/bin/python benchmarks/eval_site_shift.py [--data ../shared/data]
[SHIFT ...]`` (about 3 s a shift after loading; shifts by name, default all). Figures: see
the model card's "Site shift" paragraph.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.signal as sps

from adapters import Ecg
from models.catalog import LabelCatalog
from models.classifier import ZeroShotClassifier
from models.fusion import criterion_score
from models.fusion_fit import TEST_SOURCES, channel_scores
from models.labelled import labelled_records
from models.metrics import auroc

REPO = Path(__file__).resolve().parent.parent
_RNG = np.random.default_rng(0)


def _with(ecg: Ecg, signal: np.ndarray, fs: float | None = None) -> Ecg:
    return ecg.with_signal(signal.astype(np.float32), ecg.leads, fs)


def resampled(ecg: Ecg, fs: float) -> Ecg:
    ratio = Fraction(fs / float(ecg.fs)).limit_denominator(100)
    out = sps.resample_poly(ecg.signal, ratio.numerator, ratio.denominator, axis=1)
    return _with(ecg, out, fs)


def filtered(ecg: Ecg, order: int, hz: float, btype: str) -> Ecg:
    """A cart's one-pass (causal) Butterworth filter."""
    sos = sps.butter(order, hz, btype, fs=float(ecg.fs), output="sos")
    return _with(ecg, sps.sosfilt(sos, ecg.signal, axis=1))


def with_hum(ecg: Ecg, hz: float, mv: float) -> Ecg:
    t = np.arange(ecg.n_samples) / float(ecg.fs)
    return _with(ecg, ecg.signal + mv * np.sin(2 * np.pi * hz * t)[None, :])


def with_wander(ecg: Ecg, mv: float) -> Ecg:
    """Respiration-like wander at 0.25 Hz, each lead at its own phase."""
    t = np.arange(ecg.n_samples) / float(ecg.fs)
    phase = _RNG.uniform(0.0, 2 * np.pi, (ecg.signal.shape[0], 1))
    return _with(ecg, ecg.signal + mv * np.sin(2 * np.pi * 0.25 * t[None, :] + phase))


def with_noise(ecg: Ecg, mv: float) -> Ecg:
    """White (electrode, muscle) noise of ``mv`` standard deviation."""
    return _with(ecg, ecg.signal + _RNG.normal(0.0, mv, ecg.signal.shape))


def first_seconds(ecg: Ecg, seconds: float) -> Ecg:
    return _with(ecg, ecg.signal[:, : int(seconds * float(ecg.fs))])


def eight_leads(ecg: Ecg) -> Ecg:
    """Only I, II and V1-V6 stored (III, aVR, aVL, aVF derived by the reader)."""
    keep = [i for i, name in enumerate(ecg.leads) if name not in ("III", "aVR", "aVL", "aVF")]
    return ecg.with_signal(ecg.signal[keep], [ecg.leads[i] for i in keep])


def quantised(ecg: Ecg, uv: float) -> Ecg:
    step = uv / 1000.0
    return _with(ecg, np.round(ecg.signal / step) * step)


SHIFTS: dict[str, Callable[[Ecg], Ecg]] = {
    "none": lambda e: e,
    "250 Hz": lambda e: resampled(e, 250.0),
    "1000 Hz": lambda e: resampled(e, 1000.0),
    "low-pass 40 Hz": lambda e: filtered(e, 4, 40.0, "low"),
    "low-pass 100 Hz": lambda e: filtered(e, 4, 100.0, "low"),
    "high-pass 0.5 Hz": lambda e: filtered(e, 1, 0.5, "high"),
    "60 Hz hum 50 uV": lambda e: with_hum(e, 60.0, 0.05),
    "50 Hz hum 100 uV": lambda e: with_hum(e, 50.0, 0.1),
    "wander 0.4 mV": lambda e: with_wander(e, 0.4),
    "noise 20 uV": lambda e: with_noise(e, 0.02),
    "first 8 s": lambda e: first_seconds(e, 8.0),
    "8 stored leads": eight_leads,
    "4.88 uV steps": lambda e: quantised(e, 4.88),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shifts", nargs="*", help=f"some of: {', '.join(SHIFTS)}")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    names = args.shifts or list(SHIFTS)
    unknown = [n for n in names if n not in SHIFTS]
    if unknown:
        parser.error(f"unknown shifts {unknown}; use {list(SHIFTS)}")
    clf = ZeroShotClassifier.from_pretrained()
    labels = LabelCatalog(clf.catalog.labels, clf.catalog.criteria)
    records = labelled_records(args.data / "ptbxl", clf.catalog, split="test")
    records += labelled_records(args.data / "cinc", clf.catalog, sources=TEST_SOURCES)
    print(f"{len(records)} held-out records (PTB-XL fold 10 + CinC {', '.join(TEST_SOURCES)}); "
          "macro AUROC over labels with >= 3 positives")  # fmt: skip
    print("| shift | fused | embedding | criterion | labels | lost most (fused) |")
    print("|---|---|---|---|---|---|")
    base: dict[str, float] = {}
    for name in ["none", *[n for n in names if n != "none"]]:
        scores = channel_scores(clf, [replace(r, ecg=SHIFTS[name](r.ecg)) for r in records], labels)
        fused, embedding, criterion = {}, {}, {}
        for j, label_id in enumerate(scores.label_ids):
            ok = ~np.isnan(scores.y[:, j])
            y = scores.y[ok, j]
            if y.sum() < 3 or y.sum() == len(y):
                continue
            fused[label_id] = auroc(y, scores.fused[ok, j]) or 0.5
            embedding[label_id] = auroc(y, scores.p_embedding[ok, j]) or 0.5
            if not np.all(np.isnan(scores.margin[ok, j])):
                criterion[label_id] = auroc(y, criterion_score(scores.margin[ok, j])) or 0.5
        if name == "none":
            base = fused
        lost = sorted((fused[k] - base[k], k) for k in fused if k in base)[:3]
        worst = ", ".join(f"{k} {d:+.3f}" for d, k in lost if d < -0.0005) or "-"
        print(f"| {name} | {statistics.mean(fused.values()):.3f} | "
              f"{statistics.mean(embedding.values()):.3f} | "
              f"{statistics.mean(criterion.values()):.3f} | {len(fused)} | {worst} |")  # fmt: skip


if __name__ == "__main__":
    main()
