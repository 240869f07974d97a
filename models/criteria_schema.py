"""The ``criteria:`` section of the label catalog, validated into a :class:`CriteriaCatalog`.

The file schema (pydantic) names each problem with its criterion and field; references
between criteria are checked to exist and not to form a cycle, then bound to the catalog
(the rules themselves, and how they evaluate, are :mod:`models.criteria`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.criteria import (
    Combination,
    Condition,
    CriteriaCatalog,
    CriteriaError,
    Criterion,
    Reference,
    Rule,
)


class _RuleSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    measure: str | None = None
    above: float | None = None
    below: float | None = None
    present: bool | None = None
    scale: float | None = Field(default=None, gt=0)
    all_: list[_RuleSchema] | None = Field(default=None, alias="all", min_length=1)
    any_: list[_RuleSchema] | None = Field(default=None, alias="any", min_length=1)
    not_: _RuleSchema | None = Field(default=None, alias="not")
    criterion: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> _RuleSchema:
        forms = [
            self.measure is not None,
            self.all_ is not None,
            self.any_ is not None,
            self.not_ is not None,
            self.criterion is not None,
        ]
        if sum(forms) != 1:
            raise ValueError("a rule is exactly one of measure, all, any, not, criterion")
        if self.measure is not None:
            comparisons = [self.above is not None, self.below is not None, self.present is not None]
            if sum(comparisons) != 1:
                raise ValueError(f"{self.measure}: give exactly one of above, below, present")
            if self.present is None and self.scale is None:
                raise ValueError(f"{self.measure}: a threshold needs a scale (one clinical step)")
        return self

    def to_rule(self) -> Rule:
        if self.measure is not None:
            if self.present is not None:
                return Condition(self.measure, "present" if self.present else "absent", 0.5, 1.0)
            op: Literal["above", "below"] = "above" if self.above is not None else "below"
            threshold = self.above if self.above is not None else self.below
            assert threshold is not None and self.scale is not None
            return Condition(self.measure, op, float(threshold), float(self.scale))
        if self.all_ is not None:
            return Combination("all", tuple(r.to_rule() for r in self.all_))
        if self.any_ is not None:
            return Combination("any", tuple(r.to_rule() for r in self.any_))
        if self.not_ is not None:
            return Combination("not", (self.not_.to_rule(),))
        assert self.criterion is not None
        return Reference(self.criterion)


class _CriterionSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$", max_length=64)
    sentence: str = Field(min_length=1)
    paraphrases: list[str] = Field(default_factory=list)
    rule: _RuleSchema
    source: str = Field(min_length=1)
    defining: bool = False
    sufficient: bool = False
    near_misses: list[str] = Field(default_factory=list)


def parse_criteria(items: list[Any], where: str = "criteria") -> CriteriaCatalog:
    """Validate the ``criteria:`` section; every reference must name a known criterion."""
    parsed: list[tuple[_CriterionSchema, Rule]] = []
    for index, item in enumerate(items):
        ref = f"criterion #{index + 1}"
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            ref += f" ({item['id']!r})"
        try:
            schema = _CriterionSchema.model_validate(item)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(criterion)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise CriteriaError(f"{where}: {ref}: {problems}") from None
        parsed.append((schema, schema.rule.to_rule()))
    catalog = CriteriaCatalog(
        Criterion(
            id=s.id,
            sentence=" ".join(s.sentence.split()),
            paraphrases=tuple(" ".join(p.split()) for p in s.paraphrases),
            rule=rule,
            source=s.source,
            defining=s.defining,
            sufficient=s.sufficient,
            near_misses=tuple(s.near_misses),
        )
        for s, rule in parsed
    )
    for criterion in catalog:
        for ref in _references(criterion.rule):
            if ref not in catalog:
                raise CriteriaError(
                    f"{where}: criterion {criterion.id!r} refers to unknown {ref!r}"
                )
        _bind(criterion.rule, catalog)
    _check_cycles(catalog, where)
    return catalog


def _bind(rule: Rule, catalog: CriteriaCatalog) -> None:
    """Point every reference at its catalog (references are resolved when evaluated)."""
    if isinstance(rule, Reference):
        object.__setattr__(rule, "catalog", catalog)
    elif isinstance(rule, Combination):
        for part in rule.parts:
            _bind(part, catalog)


def _references(rule: Rule) -> Iterator[str]:
    if isinstance(rule, Reference):
        yield rule.criterion
    elif isinstance(rule, Combination):
        for part in rule.parts:
            yield from _references(part)


def _check_cycles(catalog: CriteriaCatalog, where: str) -> None:
    def visit(cid: str, path: tuple[str, ...]) -> None:
        if cid in path:
            raise CriteriaError(f"{where}: criteria refer to each other: {' -> '.join(path)}")
        for ref in _references(catalog.get(cid).rule):
            visit(ref, (*path, cid))

    for criterion in catalog:
        visit(criterion.id, ())
