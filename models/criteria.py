"""Measurable ECG criteria: what a label rests on, as a function of the measurements.

A criterion is a sentence (with paraphrases) and a rule over the measurements of
:func:`models.measurements.measure`, with the standard threshold and where it comes from
(AHA/ACCF/HRS recommendations for the standardization and interpretation of the ECG,
2007-2009, and the criteria those cite). The definitions are data: the ``criteria:`` section
of the label catalog (``models/catalog/labels.yaml``), beside the labels that name them.

A rule is evaluated to a **soft margin**: how far the measurement lies beyond its threshold,
in units of the rule's ``scale`` (a clinically small step: 5/min, 20 ms, 10 deg, 0.05 mV),
clipped to +-:data:`MARGIN_CLIP`. Positive means the criterion is met. ``all`` takes the
smallest margin of its parts, ``any`` the largest, ``not`` flips the sign. A part that was
not measured (``None``) leaves the margin unknown unless the measured parts already decide
(an ``all`` with a failed part, an ``any`` with a met part); a label whose criteria have no
margin keeps its embedding score.
The margin is monotone in every measurement, so the criterion alone ranks ECGs exactly as
the measurement does, and it feeds the fusion in :mod:`models.fusion`.

Every evaluation also returns its **evidence**: one short line per measured condition, in
the reader's terms ("PR 232 ms > 200 ms", "heart rate 74/min, not < 60/min").

Example::

    catalog = load_criteria()
    outcome = catalog.evaluate("pr_prolonged", {"pr": 232.0})
    outcome.margin, outcome.evidence      # (1.6, ('PR 232 ms > 200 ms',))
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

#: Margins are clipped here: beyond three clinical steps a measurement is simply "clearly" met.
MARGIN_CLIP = 3.0

#: How a measurement key is named in evidence lines, its unit there, and decimals shown.
MEASUREMENT_TERMS: Mapping[str, tuple[str, str, int]] = {
    "heart_rate": ("heart rate", "/min", 0),
    "rr_irregularity": ("RR variation (CV)", "", 2),
    "ventricular_premature_beats": ("premature beats of another QRS shape", "", 0),
    "supraventricular_premature_beats": ("premature beats of the dominant QRS shape", "", 0),
    "pr": ("PR", " ms", 0),
    "qrs": ("QRS", " ms", 0),
    "qt": ("QT", " ms", 0),
    "qtc": ("QTc", " ms", 0),
    "qtc_fridericia": ("QTc (Fridericia)", " ms", 0),
    "axis": ("axis", " deg", 0),
    "p_axis": ("P axis", " deg", 0),
    "t_axis": ("T axis", " deg", 0),
    "p_wave_present": ("P wave", "", 0),
    "p_duration": ("P duration", " ms", 0),
    "p_terminal_force_v1": ("P terminal force V1", " mV·ms", 1),
    "p_amplitude_ii_mv": ("P amplitude II", " mV", 2),
    "r_peak_time": ("R-peak time V5/V6", " ms", 0),
    "terminal_s_duration": ("terminal S I/V6", " ms", 0),
    "qrs_notched": ("notched QRS", "", 0),
    "rsr_prime_v1": ("rsR' in V1/V2", "", 0),
    "sokolow_lyon": ("Sokolow-Lyon", " mV", 2),
    "cornell_voltage": ("Cornell voltage", " mV", 2),
    "r_wave_transition": ("R/S transition lead V", "", 0),
    "r_v1_mv": ("R in V1", " mV", 2),
    "rs_ratio_v1": ("R/S in V1", "", 1),
    "r_v3_mv": ("R in V3", " mV", 2),
    "limb_qrs_max_mv": ("largest limb-lead QRS", " mV", 2),
    "precordial_qrs_max_mv": ("largest precordial QRS", " mV", 2),
    "st_elevation_excess_mv": ("ST elevation beyond limit", " mV", 2),
    "st_depression_excess_mv": ("ST depression beyond limit", " mV", 2),
    "early_repol_j_excess_mv": ("J elevation beyond 0.1 mV (inferior/lateral)", " mV", 2),
    "q_wave_contiguous_ms": ("Q wave in 2 contiguous leads", " ms", 0),
    "q_wave_anterior_ms": ("Q beyond limit, anterior leads", " ms", 0),
    "q_wave_lateral_ms": ("Q beyond limit, lateral leads", " ms", 0),
    "t_inverted_leads": ("leads with inverted T", "", 0),
    "t_low_leads": ("leads with low/flat T", "", 0),
    "pacing_spike_count": ("pacing spikes", "", 0),
    "paced_beat_share": ("paced beats (share)", "", 2),
}


class Values(Protocol):
    """What a rule reads: a value per key (None: not measured), and optional descriptions."""

    def get(self, key: str) -> float | None: ...

    def describe(self, key: str) -> str | None: ...


class CriteriaError(ValueError):
    """A criteria section that cannot be used; the message names the criterion and problem."""


# ------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Outcome:
    """A rule's result on one ECG: soft margin (None: not measured) and evidence lines."""

    margin: float | None
    evidence: tuple[str, ...] = ()

    @property
    def met(self) -> bool | None:
        return None if self.margin is None else self.margin > 0


