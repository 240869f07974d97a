"""What the training loop learns from, built once before the first step.

* :class:`Vocabulary`: the facts trained on, their sentences and the target matrix;
* :class:`MeasuredFacts`: rate and interval facts measured from each signal, cached;
* :func:`load_text_features`: the frozen MiniLM features of every sentence, cached on disk;
* :func:`estimate_lead_scales`: the per-lead scale stored in the model config.

Split from ``models.training`` so that the loop there (optimiser, losses, EMA, checkpoints)
reads on its own; none of this changes when the recipe's steps do.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from tqdm import tqdm

from models.config import EcgClipConfig
from models.data import RecordRef, SignalDataset, read_record
from models.preprocessing import filter_and_resample
from models.rate import estimate_heart_rate, interval_fact_keys, rate_fact_keys
from models.text import Fact
from models.text_encoder import TextEncoder, text_key


@dataclass
class Vocabulary:
    """The facts trained on, each with its English sentences (phrasings x templates)."""

    keys: list[str]
    sentences: list[list[str]]

    @classmethod
    def build(cls, refs: list[RecordRef], min_count: int) -> Vocabulary:
        counts: Counter[str] = Counter()
        phrases: dict[str, Fact] = {}
        for ref in refs:
            for fact in ref.facts:
                counts[fact.key] += 1
                phrases.setdefault(fact.key, fact)
        keys = sorted(k for k, c in counts.items() if c >= min_count)
        return cls(keys, [list(phrases[k].sentences()) for k in keys])

    def add(self, facts: Sequence[Fact]) -> None:
        for fact in facts:
            if fact.key not in self.keys:
                self.keys.append(fact.key)
                self.sentences.append(list(fact.sentences()))

    def targets(self, refs: list[RecordRef]) -> np.ndarray:
        index = {k: i for i, k in enumerate(self.keys)}
        y = np.zeros((len(refs), len(self.keys)), dtype=np.float32)
        for r, ref in enumerate(refs):
            for fact in ref.facts:
                if fact.key in index:
                    y[r, index[fact.key]] = 1.0
        return y


class MeasuredFacts:
    """Facts measured from each record's signal, once (lazily: no extra pass over the data)."""

    def __init__(self, vocab: Vocabulary, fs: float, rate: bool, intervals: bool) -> None:
        prefixes = ("rate:", "rr:", "qrs:", "pr:")
        self.columns = {k: i for i, k in enumerate(vocab.keys) if k.startswith(prefixes)}
        self.n = len(vocab.keys)
        self.fs = fs
        self.rate = rate
        self.intervals = intervals
        self.enabled = rate or intervals
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def __call__(self, dataset: SignalDataset, index: int) -> np.ndarray:
        key = (id(dataset), index)
        row = self._cache.get(key)
        if row is None:
            row = np.zeros(self.n, dtype=np.float32)
            keys: tuple[str, ...] = ()
            if self.rate:
                keys += rate_fact_keys(estimate_heart_rate(dataset.signal(index), self.fs))
            if self.intervals:
                from models.measurements import measure

                # An unmeasurable record simply gets no interval facts.
                with contextlib.suppress(Exception):
                    keys += interval_fact_keys(measure(read_record(dataset.refs[index])))
            for fact in keys:
                row[self.columns[fact]] = 1.0
            self._cache[key] = row
        return row

    def batch(self, y: torch.Tensor, dataset: SignalDataset, idx: np.ndarray) -> torch.Tensor:
        if not self.enabled:
            return y[idx]
        extra = torch.from_numpy(np.stack([self(dataset, int(i)) for i in idx]))
        return torch.maximum(y[idx], extra)


def estimate_lead_scales(
    refs: list[RecordRef], config: EcgClipConfig, limit: int = 200
) -> list[float]:
    """Per-lead standard deviation (mV) of filtered signals on up to ``limit`` training records."""
    stds: list[np.ndarray] = []
    for ref in refs[:limit]:
        from adapters import standard_12_lead

        view = standard_12_lead(read_record(ref))
        x = filter_and_resample(view.ecg.signal, float(view.ecg.fs), config)
        stds.append(x.std(axis=1))
    med = np.median(np.stack(stds), axis=0)
    return [float(max(s, 0.02)) for s in med]


def load_text_features(texts: list[str], cache_path: Path, progress: bool) -> dict[str, np.ndarray]:
    cache = dict(load_numpy(str(cache_path))) if cache_path.is_file() else {}
    encoder = TextEncoder(cache)
    todo = [t for t in dict.fromkeys(texts) if text_key(t) not in cache]
    for i in tqdm(range(0, len(todo), 256), desc="text features", disable=not progress or not todo):
        encoder.encode(todo[i : i + 256])
    if todo:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        save_numpy(encoder.cache, str(cache_path))
    return encoder.cache
