"""Packaging: config and weights round-trip, version string, offline load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from adapters import load_ecg
from models.classifier import DEFAULT_WEIGHTS_DIR, ZeroShotClassifier
from models.config import EcgClipConfig
from models.modeling import EcgClipModel, model_version
from models.preprocessing import preprocess


def test_config_round_trip(tmp_path: Path) -> None:
    config = EcgClipConfig(
        stage_channels=(8, 16), embed_dim=32, extra={"lead_scale_mv": [0.1] * 12}
    )
    config.save(tmp_path)
    again = EcgClipConfig.load(tmp_path)
    assert again == config
    assert again.window_samples == 1000


def test_save_and_reload_gives_identical_embeddings(tmp_path: Path, ptbxl_dir: Path) -> None:
    model = EcgClipModel.from_pretrained(DEFAULT_WEIGHTS_DIR)
    model.save_pretrained(tmp_path)
    again = EcgClipModel.from_pretrained(tmp_path)
    ecg = load_ecg(ptbxl_dir / "records500" / "00000" / "00009_hr.hea")
    x = torch.from_numpy(preprocess(ecg, model.config).windows)
    with torch.no_grad():
        np.testing.assert_allclose(model.encode_ecg(x).numpy(), again.encode_ecg(x).numpy())
    assert again.config == model.config
    assert model_version(tmp_path, again.config) == model_version(DEFAULT_WEIGHTS_DIR, model.config)


def test_version_changes_with_the_weights(tmp_path: Path) -> None:
    model = EcgClipModel.from_pretrained(DEFAULT_WEIGHTS_DIR)
    with torch.no_grad():
        model.logit_bias.add_(0.5)
    model.save_pretrained(tmp_path)
    assert model_version(tmp_path, model.config) != model_version(DEFAULT_WEIGHTS_DIR, model.config)


def test_shipped_model_is_small_and_carries_a_version(classifier: ZeroShotClassifier) -> None:
    size = (DEFAULT_WEIGHTS_DIR / "model.safetensors").stat().st_size
    assert size < 20 * 1024 * 1024
    params = sum(p.numel() for p in classifier.model.ecg_encoder.parameters())
    assert 1_000_000 <= params <= 5_000_000
    assert classifier.model_version.startswith("ecg-clip-")
    assert (DEFAULT_WEIGHTS_DIR / "MODEL_CARD.md").is_file()


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    try:
        ZeroShotClassifier.from_pretrained(tmp_path / "nope")
    except FileNotFoundError as exc:
        assert "config" in str(exc)
    else:
        raise AssertionError("loading a missing folder must fail")
