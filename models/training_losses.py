"""Loss terms of the training recipe beyond the label-aware sigmoid loss (issue 14 part 3).

Both keep the ECG embedding from collapsing onto a normal-vs-abnormal axis, in two ways:

* :func:`rank_penalty` acts on the geometry directly: a variance hinge per dimension and a
  penalty on a low participation ratio of the batch covariance (VICReg-style, Bardes et al.
  2022, with the covariance term written as the effective dimension the model card reports);
* :func:`cooccurrence_negative_weights` acts through the facts: a negative (ECG, fact) pair
  weighs more where the fact often comes with a fact the ECG carries (P(fact | carried fact)
  on the training records), so the loss asks the embedding to tell apart facts that travel
  together (left ventricular hypertrophy from ST-T change, sinus rhythm from normal ECG),
  which one "abnormal" direction cannot do.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def rank_penalty(z: torch.Tensor, variance_weight: float, covariance_weight: float) -> torch.Tensor:
    """Variance hinge + spread of the covariance spectrum on a batch of unit embeddings.

    Unit vectors in d dimensions have per-dimension std about 1/sqrt(d) when spread evenly;
    the hinge asks each dimension for at least that. The covariance term is
    ``-log(PR) / log(n)`` with PR = tr(C)^2 / ||C||_F^2, the participation ratio of the batch
    covariance C (the effective dimension the model card reports): it is 0 when the batch
    fills n dimensions and grows as the embedding collapses onto a few directions.
    """
    n, d = z.shape
    centred = z - z.mean(dim=0, keepdim=True)
    std = torch.sqrt(centred.var(dim=0) + 1e-6)
    variance = F.relu(1.0 / d**0.5 - std).mean() * d**0.5
    cov = centred.T @ centred / max(n - 1, 1)
    ratio = torch.diagonal(cov).sum() ** 2 / ((cov**2).sum() + 1e-12)
    spread = -torch.log(ratio.clamp(min=1.0)) / float(np.log(max(n, 2)))
    return variance_weight * variance + covariance_weight * (1.0 + spread)


def conditional_cooccurrence(targets: np.ndarray) -> torch.Tensor:
    """(K, K) matrix of P(fact k | fact a) over records (rows a, columns k), diagonal 0.

    A fact seen on no record has a zero row (it makes no negative harder)."""
    y = np.asarray(targets, dtype=np.float64)
    together = y.T @ y
    counts = np.diag(together).copy()
    cond = together / np.maximum(counts, 1.0)[:, None]
    np.fill_diagonal(cond, 0.0)
    return torch.from_numpy(cond.astype(np.float32))


def cooccurrence_negative_weights(
    targets: torch.Tensor, cond: torch.Tensor, weight: float
) -> torch.Tensor:
    """Per-pair weights for the sigmoid loss: 1 for positives, ``1 + weight * c`` for a
    negative fact k of an ECG, c = max over the ECG's facts a of P(k | a) (in [0, 1])."""
    hardness = (targets[:, :, None] * cond[None, :, :]).amax(dim=1)
    return 1.0 + weight * hardness * (1.0 - targets)
