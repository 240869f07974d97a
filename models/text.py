"""English training text from facts: PTB-XL statements and columns, or report sentences.

PTB-XL reports are mostly German and MiniLM reads English, so the training text is built
from what the database states as facts: each SCP statement (its English description plus
hand-written clinical synonyms), its diagnostic class and subclass, the heart axis, the
pacemaker, extra beats and the noise flags. Every fact has several phrasings; training
draws a different one each time so the model learns the condition, not one sentence.

A fact's ``key`` identifies it across records: ECGs that share a key are positives for
each other (the multi-positive contrastive target), whatever phrasing was drawn.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Templates a bare phrase is put into, so training sees the sentence shapes of prompts.
TEMPLATES: tuple[str, ...] = (
    "{}",
    "ECG showing {}",
    "{} is present",
    "findings consistent with {}",
)


@dataclass(frozen=True)
class Fact:
    """One stated fact about an ECG and the ways to say it in English."""

    key: str
    phrases: tuple[str, ...]

    def sentences(self) -> tuple[str, ...]:
        return tuple(t.format(p) for p in self.phrases for t in TEMPLATES)


#: Clinical synonyms beside scp_statements.csv's description (first phrase = the description).
SCP_SYNONYMS: dict[str, tuple[str, ...]] = {
    "NORM": (
        "normal ECG",
        "normal electrocardiogram",
        "ECG within normal limits",
        "no abnormality",
    ),
    "SR": ("sinus rhythm", "normal sinus rhythm", "regular sinus rhythm"),
    "AFIB": ("atrial fibrillation", "irregularly irregular rhythm without P waves", "AF"),
    "AFLT": ("atrial flutter", "flutter waves"),
    "STACH": ("sinus tachycardia", "fast sinus rhythm", "heart rate above 100 with sinus rhythm"),
    "SBRAD": ("sinus bradycardia", "slow sinus rhythm", "heart rate below 60 with sinus rhythm"),
    "SARRH": ("sinus arrhythmia", "irregular sinus rhythm"),
    "PACE": ("paced rhythm", "artificial pacemaker", "pacemaker spikes"),
    "1AVB": (
        "first degree AV block",
        "first degree atrioventricular block",
        "prolonged PR interval",
    ),
    "2AVB": ("second degree AV block", "Mobitz block"),
    "3AVB": ("third degree AV block", "complete heart block"),
    "LAFB": ("left anterior fascicular block", "left anterior hemiblock"),
    "LPFB": ("left posterior fascicular block", "left posterior hemiblock"),
    "IRBBB": ("incomplete right bundle branch block",),
    "CRBBB": ("complete right bundle branch block", "right bundle branch block", "RBBB"),
    "CLBBB": ("complete left bundle branch block", "left bundle branch block", "LBBB"),
    "ILBBB": ("incomplete left bundle branch block",),
    "IVCD": (
        "intraventricular conduction delay",
        "nonspecific intraventricular conduction disturbance",
    ),
    "WPW": ("Wolff-Parkinson-White syndrome", "ventricular pre-excitation", "delta waves"),
    "LVH": ("left ventricular hypertrophy", "LVH"),
    "RVH": ("right ventricular hypertrophy", "RVH"),
    "VCLVH": ("voltage criteria for left ventricular hypertrophy", "high QRS voltage"),
    "LAO/LAE": ("left atrial enlargement", "left atrial overload", "P mitrale"),
    "RAO/RAE": ("right atrial enlargement", "right atrial overload", "P pulmonale"),
    "IMI": ("inferior myocardial infarction", "inferior infarct", "old inferior wall infarction"),
    "ASMI": ("anteroseptal myocardial infarction", "anteroseptal infarct"),
    "AMI": ("anterior myocardial infarction", "anterior infarct"),
    "ALMI": ("anterolateral myocardial infarction", "anterolateral infarct"),
    "ILMI": ("inferolateral myocardial infarction", "inferolateral infarct"),
    "LMI": ("lateral myocardial infarction", "lateral infarct"),
    "PMI": ("posterior myocardial infarction", "posterior infarct"),
    "ISC_": ("myocardial ischemia", "ischemic changes", "non-specific ischemia"),
    "NDT": ("non-diagnostic T wave abnormalities", "non-specific T wave changes"),
    "NST_": ("non-specific ST changes", "non-specific ST-T changes"),
    "STD_": ("ST depression", "ST segment depression"),
    "STE_": ("ST elevation", "ST segment elevation"),
    "INVT": ("inverted T waves", "T wave inversion"),
    "LOWT": ("low amplitude T waves", "flat T waves"),
    "NT_": ("non-specific T wave changes",),
    "TAB_": ("T wave abnormality", "abnormal T waves"),
    "QWAVE": ("Q waves present", "pathological Q waves"),
    "LVOLT": ("low QRS voltage", "low voltage"),
    "HVOLT": ("high QRS voltage",),
    "PVC": (
        "ventricular premature complexes",
        "premature ventricular contractions",
        "ventricular extrasystoles",
    ),
    "PAC": ("atrial premature complexes", "premature atrial contractions", "atrial extrasystoles"),
    "PRC(S)": ("premature complexes", "extrasystoles", "ectopic beats"),
    "LPR": ("prolonged PR interval", "long PR interval"),
    "LNGQT": ("long QT interval", "prolonged QT interval", "QT prolongation"),
    "ABQRS": ("abnormal QRS", "abnormal QRS complexes"),
    "BIGU": ("bigeminy", "bigeminal pattern"),
    "TRIGU": ("trigeminy", "trigeminal pattern"),
    "SVTAC": ("supraventricular tachycardia", "SVT"),
    "PSVT": ("paroxysmal supraventricular tachycardia",),
    "SVARR": ("supraventricular arrhythmia",),
    "DIG": ("digitalis effect",),
    "EL": ("electrolyte disturbance or drug effect",),
}

#: Diagnostic superclasses (the PTB-XL benchmark's five) in words.
CLASS_PHRASES: dict[str, tuple[str, ...]] = {
    "NORM": ("normal ECG", "normal electrocardiogram"),
    "MI": ("myocardial infarction", "signs of myocardial infarction", "infarction"),
    "STTC": (
        "ST/T change",
        "ST-T wave abnormality",
        "repolarization abnormality",
        "ST segment or T wave changes",
    ),
    "CD": ("conduction disturbance", "conduction abnormality", "conduction system disease"),
    "HYP": ("hypertrophy", "chamber hypertrophy or enlargement", "ventricular hypertrophy"),
}

#: Diagnostic subclasses that are not already one statement.
SUBCLASS_PHRASES: dict[str, tuple[str, ...]] = {
    "_AVB": ("AV block", "atrioventricular block"),
    "LAFB/LPFB": ("fascicular block", "hemiblock"),
    "ISCA": ("anterior ischemia", "ischemia in anterior leads"),
    "ISCI": ("inferior ischemia", "ischemia in inferior leads"),
    "STTC": ("ST-T changes",),
    "NST_": ("non-specific ST changes",),
    "SEHYP": ("septal hypertrophy",),
}

AXIS_PHRASES: dict[str, tuple[str, ...]] = {
    "LAD": ("left axis deviation", "leftward QRS axis"),
    "ALAD": ("abnormal left axis deviation", "marked left axis deviation", "left axis deviation"),
    "RAD": ("right axis deviation", "rightward QRS axis"),
    "ARAD": (
        "abnormal right axis deviation",
        "marked right axis deviation",
        "right axis deviation",
    ),
    "AXL": ("leftward axis", "horizontal heart axis"),
    "AXR": ("rightward axis", "vertical heart axis"),
    "MID": ("normal heart axis", "normal QRS axis"),
    "SAG": ("sagittal heart axis", "indeterminate axis"),
}

EXTRA_BEAT_PHRASES: dict[str, tuple[str, ...]] = {
    "VES": ("ventricular extrasystoles", "premature ventricular beats"),
    "SVES": ("supraventricular extrasystoles", "premature atrial beats"),
    "ES": ("extrasystoles", "premature beats"),
}


def _present(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(str(value).strip(" ,"))


def parse_scp_codes(value: str | Mapping[str, float]) -> dict[str, float]:
    """``"{'NORM': 100.0, 'SR': 0.0}"`` -> dict (safe literal parsing, never eval)."""
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    parsed = ast.literal_eval(value) if value else {}
    if not isinstance(parsed, dict):
        raise ValueError(f"scp_codes is not a mapping: {value!r}")
    return {str(k): float(v) for k, v in parsed.items()}


def scp_fact(code: str, statements: Mapping[str, Mapping[str, object]]) -> Fact:
    description = str(statements.get(code, {}).get("description", code))
    phrases = (description, *SCP_SYNONYMS.get(code, ()))
    return Fact(f"scp:{code}", tuple(dict.fromkeys(p for p in phrases if p)))


def statement_facts(
    codes: Iterable[str], statements: Mapping[str, Mapping[str, object]]
) -> list[Fact]:
    """The facts of SCP statements: one per statement, then their diagnostic classes and
    subclasses (``statements`` is scp_statements.csv as ``{code: {column: value}}``)."""
    facts: list[Fact] = []
    classes: set[str] = set()
    subclasses: set[str] = set()
    for code in codes:
        facts.append(scp_fact(code, statements))
        info = statements.get(code, {})
        if _present(info.get("diagnostic_class")):
            classes.add(str(info["diagnostic_class"]))
        if _present(info.get("diagnostic_subclass")):
            subclasses.add(str(info["diagnostic_subclass"]))
    for cls in sorted(classes - {"NORM"}):  # NORM is already the NORM statement
        facts.append(Fact(f"class:{cls}", CLASS_PHRASES.get(cls, (cls,))))
    for sub in sorted(subclasses):
        if sub in SUBCLASS_PHRASES:
            facts.append(Fact(f"sub:{sub}", SUBCLASS_PHRASES[sub]))
    return facts


def axis_fact(axis: str) -> Fact:
    """The fact of a PTB-XL ``heart_axis`` value (a key of :data:`AXIS_PHRASES`)."""
    return Fact(f"axis:{axis}", AXIS_PHRASES[axis])


def ptbxl_facts(
    row: Mapping[str, object], statements: Mapping[str, Mapping[str, object]]
) -> list[Fact]:
    """All facts one ``ptbxl_database.csv`` row states, in English.

    ``statements`` is scp_statements.csv as ``{code: {column: value}}``.
    """
    codes = parse_scp_codes(row.get("scp_codes") or "{}")  # type: ignore[arg-type]
    facts = statement_facts(codes, statements)
    axis = row.get("heart_axis")
    if _present(axis) and str(axis) in AXIS_PHRASES:
        facts.append(axis_fact(str(axis)))
    if _present(row.get("pacemaker")):
        facts.append(Fact("pacemaker", ("pacemaker", "paced rhythm", "artificial pacemaker")))
    beats = row.get("extra_beats")
    if _present(beats):
        kind = (
            "VES"
            if "VES" in str(beats) and "SVES" not in str(beats)
            else "SVES"
            if "SVES" in str(beats)
            else "ES"
        )
        facts.append(Fact(f"beats:{kind}", EXTRA_BEAT_PHRASES[kind]))
    if _present(row.get("baseline_drift")):
        facts.append(Fact("noise:baseline", ("baseline wander", "baseline drift")))
    if _present(row.get("static_noise")):
        facts.append(Fact("noise:static", ("noisy recording", "static noise", "artifact")))
    if _present(row.get("burst_noise")):
        facts.append(Fact("noise:burst", ("burst noise", "intermittent artifact")))
    if _present(row.get("electrodes_problems")):
        facts.append(
            Fact("noise:electrodes", ("electrode problems", "lead misplacement or loose electrode"))
        )
    return facts


#: Facts measured from the signal itself (see :mod:`models.rate`), not stated by a reader.
RATE_FACTS: tuple[Fact, ...] = (
    Fact("rate:brady", ("bradycardia", "slow heart rate", "heart rate below 60 beats per minute")),
    Fact("rate:tachy", ("tachycardia", "fast heart rate", "heart rate above 100 beats per minute")),
    Fact("rate:normal", ("normal heart rate", "heart rate between 60 and 100 beats per minute")),
)

INTERVAL_FACTS: tuple[Fact, ...] = (
    Fact("rr:irregular", ("irregular rhythm", "irregular RR intervals", "variable RR intervals")),
    Fact("rr:regular", ("regular rhythm", "regular RR intervals")),
    Fact("qrs:wide", ("wide QRS complex", "QRS duration of 120 ms or more", "broad QRS complexes")),
    Fact("pr:long", ("prolonged PR interval", "PR interval longer than 200 ms")),
)

_SPLIT = re.compile(r"[.;\n]+")


def normalise_statement(text: str) -> str:
    return " ".join(text.lower().strip(" ,-*").split())


def report_facts(report: str | Iterable[str]) -> list[Fact]:
    """Facts from a free-text report (a hospital archive): one per sentence or statement line."""
    parts = [report] if isinstance(report, str) else list(report)
    seen: dict[str, Fact] = {}
    for part in parts:
        for sentence in _SPLIT.split(part):
            norm = normalise_statement(sentence)
            if len(norm) >= 3 and norm not in seen:
                seen[norm] = Fact(f"stmt:{norm}", (sentence.strip(),))
    return list(seen.values())


def compose_report(facts: list[Fact], rng: object) -> str:
    """One English report from the facts: a random phrasing each, in random order."""
    import random

    assert isinstance(rng, random.Random)
    chosen = [rng.choice(f.phrases) for f in facts]
    rng.shuffle(chosen)
    return ". ".join(chosen) + "." if chosen else "ECG."
