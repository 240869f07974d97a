"""Fitting the shipped fusion weights on validation data (and scoring the three channels).

:func:`channel_scores` gives, for labelled records and a label set, the embedding
probability, the criteria margin (NaN: not measured) and the outcome (NaN: not assessed) of
every (record, label) pair. :func:`fit_validation_fusion` fits :class:`models.fusion.Fusion`
on PTB-XL fold 9 plus the CinC **validation sources** (:data:`VALIDATION_SOURCES`), never on
the test fold or the held-out test sources (:data:`TEST_SOURCES`), and writes
``fusion.json`` beside the model. Command::

    python -m models.fusion_fit --ptbxl ../shared/data/ptbxl --cinc ../shared/data/cinc
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.catalog import LabelCatalog
from models.classifier import ZeroShotClassifier, _measurements
from models.fusion import Fusion, fit_fusion
from models.labelled import LabelledRecord, labelled_records
from models.scoring import values_of

#: CinC sources used for fitting (fusion weights) and other choices. Named before any fit.
VALIDATION_SOURCES = ("CPSC 2018", "CPSC-Extra")
#: CinC sources held out of every fit and choice: test figures only.
TEST_SOURCES = ("Georgia", "Chapman-Shaoxing", "Ningbo", "PTB", "SPH (Shandong)")


@dataclass
class ChannelScores:
    label_ids: list[str]
    p_embedding: np.ndarray  # (n, L)
    margin: np.ndarray  # (n, L), NaN where not measured or no criteria
    fused: np.ndarray  # (n, L)
    y: np.ndarray  # (n, L), NaN where not assessed
    sources: list[str]
    cosine: np.ndarray  # (n, L)
    #: (L,) whether each label rests on a defining criterion (the narrow fusion band).
    defining: np.ndarray | None = None


def channel_scores(
    clf: ZeroShotClassifier, records: Sequence[LabelledRecord], labels: LabelCatalog
) -> ChannelScores:
    ecgs = [r.ecg for r in records]
    cos = clf.similarities(ecgs, labels)
    values = values_of([_measurements(e) for e in ecgs])
    n, width = len(records), len(labels)
    p_emb = np.zeros((n, width))
    margin = np.full((n, width), np.nan)
    fused = np.zeros((n, width))
    y = np.full((n, width), np.nan)
    defining = np.zeros(width, dtype=bool)
    for j, label in enumerate(labels):
        p, _ = clf.probabilities(label, cos[:, j])
        ev = clf.scorer.evidence(label, values)
        p_emb[:, j] = p
        margin[:, j] = ev.margins
        defining[j] = ev.defining
        fused[:, j] = clf.scorer.fuse(label, p, ev)
        for i, record in enumerate(records):
            if label.id in record.assessed:
                y[i, j] = float(label.id in record.positives)
    return ChannelScores(
        [lb.id for lb in labels], p_emb, margin, fused, y, [r.source for r in records], cos,
        defining,
    )  # fmt: skip


#: Fusion variants compared by leave-one-source-out cross-validation within the validation
#: data (never the test data): the logistic form with shared weights, or per-label weights
#: with a prior of this strength around the shared ones; margin first with one band for
#: every label; margin first with a narrow band (at most one clinical step) for labels on a
#: defining criterion and a wide one for the rest (see :mod:`models.fusion`).
VARIANTS: dict[str, dict[str, float]] = {
    "shared": {},
    "per-label prior 3": {"label_prior": 3.0},
    **{f"margin first, kappa {k:g}": {"kappa": k} for k in (0.5, 1.0, 2.0, 3.0, 4.0, 6.0)},
    **{
        f"margin first, kappa {k:g}, defining {kd:g}": {"kappa": k, "kappa_defining": kd}
        for kd in (0.25, 0.5, 1.0)
        for k in (2.0, 3.0, 4.0, 6.0)
    },
}


#: Macro AUROC differences below this count as ties when choosing a variant.
CV_TIE = 0.005


def _defining(scores: ChannelScores) -> np.ndarray:
    if scores.defining is None:
        return np.zeros(len(scores.label_ids), dtype=bool)
    return np.asarray(scores.defining, dtype=bool)


def _flat(scores: ChannelScores, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """(p_embedding, margin, y, label id, defining) of the assessed pairs of ``rows``."""
    sub_y = scores.y[rows]
    keep = ~np.isnan(sub_y)
    ids = np.broadcast_to(np.array(scores.label_ids), sub_y.shape)
    defining = np.broadcast_to(_defining(scores), sub_y.shape)
    return (
        scores.p_embedding[rows][keep], scores.margin[rows][keep], sub_y[keep], ids[keep],
        defining[keep],
    )  # fmt: skip


def select_variant(scores: ChannelScores) -> tuple[str, dict[str, dict[str, float]]]:
    """Leave-one-source-out over the validation sources: pooled out-of-fold fused AUROC.

    Returns the chosen variant and every variant's figures. Chosen: among the variants whose
    macro AUROC over criterion-backed labels is within :data:`CV_TIE` of the best (one
    record pair moves a macro over ~17 labels with 3-66 positives by about that much), the
    one with the fewest labels worse than their criterion alone, then the narrowest band for
    defining criteria (the strongest hold of the criterion's order), then the best macro.
    """
    from models.metrics import auroc as _auc

    sources = np.array(scores.sources)
    report: dict[str, dict[str, float]] = {}
    for name, options in VARIANTS.items():
        fused = np.full(scores.y.shape, np.nan)
        for held in sorted(set(scores.sources)):
            train = np.flatnonzero(sources != held)
            test = np.flatnonzero(sources == held)
            p, m, y, ids, defining = _flat(scores, train)
            fusion = fit_fusion(
                p, m, y, fitted_on="cv", label_ids=list(ids), defining=defining, **options
            )
            for j, lid in enumerate(scores.label_ids):
                fused[test, j] = fusion.logits(
                    scores.p_embedding[test, j], scores.margin[test, j], lid,
                    bool(_defining(scores)[j]),
                )  # fmt: skip
        aucs, worse = [], 0
        for j in range(len(scores.label_ids)):
            ok = ~np.isnan(scores.y[:, j])
            y = scores.y[ok, j]
            if y.sum() < 3:
                continue
            a_f = _auc(y, fused[ok, j])
            a_m = _auc(y, np.nan_to_num(scores.margin[ok, j], nan=0.0))
            if a_f is None or a_m is None:
                continue
            aucs.append(a_f)
            worse += int(a_f < a_m - 1e-9)
        report[name] = {
            "macro_fused": float(np.mean(aucs)),
            "labels": len(aucs),
            "worse_than_criterion": worse,
        }
    top = max(v["macro_fused"] for v in report.values())
    near = [k for k in report if report[k]["macro_fused"] >= top - CV_TIE]

    def preference(name: str) -> tuple[float, float, float]:
        options = VARIANTS[name]
        band = options.get("kappa_defining", options.get("kappa", np.inf))
        return (-report[name]["worse_than_criterion"], -band, report[name]["macro_fused"])

    return max(near, key=preference), report


def fit_validation_fusion(clf: ZeroShotClassifier, ptbxl: Path | None, cinc: Path | None) -> Fusion:
    catalog = clf.catalog
    labels = LabelCatalog((lb for lb in catalog if lb.criteria), catalog.criteria)
    records: list[LabelledRecord] = []
    parts = []
    if ptbxl is not None:
        val = labelled_records(ptbxl, catalog, split="val")
        records += val
        parts.append(f"PTB-XL fold 9 ({len(val)} records)")
    if cinc is not None:
        cinc_val = labelled_records(cinc, catalog, sources=VALIDATION_SOURCES)
        records += cinc_val
        parts.append(f"CinC {', '.join(VALIDATION_SOURCES)} ({len(cinc_val)} records)")
    scores = channel_scores(clf, records, labels)
    variant, report = select_variant(scores)
    p, m, y, ids, defining = _flat(scores, np.arange(len(records)))
    cv = "; ".join(
        f"{k}: {v['macro_fused']:.3f} over {v['labels']:.0f} labels, "
        f"{v['worse_than_criterion']:.0f} worse than criterion"
        for k, v in report.items()
    )
    return fit_fusion(
        p, m, y,
        fitted_on=" + ".join(parts) + f"; validation only; variant {variant!r} chosen by "
        f"leave-one-source-out CV within validation ({cv})",
        label_ids=list(ids), defining=defining, **VARIANTS[variant],
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ptbxl", type=Path)
    parser.add_argument("--cinc", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    clf = ZeroShotClassifier.from_pretrained(args.model, threads=args.threads)
    clf.fusion = Fusion()  # fit from the defaults, whatever is shipped
    clf._scorer = None
    fusion = fit_validation_fusion(clf, args.ptbxl, args.cinc)
    fusion.save(clf.directory)
    print(fusion)


if __name__ == "__main__":
    main()