@dataclass(frozen=True)
class Condition:
    """``measure`` compared with a threshold: ``above`` (>), ``below`` (<), or a 0/1 flag."""

    measure: str
    op: Literal["above", "below", "present", "absent"]
    threshold: float
    scale: float

    def evaluate(self, values: Values, memo: Memo | None = None) -> Outcome:
        if memo is None:
            return self._evaluate(values)
        known = memo.get(self)
        if known is None:
            known = memo[self] = self._evaluate(values)
        return known

    def _evaluate(self, values: Values) -> Outcome:
        value = values.get(self.measure)
        term, unit, digits = measurement_term(self.measure)
        if value is None:
            return Outcome(None, (f"{term} not measured",))
        value = float(value)
        if self.op in ("present", "absent"):
            present = value > 0.5
            met = present if self.op == "present" else not present
            line = values.describe(self.measure) or f"{term} {'present' if present else 'absent'}"
            return Outcome(1.0 if met else -1.0, (line,))
        diff = value - self.threshold if self.op == "above" else self.threshold - value
        margin = max(-MARGIN_CLIP, min(MARGIN_CLIP, diff / self.scale))
        described = values.describe(self.measure)
        if described is not None:
            return Outcome(margin, (described,))
        sign = ">" if self.op == "above" else "<"
        shown, limit = f"{value:.{digits}f}", f"{self.threshold:.{digits}f}"
        if diff > 0:
            line = f"{term} {shown}{unit} {sign} {limit}{unit}"
        else:
            line = f"{term} {shown}{unit}, not {sign} {limit}{unit}"
        return Outcome(margin, (line,))


@dataclass(frozen=True)
class Combination:
    """``all`` (every part), ``any`` (at least one part) or ``not`` (its one part fails)."""

    kind: Literal["all", "any", "not"]
    parts: tuple[Rule, ...]

    def evaluate(self, values: Values, memo: Memo | None = None) -> Outcome:
        outcomes = [p.evaluate(values, memo) for p in self.parts]
        known = [o.margin for o in outcomes if o.margin is not None]
        if self.kind == "not":
            margin = outcomes[0].margin
            return Outcome(None if margin is None else -margin, _all_lines(outcomes))
        if not known:
            return Outcome(None, _all_lines(outcomes))
        if self.kind == "all":
            # A failed measured part decides; otherwise every part must have been measured.
            lowest = min(known)
            if lowest <= 0:
                return Outcome(lowest, _deciding(outcomes, lowest))
            complete = len(known) == len(outcomes)
            return Outcome(lowest if complete else None, _all_lines(outcomes))
        highest = max(known)
        if highest > 0:  # any: a met measured part decides
            return Outcome(highest, _deciding(outcomes, highest))
        complete = len(known) == len(outcomes)
        return Outcome(highest if complete else None, _all_lines(outcomes))


@dataclass(frozen=True)
class Reference:
    """Another criterion by id (resolved when the catalog is built)."""

    criterion: str
    catalog: CriteriaCatalog | None = None

    def evaluate(self, values: Values, memo: Memo | None = None) -> Outcome:
        assert self.catalog is not None, "unbound criterion reference"
        return self.catalog.evaluate(self.criterion, values, memo)


Rule = Condition | Combination | Reference
#: Outcomes already evaluated on one ECG's values: by condition (equal conditions of different
#: criteria give the same outcome) and by criterion id.
Memo = dict[Condition | str, Outcome]


def _all_lines(outcomes: list[Outcome]) -> tuple[str, ...]:
    """Every part's evidence, each line once, in order (built only where it is the answer)."""
    return tuple(dict.fromkeys(line for o in outcomes for line in o.evidence))


