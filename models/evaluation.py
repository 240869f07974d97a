"""Zero-shot evaluation in the field's protocol: macro AUROC of cosine similarity.

* **PTB-XL** tasks ``super``, ``sub``, ``form``, ``rhythm``: the class sets and labels of the
  ECG-text benchmark (``merl_splits``), on the records of one split that have waveforms in
  the given PTB-XL folder (default fold 10, the test fold). Class texts are the English
  phrases the training text is built from (a prompt ensemble per class).
* **CinC**: PhysioNet/CinC Challenge folders (``.hea`` + ``.mat``, CPSC ``.mat`` structs,
  SPH ``.h5``) whose SNOMED ``# Dx:`` codes are mapped to text: a catalog label carrying the
  code when there is one (its prompts), else the challenge table's name for the code.
  Records named HR* are PTB-XL in challenge format and are excluded (not independent).

Scores are the raw cosines (AUROC is rank-based); AUPRC and the expected calibration error
of the classifier's probabilities are reported beside it. Classes without a positive or a
negative are skipped and listed; every class reports its number of positives.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from adapters import Ecg, load_ecg
from models.calibration import expected_calibration_error
from models.catalog import SNOMED_SYSTEM, Label, LabelCatalog
from models.classifier import ZeroShotClassifier, _measurements
from models.data import fold_split, read_scp_statements
from models.labelled import (
    cinc_records,
    read_dx_names,
)
from models.metrics import bootstrap_ci, macro_bootstrap
from models.scoring import values_of
from models.text import CLASS_PHRASES, SCP_SYNONYMS, SUBCLASS_PHRASES, TEMPLATES

PTBXL_TASKS = {"super": "super_class", "sub": "sub_class", "form": "form", "rhythm": "rhythm"}


@dataclass
class ClassResult:
    name: str
    text: str
    positives: int
    n: int
    auroc: float
    auprc: float
    ece: float
    #: The criteria the class rests on, and the AUROC of the measurement channel alone and
    #: of the fused (served) probability, with the fused score's bootstrap 95 % interval.
    criteria: list[str] = field(default_factory=list)
    auroc_measurement: float | None = None
    auroc_fused: float | None = None
    ci_fused: list[float] | None = None


def score_cell(value: float | None) -> str:
    """A score in a six-wide table column, ``-`` when there is none (the evaluation tables)."""
    return "   -  " if value is None else f"{value:6.3f}"


@dataclass
class TaskResult:
    """One evaluation: data, split, metric, per-class figures, and what was skipped."""

    task: str
    data: str
    split: str
    metric: str
    n_records: int
    macro_auroc: float
    classes: list[ClassResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    model_version: str = ""
    notes: str = ""
    #: Macro AUROC of the fused probability (embedding + criteria), with its bootstrap
    #: 95 % interval, and of the embedding cosine's interval (``macro_auroc`` is the cosine).
    macro_auroc_fused: float | None = None
    macro_ci_fused: list[float] | None = None
    macro_ci: list[float] | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def table(self) -> str:
        def ci(v: list[float] | None) -> str:
            return "" if v is None else f" [{v[0]:.3f}-{v[1]:.3f}]"

        lines = [
            f"{self.task}: {self.data} [{self.split}] n={self.n_records} "
            f"macro AUROC embedding={self.macro_auroc:.3f}{ci(self.macro_ci)} "
            f"fused={score_cell(self.macro_auroc_fused)}{ci(self.macro_ci_fused)} "
            f"({self.model_version})",
            f"{'class':<34} {'pos':>4} {'n':>4} {'AUROC':>6} {'meas':>6} {'fused':>6} "
            f"{'AUPRC':>6} {'ECE':>6}",
        ]
        for c in self.classes:
            lines.append(
                f"{c.name[:34]:<34} {c.positives:>4} {c.n:>4} {c.auroc:>6.3f} "
                f"{score_cell(c.auroc_measurement)} {score_cell(c.auroc_fused)} "
                f"{c.auprc:>6.3f} {c.ece:>6.3f}"
            )
        for name, why in self.skipped.items():
            lines.append(f"{name[:34]:<34} skipped: {why}")
        return "\n".join(lines)


def score_task(
    clf: ZeroShotClassifier,
    ecgs: Sequence[Ecg],
    labels: LabelCatalog,
    y: np.ndarray,
    names: Sequence[str],
    **meta: str,
) -> TaskResult:
    """Per-class AUROC/AUPRC/ECE and their macro mean over classes with both outcomes."""
    emb = clf.embed(ecgs)
    cos = emb @ clf.label_embeddings(labels).T
    values = values_of([_measurements(e) for e in ecgs])
    result = TaskResult(
        task=meta["task"],
        data=meta["data"],
        split=meta["split"],
        metric="macro AUROC of cosine similarity (zero-shot)",
        n_records=len(ecgs),
        macro_auroc=float("nan"),
        model_version=clf.model_version,
        notes=meta.get("notes", ""),
    )
    aucs, fused_aucs = [], []
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    rows = np.arange(len(y))
    for j, (name, label) in enumerate(zip(names, labels, strict=True)):
        pos = int(y[:, j].sum())
        if pos == 0 or pos == len(y):
            result.skipped[name] = "no positive" if pos == 0 else "no negative"
            continue
        p_embedding, _ = clf.probabilities(label, cos[:, j])
        evidence = clf.scorer.evidence(label, values)
        fused = clf.scorer.fuse(label, p_embedding, evidence)
        auc = float(roc_auc_score(y[:, j], cos[:, j]))
        aucs.append(auc)
        fused_auc = float(roc_auc_score(y[:, j], fused))
        fused_aucs.append(fused_auc)
        kept.append((y[:, j], cos[:, j], fused))
        backed = bool(evidence.resolution.criteria)
        result.classes.append(
            ClassResult(
                name=name,
                text=label.text,
                positives=pos,
                n=len(y),
                auroc=auc,
                auprc=float(average_precision_score(y[:, j], fused)),
                ece=expected_calibration_error(fused, y[:, j]),
                criteria=list(evidence.resolution.criteria),
                auroc_measurement=(
                    float(roc_auc_score(y[:, j], np.nan_to_num(evidence.margins, nan=0.0)))
                    if backed
                    else None
                ),
                auroc_fused=fused_auc,
                ci_fused=bootstrap_ci(y[:, j], fused),
            )
        )
    result.macro_auroc = float(np.mean(aucs)) if aucs else float("nan")
    result.macro_auroc_fused = float(np.mean(fused_aucs)) if fused_aucs else None
    if kept:
        ys = [k[0] for k in kept]
        result.macro_ci = macro_bootstrap(ys, [k[1] for k in kept], [rows] * len(kept), len(y))
        result.macro_ci_fused = macro_bootstrap(
            ys, [k[2] for k in kept], [rows] * len(kept), len(y)
        )
    return result


# ---- PTB-XL -----------------------------------------------------------------------------------


def class_phrases(name: str, statements: dict[str, dict[str, object]]) -> tuple[str, ...]:
    """English phrases for a benchmark class name (superclass, subclass or SCP statement)."""
    if name in CLASS_PHRASES and name != "NORM":
        return CLASS_PHRASES[name]
    aliases = {"STD": "STD_", "NST": "NST_", "NT": "NT_", "TAB": "TAB_", "STE": "STE_"}
    key = {**aliases, "ISC": "ISC_", "AVB": "_AVB"}.get(name, name)
    if key in SCP_SYNONYMS:
        return SCP_SYNONYMS[key]
    if key in SUBCLASS_PHRASES:
        return SUBCLASS_PHRASES[key]
    if key in statements:
        return (str(statements[key]["description"]),)
    return (name,)


def class_label(
    name: str, statements: dict[str, dict[str, object]], catalog: LabelCatalog | None = None
) -> Label:
    """A benchmark class as a label: its English phrases as prompts; its criteria those of
    the catalog label mapped to exactly this PTB-XL statement or superclass (so the fused
    figures are those of the served catalog label), else resolved from its first phrase."""
    phrases = class_phrases(name, statements)
    prompts = tuple(dict.fromkeys(t.format(p) for p in phrases for t in TEMPLATES))
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "cls"
    criteria = None
    for label in catalog or ():
        if label.ptbxl and label.ptbxl[0] == name and label.criteria is not None:
            criteria = label.criteria
            break
    return Label(
        id=f"ptbxl_{slug}", name=phrases[0] if criteria is None else name, prompts=prompts,
        criteria=criteria,
    )  # fmt: skip


def evaluate_ptbxl(
    clf: ZeroShotClassifier,
    root: Path,
    task: str,
    splits_dir: Path,
    split: str = "test",
) -> TaskResult:
    """Zero-shot on PTB-XL records of ``split`` (fold 10 = test) that have waveforms in ``root``."""
    folder = PTBXL_TASKS[task]
    table = splits_dir / folder
    label_rows: dict[int, dict[str, str]] = {}
    classes: list[str] = []
    for path in sorted(table.glob(f"ptbxl_{folder}_*.csv")):
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            classes = list(fields[fields.index(folder) + 1 :])
            for row in reader:
                label_rows[int(float(row["ecg_id"]))] = row
    statements = read_scp_statements(root)
    ecgs: list[Ecg] = []
    ys: list[list[int]] = []
    with (root / "ptbxl_database.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            ecg_id = int(float(row["ecg_id"]))
            if fold_split(int(float(row["strat_fold"]))) != split or ecg_id not in label_rows:
                continue
            path = root / row["filename_hr"]
            if not path.with_suffix(".hea").is_file():
                continue
            ecgs.append(load_ecg(path))
            ys.append([int(float(label_rows[ecg_id][c])) for c in classes])
    if not ecgs:
        raise ValueError(f"{root}: no {split} records with waveforms and {task} labels")
    labels = LabelCatalog(class_label(c, statements, clf.catalog) for c in classes)
    return score_task(
        clf, ecgs, labels, np.array(ys), classes,
        task=f"ptbxl-{task}", data=f"PTB-XL ({root.name}), labels from merl_splits/{folder}",
        split={"test": "fold 10", "val": "fold 9", "train": "folds 1-8"}[split],
    )  # fmt: skip


# ---- CinC ---------------------------------------------------------------------------------------


def evaluate_cinc(
    clf: ZeroShotClassifier, root: Path, min_positives: int = 3, catalog: LabelCatalog | None = None
) -> TaskResult:
    """Zero-shot on the independent CinC development records, SNOMED labels mapped to text."""
    catalog = catalog or clf.catalog
    names, _ = read_dx_names(root)
    records = cinc_records(root)
    groups: dict[str, set[int]] = defaultdict(set)  # label key -> record indices
    label_of: dict[str, Label] = {}
    for i, (_, _, codes) in enumerate(records):
        for code in codes:
            ids = catalog.label_ids_for_code(SNOMED_SYSTEM, code)
            if ids:
                label = catalog.get(ids[0])
            elif code in names:
                label = LabelCatalog.from_texts([names[code]]).labels[0]
            else:
                continue
            label_of[label.id] = label
            groups[label.id].add(i)
    keep = sorted(k for k, v in groups.items() if min_positives <= len(v) < len(records))
    y = np.zeros((len(records), len(keep)), dtype=int)
    for j, key in enumerate(keep):
        y[list(groups[key]), j] = 1
    prefixes = sorted({re.match(r"[A-Z]+", n).group(0) for n, _, _ in records})  # type: ignore[union-attr]
    result = score_task(
        clf, [e for _, e, _ in records], LabelCatalog(label_of[k] for k in keep), y, keep,
        task="cinc", data=f"CinC development records ({', '.join(prefixes)}; HR excluded)",
        split="never trained on",
        notes=f"labels with >= {min_positives} positives; SNOMED codes to catalog labels or "
        "challenge-table names",
    )  # fmt: skip
    for name, count in sorted((k, len(v)) for k, v in groups.items() if k not in keep):
        result.skipped[name] = f"{count} positives"
    return result


class _Reportable(Protocol):
    def to_dict(self) -> dict[str, object]: ...


def write_results(results: Sequence[_Reportable], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
