"""Validation figures of trained encoders side by side (issue 14 part 3: rank-keeping recipes).

For each model folder (a servable model: weights, calibration, fusion refit on validation),
on **validation data only** (PTB-XL fold 9 and the CinC validation sources CPSC 2018 and
CPSC-Extra; never fold 10 or the CinC test sources):

* ``facts``: macro AUROC of the cosine over the training facts on fold 9 (the training
  run's model-selection figure, read from ``../training_summary.json`` when present);
* ``super`` / ``rhythm``: PTB-XL fold 9 merl class sets, embedding (cosine) and fused
  (served probability) macro AUROC;
* ``validation``: the catalog labels with >= 3 positives on fold 9 + CPSC (``ecg-cds
  evaluate --task validation``): embedding, fused, and over the criterion-backed labels the
  criterion alone, fused and their difference (the tie-break gain of the lexicographic
  fusion: what the embedding adds by ordering the criterion's ties);
* ``participation_ratio``: tr(C)^2 / ||C||_F^2 of the covariance C of the validation ECGs'
  unit embeddings (the effective dimension), and the first principal component's share.

Command::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/eval_encoder_rank.py runs/NAME/model ... \
        [--out runs/rank_figures.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from models.classifier import ZeroShotClassifier
from models.evaluation import evaluate_ptbxl
from models.evaluation_channels import evaluate_validation
from models.fusion_fit import VALIDATION_SOURCES
from models.labelled import LabelledRecord, labelled_records


def participation_ratio(embeddings: np.ndarray) -> tuple[float, float]:
    """Effective dimension of a set of embeddings, and the first component's variance share."""
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    eig = np.clip(np.linalg.eigvalsh(centred.T @ centred / max(len(centred) - 1, 1)), 0, None)
    return float(eig.sum() ** 2 / (eig**2).sum()), float(eig.max() / eig.sum())


def figures(model: Path, ptbxl: Path, records: list[LabelledRecord]) -> dict[str, object]:
    clf = ZeroShotClassifier.from_pretrained(model, threads=1)
    summary = model.parent / "training_summary.json"
    facts = (
        json.loads(summary.read_text())["best_val_macro_auroc_facts"] if summary.is_file() else None
    )
    splits = ptbxl.parent / "ptbxl_labels" / "merl_splits"
    out: dict[str, object] = {"model": str(model), "version": clf.model_version, "facts": facts}
    for task in ("super", "rhythm"):
        result = evaluate_ptbxl(clf, ptbxl, task, splits, split="val")
        out[task] = {"embedding": result.macro_auroc, "fused": result.macro_auroc_fused}
    table = evaluate_validation(clf, records, data=f"{ptbxl} fold 9 + CinC validation sources")
    crit = table.macro_criteria
    gain = None
    if crit.get("fused") is not None and crit.get("measurement") is not None:
        gain = crit["fused"] - crit["measurement"]  # type: ignore[operator]
    out["validation"] = {
        "labels": len(table.classes),
        "criterion_labels": table.n_criteria_classes,
        "embedding": table.macro.get("embedding"),
        "fused": table.macro.get("fused"),
        "criteria_embedding": crit.get("embedding"),
        "criteria_measurement": crit.get("measurement"),
        "criteria_fused": crit.get("fused"),
        "tie_break_gain": gain,
        "vs_criterion": table.vs_criterion,
    }
    pr, top = participation_ratio(clf.embed([r.ecg for r in records]))
    out["participation_ratio"] = pr
    out["first_component_share"] = top
    out["n_validation_records"] = len(records)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--ptbxl", type=Path, default=Path("../shared/data/ptbxl"))
    parser.add_argument("--cinc", type=Path, default=Path("../shared/data/cinc"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    probe = ZeroShotClassifier.from_pretrained(args.models[0], threads=1)
    records = labelled_records(args.ptbxl, probe.catalog, split="val")
    records += labelled_records(args.cinc, probe.catalog, sources=VALIDATION_SOURCES)
    results = []
    for model in args.models:
        r = figures(model, args.ptbxl, records)
        v = r["validation"]
        assert isinstance(v, dict)
        print(
            f"{model}: facts {r['facts']} super {r['super']} rhythm {r['rhythm']} "
            f"val emb {v['embedding']:.3f} fused {v['fused']:.3f} over {v['labels']}; "
            f"criterion-backed {v['criterion_labels']}: crit {v['criteria_measurement']:.3f} "
            f"fused {v['criteria_fused']:.3f} gain {v['tie_break_gain']:+.4f} "
            f"{v['vs_criterion']}; PR {r['participation_ratio']:.2f} "
            f"PC1 {r['first_component_share']:.2f}",
            flush=True,
        )
        results.append(r)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
