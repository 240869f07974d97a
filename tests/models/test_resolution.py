"""Free text -> criteria (:mod:`models.resolution`): a site's label wording takes the
criteria it names, near misses and opposites take none of a neighbour's."""

from __future__ import annotations

import pytest

from models.catalog import load_catalog
from models.classifier import ZeroShotClassifier
from models.resolution import CriteriaResolver, without_abbreviation


@pytest.fixture(scope="module")
def resolver(classifier: ZeroShotClassifier) -> CriteriaResolver:
    criteria = load_catalog().criteria
    assert criteria is not None
    return CriteriaResolver(criteria, classifier.text_encoder.encode)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sinus bradycardia", ("sinus_bradycardia",)),
        ("sinus tachycardia", ("sinus_tachycardia",)),
        ("slow heart rate", ("rate_below_60",)),
        ("1st degree AV block", ("pr_prolonged",)),
        ("left axis deviation", ("left_axis_deviation",)),
        ("right axis deviation", ("right_axis_deviation",)),
        ("acute ST elevation", ("st_elevation",)),
        ("QT prolongation", ("qtc_prolonged",)),
        ("atrial fibrillation with rapid ventricular response", ("atrial_fibrillation",)),
        ("sinus bradycardia with first degree AV block", ("sinus_bradycardia", "pr_prolonged")),
        ("Voltage criteria for left ventricular hypertrophy", ("lvh_voltage",)),
        ("narrow complex tachycardia", ("narrow_regular_tachycardia",)),
        ("QRS duration of 120 ms or more", ("qrs_wide",)),
        # Early repolarization has criteria of its own, not ST elevation's (its near miss).
        ("early repolarization", ("early_repolarization",)),
        ("early repolarisation pattern", ("early_repolarization",)),
        ("benign early repolarization", ("early_repolarization",)),
        ("benign early repolarisation", ("early_repolarization",)),
        ("ST elevation myocardial infarction", ("st_elevation",)),
        ("premature ventricular contractions", ("premature_ventricular_beats",)),
        ("ventricular extrasystoles", ("premature_ventricular_beats",)),
        ("premature atrial contractions", ("premature_atrial_beats",)),
        ("supraventricular extrasystoles", ("premature_atrial_beats",)),
        # Abbreviations a site's label list uses (a sentence encoder knows them poorly).
        ("NSR", ("sinus_rhythm",)),
        ("LAD", ("left_axis_deviation",)),
        ("RAD", ("right_axis_deviation",)),
        ("1AVB", ("pr_prolonged",)),
        ("WPW", ("preexcitation",)),
        ("ventricular paced rhythm", ("paced",)),
        # Acute ischaemia is ST deviation, an old infarction Q waves; never the other way.
        ("acute myocardial infarction", ("acute_ischaemia",)),
        ("acute inferior myocardial infarction", ("acute_ischaemia",)),
        ("myocardial ischemia", ("acute_ischaemia",)),
        ("old inferior MI", ("inferior_infarct",)),
        ("anterior infarction", ("anterior_infarct",)),
        ("SVT", ("narrow_regular_tachycardia",)),
        ("junctional rhythm", ("junctional_rhythm",)),
        # Compound findings rest on both parts, and neither part takes the compound.
        ("LVH with strain", ("lvh_strain",)),
        ("left ventricular hypertrophy", ("lvh_voltage",)),
        ("biatrial enlargement", ("biatrial_enlargement",)),
        ("left atrial enlargement", ("left_atrial_enlargement",)),
        ("bifascicular block", ("bifascicular_block",)),
        # A site's own phrasings of rhythm, axis, enlargement, pacing and ischaemia.
        ("irregular rhythm", ("rr_irregular",)),
        ("irregularly irregular rhythm", ("atrial_fibrillation",)),
        ("a-fib", ("atrial_fibrillation",)),
        ("normal axis", ("normal_axis",)),
        ("northwest axis", ("extreme_axis_deviation",)),
        ("LAE", ("left_atrial_enlargement",)),
        ("RAE", ("right_atrial_enlargement",)),
        ("left ventricular enlargement", ("lvh_voltage",)),
        ("paced", ("paced",)),
        ("inferior STEMI", ("st_elevation",)),
        ("inferior ST elevation", ("st_elevation",)),
        ("acute anterior MI", ("acute_ischaemia",)),
        ("injury current", ("acute_ischaemia",)),
        ("early repol", ("early_repolarization",)),
        ("J wave", ("early_repolarization",)),
        # Standard terms of other sites' lists (the SNOMED CT displays of PhysioNet/CinC 2021).
        ("myocardial infarction", ("infarct_pattern",)),
        ("AV block I", ("pr_prolonged",)),
        ("atrial pacing", ("paced",)),
        ("atrial pacing pattern", ("paced",)),
        ("right atrial hypertrophy", ("right_atrial_enlargement",)),
        ("decreased QT interval", ("qtc_short",)),
        ("nonspecific intraventricular conduction disorder", ("nonspecific_ivcd",)),
        ("qwave abnormal", ("pathological_q_waves",)),
        # A criterion's own phrase names it, however near another's phrase embeds.
        ("very long QT interval", ("qtc_very_prolonged",)),
        ("long QT interval", ("qtc_prolonged",)),
        ("myocardial infarction, age undetermined", ("infarct_pattern",)),
        # Phrasings that fell short of the match threshold (stop 24's sweep): hyphen and
        # "abnormal" forms embed far from the catalog's own words.
        ("pacemaker spikes", ("paced",)),
        ("pre-excitation", ("preexcitation",)),
        ("abnormal left axis", ("left_axis_deviation",)),
        ("abnormal right axis deviation", ("right_axis_deviation",)),
        # "Name (ABBR)", as label lists write them: the abbreviation is dropped (the text
        # with it was ambiguous between right and extreme right axis deviation).
        ("right axis deviation (RAD)", ("right_axis_deviation",)),
        ("Left anterior fascicular block (LAFB)", ("left_anterior_fascicular_block",)),
        ("atrial fibrillation (AF)", ("atrial_fibrillation",)),
    ],
)
def test_free_text_resolves_to_its_criteria(
    resolver: CriteriaResolver, text: str, expected: tuple[str, ...]
) -> None:
    assert resolver.resolve_text(text).criteria == expected


