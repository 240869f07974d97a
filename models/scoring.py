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
from models.criteria_part import PartCriteria, PartValues
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
        catalog_labels: Sequence[Label] = (),
    ) -> None:
        self.criteria = criteria
        self.resolver = CriteriaResolver(criteria, encode)
        self.fusion = fusion
        self.site = site
        self._catalog_ids = frozenset(label.id for label in catalog_labels)
        self._scale_owner = scale_owners(catalog_labels, fusion)

    def scale_id(self, label: Label, resolution: Resolution) -> str:
        """Whose fitted probability scale (fusion weights, site map) a label is scored on.

        A catalog label: its own (the shared one where it has none). A free-text label that
        resolves to exactly the criteria of one catalog label with fitted weights: that
        label's, since it names the same measured finding ("normal sinus rhythm", "first
        degree atrioventricular block"); with the shared scale (the pooled base rate of every
        validation pair, ~9 %) a met sinus-rhythm criterion read 0.2 under one wording and 0.8
        under the catalog's. Any other free text: its own id, i.e. the shared scale.
        """
        if label.id in self._catalog_ids or not resolution.criteria:
            return label.id
        return self._scale_owner.get(frozenset(resolution.criteria), label.id)

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

    def evidences(self, labels: Sequence[Label], values: PartValues) -> list[LabelEvidence]:
        """:meth:`evidence` of every label over the ECGs of ``values`` (one part of a batch),
        each criterion evaluated once over them all (:class:`PartCriteria`): the same
        margins and evidence, without walking the rules once per ECG."""
        part = PartCriteria(self.criteria, values)
        n = len(values)
        out: list[LabelEvidence] = []
        for label in labels:
            resolution = self.resolve(label)
            if not resolution.criteria:
                out.append(LabelEvidence(resolution, np.full(n, np.nan), ((),) * n, False))
                continue
            margins, lines = part.evaluate_all(resolution.criteria)
            out.append(
                LabelEvidence(
                    resolution,
                    margins,
                    tuple(lines),
                    self.criteria.is_defining(resolution.criteria),
                    self.criteria.is_sufficient(resolution.criteria),
                )
            )
        return out

    def fuse(self, label: Label, p_embedding: np.ndarray, ev: LabelEvidence) -> np.ndarray:
        """Fused probability of one label (the embedding's where nothing was measured)."""
        column = np.asarray(p_embedding)[:, None]
        return self.fuse_all([label], column, [ev])[:, 0]

    def fuse_all(
        self,
        labels: Sequence[Label],
        p_embedding: np.ndarray,
        evidences: Sequence[LabelEvidence],
    ) -> np.ndarray:
        """Fused probabilities of several labels at once: (n_ecgs, n_labels), column j for
        ``labels[j]`` with ``evidences[j]``, ``p_embedding`` of the same shape.

        Order: fusion logit, then the site's map, then the support floor and the
        contradiction guard, so that no site map can override what the measurement says.
        Every step is elementwise with each label's weights and flags along its column: one
        array operation for the whole label set instead of a dozen per label (for the one
        ECG of a hook call, the per-label calls had cost as much as its signal work).
        """
        p = np.asarray(p_embedding)
        if len(evidences) != len(labels) or p.ndim != 2 or p.shape[1] != len(labels):
            raise ValueError(
                f"{len(labels)} labels, {len(evidences)} evidences and probabilities of shape "
                f"{p.shape}: one column and one evidence per label"
            )
        if not labels:
            return np.zeros(p.shape, dtype=np.float64)
        margins = np.stack([ev.margins for ev in evidences], axis=1)
        measured = np.array([bool(ev.resolution.criteria) for ev in evidences])
        defining = np.array([ev.defining for ev in evidences]) & measured
        sufficient = np.array([ev.sufficient for ev in evidences]) & measured
        z = logit(p)
        pairs = zip(labels, evidences, strict=True)
        scales = [self.scale_id(label, ev.resolution) for label, ev in pairs]
        if measured.any():
            fused = self.fusion.logits(p, margins, scales, defining)
            z = np.where(measured, fused, z)
        if self.site is not None:
            for j, scale in enumerate(scales):
                z[:, j] = self.site.apply_logit(scale, z[:, j])
        if sufficient.any():
            z = np.where(sufficient, support(z, margins, self.fusion.support_floor), z)
        if defining.any():
            z = np.where(defining, guard(z, margins, self.fusion.contradiction_cap), z)
        return sigmoid(z)


def scale_owners(labels: Sequence[Label], fusion: Fusion) -> dict[frozenset[str], str]:
    """Criteria set -> the catalog label with fitted weights that rests on exactly it (left
    out where two such labels share a set: which finding a free text names is then unsure)."""
    owners: dict[frozenset[str], list[str]] = {}
    for label in labels:
        if label.criteria and label.id in fusion.label_weights:
            owners.setdefault(frozenset(label.criteria), []).append(label.id)
    return {key: ids[0] for key, ids in owners.items() if len(ids) == 1}


def values_of(measurements: Sequence[Mapping[str, Measurement]]) -> list[Values]:
    return [criteria_values(m) for m in measurements]
