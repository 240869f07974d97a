"""Labelled ECGs for fitting the fusion and a site's calibration: records + catalog labels.

:func:`labelled_records` reads any of:

* a **PTB-XL layout** (``ptbxl_database.csv``): the records of one split, positive for a
  catalog label when their SCP statements (or superclasses) are in its ``ptbxl`` mapping;
* a **PhysioNet/CinC Challenge folder** (``.hea`` with ``# Dx:`` SNOMED codes): positive for
  the catalog labels carrying a code (HR* records, PTB-XL in challenge format, left out);
* a **folder of ECG files** with the statements inside (MUSE, Philips) or a reports CSV
  (``file,report``): positive for a catalog label when a statement names it (its name or one
  of its prompts, case-insensitive, as a whole phrase, not negated).

A record whose labels state no rhythm at all is not assessed for the rhythm labels
(:data:`RHYTHM_STATEMENTS`): every ECG has a rhythm, so its labelling did not say which;
nor for an axis label its fascicular block implies (:data:`IMPLIED`).

Every record also carries its **source** (the hospital or database it comes from), so that
fits and figures can hold whole sources out.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters import Ecg, load_ecg
from models.catalog import SNOMED_SYSTEM, LabelCatalog, ptbxl_statements_with_superclasses
from models.data import fold_split, read_scp_statements
from models.resolution import NEGATION
from models.text import parse_scp_codes

#: CinC record-name prefixes -> source database (PhysioNet/CinC Challenge 2020/2021).
CINC_SOURCES = (
    ("SPH", "SPH (Shandong)"),
    ("HR", "PTB-XL (challenge copy)"),
    ("JS", "Chapman-Shaoxing/Ningbo"),
    ("A", "CPSC 2018"),
    ("Q", "CPSC-Extra"),
    ("E", "Georgia"),
    ("S", "PTB"),
)


def cinc_source(name: str) -> str:
    for prefix, source in CINC_SOURCES:
        if name.startswith(prefix):
            if prefix == "JS":  # JS00001-JS10646 Chapman-Shaoxing, the rest Ningbo
                digits = re.sub(r"\D", "", name)
                return "Chapman-Shaoxing" if digits and int(digits) <= 10646 else "Ningbo"
            return source
    return "other"


#: PTB-XL ``heart_axis`` values -> catalog labels. Left axis deviation is an axis more
#: negative than -30 deg (AHA/ACCF/HRS part III, the catalog's definition): PTB-XL's "ALAD"
#: (abnormal left axis). Its "LAD" is the German "Linkstyp", a leftward axis of -30 to +30
#: deg that the standard calls normal: on PTB-XL folds 1-9 its measured axis has median -28
#: deg (10th-90th percentile -54 to -5; ALAD -82 to -37), and GE 12SL states "left axis
#: deviation" on 9 of its 35 records (6 of 12 ALAD); so LAD records count as negatives.
#: Right: "RAD" (Rechtstyp, +90 to +120 deg, measured median +91) and "ARAD" both exceed
#: +90 deg.
HEART_AXIS = {
    "ALAD": "left_axis_deviation",
    "RAD": "right_axis_deviation",
    "ARAD": "right_axis_deviation",
}


#: The rhythm statements of SCP-ECG as PTB-XL uses them (``scp_statements.csv``, column
#: ``rhythm``). Every ECG has a rhythm, so a record whose labels state none was not labelled
#: for its rhythm (sinus rhythm, the default, is often left unstated: 28 of the 434 PTB-XL
#: records of folds 1-9, 36 of the 50 CPSC validation records, mostly "RBBB" or "ST
#: depression" alone): it is neither positive nor negative for the rhythm labels, instead
#: of a sinus-rhythm "negative" whose measured sinus rhythm the criteria rightly find.
RHYTHM_STATEMENTS = frozenset(
    {"SR", "AFIB", "STACH", "SARRH", "SBRAD", "PACE", "SVARR", "BIGU", "AFLT", "SVTAC", "PSVT",
     "TRIGU"}
)  # fmt: skip


#: Findings a label's definition includes: left anterior fascicular block has a frontal axis
#: of -45 to -90 deg, left posterior +90 to +180 (AHA/ACCF/HRS 2009 part III). A labeller
#: who states the block leaves the axis unstated (PTB-XL writes "LAD", its -30 to +30 deg
#: "Linkstyp", beside LAFB), so such a record is not assessed for the implied axis label
#: rather than counted a negative (PTB-XL folds 1-9: 9 such LAFB records; left axis
#: deviation criterion AUROC 0.897 -> 0.946, 12 positives of 72 -> 63 records).
IMPLIED = {
    "left_anterior_fascicular_block": ("left_axis_deviation",),
    "left_posterior_fascicular_block": ("right_axis_deviation",),
}


def implied_unstated(positives: Iterable[str]) -> frozenset[str]:
    """Labels a record's positives imply but do not state (see :data:`IMPLIED`)."""
    stated = set(positives)
    return frozenset(i for p in stated for i in IMPLIED.get(p, ()) if i not in stated)


