"""From raw similarity to probability.

The model's own head gives ``z = logit_scale * cos + logit_bias``, trained with a sigmoid
loss over many statements, so ``sigmoid(z)`` is the **documented default** for any label
text (including texts never seen): it is a probability on the scale of the training
statements, but uncalibrated for that text (``LabelScore.calibrated = False``).

Labels seen in validation data (PTB-XL fold 9) get a per-label Platt fit
``p = sigmoid(a * z + b)``, shrunk towards the default (``a = 1, b = 0``) by a Gaussian
prior so that a label with three positives cannot produce wild probabilities.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

CALIBRATION_NAME = "calibration.json"
MIN_POSITIVES = 3


@dataclass(frozen=True)
class Platt:
    """``p = sigmoid(slope * cosine + intercept)`` (the catalog's calibration form)."""

    slope: float
    intercept: float
    n: int = 0
    positives: int = 0

    def __call__(self, cosine: np.ndarray) -> np.ndarray:
        return sigmoid(self.slope * cosine + self.intercept)


@dataclass
class Calibration:
    """Per-label Platt maps (keyed by label id) and the OOD threshold."""

    labels: dict[str, Platt] = field(default_factory=dict)
    #: Digest of the prompt ensemble each fit was made with (a changed prompt voids the fit).
    label_prompts: dict[str, str] = field(default_factory=dict)
    #: Nearest-neighbour cosine to the training embeddings below which an ECG is "OOD".
    ood_threshold: float | None = None
    source: str = ""

    def save(self, directory: Path) -> None:
        data = {
            "method": "p = sigmoid(slope * cosine + intercept); Platt fit (MAP, prior "
            "around the model head sigmoid(logit_scale * cosine + logit_bias))",
            "source": self.source,
            "ood_threshold": self.ood_threshold,
            "labels": {k: asdict(v) for k, v in sorted(self.labels.items())},
            "label_prompts": dict(sorted(self.label_prompts.items())),
        }
        (directory / CALIBRATION_NAME).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Calibration:
        path = directory / CALIBRATION_NAME
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls(
            labels={k: Platt(**v) for k, v in data.get("labels", {}).items()},
            label_prompts=dict(data.get("label_prompts", {})),
            ood_threshold=data.get("ood_threshold"),
            source=data.get("source", ""),
        )


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def fit_platt(
    cosine: np.ndarray, y: np.ndarray, default: Platt, prior: float = 1.0
) -> Platt | None:
    """MAP Platt scaling on ``z = default(cos)`` with a Gaussian prior around the identity map.

    Returns the fit expressed on the cosine (slope, intercept), or None with too few cases.
    """
    z = default.slope * np.asarray(cosine, dtype=np.float64) + default.intercept
    y = np.asarray(y, dtype=np.float64)
    pos = int(y.sum())
    if pos < MIN_POSITIVES or len(y) - pos < MIN_POSITIVES:
        return None

    def loss(params: np.ndarray) -> float:
        a, b = params
        t = a * z + b
        nll = np.sum(np.logaddexp(0.0, t) - y * t)
        return float(nll + prior * ((a - 1.0) ** 2 + b**2))

    res = minimize(loss, x0=np.array([1.0, 0.0]), method="L-BFGS-B")
    a, b = (float(v) for v in res.x)
    return Platt(
        slope=a * default.slope, intercept=a * default.intercept + b, n=len(y), positives=pos
    )


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """ECE with equal-width bins: the mean |confidence - frequency|, weighted by bin size."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(p[mask].mean() - y[mask].mean())
    return float(total / max(len(p), 1))
