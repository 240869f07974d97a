"""Fusing the embedding score with the measured criteria evidence.

For a label resting on criteria (:mod:`models.resolution`) and an ECG where they could be
measured (soft margin ``m``, :mod:`models.criteria`), the shipped form is **margin first**:

    p = sigmoid(w_criteria * (m + band * (2 p_embedding - 1)) + bias)

The criteria margin orders the ECGs; the embedding probability only moves an ECG by up to
``band`` clinical steps either way, so two ECGs whose margins differ by more than
``2 * band`` keep the criterion's order whatever the embedding says. The band depends on
what the criterion is to the label (the catalog says so, :attr:`Criterion.defining`):

* a label resting on a **defining** criterion (the measurement *is* the finding: PR > 200 ms
  for first-degree AV block, axis < -30 deg for left axis deviation, irregular RR without P
  waves for atrial fibrillation) gets the narrow band :attr:`Fusion.kappa_defining` (at most
  one step): the embedding breaks ties and reorders only ECGs within a step or two of each
  other (the margins are clipped at +-3 steps, so every clearly met ECG ties with every
  other, and there the embedding decides). Such a label cannot fall far below its criterion;
* a label whose criteria only **support** it (myocardial infarction by Q waves, ST-T change
  by ST depression or low T) gets the wide band :attr:`Fusion.kappa`: the embedding carries
  what the criteria do not measure.

``w_criteria`` and ``bias`` (the probability scale) and both bands are fitted on
**validation data only** (PTB-XL fold 9 and the CinC validation sources named in the model
card), never on test data; the bands are chosen by leave-one-source-out cross-validation
within the validation data (:mod:`models.fusion_fit`). The older "logistic" form,
``sigmoid(w_embedding * logit(p_embedding) + w_criteria * m + bias)``, is still read.

Where the criteria could not be measured, the margin-first form takes margin 0 (the
measurement says neither yes nor no, as in the criterion-alone score), so every fused score
lies within ``band`` steps of the criterion's; the logistic form keeps the embedding
probability there. Where a
**defining** criterion is clearly not met (margin <= -1: more than one clinical step on the
wrong side), the probability is squashed below :attr:`Fusion.contradiction_cap` by an
order-preserving map, so no score says "sinus bradycardia" at a measured 74/min, and ECGs
still keep their order. Symmetrically, where **sufficient** criteria (meeting them is the
finding) are clearly met (margin >= 1), the probability is lifted above
:attr:`Fusion.support_floor` (0.5) by an order-preserving map: a measured QTc of 516 ms is
reported as a prolonged QT.

A site calibration (``ecg-cds calibrate``, :mod:`models.site`) may add a per-label Platt map
on the fused logit; it is applied after the fusion.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

FUSION_NAME = "fusion.json"
#: A defining criterion missed by more than this many clinical steps contradicts the label.
CONTRADICTION_MARGIN = -1.0
#: A label needs this many validation positives for weights of its own.
MIN_LABEL_POSITIVES = 3


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


@dataclass
class Fusion:
    """The fusion weights (shipped as ``fusion.json`` beside the model)."""

    w_embedding: float = 1.0
    w_criteria: float = 1.0
    bias: float = 0.0
    contradiction_cap: float = 0.05
    #: A label resting only on sufficient criteria clearly met (margin >= 1) keeps at least
    #: these odds: the measurement is the finding.
    support_floor: float = 0.5
    #: What the weights were fitted on (data, split, records, pairs, positives).
    fitted_on: str = "not fitted: defaults"
    n_pairs: int = 0
    positives: int = 0
    per_label: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Per-label weights (w_embedding, w_criteria, bias), fitted with a prior around the
    #: shared ones; a label without its own weights uses the shared ones.
    label_weights: dict[str, list[float]] = field(default_factory=dict)
    #: "logistic": sigmoid(w_embedding * logit(p_embedding) + w_criteria * margin + bias).
    #: "margin_first": the criteria margin ranks and the embedding only moves an ECG by up to
    #: ``kappa`` clinical steps (``kappa_defining`` for labels on defining criteria),
    #: p = sigmoid(w_criteria * (margin + band * (2 p_embedding - 1)) + bias).
    mode: str = "logistic"
    kappa: float = 0.0
    #: The band of labels resting on a defining criterion (None: ``kappa`` for every label).
    kappa_defining: float | None = None

    def weights(self, label_id: str | None) -> tuple[float, float, float]:
        own = self.label_weights.get(label_id or "")
        if own is not None:
            return own[0], own[1], own[2]
        return self.w_embedding, self.w_criteria, self.bias

    def band(self, defining: bool) -> float:
        """How many clinical steps the embedding may move an ECG (margin-first form)."""
        if defining and self.kappa_defining is not None:
            return self.kappa_defining
        return self.kappa

    def save(self, directory: Path) -> None:
        method = (
            "p = sigmoid(w_criteria * (margin + band * (2 p_embedding - 1)) + bias), band = "
            "kappa_defining for labels on defining criteria, else kappa"
            if self.mode == "margin_first"
            else "p = sigmoid(w_embedding * logit(p_embedding) + w_criteria * margin + bias)"
        )
        data = {
            "method": method + "; defining criteria missed by > 1 step squash p below "
            "contradiction_cap; sufficient criteria met by >= 1 step lift p above support_floor",
            **asdict(self),
        }
        (Path(directory) / FUSION_NAME).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Fusion:
        path = Path(directory) / FUSION_NAME
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        data.pop("method", None)
        return cls(**data)

    def logits(
        self,
        p_embedding: np.ndarray,
        margin: np.ndarray,
        label_id: str | None = None,
        defining: bool = False,
    ) -> np.ndarray:
        """Fused logits; ``margin`` NaN where not measured (margin first: 0; logistic: the
        embedding logit is kept)."""
        a, b, c = self.weights(label_id)
        z = logit(p_embedding)
        m = np.asarray(margin, dtype=np.float64)
        measured = ~np.isnan(m)
        m0 = np.where(measured, m, 0.0)
        if self.mode == "margin_first":
            # Not measured counts as margin 0 (the criterion says neither yes nor no, as in the
            # criterion-alone score): every ECG then lies within ``band`` steps of its margin.
            p = np.asarray(p_embedding, dtype=np.float64)
            return b * (m0 + self.band(defining) * (2.0 * p - 1.0)) + c
        return np.where(measured, a * z + b * m0 + c, z)

    def probabilities(
        self,
        p_embedding: np.ndarray,
        margin: np.ndarray,
        defining: bool,
        label_id: str | None = None,
    ) -> np.ndarray:
        z = self.logits(p_embedding, margin, label_id, defining)
        if defining:
            z = guard(z, np.asarray(margin, dtype=np.float64), self.contradiction_cap)
        return sigmoid(z)


def support(z: np.ndarray, margin: np.ndarray, floor: float) -> np.ndarray:
    """Lift logits above ``floor`` where sufficient criteria are clearly met, keeping order."""
    base = float(np.log(floor / (1 - floor)))
    lifted = base + np.logaddexp(0.0, z - base)  # > base, ~z far above it
    supported = np.nan_to_num(margin, nan=0.0) >= -CONTRADICTION_MARGIN
    return np.where(supported, lifted, z)


def guard(z: np.ndarray, margin: np.ndarray, cap: float) -> np.ndarray:
    """Squash logits where the defining measurement contradicts, keeping their order."""
    ceiling = float(np.log(cap / (1 - cap)))
    squashed = ceiling - np.logaddexp(0.0, ceiling - z)  # < ceiling, ~z far below it
    contradicted = np.nan_to_num(margin, nan=0.0) <= CONTRADICTION_MARGIN
    return np.where(contradicted, squashed, z)


def fit_fusion(
    p_embedding: np.ndarray,
    margin: np.ndarray,
    y: np.ndarray,
    *,
    fitted_on: str,
    label_ids: list[str] | None = None,
    prior: float = 1.0,
    label_prior: float | None = None,
    kappa: float | None = None,
    kappa_defining: float | None = None,
    defining: np.ndarray | None = None,
) -> Fusion:
    """Penalised logistic regression of y on (logit p_embedding, margin) over measured pairs.

    Inputs are flat arrays over (record, label) pairs; pairs without a margin are left out.
    The Gaussian prior (weight ``prior``) pulls towards (1, 1, 0): the embedding as it is,
    one logit per clinical step of evidence. ``w_criteria`` is kept >= 0 (evidence for a
    criterion never counts against its label).

    With ``kappa`` (margin first), only the probability scale ``w_criteria`` and ``bias`` are
    fitted, on ``margin + band * (2 p_embedding - 1)``, the band being ``kappa_defining``
    for the pairs flagged in ``defining`` (labels on a defining criterion) and ``kappa``
    for the rest.
    """
    m = np.asarray(margin, dtype=np.float64)
    # Margin first serves unmeasured pairs at margin 0, so it is fitted on them too.
    keep = np.ones(len(m), dtype=bool) if kappa is not None else ~np.isnan(m)
    z = logit(np.asarray(p_embedding)[keep])
    m = np.nan_to_num(m[keep], nan=0.0)
    t = np.asarray(y, dtype=np.float64)[keep]
    if t.sum() < 3 or len(t) - t.sum() < 3:
        raise ValueError(f"too few measured pairs to fit the fusion ({int(t.sum())} positives)")

    if kappa is not None:  # margin first: fit the scale and bias of the combined score
        band = np.full(len(t), kappa)
        if kappa_defining is not None and defining is not None:
            band = np.where(np.asarray(defining, dtype=bool)[keep], kappa_defining, kappa)
        combined = m + band * (2.0 * np.asarray(p_embedding)[keep] - 1.0)
        _, b, c = _fit(np.zeros_like(z), combined, t, np.array([0.0, 1.0, 0.0]), prior)
        return Fusion(
            w_embedding=0.0, w_criteria=round(b, 4), bias=round(c, 4), fitted_on=fitted_on,
            n_pairs=len(t), positives=int(t.sum()), mode="margin_first", kappa=kappa,
            kappa_defining=kappa_defining,
        )  # fmt: skip
    a, b, c = _fit(z, m, t, np.array([1.0, 1.0, 0.0]), prior)
    per_label: dict[str, dict[str, int]] = {}
    label_weights: dict[str, list[float]] = {}
    if label_ids is not None:
        ids = np.asarray(label_ids)[keep]
        for lid in sorted(set(ids.tolist())):
            mask = ids == lid
            pos = int(t[mask].sum())
            per_label[lid] = {"pairs": int(mask.sum()), "positives": pos}
            if label_prior is not None and pos >= MIN_LABEL_POSITIVES:
                own = _fit(z[mask], m[mask], t[mask], np.array([a, b, c]), label_prior)
                label_weights[lid] = [round(v, 4) for v in own]
    return Fusion(
        w_embedding=round(a, 4),
        w_criteria=round(b, 4),
        bias=round(c, 4),
        fitted_on=fitted_on,
        n_pairs=len(t),
        positives=int(t.sum()),
        per_label=per_label,
        label_weights=label_weights,
    )


def _fit(
    z: np.ndarray, m: np.ndarray, t: np.ndarray, centre: np.ndarray, prior: float
) -> tuple[float, float, float]:
    """MAP logistic regression on (z, m) with a Gaussian prior around ``centre``."""

    def loss(params: np.ndarray) -> float:
        u = params[0] * z + params[1] * m + params[2]
        nll = np.sum(np.logaddexp(0.0, u) - t * u)
        return float(nll + prior * np.sum((params - centre) ** 2))

    res = minimize(
        loss, x0=centre.copy(), method="L-BFGS-B",
        bounds=[(0.0, None), (0.0, None), (None, None)],
    )  # fmt: skip
    a, b, c = (float(v) for v in res.x)
    return a, b, c
