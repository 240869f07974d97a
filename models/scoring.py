"""The measurement channel of zero-shot scoring: criteria, evidence, fusion, site calibration.

:class:`CriteriaScorer` takes the embedding probabilities of a label set (one column per
label) and the measurements of each ECG, and returns fused probabilities with their
evidence. It is used by :meth:`models.classifier.ZeroShotClassifier.classify` and by the
evaluation, so the figures are those of the served scores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.catalog import Label
from models.criteria import CriteriaCatalog, Memo
from models.criteria_values import Values, criteria_values
from models.fusion import Fusion, guard, logit, sigmoid, support
from models.resolution import CriteriaResolver, Resolution
from models.results import Measurement
from models.site import SiteCalibration


@dataclass(frozen=True)
class LabelEvidence:
    """One label over a batch: criteria, margins (NaN: not measured), evidence per ECG."""

    resolution: Resolution
    margins: np.ndarray
    evidence: tuple[tuple[str, ...], ...]
    defining: bool
    sufficient: bool = False


class CriteriaScorer:
    def __init__(
        self,
        criteria: CriteriaCatalog,
        encode: Callable[[Sequence[str]], np.ndarray],
        fusion: Fusion,
        site: SiteCalibration | None = None,
    ) -> None:
        self.criteria = criteria
        self.resolver = CriteriaResolver(criteria, encode)
        self.fusion = fusion
        self.site = site

    def resolve(self, label: Label) -> Resolution:
        resolution = self.resolver.resolve(label)
        known = tuple(c for c in resolution.criteria if c in self.criteria)
        if known != resolution.criteria:  # a catalog naming criteria this build lacks
            return Resolution(known, resolution.how, resolution.similarity, resolution.matched)
        return resolution

    def evidence(
        self, label: Label, values: Sequence[Values], memos: Sequence[Memo] | None = None
    ) -> LabelEvidence:
        """``memos``: one per ECG of ``values``, kept over the labels of a batch (see
        :meth:`CriteriaCatalog.evaluate`); the outcomes are the same with or without."""
        resolution = self.resolve(label)
        if not resolution.criteria:
            nothing = np.full(len(values), np.nan)
            return LabelEvidence(resolution, nothing, ((),) * len(values), False)
        evaluate = self.criteria.evaluate_all
        if memos is None:
            outcomes = [evaluate(resolution.criteria, v) for v in values]
        else:
            outcomes = [
                evaluate(resolution.criteria, v, m) for v, m in zip(values, memos, strict=True)
            ]
        margins = np.array([np.nan if o.margin is None else o.margin for o in outcomes])
        return LabelEvidence(
            resolution,
            margins,
            tuple(o.evidence for o in outcomes),
            self.criteria.is_defining(resolution.criteria),
            self.criteria.is_sufficient(resolution.criteria),
        )

    def fuse(self, label: Label, p_embedding: np.ndarray, ev: LabelEvidence) -> np.ndarray:
        """Fused probability (the embedding's where nothing was measured).

        Order: fusion logit, then the site's map, then the support floor and the
        contradiction guard, so that no site map can override what the measurement says.
        """
        measured = bool(ev.resolution.criteria)
        z = (
            self.fusion.logits(p_embedding, ev.margins, label.id, ev.defining)
            if measured
            else logit(p_embedding)
        )
        if self.site is not None:
            z = self.site.apply_logit(label.id, z)
        if measured and ev.sufficient:
            z = support(z, ev.margins, self.fusion.support_floor)
        if measured and ev.defining:
            z = guard(z, ev.margins, self.fusion.contradiction_cap)
        return sigmoid(z)


def values_of(measurements: Sequence[Mapping[str, Measurement]]) -> list[Values]:
    return [criteria_values(m) for m in measurements]