def rhythm_labels(catalog: LabelCatalog) -> frozenset[str]:
    """Catalog labels that name a rhythm: those mapped to an SCP rhythm statement."""
    return frozenset(lb.id for lb in catalog if set(lb.ptbxl) & RHYTHM_STATEMENTS)


def rhythm_assessed(
    assessed: frozenset[str], states_rhythm: bool, rhythms: frozenset[str]
) -> frozenset[str]:
    """``assessed`` without the rhythm labels where the record states no rhythm (see
    :data:`RHYTHM_STATEMENTS`). PTB-XL: any SCP rhythm statement; CinC: a code of a catalog
    rhythm label (a rhythm code the catalog lacks, e.g. junctional rhythm, is not seen)."""
    return assessed if states_rhythm else assessed - rhythms


@dataclass(frozen=True)
class LabelledRecord:
    name: str
    source: str
    ecg: Ecg
    positives: frozenset[str]  # catalog label ids
    #: Labels the record's labelling can say anything about (a PTB-XL record says nothing
    #: about a label without a PTB-XL mapping: it is neither positive nor negative there).
    assessed: frozenset[str]


INDEPENDENT_CINC_PREFIXES = ("A", "Q", "E", "JS", "S")  # S covers SPH
#: CPSC 2018 reference class numbers -> challenge abbreviations (dx_mapping_scored.csv).
CPSC_CLASSES = {
    "1": "SNR", "2": "AF", "3": "IAVB", "4": "LBBB", "5": "RBBB",
    "6": "PAC", "7": "PVC", "8": "STD", "9": "STE",
}  # fmt: skip


