"""Validation during training: whole-recording embeddings scored against fact prompts.

Model selection in ``models.training`` keeps the epoch with the best macro AUROC over the
facts seen in validation. Split from that module so the loop reads on its own; the
scoring here is independent of how the weights were trained.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.data import SignalDataset
from models.modeling import EcgClipModel
from models.text_encoder import text_key
from models.training_inputs import Vocabulary


@torch.no_grad()
def embed_signals(
    model: EcgClipModel, dataset: SignalDataset, batch_size: int = 128
) -> torch.Tensor:
    """Validation embeddings: the full recording in windows, embeddings averaged."""
    from models.preprocessing import windows_of

    model.eval()
    out: list[torch.Tensor] = []
    cfg = model.config
    for start in range(0, len(dataset), batch_size):
        wins, owners = [], []
        for j, i in enumerate(range(start, min(start + batch_size, len(dataset)))):
            w = windows_of(dataset.signal(i), cfg.window_samples, cfg.max_windows)
            wins.append(w)
            owners += [j] * len(w)
        emb = model.encode_ecg(torch.from_numpy(np.concatenate(wins)))
        idx = torch.tensor(owners)
        pooled = torch.zeros(len(wins), emb.shape[1]).index_add_(0, idx, emb)
        out.append(F.normalize(pooled, dim=-1))
    return torch.cat(out)


def macro_auroc(y: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    from sklearn.metrics import roc_auc_score

    aucs = [
        roc_auc_score(y[:, j], scores[:, j])
        for j in range(y.shape[1])
        if 0 < y[:, j].sum() < len(y)
    ]
    return (float(np.mean(aucs)) if aucs else float("nan")), len(aucs)


def vocab_prompt_features(vocab: Vocabulary, feats: dict[str, np.ndarray]) -> torch.Tensor:
    """Prompt ensemble: the mean MiniLM feature of all sentences of each fact."""
    return torch.from_numpy(
        np.stack(
            [np.mean([feats[text_key(s)] for s in sents], axis=0) for sents in vocab.sentences]
        )
    )


@torch.no_grad()
def validate(
    model: EcgClipModel, dataset: SignalDataset, y: np.ndarray, prompts: torch.Tensor
) -> float:
    emb = embed_signals(model, dataset)
    text = model.encode_text_features(prompts)
    auc, _ = macro_auroc(y, (emb @ text.T).numpy())
    return auc
