"""EcgClipModel: ECG encoder + projections into a shared space with the (frozen) text tower.

Packaged like a Hugging Face model: ``save_pretrained(dir)`` writes ``config.json`` and
``model.safetensors``; ``from_pretrained(dir)`` reads them back. The text tower itself is
not stored (it is the installed MiniLM package); its cached prompt embeddings are, in
``text_cache.safetensors``, so serving the catalog needs no transformer at all.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file
from torch import nn

from models.config import EcgClipConfig
from models.ecg_encoder import EcgEncoder

WEIGHTS_NAME = "model.safetensors"
TEXT_CACHE_NAME = "text_cache.safetensors"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class EcgClipModel(nn.Module):
    """The trainable part of the ECG-text model.

    Scores are ``logit_scale * cos(ecg, text) + logit_bias``: trained with a sigmoid
    (multi-label) loss, so ``sigmoid(score)`` is already a usable probability for texts the
    model never saw; per-label calibration refines it where validation data exists.
    """

    def __init__(self, config: EcgClipConfig) -> None:
        super().__init__()
        self.config = config
        self.ecg_encoder = EcgEncoder(config)
        self.ecg_proj = nn.Sequential(
            nn.Linear(self.ecg_encoder.out_features, config.embed_dim),
            nn.GELU(),
            nn.Linear(config.embed_dim, config.embed_dim),
        )
        self.text_proj = nn.Linear(config.text_hidden, config.embed_dim, bias=False)
        # Orthogonal init keeps MiniLM's cosine geometry at the start: unseen texts land
        # near their paraphrases, which is what zero-shot rests on.
        nn.init.orthogonal_(self.text_proj.weight)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(config.init_logit_bias))

    def encode_ecg(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 12, samples) -> L2-normalised (batch, embed_dim)."""
        return F.normalize(self.ecg_proj(self.ecg_encoder(x)), dim=-1)

    def encode_text_features(self, features: torch.Tensor) -> torch.Tensor:
        """MiniLM features (n, 384) -> L2-normalised (n, embed_dim)."""
        return F.normalize(self.text_proj(features), dim=-1)

    def logits(self, ecg_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        scale = self.logit_scale.exp().clamp(max=100.0)
        return scale * ecg_emb @ text_emb.T + self.logit_bias

    # ---- packaging -------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> EcgClipModel:
        directory = Path(directory)
        config = EcgClipConfig.load(directory)
        model = cls(config)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: no weights in this model folder")
        model.load_state_dict(load_file(str(weights)))
        model.eval()
        return model


def model_version(directory: Path, config: EcgClipConfig) -> str:
    """``ecg-clip-<family version>+<8 hex of the weights' SHA-256>``: any retrain changes it."""
    return f"{config.model_type}-{config.version}+{file_sha256(directory / WEIGHTS_NAME)[:8]}"


def save_text_cache(directory: Path, cache: dict[str, np.ndarray]) -> None:
    if cache:
        save_numpy(
            {k: v.astype(np.float32) for k, v in cache.items()}, str(directory / TEXT_CACHE_NAME)
        )


def load_text_cache(directory: Path) -> dict[str, np.ndarray]:
    path = directory / TEXT_CACHE_NAME
    return dict(load_numpy(str(path))) if path.is_file() else {}
