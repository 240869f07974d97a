"""The ECG encoder on ONNX Runtime: the shipped export matches the weights, a stale one is not
used, and a new export of other weights serves those weights."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from adapters import load_ecg
from models.classifier import DEFAULT_WEIGHTS_DIR, ZeroShotClassifier
from models.modeling import WEIGHTS_NAME, EcgClipModel, file_sha256
from models.onnx_encoder import ENCODER_ONNX_NAME, export_encoder, load_onnx_encoder
from models.preprocessing import preprocess

RECORDS = ("00001_hr", "00009_hr", "00021_hr", "00047_hr")


@pytest.fixture(scope="module")
def windows(ptbxl_dir: Path) -> np.ndarray:
    config = EcgClipModel.from_pretrained(DEFAULT_WEIGHTS_DIR).config
    ecgs = [load_ecg(ptbxl_dir / "records500" / "00000" / f"{name}.hea") for name in RECORDS]
    return np.concatenate([preprocess(ecg, config).windows for ecg in ecgs])


def _torch_embeddings(model: EcgClipModel, windows: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.eval().encode_ecg(torch.from_numpy(windows)).numpy()


def test_shipped_export_serves_the_shipped_weights(windows: np.ndarray) -> None:
    encoder = load_onnx_encoder(DEFAULT_WEIGHTS_DIR, threads=1)
    assert encoder is not None, f"{ENCODER_ONNX_NAME} missing or exported from other weights"
    model = EcgClipModel.from_pretrained(DEFAULT_WEIGHTS_DIR)
    np.testing.assert_allclose(encoder(windows), _torch_embeddings(model, windows), atol=1e-5)


def test_classifier_uses_onnx_by_default_and_torch_on_request(ptbxl_dir: Path) -> None:
    ecgs = [load_ecg(ptbxl_dir / "records500" / "00000" / f"{n}.hea") for n in RECORDS]
    onnx = ZeroShotClassifier.from_pretrained(threads=1)
    eager = ZeroShotClassifier.from_pretrained(threads=1, encoder_runtime="torch")
    assert onnx.onnx_encoder() is not None
    assert eager.onnx_encoder() is None
    for fast, slow in zip(onnx.classify(ecgs), eager.classify(ecgs), strict=True):
        by_label = {s.label_id: s.probability for s in slow.scores}
        assert fast.model_version == slow.model_version
        assert len(fast.scores) == len(slow.scores) > 40
        for score in fast.scores:
            assert score.probability == pytest.approx(by_label[score.label_id], abs=1e-5)


def test_export_from_other_weights_is_not_used(
    tmp_path: Path, windows: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_WEIGHTS_DIR, folder)
    model = EcgClipModel.from_pretrained(folder)
    with torch.no_grad():  # a retrain: new weights saved, the old export left beside them
        for parameter in model.ecg_proj.parameters():
            parameter.mul_(1.1)
    model.save_pretrained(folder)
    with caplog.at_level(logging.WARNING, logger="models.onnx_encoder"):
        assert load_onnx_encoder(folder, threads=1) is None
    assert "exported from other weights" in caplog.text
    clf = ZeroShotClassifier.from_pretrained(folder, threads=1)
    assert clf.onnx_encoder() is None  # torch serves the new weights
    pooled = _torch_embeddings(model, windows).sum(axis=0, keepdims=True)  # one "ECG"
    pooled /= np.linalg.norm(pooled)
    np.testing.assert_allclose(clf.embed_windows([windows]), pooled, atol=1e-5)

    export_encoder(model, folder)  # exported again: ONNX serves the new weights
    encoder = load_onnx_encoder(folder, threads=2)
    assert encoder is not None
    np.testing.assert_allclose(encoder(windows), _torch_embeddings(model, windows), atol=1e-5)
    assert file_sha256(folder / WEIGHTS_NAME) != file_sha256(DEFAULT_WEIGHTS_DIR / WEIGHTS_NAME)


def test_missing_export_falls_back_to_torch(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_WEIGHTS_DIR, folder)
    (folder / ENCODER_ONNX_NAME).unlink()
    assert load_onnx_encoder(folder, threads=1) is None
    assert ZeroShotClassifier.from_pretrained(folder, threads=1).onnx_encoder() is None


def test_an_unreadable_export_falls_back_to_torch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_WEIGHTS_DIR, folder)
    exported = (folder / ENCODER_ONNX_NAME).read_bytes()
    (folder / ENCODER_ONNX_NAME).write_bytes(exported[: len(exported) // 3])  # truncated
    with caplog.at_level(logging.WARNING, logger="models.onnx_encoder"):
        assert load_onnx_encoder(folder, threads=1) is None
    assert "cannot be used" in caplog.text
    assert ZeroShotClassifier.from_pretrained(folder, threads=1).onnx_encoder() is None


def test_an_export_is_only_made_from_the_weights_it_is_stamped_with(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_WEIGHTS_DIR, folder)
    model = EcgClipModel.from_pretrained(folder)
    with torch.no_grad():
        model.logit_bias.add_(1.0)  # changed in memory, not saved
    with pytest.raises(ValueError, match="save_pretrained"):
        export_encoder(model, folder)


def test_the_session_follows_the_classifier_not_the_calling_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the signal-work processes take the cores, the session is a one-thread one, even
    for a thread whose own torch setting still says two."""
    threads = torch.get_num_threads()
    monkeypatch.setattr("models.classifier.one_blas_thread", lambda: None)  # process-wide
    try:
        clf = ZeroShotClassifier.from_pretrained(threads=2)
        before = clf.onnx_encoder()
        clf._one_thread_each()  # what the signal-work pool calls when it takes the cores
        torch.set_num_threads(2)  # a thread whose own setting was not lowered
        after = clf.onnx_encoder()
        assert before is not None and after is not None and after is not before
        assert clf.onnx_encoder() is after
        assert clf._onnx == {2: before, 1: after}
    finally:
        torch.set_num_threads(threads)
