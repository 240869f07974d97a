"""Fusing the embedding score with the measured criteria evidence.

For a label resting on criteria (:mod:`models.resolution`) and an ECG where they could be
measured (soft margin ``m``, :mod:`models.criteria`), the shipped form is **lexicographic**:
the criterion's order is kept between every two ECGs whose margins differ, and the embedding
decides only among ECGs the criterion ties::

    p = sigmoid(w_criteria * ordered_score(m, p_embedding, band) + bias)

The criterion alone (margin; 0 where not measured, as in its AUROC) ties many ECGs: margins
are clipped at +-3 steps (every clearly met ECG ties with every other, and every clearly
missed one), unmeasured criteria and margins exactly at the threshold sit at 0, and rules on
counts or yes/no findings give a handful of values. AUROC counts a tie as one half; the
fused score orders the tied ECGs by the embedding instead. So, by construction, the fused
AUROC of a label equals the criterion's plus the tie-break term

    sum over tied groups g of (AUROC of p_embedding within g - 0.5) * P_g * N_g / (P * N)

(P_g, N_g the positives and negatives in g): it falls below the criterion only where the
embedding ranks the criterion's ties worse than chance, and never by reordering ECGs the
criterion tells apart (:func:`ordered_score`). At the three **atoms** (clipped missed at
-3, not measured or exactly 0, clipped met at +3) the embedding spreads the tied ECGs over
``band`` steps either way (:attr:`Fusion.kappa`, :attr:`Fusion.kappa_defining` for labels on
a defining criterion), so the probability there carries the embedding's; the continuous
margins are moved apart to make room (``m + band`` above 0, ``m - band`` below), and ties
elsewhere are broken within :data:`TIE_SPREAD` steps (the probability does not move).

``w_criteria`` and ``bias`` (the probability scale) are fitted on **validation data only**
(PTB-XL fold 9 and the CinC validation sources named in the model card), never on test
data; the bands only change the probabilities, not the ranking, and are chosen by
leave-one-source-out log loss within the validation data (:mod:`models.fusion_fit`).

Older ``fusion.json`` files are still read: the **margin first** form
``sigmoid(w_criteria * (m + band * (2 p_embedding - 1)) + bias)`` (the embedding moves an
ECG up to ``band`` steps, so it may reorder ECGs whose margins differ by less than
``2 * band``: on held-out data it ranked 11 of 26 labels below their criterion) and the
**logistic** form ``sigmoid(w_embedding * logit(p_embedding) + w_criteria * m + bias)``.

Where a **defining** criterion is clearly not met (margin <= -1: more than one clinical step
on the wrong side), the probability is squashed below :attr:`Fusion.contradiction_cap` by an
order-preserving map, so no score says "sinus bradycardia" at a measured 74/min, and ECGs
still keep their order. Symmetrically, where **sufficient** criteria (meeting them is the
finding) are clearly met (margin >= 1), the probability is lifted above
:attr:`Fusion.support_floor` (0.5) by an order-preserving map: a measured QTc of 516 ms is
reported as a prolonged QT. Both maps act on a set of ECGs that the criterion ranks above
(below) all others, so they keep the lexicographic order.

A site calibration (``ecg-cds calibrate``, :mod:`models.site`) may add a per-label Platt map
on the fused logit; it is applied after the fusion.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from models.criteria import MARGIN_CLIP

FUSION_NAME = "fusion.json"
#: A defining criterion missed by more than this many clinical steps contradicts the label.
CONTRADICTION_MARGIN = -1.0
#: A label needs this many validation positives for weights of its own.
MIN_LABEL_POSITIVES = 3
#: The smallest probability scale (logit per step of the ordered score) a fit may give in the
#: margin-first and lexicographic forms: at 0 every ECG of a label would tie, so the scale is
#: kept strictly positive and a label's own scale and bias only calibrate, never re-rank.
MIN_ORDER_SCALE = 0.01
#: Outside the atoms, the embedding moves an ECG by at most this many clinical steps: it only
#: breaks exact ties. Far below any measurement's resolution (1 ms of a 20 ms PR step is 0.05
#: steps, 1 uV of a 0.1 mV step 0.01), so margins that differ at all keep their order.
TIE_SPREAD = 1e-6
#: The fusion forms :meth:`Fusion.logits` knows (older ``fusion.json`` files name the others).
MODES = ("logistic", "margin_first", "lexicographic")


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def criterion_score(margin: np.ndarray) -> np.ndarray:
    """The criterion alone as a ranking score: its margin, 0 where not measured, rounded to
    1e-9 steps so that float noise (1.2 vs 1.2000000000000002 steps) is a tie, not an order."""
    return np.round(np.nan_to_num(np.asarray(margin, dtype=np.float64), nan=0.0), 9)


def ordered_score(
    margin: np.ndarray, p_embedding: np.ndarray, band: float | np.ndarray
) -> np.ndarray:
    """The criterion's order, the embedding deciding within its ties (lexicographic).

    Levels, each strictly above the one before: clipped missed (``m <= -3``) in
    ``(-3 - 3 band, -3 - band)``; missed ``m - band``; not measured or ``m == 0`` in
    ``(-band, band)``; met ``m + band``; clipped met in ``(3 + band, 3 + 3 band)``. Within the
    atoms the embedding spreads ECGs over the level; elsewhere it moves them by at most
    :data:`TIE_SPREAD` (and never past the level's edge), so two ECGs keep the criterion's
    order whenever their margins differ by more than ``2 * TIE_SPREAD``.
    """
    q = 2.0 * np.clip(np.asarray(p_embedding, dtype=np.float64), 1e-6, 1 - 1e-6) - 1.0
    m0 = np.clip(criterion_score(margin), -MARGIN_CLIP, MARGIN_CLIP)
    size = np.abs(m0)
    # Half the distance to the level's edges bounds the tie-break, so it never crosses them.
    spread = np.minimum(TIE_SPREAD, np.minimum(size, MARGIN_CLIP - size) / 2.0)
    inner = m0 + np.sign(m0) * band + spread * q
    clipped = np.sign(m0) * (MARGIN_CLIP + 2.0 * band) + band * q
    return np.where(size == 0.0, band * q, np.where(size >= MARGIN_CLIP, clipped, inner))


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
    #: "lexicographic": p = sigmoid(w_criteria * ordered_score(margin, p, band) + bias): the
    #: criterion's order kept, the embedding deciding its ties (spread ``band`` at the atoms).
    mode: str = "logistic"
    kappa: float = 0.0
    #: The band of labels resting on a defining criterion (None: ``kappa`` for every label).
    kappa_defining: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:  # a newer file: fail loudly rather than score another form
            raise ValueError(f"unknown fusion mode {self.mode!r}; this build knows {MODES}")

    def weights(self, label_id: str | None) -> tuple[float, float, float]:
        own = self.label_weights.get(label_id or "")
        if own is not None:
            return own[0], own[1], own[2]
        return self.w_embedding, self.w_criteria, self.bias

    def band(self, defining: bool) -> float:
        """How many clinical steps the embedding may move an ECG (margin first) or spread the
        ECGs tied at an atom (lexicographic)."""
        if defining and self.kappa_defining is not None:
            return self.kappa_defining
        return self.kappa

    def save(self, directory: Path) -> None:
        band = "band = kappa_defining for labels on defining criteria, else kappa"
        method = {
            "margin_first": "p = sigmoid(w_criteria * (margin + band * (2 p_embedding - 1)) "
            f"+ bias), {band}",
            "lexicographic": "p = sigmoid(w_criteria * ordered_score(margin, p_embedding, band) "
            f"+ bias): the criterion's order kept between distinct margins, the embedding "
            f"ordering its ties (spread over band steps at -3, 0/unmeasured, +3), {band}",
        }.get(
            self.mode, "p = sigmoid(w_embedding * logit(p_embedding) + w_criteria * margin + bias)"
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
        label_id: str | Sequence[str] | None = None,
        defining: bool | np.ndarray = False,
    ) -> np.ndarray:
        """Fused logits; ``margin`` NaN where not measured (margin first: 0; logistic: the
        embedding logit is kept).

        One label: 1-D arrays, ``label_id`` a string. Several at once: (n, labels) arrays,
        one column per label, ``label_id`` the labels' ids and ``defining`` one flag per
        label; each column gets its label's weights and band, and every operation is
        elementwise, so column j equals the one-label call for label j.
        """
        a, b, c = self._weight_columns(label_id)
        z = logit(p_embedding)
        m = np.asarray(margin, dtype=np.float64)
        measured = ~np.isnan(m)
        m0 = np.where(measured, m, 0.0)
        band = self._band_columns(defining)
        if self.mode == "lexicographic":
            return b * ordered_score(m, p_embedding, band) + c
        if self.mode == "margin_first":
            # Not measured counts as margin 0 (the criterion says neither yes nor no, as in the
            # criterion-alone score): every ECG then lies within ``band`` steps of its margin.
            p = np.asarray(p_embedding, dtype=np.float64)
            return b * (m0 + band * (2.0 * p - 1.0)) + c
        return np.where(measured, a * z + b * m0 + c, z)

    def _weight_columns(
        self, label_id: str | Sequence[str] | None
    ) -> tuple[float | np.ndarray, float | np.ndarray, float | np.ndarray]:
        if label_id is None or isinstance(label_id, str):
            return self.weights(label_id)
        a, b, c = np.array([self.weights(i) for i in label_id], dtype=np.float64).reshape(-1, 3).T
        return a, b, c

    def _band_columns(self, defining: bool | np.ndarray) -> float | np.ndarray:
        if isinstance(defining, (bool, np.bool_)):
            return self.band(bool(defining))
        return np.array([self.band(bool(d)) for d in defining], dtype=np.float64)

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
    lexicographic: bool = False,
) -> Fusion:
    """Penalised logistic regression of y on (logit p_embedding, margin) over measured pairs.

    Inputs are flat arrays over (record, label) pairs; pairs without a margin are left out.
    The Gaussian prior (weight ``prior``) pulls towards (1, 1, 0): the embedding as it is,
    one logit per clinical step of evidence. ``w_criteria`` is kept >= 0 (evidence for a
    criterion never counts against its label).

    With ``kappa`` (margin first), only the probability scale ``w_criteria`` and ``bias`` are
    fitted, on ``margin + band * (2 p_embedding - 1)``, the band being ``kappa_defining``
    for the pairs flagged in ``defining`` (labels on a defining criterion) and ``kappa``
    for the rest. With ``lexicographic`` (and ``kappa``) the same scale is fitted on
    :func:`ordered_score` instead.
    """
    m = np.asarray(margin, dtype=np.float64)
    # Margin first serves unmeasured pairs at margin 0, so it is fitted on them too.
    keep = np.ones(len(m), dtype=bool) if kappa is not None else ~np.isnan(m)
    z = logit(np.asarray(p_embedding)[keep])
    m = np.nan_to_num(m[keep], nan=0.0)
    t = np.asarray(y, dtype=np.float64)[keep]
    if t.sum() < 3 or len(t) - t.sum() < 3:
        raise ValueError(f"too few measured pairs to fit the fusion ({int(t.sum())} positives)")

    mode = "logistic"
    x, w, centre = z, m, np.array([1.0, 1.0, 0.0])
    if kappa is not None:  # margin first / lexicographic: the scale and bias of one score
        band = np.full(len(t), kappa)
        if kappa_defining is not None and defining is not None:
            band = np.where(np.asarray(defining, dtype=bool)[keep], kappa_defining, kappa)
        p_kept = np.asarray(p_embedding)[keep]
        mode = "lexicographic" if lexicographic else "margin_first"
        x, centre = np.zeros_like(z), np.array([0.0, 1.0, 0.0])
        w = ordered_score(m, p_kept, band) if lexicographic else m + band * (2.0 * p_kept - 1.0)
    floor = MIN_ORDER_SCALE if kappa is not None else 0.0
    a, b, c = _fit(x, w, t, centre, prior, floor)
    per_label: dict[str, dict[str, int]] = {}
    label_weights: dict[str, list[float]] = {}
    if label_ids is not None:
        ids = np.asarray(label_ids)[keep]
        for lid in sorted(set(ids.tolist())):
            mask = ids == lid
            pos = int(t[mask].sum())
            per_label[lid] = {"pairs": int(mask.sum()), "positives": pos}
            # A label's own scale and bias (w_criteria > 0) keep its ranking: in the margin
            # first and lexicographic forms they only calibrate. One shared bias puts every
            # label at the pooled base rate (~9 % of pairs are positive): sinus rhythm, met
            # in 54-74 % of records, was served at a mean 0.11-0.15 (ECE 0.43-0.59).
            if label_prior is not None and pos >= MIN_LABEL_POSITIVES:
                own = _fit(x[mask], w[mask], t[mask], np.array([a, b, c]), label_prior, floor)
                label_weights[lid] = [round(v, 4) for v in own]
    return Fusion(
        w_embedding=round(a, 4), w_criteria=round(b, 4), bias=round(c, 4), fitted_on=fitted_on,
        n_pairs=len(t), positives=int(t.sum()), per_label=per_label,
        label_weights=label_weights, mode=mode, kappa=kappa or 0.0, kappa_defining=kappa_defining,
    )  # fmt: skip


def _fit(
    z: np.ndarray,
    m: np.ndarray,
    t: np.ndarray,
    centre: np.ndarray,
    prior: float,
    min_scale: float = 0.0,
) -> tuple[float, float, float]:
    """MAP logistic regression on (z, m) with a Gaussian prior around ``centre``; the weight
    of ``m`` is kept at or above ``min_scale``."""

    def loss(params: np.ndarray) -> float:
        u = params[0] * z + params[1] * m + params[2]
        nll = np.sum(np.logaddexp(0.0, u) - t * u)
        return float(nll + prior * np.sum((params - centre) ** 2))

    res = minimize(
        loss, x0=centre.copy(), method="L-BFGS-B",
        bounds=[(0.0, None), (min_scale, None), (None, None)],
    )  # fmt: skip
    a, b, c = (float(v) for v in res.x)
    return a, b, c
