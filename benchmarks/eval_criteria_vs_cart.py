"""Criteria against a cart algorithm: each criterion's margin vs GE 12SL's statement.

PTB-XL+ holds GE 12SL's machine statements for our PTB-XL records (``ptbxl_plus/``); this
prints, for the catalog labels a 12SL statement names, the AUROC of the label's criteria
margin alone (0 where not measured) against that statement, on PTB-XL **folds 1-9 only**
(training and validation: fold 10 is held out of every choice). A cart reading is not
ground truth; it shows whether a criterion measures what a cart algorithm calls by that name.

Run: ``.venv/bin/python benchmarks/eval_criteria_vs_cart.py [--data ../shared/data]``
(about 10 s of CPU for the 434 records).
"""

from __future__ import annotations

import argparse
import ast
import csv
from pathlib import Path

import numpy as np

from models.classifier import ZeroShotClassifier, _measurements
from models.labelled import labelled_records
from models.metrics import auroc
from models.scoring import values_of

REPO = Path(__file__).resolve().parent.parent

#: Catalog label -> the GE 12SL acronyms that state it (12slv23ToSNOMED.csv).
STATEMENTS: dict[str, frozenset[str]] = {
    "sinus_rhythm": frozenset({"NSR"}),
    "sinus_bradycardia": frozenset({"SBRAD", "MSBRAD"}),
    "sinus_tachycardia": frozenset({"STACH"}),
    "sinus_arrhythmia": frozenset({"SAR", "MSAR"}),
    "atrial_fibrillation": frozenset({"AFIB"}),
    "first_degree_av_block": frozenset({"FAV"}),
    "right_bundle_branch_block": frozenset({"RBBB"}),
    "left_bundle_branch_block": frozenset({"LBBB"}),
    "incomplete_right_bundle_branch_block": frozenset({"IRBBB"}),
    "left_anterior_fascicular_block": frozenset({"LAFB", "AFB"}),
    "nonspecific_ivcd": frozenset({"IVCD", "IVCB"}),
    "left_axis_deviation": frozenset({"LAD3"}),
    "prolonged_qt": frozenset({"LNGQT"}),
    "left_atrial_enlargement": frozenset({"LAE"}),
    "left_ventricular_hypertrophy": frozenset({"LVH", "LVH2", "LVH3"}),
    "low_qrs_voltage": frozenset({"LOWV"}),
    "t_wave_abnormality": frozenset({"NT", "NSTT"}),
    "st_t_change": frozenset({"NST", "NT", "NSTT", "2ST"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    table = args.data / "ptbxl_plus" / "labels" / "12sl_statements.csv"
    with table.open(newline="") as handle:
        cart = {
            f"ptbxl:{int(row['ecg_id'])}": set(ast.literal_eval(row["statements"]))
            for row in csv.DictReader(handle)
        }
    clf = ZeroShotClassifier.from_pretrained(None, threads=1)
    records = [
        r
        for split in ("train", "val")
        for r in labelled_records(args.data / "ptbxl", clf.catalog, split=split)
        if r.name in cart
    ]
    values = values_of([_measurements(r.ecg) for r in records])
    print(f"GE 12SL statements vs criteria margin, PTB-XL folds 1-9, {len(records)} records\n")
    print("| label | criteria | 12SL statements | 12SL positives | AUROC |")
    print("|---|---|---|---|---|")
    for label_id, acronyms in STATEMENTS.items():
        label = clf.catalog.get(label_id)
        evidence = clf.scorer.evidence(label, values)
        y = np.array([float(bool(cart[r.name] & acronyms)) for r in records])
        score = auroc(y, np.nan_to_num(evidence.margins, nan=0.0))
        shown = "-" if score is None else f"{score:.3f}"
        print(
            f"| {label_id} | {', '.join(evidence.resolution.criteria)} | "
            f"{'/'.join(sorted(acronyms))} | {int(y.sum())} | {shown} |"
        )


if __name__ == "__main__":
    main()
