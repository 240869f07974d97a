"""The ECG encoder under ONNX Runtime: the same network, about 30 % less CPU per ECG.

Measured (``benchmarks/bench_model.py``, PTB-XL 500 Hz records, batch 64, one thread):
torch 2.13's eager CPU kernels spend ~1.45 ms per ECG in the encoder, ONNX Runtime ~1.03 ms
on the same inputs (about 30 % less); embeddings agree to ~2e-7. Its graph optimiser fuses each
convolution with its batch norm and activation, which eager torch cannot.

A model folder may carry ``ecg_encoder.onnx``, exported from its own ``model.safetensors``
by :func:`export_encoder` (``prepare_release`` does it for every release). The file records
the SHA-256 of the weights it came from: a file exported from other weights (a retrain that
forgot to export again) is not used, and the classifier stays on torch with a warning, so the
embedding served is always that of the weights its ``model_version`` names. Where
``onnxruntime`` is not installed, or the file is missing, torch serves; the results are the
same to float rounding.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file

from models.modeling import WEIGHTS_NAME, EcgClipModel, file_sha256

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

ENCODER_ONNX_NAME = "ecg_encoder.onnx"
WEIGHTS_DIGEST_KEY = "weights_sha256"
#: ONNX opset of the export: supported by every onnxruntime release since 1.12.
OPSET = 17


class _Encode(torch.nn.Module):
    """``EcgClipModel.encode_ecg`` as a module, the graph that is exported."""

    def __init__(self, model: EcgClipModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_ecg(x)


def export_encoder(model: EcgClipModel, directory: Path) -> Path:
    """Write ``ecg_encoder.onnx`` for the weights saved in ``directory`` (needs ``onnx``).

    ``model`` must hold exactly those weights (the export is stamped with their SHA-256):
    a model that differs from the saved file is refused, so no export can carry weights
    other than the ones its stamp names."""
    import onnx  # export only: serving needs onnxruntime alone

    directory = Path(directory)
    digest = file_sha256(directory / WEIGHTS_NAME)
    saved = load_file(str(directory / WEIGHTS_NAME))
    current = model.state_dict()
    if saved.keys() != current.keys() or any(
        not torch.equal(saved[k], current[k].detach().cpu()) for k in saved
    ):
        raise ValueError(
            f"the model to export differs from {directory / WEIGHTS_NAME}: save_pretrained "
            "it there first"
        )
    path = directory / ENCODER_ONNX_NAME
    example = torch.zeros(2, model.config.in_leads, model.config.window_samples)
    was_training = model.training
    model.eval()
    try:
        # The TorchScript exporter: the graph is a plain convolution stack, which it exports
        # without the extra packages the dynamo exporter needs (onnxscript).
        torch.onnx.export(
            _Encode(model),
            (example,),
            str(path),
            input_names=["ecg"],
            output_names=["embedding"],
            dynamic_axes={"ecg": {0: "batch", 2: "samples"}, "embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    finally:
        model.train(was_training)
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = WEIGHTS_DIGEST_KEY, digest
    onnx.save(graph, str(path))
    return path


class OnnxEncoder:
    """``encode_ecg`` through ONNX Runtime: (batch, leads, samples) float32 -> (batch, dim)."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(windows, dtype=np.float32)
        out = self._session.run(None, {self._input: x})[0]
        return np.asarray(out, dtype=np.float32)


def load_onnx_encoder(
    directory: Path, threads: int, weights_sha256: str | None = None
) -> OnnxEncoder | None:
    """The folder's ONNX encoder on ``threads`` threads, or None (torch serves instead).

    ``weights_sha256``: the digest of the weights the caller loaded (default: the folder's
    file now); an export stamped with another is not used. A missing, unreadable or
    unsupported export is not used either: torch serves, with a warning, rather than fail.
    """
    path = Path(directory) / ENCODER_ONNX_NAME
    if not path.is_file():
        return None
    try:
        import onnxruntime
    except ImportError:
        log.info("onnxruntime is not installed: the ECG encoder runs on torch")
        return None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    # Idle pool threads spin by default; on cores the signal-work processes also use, a
    # spinning thread takes their time (the reason torch gets one thread there too).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # a truncated file, an opset this onnxruntime lacks...
        log.warning("%s cannot be used (%s): the ECG encoder runs on torch", path, exc)
        return None
    exported_from = session.get_modelmeta().custom_metadata_map.get(WEIGHTS_DIGEST_KEY)
    weights = weights_sha256 or file_sha256(Path(directory) / WEIGHTS_NAME)
    if exported_from != weights:
        log.warning(
            "%s was exported from other weights (%s, these are %s): the ECG encoder runs on "
            "torch; export it again with models.onnx_encoder.export_encoder",
            path,
            (exported_from or "unknown")[:8],
            weights[:8],
        )
        return None
    return OnnxEncoder(session)
