"""Criteria alone against the labels, on the data choices may rest on; worst-ranked records.

For every catalog label resting on criteria, the AUROC of its criteria margin alone (0 where
not measured, as in the evaluation) with a bootstrap 95 % interval and the number of
positives, on PTB-XL **folds 1-9** and on the CinC **validation sources** (CPSC 2018,
CPSC-Extra) separately: never fold 10 or the held-out CinC sources. With ``--worst N`` it
lists, for the labels named by ``--labels``, the N positives with the lowest margin and the
N negatives with the highest, with the measurements the rhythm and conduction criteria read
and the record's own statements (PTB-XL SCP codes, GE 12SL statements): what a diagnosis of
a misranking criterion starts from (a missed P wave, an ectopic beat, a label's semantics).

Run: ``.venv/bin/python benchmarks/eval_criteria_labels.py [--data ../shared/data]
[--labels sinus_rhythm,first_degree_av_block] [--worst 10]`` (about 40 s of CPU).
"""

from __future__ import annotations

import argparse
import ast
import csv
from pathlib import Path

import numpy as np

from models.catalog import load_catalog
from models.criteria_values import Values, criteria_values
from models.fusion_fit import VALIDATION_SOURCES
from models.labelled import LabelledRecord, labelled_records
from models.metrics import auroc, bootstrap_ci
from models.results import Measurement
from models.signal_work import measurements_of

REPO = Path(__file__).resolve().parent.parent
SHOWN = ("heart_rate", "rr_irregularity", "p_wave_present", "pr", "qrs", "axis")


def _statements(data: Path) -> dict[str, str]:
    """Record name -> its PTB-XL SCP codes and GE 12SL statements, for the listing."""
    out: dict[str, str] = {}
    with (data / "ptbxl" / "ptbxl_database.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            codes = ast.literal_eval(row["scp_codes"])
            out[f"ptbxl:{int(float(row['ecg_id']))}"] = "SCP " + ",".join(codes)
    table = data / "ptbxl_plus" / "labels" / "12sl_statements.csv"
    if table.is_file():
        with table.open(newline="") as handle:
            for row in csv.DictReader(handle):
                name = f"ptbxl:{int(row['ecg_id'])}"
                if name in out:
                    out[name] += " | 12SL " + ",".join(ast.literal_eval(row["statements"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--labels", default="", help="comma-separated label ids to list")
    parser.add_argument("--worst", type=int, default=0)
    args = parser.parse_args()
    catalog = load_catalog()
    records: list[LabelledRecord] = [
        r for split in ("train", "val") for r in labelled_records(args.data / "ptbxl", catalog,
                                                                 split=split)
    ]  # fmt: skip
    records += labelled_records(args.data / "cinc", catalog, sources=VALIDATION_SOURCES)
    measured: list[dict[str, Measurement]] = [measurements_of(r.ecg) for r in records]
    values: list[Values] = [criteria_values(m) for m in measured]
    statements = _statements(args.data)
    listed = {x for x in args.labels.split(",") if x}
    print("Criteria margin alone, PTB-XL folds 1-9 and CinC validation sources\n")
    print("| label | data | positives / assessed | AUROC | 95% CI | not measured |")
    print("|---|---|---|---|---|---|")
    for label in catalog:
        if not label.criteria:
            continue
        for group in ("PTB-XL", "CPSC"):
            rows = [
                i for i, r in enumerate(records)
                if label.id in r.assessed and (r.source == "PTB-XL") == (group == "PTB-XL")
            ]  # fmt: skip
            y = np.array([float(label.id in records[i].positives) for i in rows])
            margins = np.array(
                [catalog.criteria.evaluate_all(label.criteria, values[i]).margin for i in rows],
                dtype=float,
            )
            score = np.nan_to_num(margins, nan=0.0)
            auc = auroc(y, score) if rows else None
            if auc is None:
                continue
            print(
                f"| {label.id} | {group} | {int(y.sum())} / {len(y)} | {auc:.3f} | "
                f"{bootstrap_ci(y, score)} | {int(np.isnan(margins).sum())} |"
            )
            if label.id not in listed or not args.worst:
                continue
            order = np.argsort(-score, kind="stable")
            positives = [rows[k] for k in order[::-1] if y[k] == 1][: args.worst]
            negatives = [rows[k] for k in order if y[k] == 0][: args.worst]
            for tag, picked in (("positive, lowest", positives), ("negative, highest", negatives)):
                for i in picked:
                    shown = " ".join(f"{k}={measured[i][k].value}" for k in SHOWN)
                    margin = catalog.criteria.evaluate_all(label.criteria, values[i]).margin
                    print(
                        f"    {tag}: {records[i].name} margin={margin} {shown} "
                        f"{statements.get(records[i].name, '')}"
                    )


if __name__ == "__main__":
    main()
