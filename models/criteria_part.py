"""Criteria evaluated over every ECG of a batch part at once: columns, not one ECG at a time.

:meth:`models.criteria.CriteriaCatalog.evaluate` takes one ECG's values and walks a rule
tree per ECG and label (a memo per ECG keeps shared criteria to one evaluation). Scoring a
part of a batch needs every label's criteria on every ECG of the part, so here each rule
node is evaluated once for the whole part: its margins as one array over the ECGs (NaN: not
measured) and its evidence as one tuple of lines per ECG. The outcomes are exactly those of
``evaluate`` (same margins, same lines in the same order): ``tests/models/test_criteria_part``
checks that on PTB-XL records and on edge cases. The per-ECG walk, with its memo, dataclass
outcomes and dict look-ups, had been a third of scoring's CPU outside the encoder.

:class:`PartValues` is the part's measurements as columns: a key's value over the ECGs
(:func:`models.criteria_values.criteria_values` for each, but only for the keys the criteria
read, and derived features only where one is read).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import chain

import numpy as np

from models.criteria import (
    MARGIN_CLIP,
    Combination,
    Condition,
    CriteriaCatalog,
    Reference,
    Rule,
    measurement_term,
)
from models.criteria_values import DERIVED_KEYS, Values, lead_reader
from models.derived_part import LeadMatrices, derive_part
from models.results import Measurement

#: A rule over a part: margins (n,) float64, NaN where not measured; evidence lines per ECG.
Column = tuple[np.ndarray, list[tuple[str, ...]]]


class PartValues:
    """The values criteria read, by key, over the ECGs of a part (None: not measured)."""

    def __init__(self, values: list[Values] | None, measurements: list[Mapping[str, Measurement]]):
        self._values = values
        self._measurements = measurements
        self._columns: dict[str, list[float | None]] = {}
        self._descriptions: dict[str, list[str | None]] = {}
        self._arrays: dict[str, tuple[np.ndarray, bool]] = {}
        self._leads: LeadMatrices | None = None

    @classmethod
    def of_measurements(cls, measurements: Sequence[Mapping[str, Measurement]]) -> PartValues:
        return cls(None, list(measurements))

    @classmethod
    def of_values(cls, values: Sequence[Values]) -> PartValues:
        """Columns of :class:`Values` already made (tests, ``values_from``)."""
        return cls(list(values), [])

    def __len__(self) -> int:
        return len(self._measurements) if self._values is None else len(self._values)

    def column(self, key: str) -> list[float | None]:
        """``Values.get(key)`` of each ECG, as a float."""
        known = self._columns.get(key)
        if known is not None:
            return known
        if self._values is not None:
            raw = [v.get(key) for v in self._values]
            column = [None if x is None else float(x) for x in raw]
            self._descriptions[key] = [v.describe(key) for v in self._values]
        elif key in DERIVED_KEYS:
            column = self._derive(key)
        elif "." not in key:
            found = [m.get(key) for m in self._measurements]
            column = [None if m is None or m.value is None else float(m.value) for m in found]
        else:  # one lead of a lead-wise measurement, "st_j60.V2", as criteria_values names it
            name, _, lead = key.partition(".")
            column = [lead_reader(m)(name, lead) for m in self._measurements]
        self._columns[key] = column
        return column

    def descriptions(self, key: str) -> list[str | None] | None:
        """``Values.describe(key)`` of each ECG; None where no ECG has one for this key."""
        self.column(key)
        return self._descriptions.get(key)

    def array(self, key: str) -> tuple[np.ndarray, bool]:
        """The column as float64 (NaN: not measured), and whether that is exact: False when a
        measured value is itself NaN, which a rule reads differently from "not measured"."""
        known = self._arrays.get(key)
        if known is None:
            column = self.column(key)
            array = np.array([np.nan if x is None else x for x in column], dtype=np.float64)
            exact = int(np.isnan(array).sum()) == column.count(None)
            known = self._arrays[key] = (array, exact)
        return known

    def _derive(self, key: str) -> list[float | None]:
        """One derivation (every key it writes with ``key``) over the part."""
        if self._leads is None:
            self._leads = LeadMatrices(self._measurements)
        for written, (column, descriptions) in derive_part(key, self._leads).items():
            self._columns[written] = column
            if any(d is not None for d in descriptions):
                self._descriptions[written] = descriptions
        return self._columns[key]


class PartCriteria:
    """A catalog's criteria over one part: each condition, criterion and combination once."""

    def __init__(self, catalog: CriteriaCatalog, values: PartValues) -> None:
        self.catalog = catalog
        self.values = values
        self._n = len(values)
        self._conditions: dict[Condition, Column] = {}
        self._criteria: dict[str, Column] = {}
        # By identity: the catalog's rule objects live as long as the catalog, and hashing a
        # rule tree per look-up would cost more than the cache saves.
        self._combinations: dict[int, Column] = {}
        self._conjunctions: dict[tuple[str, ...], Column] = {}

    def evaluate_all(self, ids: Sequence[str]) -> Column:
        """:meth:`CriteriaCatalog.evaluate_all` over the part."""
        ids = tuple(ids)
        if len(ids) == 1:
            return self.criterion(ids[0])
        known = self._conjunctions.get(ids)
        if known is None:
            rules = tuple(self.catalog.get(i).rule for i in ids)
            known = self._conjunctions[ids] = self._combine(Combination("all", rules))
        return known

    def criterion(self, criterion_id: str) -> Column:
        known = self._criteria.get(criterion_id)
        if known is None:
            known = self._criteria[criterion_id] = self.rule(self.catalog.get(criterion_id).rule)
        return known

    def rule(self, rule: Rule) -> Column:
        if isinstance(rule, Condition):
            known = self._conditions.get(rule)
            if known is None:
                known = self._conditions[rule] = self._condition(rule)
            return known
        if isinstance(rule, Reference):
            return self.criterion(rule.criterion)
        known = self._combinations.get(id(rule))
        if known is None:
            known = self._combinations[id(rule)] = self._combine(rule)
        return known

    def _condition(self, c: Condition) -> Column:
        """:meth:`Condition._evaluate` for every ECG: margins by array, lines by list."""
        array, exact = self.values.array(c.measure)
        if not exact:
            return self._condition_by_ecg(c)
        column = self.values.column(c.measure)
        described = self.values.descriptions(c.measure)
        term, unit, digits = measurement_term(c.measure)
        unmeasured: tuple[str, ...] = (f"{term} not measured",)
        lines: list[tuple[str, ...]]
        if c.op in ("present", "absent"):
            present = array > 0.5
            met = present if c.op == "present" else ~present
            margins = np.where(np.isnan(array), np.nan, np.where(met, 1.0, -1.0))
            said: dict[bool, tuple[str, ...]] = {
                True: (f"{term} present",),
                False: (f"{term} absent",),
            }
            lines = [
                unmeasured if x is None else ((d,) if d else said[p])
                for x, p, d in zip(
                    column, present.tolist(), described or [None] * self._n, strict=True
                )
            ]
            return margins, lines
        diff = array - c.threshold if c.op == "above" else c.threshold - array
        margins = np.clip(diff / c.scale, -MARGIN_CLIP, MARGIN_CLIP)
        sign = ">" if c.op == "above" else "<"
        limit = f"{c.threshold:.{digits}f}"
        shown = f"{{:.{digits}f}}"
        # The line's two forms with the value left open ("{" in a name or unit doubled).
        head = term.replace("{", "{{").replace("}", "}}") + " " + shown
        tail = unit.replace("{", "{{").replace("}", "}}")
        met_form = f"{head}{tail} {sign} {limit}{tail}"
        missed_form = f"{head}{tail}, not {sign} {limit}{tail}"
        over = (diff > 0).tolist()
        if described is None:
            lines = [
                unmeasured
                if x is None
                else ((met_form.format(x),) if up else (missed_form.format(x),))
                for x, up in zip(column, over, strict=True)
            ]
        else:
            lines = [
                unmeasured
                if x is None
                else (
                    (d,)
                    if d is not None
                    else ((met_form.format(x),) if up else (missed_form.format(x),))
                )
                for x, up, d in zip(column, over, described, strict=True)
            ]
        return margins, lines

    def _condition_by_ecg(self, c: Condition) -> Column:
        """The reference evaluation, one ECG at a time (a column holding a NaN value)."""
        column = self.values.column(c.measure)
        described = self.values.descriptions(c.measure) or [None] * self._n
        outcomes = [
            c.evaluate(_One(c.measure, x, d)) for x, d in zip(column, described, strict=True)
        ]
        margins = np.array([np.nan if o.margin is None else o.margin for o in outcomes])
        return margins, [o.evidence for o in outcomes]

    def _combine(self, rule: Combination) -> Column:
        """:meth:`Combination.evaluate` for every ECG (see there for the rules)."""
        parts = [self.rule(p) for p in rule.parts]
        if not parts:  # nothing to decide (the criteria schema asks for parts)
            return np.full(self._n, np.nan), [()] * self._n
        part_lines = [lines for _, lines in parts]
        if rule.kind == "not":
            margins, lines = parts[0]
            if len(parts) > 1:
                lines = [_each_once(g) for g in zip(*part_lines, strict=True)]
            # A part's lines are already each once, in order. NaN (not measured) stays the
            # plain NaN the per-ECG evaluation writes, not a negated one.
            return np.where(np.isnan(margins), np.nan, -margins), lines
        stacked = np.stack([m for m, _ in parts])  # (parts, ECGs)
        unknown = np.isnan(stacked)
        n = self._n
        if rule.kind == "all":  # the first lowest known margin, as min() takes it
            filled = np.where(unknown, np.inf, stacked)
            first = filled.argmin(axis=0)
        else:
            filled = np.where(unknown, -np.inf, stacked)
            first = filled.argmax(axis=0)
        best = filled[first, np.arange(n)]
        known = np.isfinite(best)  # margins are clipped: infinite only where none is known
        decided = known & ((best <= 0) if rule.kind == "all" else (best > 0))
        complete = ~unknown.any(axis=0)
        margins = np.where(decided | (known & complete), best, np.nan)
        ties = (stacked == best).sum(axis=0)
        out: list[tuple[str, ...]] = []
        for i, (deciding, tied, j) in enumerate(
            zip(decided.tolist(), ties.tolist(), first.tolist(), strict=True)
        ):
            if deciding and tied == 1:  # one part decided: its lines, already each once
                out.append(part_lines[j][i])
            elif deciding:
                at = best[i]
                chosen = [part_lines[p][i] for p in range(len(parts)) if stacked[p, i] == at]
                out.append(_each_once(chosen))
            else:
                out.append(_each_once(p[i] for p in part_lines))
        return margins, out


def _each_once(groups: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    """Every part's lines, each line once, in order (``criteria._all_lines``)."""
    return tuple(dict.fromkeys(chain.from_iterable(groups)))


class _One:
    """One ECG's value of one key, as a rule reads it."""

    def __init__(self, key: str, value: float | None, description: str | None) -> None:
        self.key, self.value, self.description = key, value, description

    def get(self, key: str) -> float | None:
        return self.value if key == self.key else None

    def describe(self, key: str) -> str | None:
        return self.description if key == self.key else None
