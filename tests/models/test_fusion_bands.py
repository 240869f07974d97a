"""The lexicographic fusion on real records: the criterion's order is kept between distinct
margins, and the embedding orders only the ECGs the criterion ties.

Also the label definitions the fusion is fitted and judged on (PTB-XL heart axis) and the
low-T criterion the ST-T labels rest on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters import load_ecg
from models.catalog import load_catalog
from models.classifier import ZeroShotClassifier, _measurements
from models.criteria_values import values_from
from models.fusion import criterion_score
from models.labelled import labelled_records
from models.resolution import CriteriaResolver
from models.scoring import values_of


@pytest.fixture(scope="module")
def scored(classifier: ZeroShotClassifier, ptbxl_dir: Path) -> dict[str, tuple[np.ndarray, ...]]:
    """(criterion score, fused probability, defining, embedding probability, margin) per
    criterion-backed label, PTB-XL records 1-60."""
    ecgs = [load_ecg(ptbxl_dir / f"records500/00000/{i:05d}_hr.hea") for i in range(1, 61)]
    labels = classifier.resolve_labels(None)
    cos = classifier.similarities(ecgs, labels)
    values = values_of([_measurements(e) for e in ecgs])
    out = {}
    for j, label in enumerate(labels):
        ev = classifier.scorer.evidence(label, values)
        if not ev.resolution.criteria:
            continue
        p, _ = classifier.probabilities(label, cos[:, j])
        fused = classifier.scorer.fuse(label, p, ev)
        out[label.id] = (
            criterion_score(ev.margins),
            fused,
            np.array(ev.defining),
            np.asarray(p),
            ev.margins,
        )
    return out


def test_shipped_fusion_keeps_the_criterion_order(classifier: ZeroShotClassifier) -> None:
    fusion = classifier.fusion
    assert fusion.mode == "lexicographic" and fusion.w_criteria > 0
    assert fusion.kappa > 0 and fusion.kappa_defining is not None and fusion.kappa_defining > 0
    assert "validation only" in fusion.fitted_on and "fold 10" not in fusion.fitted_on


def test_criterion_order_holds_between_distinct_margins_on_real_records(
    scored: dict[str, tuple[np.ndarray, ...]],
) -> None:
    """For every criterion-backed label, defining or supporting, two ECGs whose criterion
    scores differ keep the criterion's order in the served probability, whatever the
    embedding says (contradiction guard and support floor included)."""
    checked = labels = supporting = 0
    for label_id, (criterion, fused, defining, _, _) in scored.items():
        hi, lo = np.nonzero(criterion[:, None] > criterion[None, :])
        assert np.all(fused[hi] > fused[lo]), label_id
        checked += len(hi)
        labels += 1
        supporting += int(not defining)
    assert labels >= 25 and supporting >= 10 and checked > 20000, (labels, supporting, checked)


def test_embedding_orders_the_ties_of_a_criterion(
    scored: dict[str, tuple[np.ndarray, ...]],
) -> None:
    """Within every group of ECGs the criterion ties (clipped at -3 or +3, not measured,
    or the same value of a rule), the fused score follows the embedding: the tie is broken,
    not left to the file order, and not left as a tie."""
    groups = 0
    for label_id, (criterion, fused, _, p, _) in scored.items():
        for value in np.unique(criterion):
            tied = np.flatnonzero(criterion == value)
            if len(tied) < 2:
                continue
            order = np.argsort(p[tied], kind="stable")
            assert np.all(np.diff(fused[tied][order]) >= 0), (label_id, value)
            distinct = np.diff(np.clip(p[tied][order], 1e-6, 1 - 1e-6)) > 1e-9
            assert np.all(np.diff(fused[tied][order])[distinct] > 0), (label_id, value)
            groups += 1
    assert groups >= 50, groups
    margin, fused, defining, _, _ = scored["left_axis_deviation"]
    clear_miss = margin <= -3.0
    assert bool(defining) and clear_miss.sum() >= 10 and len(np.unique(fused[clear_miss])) > 1


def test_unmeasured_ecgs_sit_between_missed_and_met_criteria(
    scored: dict[str, tuple[np.ndarray, ...]],
) -> None:
    """Not measured is margin 0, as in the criterion alone: below every ECG that meets the
    criterion, above every one that misses it, and ordered among themselves by the
    embedding (spread over the band, so the probability there says something)."""
    seen = 0
    for label_id, (criterion, fused, _, p, margin) in scored.items():
        unmeasured = np.isnan(margin)
        if unmeasured.sum() < 2:
            continue
        met, missed = criterion > 0, criterion < 0
        if met.any():
            assert fused[unmeasured].max() < fused[met].min(), label_id
        if missed.any():
            assert fused[unmeasured].min() > fused[missed].max(), label_id
        if np.ptp(p[unmeasured]) > 0.05:
            assert np.ptp(fused[unmeasured]) > 1e-3, label_id
        seen += 1
    assert seen >= 3, seen


def test_ptbxl_leftward_axis_is_not_left_axis_deviation(
    classifier: ZeroShotClassifier, ptbxl_dir: Path
) -> None:
    """PTB-XL "LAD" (German Linkstyp, -30..+30 deg) is a normal axis by AHA/ACCF/HRS; only
    "ALAD" (< -30 deg) is left axis deviation. Fold 9 has both (11 LAD, 4 ALAD). A record
    stating LAFB (axis -45 to -90 by definition) without "ALAD" is not assessed for it."""
    import csv

    axis_of = {
        f"ptbxl:{int(float(r['ecg_id']))}": r["heart_axis"]
        for r in csv.DictReader((ptbxl_dir / "ptbxl_database.csv").open(newline=""))
    }
    records = labelled_records(ptbxl_dir, classifier.catalog, split="val")
    by_axis: dict[str, set[bool]] = {}
    for record in records:
        axis = axis_of[record.name]
        block = "left_anterior_fascicular_block" in record.positives and axis != "ALAD"
        if axis and not block:
            assert "left_axis_deviation" in record.assessed
            by_axis.setdefault(axis, set()).add("left_axis_deviation" in record.positives)
        else:
            assert "left_axis_deviation" not in record.assessed
    assert by_axis["ALAD"] == {True} and by_axis["LAD"] == {False} and by_axis["MID"] == {False}
    assert by_axis["RAD"] == {False}  # right, not left


def test_low_t_counts_leads_where_t_is_normally_upright() -> None:
    leads = {"I": (0.8, 0.3), "II": (1.0, 0.05), "V3": (0.6, -0.2), "V4": (1.2, 0.4)}
    values = {f"r_amplitude.{k}": r for k, (r, _) in leads.items()}
    values |= {f"t_amplitude.{k}": t for k, (_, t) in leads.items()}
    values["t_amplitude.aVR"], values["r_amplitude.aVR"] = -0.3, 0.2  # aVR is never counted
    derived = values_from(values)
    assert derived.get("t_low_leads") == 2.0
    assert derived.describe("t_low_leads") == "T low, flat or inverted (< 10 % of R) in II, V3"
    criteria = load_catalog().criteria
    assert criteria is not None
    outcome = criteria.evaluate("t_wave_low", derived)
    assert outcome.met and outcome.evidence == (derived.describe("t_low_leads"),)
    # Too few leads measured: not measured, not "no low T".
    assert values_from({"t_amplitude.I": 0.0, "r_amplitude.I": 1.0}).get("t_low_leads") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("flattened T waves", ("t_wave_low",)),
        ("low amplitude T waves", ("t_wave_low",)),
        ("T wave inversion", ("t_wave_inversion",)),
        ("peaked T waves", ()),
        ("ST elevation", ("st_elevation",)),
        # The infarct pattern (Q waves, R loss) is not acute injury, nor is injury an old MI.
        ("old myocardial infarction", ("infarct_pattern",)),
        ("acute myocardial infarction", ("acute_ischaemia",)),
        ("STEMI", ("st_elevation",)),
        ("ST elevation myocardial infarction", ("st_elevation",)),
    ],
)
def test_t_wave_and_infarct_texts_resolve_to_their_own_criterion(
    classifier: ZeroShotClassifier, text: str, expected: tuple[str, ...]
) -> None:
    criteria = load_catalog().criteria
    assert criteria is not None
    resolver = CriteriaResolver(criteria, classifier.text_encoder.encode)
    assert resolver.resolve_text(text).criteria == expected, resolver.resolve_text(text)


def test_validation_task_never_scores_a_test_source(
    classifier: ZeroShotClassifier, ptbxl_dir: Path, cinc_dir: Path
) -> None:
    """`ecg-cds evaluate --task validation`: the figures choices rest on; test sources passed
    in by mistake are left out, and the table names its split."""
    from models.evaluation_channels import evaluate_validation
    from models.fusion_fit import TEST_SOURCES, VALIDATION_SOURCES

    records = labelled_records(ptbxl_dir, classifier.catalog, split="val")
    validation = labelled_records(cinc_dir, classifier.catalog, sources=VALIDATION_SOURCES)
    test = labelled_records(cinc_dir, classifier.catalog, sources=TEST_SOURCES)
    assert validation and test
    table = evaluate_validation(classifier, records + validation + test, data="shared data")
    assert table.n_records == len(records) + len(validation)
    assert "fold 9" in table.split and all(s in table.split for s in VALIDATION_SOURCES)
    assert table.classes and all(c.n <= table.n_records for c in table.classes)
    fused = table.macro["fused"]
    assert fused is not None and 0.5 < fused <= 1.0


def test_shipped_fusion_is_what_the_validation_fit_gives(
    classifier: ZeroShotClassifier, ptbxl_dir: Path, cinc_dir: Path
) -> None:
    """Refitting from the defaults on the validation data reproduces fusion.json (so a
    catalog change that moves the margins without a refit fails here), and the fit reads
    validation records only."""
    from models.fusion import Fusion
    from models.fusion_fit import fit_validation_fusion

    fresh = ZeroShotClassifier.from_pretrained(classifier.directory, threads=1)
    fresh.fusion = Fusion()
    fresh._scorer = None
    refit = fit_validation_fusion(fresh, ptbxl_dir, cinc_dir)
    shipped = classifier.fusion
    assert (refit.mode, refit.kappa, refit.kappa_defining) == (
        shipped.mode, shipped.kappa, shipped.kappa_defining,
    )  # fmt: skip
    assert refit.w_criteria == pytest.approx(shipped.w_criteria, abs=1e-3)
    assert refit.bias == pytest.approx(shipped.bias, abs=1e-3)
    assert (refit.n_pairs, refit.positives) == (shipped.n_pairs, shipped.positives)
    assert refit.label_weights.keys() == shipped.label_weights.keys()
    for label_id, weights in shipped.label_weights.items():
        assert refit.label_weights[label_id] == pytest.approx(weights, abs=1e-3), label_id
    assert refit.fitted_on.startswith("PTB-XL fold 9")
    assert "CPSC 2018, CPSC-Extra" in refit.fitted_on


@pytest.mark.slow
def test_heldout_task_reports_the_cinc_test_sources_pooled(
    classifier: ZeroShotClassifier, ptbxl_dir: Path, cinc_dir: Path
) -> None:
    """The issue's CinC target is over the held-out CinC sources pooled: its own table, with
    exactly those records (PTB-XL fold 10 and validation sources left out of it)."""
    from models.evaluation_channels import evaluate_heldout
    from models.fusion_fit import TEST_SOURCES

    test = labelled_records(cinc_dir, classifier.catalog, sources=TEST_SOURCES)
    records = labelled_records(ptbxl_dir, classifier.catalog, split="test") + test
    tables = {t.task: t for t in evaluate_heldout(classifier, records, data="shared data")}
    assert tables["heldout"].n_records == len(records)
    assert tables["heldout:CinC"].n_records == len(test)
    assert "PTB-XL" not in tables["heldout:CinC"].split


def test_older_fusion_files_still_load(tmp_path: Path) -> None:
    """fusion.json files written before the lexicographic form keep their own form: margin
    first (the previous shipped file's fields) and the logistic form (no mode field)."""
    import json

    from models.fusion import Fusion

    p = np.array([0.9, 0.1, 0.5])
    margin = np.array([0.5, 0.5, np.nan])
    old = {"method": "...", "w_criteria": 0.6671, "bias": -1.91, "mode": "margin_first",
           "kappa": 4.0, "kappa_defining": 0.25, "w_embedding": 0.0}  # fmt: skip
    (tmp_path / "fusion.json").write_text(json.dumps(old))
    fusion = Fusion.load(tmp_path)
    expected = 0.6671 * (np.array([0.5, 0.5, 0.0]) + 4.0 * (2 * p - 1)) - 1.91
    assert fusion.mode == "margin_first"
    assert np.allclose(fusion.logits(p, margin), expected)
    # The margin-first form lets the embedding reorder equal-looking evidence: the ECG at the
    # same margin with the higher embedding ranks first, and so would one 2 steps lower.
    assert fusion.logits(np.array([0.99]), np.array([-1.0]))[0] > expected[1]
    (tmp_path / "fusion.json").write_text(json.dumps({"w_embedding": 0.8, "bias": 0.1}))
    logistic = Fusion.load(tmp_path)
    assert logistic.mode == "logistic"
    z = np.log(p / (1 - p))
    assert np.allclose(logistic.logits(p, margin), [*(0.8 * z[:2] + 0.5 + 0.1), z[2]])
    (tmp_path / "fusion.json").write_text(json.dumps({"mode": "from_a_newer_build"}))
    with pytest.raises(ValueError, match="unknown fusion mode"):
        Fusion.load(tmp_path)


def test_a_common_finding_is_served_near_its_base_rate_on_held_out_records(
    classifier: ZeroShotClassifier, ptbxl_dir: Path
) -> None:
    """Each label's own probability scale and bias (fitted on validation records only): with
    one shared bias every label sat at the pooled base rate, and sinus rhythm, present in
    most PTB-XL fold-10 records, was served at a mean of about 0.1."""
    from dataclasses import replace

    from models.catalog import LabelCatalog
    from models.fusion_fit import channel_scores

    shipped = classifier.fusion
    assert {"sinus_rhythm", "normal_ecg"} <= shipped.label_weights.keys()
    shared = replace(shipped, label_weights={})
    catalog = classifier.catalog
    wanted = LabelCatalog(
        [lb for lb in catalog if lb.id in ("sinus_rhythm", "normal_ecg")], catalog.criteria
    )
    scores = channel_scores(classifier, labelled_records(ptbxl_dir, catalog, split="test"), wanted)
    for j, label_id in enumerate(scores.label_ids):
        rows = ~np.isnan(scores.y[:, j])
        share = float(scores.y[rows, j].mean())
        p, m, defining = scores.p_embedding[rows, j], scores.margin[rows, j], scores.defining[j]
        own = float(shipped.probabilities(p, m, bool(defining), label_id).mean())
        pooled = float(shared.probabilities(p, m, bool(defining), label_id).mean())
        assert share > 0.4 and pooled < 0.2, (label_id, pooled, share)
        assert abs(own - share) < abs(pooled - share) - 0.15, (label_id, own, pooled, share)
    sinus = scores.label_ids.index("sinus_rhythm")
    rows = ~np.isnan(scores.y[:, sinus])
    served, share = float(scores.fused[rows, sinus].mean()), float(scores.y[rows, sinus].mean())
    # As served (support floor and contradiction guard included): above even odds for a
    # finding in 82 % of these records (0.15 with the shared bias); the rest of the gap is
    # the base rate of the validation records the bias was fitted on (74 %) and sinus
    # rhythms outside 60-100/min, which the criterion does not call sinus rhythm.
    assert served > 0.45 and share > 0.7, (served, share)


def test_a_label_fit_never_flattens_the_criterion_order() -> None:
    """A label whose validation pairs run against its criterion still gets a positive scale:
    its own weights calibrate, they never turn the ranking into ties (or reverse it)."""
    from models.fusion import MIN_ORDER_SCALE, fit_fusion

    rng = np.random.default_rng(0)
    margin = np.tile(np.linspace(-3.0, 3.0, 40), 2)
    y = np.concatenate([margin[:40] > 0, margin[40:] < 0]).astype(float)  # "b" runs against
    ids = ["a"] * 40 + ["b"] * 40
    p = rng.uniform(0.05, 0.95, 80)
    fusion = fit_fusion(
        p, margin, y, fitted_on="test", label_ids=ids, label_prior=0.01, kappa=2.0,
        kappa_defining=1.0, defining=np.zeros(80, dtype=bool), lexicographic=True,
    )  # fmt: skip
    assert fusion.label_weights["b"][1] >= MIN_ORDER_SCALE
    served = fusion.probabilities(p[40:], margin[40:], False, "b")
    assert np.all(np.diff(served[np.argsort(margin[40:], kind="stable")]) >= 0)
    assert len(np.unique(np.round(served, 12))) > 20
