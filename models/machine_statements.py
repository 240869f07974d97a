"""GE 12SL machine statements (PTB-XL+) as extra training facts for PTB-XL records.

PTB-XL's cardiologists rarely state the timing findings (sinus bradycardia on 7 of the 353
training records, first-degree AV block on 7); the GE 12SL algorithm, run on the same
recordings (PTB-XL+, ``labels/12sl_statements.csv``), states them far more often (sinus
bradycardia 62, first-degree AV block 12). :func:`add_machine_statements` adds, to
**training records only**, the facts a 12SL statement states outright, as a union with the
record's own facts and under the **same fact keys** the SCP statements and the heart-axis
column use, so a 12SL "Sinus bradycardia" and a cardiologist's SBRAD train one fact.
Validation and test records are returned unchanged: their labels stay the cardiologists'.

The table :data:`MACHINE_FACTS` is knowledge-defined (the acronym's full text in
``mapping/12slv23ToSNOMED.csv`` against ``scp_statements.csv``), not fitted on any data.
Left out on purpose: rhythm and normality summaries already on most records (NSR, SRTH,
NML), vague or hedged statements (AB, ABR, BORDE, QRSV, LVH3), qualifiers and criteria
names (AU, AC, OCC, FREQ, $SWITH, the parenthesised SOKOLYON, CORNPROD, RAVL, ...), ST/T
statements (NST, NT, NSTT, 2ST, "consider ... ischemia": no one-to-one SCP code), septal
infarct (SMI: PTB-XL has no septal-only code), biatrial enlargement and bifascicular block
(combinations whose parts 12SL states separately when it means them).
"""

from __future__ import annotations

import ast
import csv
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from models.data import RecordRef
from models.text import AXIS_PHRASES, Fact, axis_fact, statement_facts

STATEMENTS_FILE = "12sl_statements.csv"
MAPPING_FILE = Path("mapping") / "12slv23ToSNOMED.csv"

#: 12SL acronym -> the fact key it states ("scp:CODE" or "axis:VALUE").
MACHINE_FACTS: dict[str, str] = {
    "SBRAD": "scp:SBRAD",
    "MSBRAD": "scp:SBRAD",  # "Marked sinus bradycardia" is still sinus bradycardia
    "STACH": "scp:STACH",
    "SAR": "scp:SARRH",  # "with sinus arrhythmia"
    "MSAR": "scp:SARRH",  # "with marked sinus arrhythmia"
    "FAV": "scp:1AVB",  # "with 1st degree AV block"
    "MBZI": "scp:2AVB",  # Mobitz I, Mobitz II and unspecified second-degree AV block
    "MBZII": "scp:2AVB",
    "SAV": "scp:2AVB",
    "AFIB": "scp:AFIB",
    "FLUT": "scp:AFLT",
    "SVT": "scp:SVTAC",
    "BIGEM": "scp:BIGU",  # "in a pattern of bigeminy"
    "PVC": "scp:PVC",
    "PAC": "scp:PAC",
    "WPW": "scp:WPW",
    "WPWA": "scp:WPW",  # WPW pattern types A and B are both ventricular pre-excitation
    "WPWB": "scp:WPW",
    "RBBB": "scp:CRBBB",  # 12SL's RBBB is the complete block; the incomplete one is IRBBB
    "LBBB": "scp:CLBBB",
    "IRBBB": "scp:IRBBB",
    "ILBBB": "scp:ILBBB",
    "AFB": "scp:LAFB",  # "Left anterior fascicular block"
    "PFB": "scp:LPFB",  # "Left posterior fascicular block"
    "IVCD": "scp:IVCD",  # "Nonspecific intraventricular conduction delay"
    "IVCB": "scp:IVCD",  # "Nonspecific intraventricular block": PTB-XL's IVCD is both
    "LVH2": "scp:LVH",  # "Left ventricular hypertrophy"
    "LVH": "scp:VCLVH",  # "Voltage criteria for left ventricular hypertrophy" (not LVH)
    "LOWV": "scp:LVOLT",  # "Low voltage QRS"
    "LAE": "scp:LAO/LAE",
    "RAE": "scp:RAO/RAE",
    "IMI": "scp:IMI",
    "ASMI": "scp:ASMI",
    "AMI": "scp:AMI",
    "LMI": "scp:LMI",
    "ALMI": "scp:ALMI",
    "IPMI": "scp:IPMI",
    "POSTMI": "scp:PMI",
    "LNGQT": "scp:LNGQT",
    # "Left axis deviation" is an axis beyond -30 deg: PTB-XL's ALAD. PTB-XL's LAD is the
    # German "Linkstyp" (-30 to +30 deg, a normal axis; see models.labelled.HEART_AXIS).
    "LAD3": "axis:ALAD",
    # "Rightward axis": PTB-XL's RAD ("Rechtstyp", +90 to +120 deg); of the 3 training
    # records with both, all 3 say RAD.
    "RAD": "axis:RAD",
}

