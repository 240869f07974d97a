"""Signal augmentation for training on few records (all on normalised model-rate arrays)."""

from __future__ import annotations

import numpy as np


def augment(
    x: np.ndarray, rng: np.random.Generator, fs: float, lead_dropout: float = 0.1
) -> np.ndarray:
    """Amplitude scaling, Gaussian noise, baseline wander and lead dropout on (12, n)."""
    x = x * rng.uniform(0.85, 1.15)  # gain differences between carts; mild: voltage is diagnostic
    x = x + rng.normal(0.0, rng.uniform(0.0, 0.08), size=x.shape)
    t = np.arange(x.shape[1]) / fs
    wander = rng.uniform(0.0, 0.5) * np.sin(
        2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 2 * np.pi)
    )
    x = x + wander[None, :]
    drop: np.ndarray = np.asarray(rng.random(x.shape[0]) < lead_dropout)
    if drop.all():
        drop[rng.integers(0, x.shape[0])] = False
    x[drop] = 0.0
    return x.astype(np.float32)