def read_dx_names(cinc_root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """SNOMED code -> name, and abbreviation -> SNOMED code, from the challenge tables."""
    names: dict[str, str] = {}
    abbrev: dict[str, str] = {}
    for path in sorted(cinc_root.rglob("*.csv")):
        if path.name not in {"dx_mapping_scored.csv", "dx_mapping_unscored.csv"}:
            continue
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                code = (row.get("SNOMED CT Code") or row.get("SNOMEDCTCode") or "").strip()
                if code:
                    names.setdefault(code, row["Dx"].strip())
                    abbrev.setdefault(row.get("Abbreviation", "").strip(), code)
    return names, abbrev


def _cinc_files(root: Path) -> Iterable[Path]:
    for pattern in ("*.hea", "*.mat", "*.h5"):
        yield from sorted(root.rglob(pattern))


def is_independent(name: str) -> bool:
    return not name.startswith("HR") and name.startswith(INDEPENDENT_CINC_PREFIXES)


def cinc_records(root: Path) -> list[tuple[str, Ecg, set[str]]]:
    """(record name, ECG, SNOMED codes) for every independent development record, deduplicated."""
    _, abbrev = read_dx_names(root)
    cpsc_ref: dict[str, set[str]] = {}
    ref_csv = root / "labels" / "cpsc2018_ecgchat" / "training_REFERENCE.csv"
    if ref_csv.is_file():
        with ref_csv.open(newline="") as handle:
            for row in csv.DictReader(handle):
                nums = [
                    row.get(k, "").split(".")[0]
                    for k in ("First_label", "Second_label", "Third_label")
                ]
                cpsc_ref[row["Recording"]] = {
                    abbrev[CPSC_CLASSES[n]]
                    for n in nums
                    if n in CPSC_CLASSES and CPSC_CLASSES[n] in abbrev
                }
    found: dict[str, tuple[Ecg, set[str]]] = {}
    for path in _cinc_files(root):
        name = path.stem
        if not is_independent(name) or (
            path.suffix == ".mat" and path.with_suffix(".hea").exists()
        ):
            continue
        if name in found and found[name][1]:
            continue
        try:
            ecg = load_ecg(path)
        except ValueError:
            continue
        codes = {c.split("|", 1)[1] for c in ecg.diagnosis_codes if c.startswith(SNOMED_SYSTEM)}
        codes |= cpsc_ref.get(name, set())
        if codes or name not in found:
            found[name] = (ecg, codes)
    return [(name, ecg, codes) for name, (ecg, codes) in sorted(found.items()) if codes]


def labelled_records(
    data: Path,
    catalog: LabelCatalog,
    *,
    reports_csv: Path | None = None,
    split: str = "val",
    sources: Sequence[str] | None = None,
) -> list[LabelledRecord]:
    """Labelled records of a folder (see the module doc); ``sources`` keeps only those."""
    data = Path(data)
    if (data / "ptbxl_database.csv").is_file():
        records = _ptbxl(data, catalog, split)
    elif reports_csv is not None:
        records = _reports(data, catalog, reports_csv)
    else:
        records = _cinc_or_files(data, catalog)
    if sources is not None:
        records = [r for r in records if r.source in set(sources)]
    return records


def _ptbxl(root: Path, catalog: LabelCatalog, split: str) -> list[LabelledRecord]:
    statements_table = read_scp_statements(root)
    classes = {k: str(v.get("diagnostic_class") or "") for k, v in statements_table.items()}
    assessed = frozenset(lb.id for lb in catalog if lb.ptbxl)
    rhythms = rhythm_labels(catalog)
    out = []
    with (root / "ptbxl_database.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if fold_split(int(float(row["strat_fold"]))) != split:
                continue
            path = root / row["filename_hr"]
            if not path.with_suffix(".hea").is_file():
                continue
            statements = ptbxl_statements_with_superclasses(
                parse_scp_codes(row["scp_codes"]), classes
            )
            positives = {lb.id for lb in catalog if lb.is_ptbxl_positive(statements)}
            axis = (row.get("heart_axis") or "").strip()
            states_rhythm = bool(set(statements) & RHYTHM_STATEMENTS)
            seen = set(rhythm_assessed(assessed, states_rhythm, rhythms))
            if axis:  # PTB-XL states the axis in its own column, not as an SCP statement
                seen |= {i for i in set(HEART_AXIS.values()) if i in catalog}
                if HEART_AXIS.get(axis) in catalog:
                    positives.add(HEART_AXIS[axis])
            seen -= implied_unstated(positives)
            out.append(
                LabelledRecord(f"ptbxl:{int(float(row['ecg_id']))}", "PTB-XL", load_ecg(path),
                               frozenset(positives), frozenset(seen))
            )  # fmt: skip
    return out


def _cinc_or_files(root: Path, catalog: LabelCatalog) -> list[LabelledRecord]:
    records = cinc_records(root)
    if records:
        coded = frozenset(lb.id for lb in catalog if lb.snomed_codes())
        rhythms = rhythm_labels(catalog)
        out = []
        for name, ecg, codes in records:
            ids = {i for c in codes for i in catalog.label_ids_for_code(SNOMED_SYSTEM, c)}
            seen = rhythm_assessed(coded, bool(ids & rhythms), rhythms) - implied_unstated(ids)
            out.append(LabelledRecord(name, cinc_source(name), ecg, frozenset(ids), seen))
        return out
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ecg = load_ecg(path)
        except (ValueError, OSError):
            continue
        positives = statement_labels(ecg.statements, catalog)
        out.append(LabelledRecord(path.name, root.name, ecg, positives, frozenset(catalog.ids)))
    return out


def _reports(root: Path, catalog: LabelCatalog, reports_csv: Path) -> list[LabelledRecord]:
    out = []
    with Path(reports_csv).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"file", "report"} <= set(reader.fieldnames):
            raise ValueError(f"{reports_csv}: needs the columns file,report")
        for row in reader:
            path = root / row["file"]
            ecg = load_ecg(path)
            positives = statement_labels(re.split(r"[.;\n]+", row["report"]), catalog)
            out.append(
                LabelledRecord(row["file"], root.name, ecg, positives, frozenset(catalog.ids))
            )
    return out


def statement_labels(statements: Sequence[str], catalog: LabelCatalog) -> frozenset[str]:
    """Catalog labels a report names (a whole phrase, not negated)."""
    found: set[str] = set()
    for statement in statements:
        text = " ".join(statement.lower().split())
        if not text or NEGATION.search(text):
            continue
        for label in catalog:
            for phrase in (label.name, *label.prompts):
                phrase = " ".join(phrase.lower().rstrip(".").split())
                if len(phrase) >= 4 and re.search(rf"(?<![a-z]){re.escape(phrase)}(?![a-z])", text):
                    found.add(label.id)
                    break
    return frozenset(found)