#: Statements that make the next one a possibility, not a finding: "Possible", "Cannot
#: rule out" (e.g. ``['CRO', 'IMI', 'AU']`` = "Cannot rule out inferior infarct").
HEDGE_NEXT = frozenset({"PO", "CRO"})
#: Statements that hedge the one before: "(masked by fascicular block?)".
HEDGE_PREVIOUS = frozenset({"MAFB"})


def stated(acronyms: Sequence[str]) -> list[str]:
    """The statements of one record stated outright: not hedged, not in parentheses."""
    out: list[str | None] = []
    depth, hedged = 0, False
    for acronym in acronyms:
        if acronym == "LPAREN":
            depth += 1
        elif acronym == "RPAREN":
            depth = max(0, depth - 1)
        elif depth:
            continue  # criteria names that justify the statement before, e.g. SOKOLYON
        elif acronym in HEDGE_NEXT:
            hedged = True
        elif acronym in HEDGE_PREVIOUS:
            if out:
                out[-1] = None
        else:
            out.append(None if hedged else acronym)
            hedged = False
    return [a for a in out if a is not None]


def machine_facts(
    acronyms: Sequence[str], statements: Mapping[str, Mapping[str, object]]
) -> list[Fact]:
    """The facts one record's 12SL statements state (SCP facts with their classes, axis)."""
    keys = dict.fromkeys(MACHINE_FACTS[a] for a in stated(acronyms) if a in MACHINE_FACTS)
    codes = [k.removeprefix("scp:") for k in keys if k.startswith("scp:")]
    axes = [k.removeprefix("axis:") for k in keys if k.startswith("axis:")]
    return statement_facts(codes, statements) + [axis_fact(a) for a in axes]


def _check_table(folder: Path, statements: Mapping[str, Mapping[str, object]]) -> None:
    """Every acronym of the table is a 12SL v23 statement; every target exists in PTB-XL."""
    mapping = folder / MAPPING_FILE
    if not mapping.is_file():
        raise FileNotFoundError(
            f"--machine-statements {folder}: no {MAPPING_FILE} (the PTB-XL+ 12SL statement "
            "list); point it at PTB-XL+'s labels folder"
        )
    with mapping.open(newline="", encoding="utf-8-sig") as handle:
        known = {row["Acronym"] for row in csv.DictReader(handle)}
    missing = sorted(a for a in MACHINE_FACTS if a not in known)
    if missing:
        raise ValueError(f"{mapping}: not 12SL statements: {', '.join(missing)}")
    absent = sorted(
        key
        for key in MACHINE_FACTS.values()
        if (key.startswith("scp:") and key.removeprefix("scp:") not in statements)
        or (key.startswith("axis:") and key.removeprefix("axis:") not in AXIS_PHRASES)
    )
    if absent:
        raise ValueError(f"scp_statements.csv / heart_axis: no {', '.join(absent)}")


def read_machine_statements(folder: Path) -> dict[str, tuple[str, ...]]:
    """``12sl_statements.csv`` as ``{"ptbxl:<ecg_id>": (acronym, ...)}`` in the file's order."""
    table = Path(folder) / STATEMENTS_FILE
    if not table.is_file():
        raise FileNotFoundError(
            f"--machine-statements {folder}: no {STATEMENTS_FILE}; point it at PTB-XL+'s "
            "labels folder (the one holding 12sl_statements.csv and mapping/)"
        )
    out: dict[str, tuple[str, ...]] = {}
    with table.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                acronyms = ast.literal_eval(row["statements"])
                ecg_id = int(row["ecg_id"])
            except (KeyError, TypeError, ValueError, SyntaxError):
                raise ValueError(
                    f"{table} line {line}: needs an integer ecg_id and a statements list "
                    "such as ['SBRAD', 'ABR']"
                ) from None
            if not isinstance(acronyms, list) or not all(isinstance(a, str) for a in acronyms):
                raise ValueError(f"{table} line {line}: statements is not a list of acronyms")
            out[f"ptbxl:{ecg_id}"] = tuple(acronyms)
    return out


def add_machine_statements(
    refs: Sequence[RecordRef], folder: Path, statements: Mapping[str, Mapping[str, object]]
) -> list[RecordRef]:
    """``refs`` with each training record's 12SL facts added (union); others unchanged."""
    folder = Path(folder)
    table = read_machine_statements(folder)
    _check_table(folder, statements)
    out: list[RecordRef] = []
    for ref in refs:
        acronyms = table.get(ref.record_id)
        if ref.split != "train" or acronyms is None:
            out.append(ref)
            continue
        have = {f.key for f in ref.facts}
        extra = [f for f in machine_facts(acronyms, statements) if f.key not in have]
        out.append(replace(ref, facts=ref.facts + tuple(extra)) if extra else ref)
    return out
