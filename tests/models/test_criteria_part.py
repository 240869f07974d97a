"""Criteria over a whole part (models.criteria_part) equal the per-ECG evaluation exactly, and
the fast result assembly (models.batch_results) equals the plain dataclass one."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest

from adapters import load_ecg
from models.batch_results import _label_score, _ranking
from models.catalog import Label, LabelCatalog
from models.classifier import ZeroShotClassifier, _measurements
from models.criteria import measured_keys
from models.criteria_part import PartValues
from models.results import Code, LabelScore, Measurement, Severity
from models.scoring import LabelEvidence, values_of

FREE_TEXTS = [
    "left axis deviation",
    "sinus bradycardia",
    "early repolarization",
    "a totally unknown finding",
    "sinus bradycardia with first degree AV block",
    "no atrial fibrillation",
    "left ventricular hypertrophy with strain",
]


def _same(a: LabelEvidence, b: LabelEvidence) -> bool:
    """Equal in every field, margins to the bit (NaN where not measured, the sign of zero)."""
    return (
        a.resolution == b.resolution
        and a.margins.dtype == b.margins.dtype
        and a.margins.tobytes() == b.margins.tobytes()
        and a.evidence == b.evidence
        and (a.defining, a.sufficient) == (b.defining, b.sufficient)
    )


def _labels(classifier: ZeroShotClassifier) -> list[Label]:
    return list(classifier.catalog) + list(LabelCatalog.from_texts(FREE_TEXTS))


def test_part_evidence_equals_per_ecg_on_ptbxl(
    classifier: ZeroShotClassifier, ptbxl_dir: Path
) -> None:
    ecgs = [load_ecg(ptbxl_dir / f"records500/00000/{i:05d}_hr.hea") for i in range(1, 25)]
    measurements = [_measurements(e) for e in ecgs]
    values = values_of(measurements)
    labels = _labels(classifier)
    for part in (PartValues.of_measurements(measurements), PartValues.of_values(values)):
        for label, ev in zip(labels, classifier.scorer.evidences(labels, part), strict=True):
            assert _same(classifier.scorer.evidence(label, values), ev), label.id


LEAD_WISE = ("st_j60", "st_j", "q_duration", "t_amplitude", "r_amplitude", "s_amplitude")
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _random_measurements(keys: list[str], rng: random.Random) -> dict[str, Measurement]:
    """Values around the rules' thresholds: ties, exact thresholds, zeros of either sign,
    missing values, NaN and infinities, in the measurements and in their leads."""
    odd = [None, None, 0.0, -0.0, 0.5, 1.0, 2.0, float("nan"), float("inf"), -float("inf")]
    out: dict[str, Measurement] = {}
    for key in keys:
        pick = rng.random()
        if pick < 0.1:
            continue  # not in the measurements at all
        if pick < 0.35:
            value = rng.choice(odd)
        elif pick < 0.55:
            value = float(rng.choice([-90, -30, 0, 60, 100, 120, 200, 460]))
        else:
            value = rng.uniform(-150, 550) if rng.random() < 0.5 else rng.uniform(-1, 4)
        out[key] = Measurement(key, value, "1", None, key)
    for key in (*LEAD_WISE, "p_amplitude"):
        per_lead = {}
        for lead in LEADS:
            if rng.random() < 0.8:
                common = [0.1, 0.2, -0.15, 0.05, 30.0, 20.0, 0.0, -0.0]
                value = rng.choice([*common, rng.uniform(-0.5, 0.6), rng.uniform(-0.5, 40.0)])
                if rng.random() < 0.01:
                    value = rng.choice([float("nan"), float("inf"), -float("inf")])
                per_lead[lead] = value
        if per_lead or rng.random() < 0.5:
            out[key] = Measurement(key, 0.0, "mV", None, key, per_lead=per_lead)
    return out


def test_part_evidence_equals_per_ecg_on_edge_values(classifier: ZeroShotClassifier) -> None:
    criteria = classifier.scorer.criteria
    keys = sorted(set().union(*(measured_keys(c.rule) for c in criteria)))
    rng = random.Random(11)
    measurements = [_random_measurements(keys, rng) for _ in range(600)]
    values = values_of(measurements)
    # Every catalog and free-text label, every criterion alone, and a conjunction.
    labels = _labels(classifier)
    ids = [c.id for c in criteria]
    labels += [Label(id=i, name=i, prompts=(i,), criteria=(i,)) for i in ids]
    labels += [Label(id="three", name="three", prompts=("three",), criteria=tuple(ids[:3]))]
    for part in (PartValues.of_measurements(measurements), PartValues.of_values(values)):
        for label, ev in zip(labels, classifier.scorer.evidences(labels, part), strict=True):
            assert _same(classifier.scorer.evidence(label, values), ev), label.id


def test_no_ecgs(classifier: ZeroShotClassifier) -> None:
    labels = _labels(classifier)
    for ev in classifier.scorer.evidences(labels, PartValues.of_measurements([])):
        assert ev.margins.shape == (0,) and ev.evidence == ()


def test_label_score_from_its_field_map_is_the_dataclass() -> None:
    assert not hasattr(LabelScore, "__post_init__") and not hasattr(LabelScore, "__slots__")
    fixed: tuple[str, str, Severity, tuple[Code, ...], bool, tuple[str, ...]] = (
        "pr", "PR prolonged", "warning", (Code("s", "1", "d"),), True, ("pr_prolonged",)
    )  # fmt: skip
    made = _label_score(fixed, 0.7, 0.21, ("PR 232 ms > 200 ms",), None)
    plain = LabelScore(
        label_id="pr",
        text="PR prolonged",
        probability=0.7,
        similarity=0.21,
        severity="warning",
        codes=(Code("s", "1", "d"),),
        calibrated=True,
        evidence=("PR 232 ms > 200 ms",),
        criteria=("pr_prolonged",),
        embedding_probability=None,
    )
    assert made == plain and hash(made) == hash(plain) and repr(made) == repr(plain)
    assert list(vars(made)) == [f.name for f in dataclasses.fields(LabelScore)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.probability = 0.1  # type: ignore[misc]


def test_ranking_is_the_stable_sort_by_probability() -> None:
    rng = np.random.default_rng(3)
    fused = rng.choice([0.1, 0.5, 0.5, 0.9, 1e-6, 0.3], size=(50, 12))
    fused[4, 3] = np.nan
    fused[7, :] = 0.5
    for row, order in zip(fused.tolist(), _ranking(fused), strict=True):
        assert order == sorted(range(len(row)), key=lambda j: -row[j])


def test_a_single_lead_key_reads_that_lead_as_the_per_ecg_path_does() -> None:
    """A site catalog may name one lead of a lead-wise measurement (``st_j60.V2``); the part
    path read it as "not measured" while the per-ECG path read the lead's value."""
    from models.criteria import Condition, CriteriaCatalog, Criterion
    from models.criteria_part import PartCriteria
    from models.criteria_values import criteria_values

    catalog = CriteriaCatalog(
        [
            Criterion(
                "st_v2",
                "ST elevation in V2",
                (),
                Condition("st_j60.V2", "above", 0.1, 0.05),
                "test",
            )
        ]
    )
    measurements = [
        {"st_j60": Measurement("st_j60", 0.0, "mV", None, "st_j60", per_lead={"V2": 0.3})},
        {"st_j60": Measurement("st_j60", 0.0, "mV", None, "st_j60", per_lead={"V3": 0.3})},
        {},
    ]
    margins, evidence = PartCriteria(catalog, PartValues.of_measurements(measurements)).criterion(
        "st_v2"
    )
    for i, m in enumerate(measurements):
        expected = catalog.evaluate("st_v2", criteria_values(m))
        got = None if np.isnan(margins[i]) else float(margins[i])
        assert (got, evidence[i]) == (expected.margin, expected.evidence)
    assert margins[0] == 3.0 and np.isnan(margins[1]) and np.isnan(margins[2])