def _deciding(outcomes: list[Outcome], margin: float) -> tuple[str, ...]:
    """Evidence of the parts that decided an all/any (what a reader needs to see)."""
    return tuple(dict.fromkeys(line for o in outcomes if o.margin == margin for line in o.evidence))


@functools.cache
def measurement_term(key: str) -> tuple[str, str, int]:
    """How a key is named in evidence lines, its unit there, and decimals shown."""
    if key in MEASUREMENT_TERMS:
        return MEASUREMENT_TERMS[key]
    name, _, lead = key.partition(".")
    base = MEASUREMENT_TERMS.get(name, (name.replace("_", " "), "", 2))
    return (f"{base[0]} {lead}".strip(), base[1], base[2])


# ---------------------------------------------------------------------------- criteria


@dataclass(frozen=True)
class Criterion:
    """One measurable criterion: sentence, paraphrases, rule, threshold source.

    ``defining``: the criterion *is* the finding (sinus bradycardia is a sinus rhythm below
    60/min), so a label resting on it cannot be likely where the measurement clearly says
    otherwise; the fusion caps such scores (see :mod:`models.fusion`).
    """

    id: str
    sentence: str
    paraphrases: tuple[str, ...]
    rule: Rule
    source: str
    defining: bool = False
    #: Meeting it clearly makes the finding (PR > 200 ms is first-degree AV block): the
    #: fusion keeps such a label at least even odds where the measurement clearly meets it.
    sufficient: bool = False
    #: Phrases that sound close but name something else (e.g. "early repolarization" for ST
    #: elevation): a label nearest to one of these does not take this criterion.
    near_misses: tuple[str, ...] = ()

    @property
    def phrases(self) -> tuple[str, ...]:
        return (self.sentence, *self.paraphrases)

    def evaluate(self, values: Values, memo: Memo | None = None) -> Outcome:
        return self.rule.evaluate(values, memo)


class CriteriaCatalog:
    """Criteria by id, in file order."""

    def __init__(self, criteria: Iterable[Criterion]) -> None:
        self.criteria: tuple[Criterion, ...] = tuple(criteria)
        self._by_id = {c.id: c for c in self.criteria}
        if len(self._by_id) != len(self.criteria):
            raise CriteriaError("duplicate criterion ids")

    def __iter__(self) -> Iterator[Criterion]:
        return iter(self.criteria)

    def __len__(self) -> int:
        return len(self.criteria)

    def __contains__(self, criterion_id: object) -> bool:
        return criterion_id in self._by_id

    def get(self, criterion_id: str) -> Criterion:
        try:
            return self._by_id[criterion_id]
        except KeyError:
            raise KeyError(f"no criterion {criterion_id!r} in the catalog") from None

    def evaluate(self, criterion_id: str, values: Values, memo: Memo | None = None) -> Outcome:
        """``memo``: outcomes already evaluated on these same values, by this catalog only
        (a criterion shared by several labels, or named by other criteria, is evaluated once)."""
        if memo is None:
            return self.get(criterion_id).evaluate(values)
        known = memo.get(criterion_id)
        if known is None:
            known = memo[criterion_id] = self.get(criterion_id).evaluate(values, memo)
        return known

    def evaluate_all(self, ids: Iterable[str], values: Values, memo: Memo | None = None) -> Outcome:
        """Conjunction of several criteria (a label naming more than one needs them all)."""
        ids = tuple(ids)
        if len(ids) == 1:
            return self.evaluate(ids[0], values, memo)
        return Combination("all", tuple(self.get(i).rule for i in ids)).evaluate(values, memo)

    def is_defining(self, ids: Iterable[str]) -> bool:
        return any(self.get(i).defining for i in ids)

    def is_sufficient(self, ids: Iterable[str]) -> bool:
        """A conjunction of sufficient criteria is sufficient (all must hold, and each does)."""
        ids = tuple(ids)
        return bool(ids) and all(self.get(i).sufficient for i in ids)


def measured_keys(rule: Rule) -> set[str]:
    """Every measurement key a rule reads (directly or through references)."""
    if isinstance(rule, Condition):
        return {rule.measure}
    if isinstance(rule, Combination):
        return set().union(*(measured_keys(p) for p in rule.parts))
    assert rule.catalog is not None
    return measured_keys(rule.catalog.get(rule.criterion).rule)