@pytest.mark.parametrize(
    "text",
    [
        # Near misses: they must not borrow a neighbour's criteria.
        "Brugada pattern",
        "acute pericarditis",
        "atrial flutter",
        "second degree AV block",
        "ventricular tachycardia",
        "incomplete left bundle branch block",
        "trifascicular block",
        # Rhythms named like a neighbour's phrases (premature atrial beats, atrial pacing).
        "ectopic atrial rhythm",
        "atrial rhythm",
        # Negated, or with no measurable criterion at all.
        "no atrial fibrillation",
        "without ST elevation",
        "hyperkalaemia with peaked T waves",
        # Chronic ischaemia is not the acute finding; the other side of a threshold is not it.
        "chronic myocardial ischemia",
        "QRS under 120 ms",
        # No Q waves in the standard leads: the infarct-pattern criterion would misread it.
        "posterior myocardial infarction",
        "age undetermined",
        # GE 12SL statements (PTB-XL+ vocabulary): wide is not narrow, anterolateral is not
        # anteroseptal, and a hedge between alternatives names neither.
        "Wide QRS tachycardia",
        "broad complex tachycardia",
        "Anterolateral infarct",
        "ST elevation, consider lateral injury or acute infarct",
    ],
)
def test_near_misses_and_unmeasurable_text_take_no_criteria(
    resolver: CriteriaResolver, text: str
) -> None:
    resolution = resolver.resolve_text(text)
    assert resolution.criteria == (), (text, resolution)


def test_catalog_label_names_resolve_to_their_own_criteria(
    resolver: CriteriaResolver,
) -> None:
    """A site whose list names a finding as our catalog does gets the catalog's criteria by
    text, or none (the embedding): never another criterion ("myocardial infarction" had taken
    acute ischaemia's, whose paraphrase "acute myocardial infarction" embeds nearest)."""
    wrong = []
    for label in load_catalog():
        if label.criteria is None:
            continue
        resolved = resolver.resolve_text(label.name).criteria
        if resolved and resolved != tuple(label.criteria):
            wrong.append((label.name, label.criteria, resolved))
    assert not wrong


def test_opposites_never_resolve_to_each_other(resolver: CriteriaResolver) -> None:
    pairs = [
        ("sinus bradycardia", "sinus tachycardia"),
        ("slow sinus rhythm", "fast sinus rhythm"),
        ("left axis deviation", "right axis deviation"),
        ("long QT", "short QT"),
        ("ST elevation", "ST depression"),
        ("left ventricular hypertrophy", "right ventricular hypertrophy"),
        ("acute myocardial infarction", "old myocardial infarction"),
    ]
    for a, b in pairs:
        ra, rb = resolver.resolve_text(a).criteria, resolver.resolve_text(b).criteria
        assert ra and rb and set(ra).isdisjoint(rb), (a, ra, b, rb)


@pytest.mark.parametrize(
    ("text", "bare"),
    [
        ("right axis deviation (rad)", "right axis deviation"),
        ("wolff-parkinson-white (wpw)", "wolff-parkinson-white"),
        ("sinus rhythm (sr)", "sinus rhythm"),
        # Not an abbreviation of the words before it: the parenthesis says something.
        ("lvh (strain)", "lvh (strain)"),
        ("av block (first degree)", "av block (first degree)"),
        ("st elevation (stemi)", "st elevation (stemi)"),
        ("atrial fibrillation (afib)", "atrial fibrillation (afib)"),
        ("(rad)", "(rad)"),
    ],
)
def test_only_an_abbreviation_of_the_words_is_dropped(text: str, bare: str) -> None:
    assert without_abbreviation(text) == bare
