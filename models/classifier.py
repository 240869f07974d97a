"""Zero-shot classification: any ECG, any list of label texts, calibrated probabilities.

Example::

    from adapters import load_ecg
    from models import ZeroShotClassifier

    clf = ZeroShotClassifier.from_pretrained()              # shipped weights, offline
    [result] = clf.classify([load_ecg("rec.hea")], ["sinus bradycardia with first degree AV block"])
    result.scores[0].probability

Each label's text embedding is a prompt ensemble (the mean of its prompts' embeddings; a
free-text label is put into the config's prompt templates) and is cached per text. The
signal-quality gate (:func:`models.quality.assess_quality`) runs first: a rejected ECG gets
reasons and no scores. An ECG whose embedding is far from every training ECG is flagged
``out_of_distribution`` (its scores are still given, with that warning).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from adapters import Ecg
from models.batch_results import LabelSet, PartScores, part_results
from models.calibration import Calibration, Platt, sigmoid
from models.catalog import Label, LabelCatalog, load_catalog
from models.criteria_part import PartValues
from models.fusion import Fusion
from models.modeling import (
    WEIGHTS_NAME,
    EcgClipModel,
    file_sha256,
    load_text_cache,
    model_version,
)
from models.onnx_encoder import OnnxEncoder, load_onnx_encoder
from models.preprocessing import preprocess
from models.results import ClassificationResult, Measurement
from models.scoring import CriteriaScorer
from models.signal_work import SignalWork, SignalWorkPool, measurements_of, one_blas_thread
from models.site import SiteCalibration
from models.text_encoder import TextEncoder, text_key

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
OOD_BANK_NAME = "ood_bank.safetensors"
DEFAULT_THREADS = 2
DEFAULT_BATCH_SIZE = 64
#: "auto": ONNX Runtime where the folder carries an encoder exported from its weights (see
#: models.onnx_encoder), else torch; "torch": always torch (training, or to compare).
EncoderRuntime = Literal["auto", "torch"]


def prompts_digest(prompts: Sequence[str]) -> str:
    """Identifies a prompt ensemble: a calibration fitted for other prompts is not reused."""
    return hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()[:16]


class ZeroShotClassifier:
    """Scores ECGs against label texts with the ECG-text model. Thread-safe for inference."""

    def __init__(
        self,
        model: EcgClipModel,
        directory: Path,
        *,
        catalog: LabelCatalog | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        site_calibration: SiteCalibration | None = None,
        encoder_runtime: EncoderRuntime = "auto",
    ) -> None:
        self.model = model.eval()
        self.config = model.config
        self.directory = Path(directory)
        self.batch_size = batch_size
        self.calibration = Calibration.load(self.directory)
        self.text_encoder = TextEncoder(load_text_cache(self.directory))
        # The weights as loaded now: an ONNX export is used only if it was made from them.
        self._weights_sha256 = file_sha256(self.directory / WEIGHTS_NAME)
        self.model_version = model_version(self.directory, self.config)
        self.fusion = Fusion.load(self.directory)
        # Read once: the head is fixed for inference, and four torch calls for every
        # uncalibrated label of every batch were 2 % of a new-ECG hook call's CPU.
        scale = float(model.logit_scale.detach().exp().clamp(max=100.0))
        self._default_mapping = Platt(slope=scale, intercept=float(model.logit_bias.detach()))
        self.site_calibration = site_calibration
        self._scorer: CriteriaScorer | None = None
        self._catalog = catalog
        self._label_cache: dict[str, np.ndarray] = {}
        self._matrix_cache: dict[tuple[tuple[str, ...], ...], np.ndarray] = {}
        self.threads = max(1, torch.get_num_threads())
        self._pool: ThreadPoolExecutor | None = None
        self.encoder_runtime = encoder_runtime
        # One ONNX session per thread count: a session's count is fixed when it is made, and
        # this classifier's drops to one once the signal-work processes take the cores.
        self._onnx: dict[int, OnnxEncoder | None] = {}
        self._onnx_lock = threading.Lock()
        self._cores_taken = False
        # Quality gate, measurements and preprocessing hold the GIL: they run in ``threads``
        # worker processes, and the encoder then gets one torch thread. With the cores busy,
        # torch's threads wait for each other at every layer: measured on 2 shared cores,
        # classify() ran at 14-15 ECGs/s with 2 torch threads and 30-39 with 1. The same
        # holds in a daemonic pool process (a Celery prefork child), whose sibling processes
        # take the cores: the encoder took 7.9 ms per ECG on 2 threads there, 1.6 on one.
        # numpy's BLAS likewise (see signal_work.one_blas_thread: its idle threads spin and
        # its small products wait for descheduled ones).
        self._signal_pool = SignalWorkPool(self.threads, on_cores_taken=self._one_thread_each)
        bank_path = self.directory / OOD_BANK_NAME
        self._ood_bank = (
            load_numpy(str(bank_path))["embeddings"].astype(np.float32)
            if bank_path.is_file()
            else None
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        *,
        catalog: LabelCatalog | None = None,
        threads: int | None = DEFAULT_THREADS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        site_calibration: str | Path | None = None,
        encoder_runtime: EncoderRuntime = "auto",
    ) -> ZeroShotClassifier:
        """Load a saved model folder (default: the shipped ``models/weights``), offline.

        ``threads`` sets torch's intra-op thread count (a process-wide setting); None leaves it.
        One thread also limits numpy's BLAS to one (process-wide too; see
        :func:`models.signal_work.one_blas_thread`).
        ``site_calibration``: a site file written by ``ecg-cds calibrate`` (a relative path
        is looked up beside the model). ``encoder_runtime``: see :data:`EncoderRuntime`.
        """
        if threads is not None:
            torch.set_num_threads(threads)
        if threads == 1:  # one core: numpy's BLAS too (its idle threads spin beside the work)
            one_blas_thread()
        directory = Path(path) if path is not None else DEFAULT_WEIGHTS_DIR
        model = EcgClipModel.from_pretrained(directory)
        site = None
        if site_calibration is not None:
            site_path = Path(site_calibration)
            if not site_path.is_absolute() and not site_path.is_file():
                site_path = directory / site_path
            site = SiteCalibration.load(site_path)
        return cls(
            model,
            directory,
            catalog=catalog,
            batch_size=batch_size,
            site_calibration=site,
            encoder_runtime=encoder_runtime,
        )

    def _one_thread_each(self) -> None:
        """The cores are taken (by signal-work processes or sibling pool processes): one torch
        thread, one BLAS thread and one-thread ONNX sessions in this process."""
        self._cores_taken = True
        torch.set_num_threads(1)
        one_blas_thread()

    def start_workers(self) -> bool:
        """Start the signal-work processes and the encoder's ONNX session now (a service at
        start-up) rather than on the first batch; False when this classifier works in the
        calling process only."""
        started = self._signal_pool.start()
        self.onnx_encoder()
        return started

    @property
    def catalog(self) -> LabelCatalog:
        if self._catalog is None:
            self._catalog = load_catalog()
        return self._catalog

    @property
    def scorer(self) -> CriteriaScorer:
        """The measurement channel (criteria resolution, evidence, fusion, site map)."""
        if self._scorer is None:
            criteria = self.catalog.criteria or load_catalog().criteria
            assert criteria is not None
            self._scorer = CriteriaScorer(
                criteria,
                self.text_encoder.encode,
                self.fusion,
                self.site_calibration,
                catalog_labels=list(self.catalog),
            )
        return self._scorer

    @property
    def calibration_in_use(self) -> str:
        """Names the calibration every result is stamped with (short: it is shown on cards)."""
        shipped = re.sub(r"(?:/[^/\s]+)*/([^/\s]+)", r"\1", self.calibration.source)
        fusion = self.fusion.fitted_on.split("; variant")[0]
        text = f"shipped: {shipped or 'model head default'}; fusion: {fusion}"
        if self.site_calibration is not None:
            text = f"{self.site_calibration.description}; {text}"
        return text

    @property
    def default_mapping(self) -> Platt:
        """The documented default for uncalibrated labels: the model head's own sigmoid."""
        return self._default_mapping

    # ---- embeddings ------------------------------------------------------------------------

    def label_prompts(self, label: Label) -> tuple[str, ...]:
        """Catalog labels carry their own ensemble; a single free text gets the templates."""
        if len(label.prompts) > 1:
            return label.prompts
        return tuple(t.format(label.prompts[0]) for t in self.config.prompt_templates)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Projected, L2-normalised embeddings of texts (n, embed_dim), cached per text."""
        missing = [t for t in dict.fromkeys(texts) if text_key(t) not in self._label_cache]
        if missing:
            features = torch.from_numpy(self.text_encoder.encode(missing))
            projected = self.model.encode_text_features(features).numpy()
            for text, vec in zip(missing, projected, strict=True):
                self._label_cache[text_key(text)] = vec
        return np.stack([self._label_cache[text_key(t)] for t in texts])

    def label_embeddings(self, labels: LabelCatalog) -> np.ndarray:
        """One normalised prompt-ensemble embedding per label (n_labels, embed_dim), cached."""
        key = tuple(self.label_prompts(label) for label in labels)
        cached = self._matrix_cache.get(key)
        if cached is not None:
            return cached
        rows = []
        for label in labels:
            mean = self.text_embeddings(self.label_prompts(label)).mean(axis=0)
            rows.append(mean / max(float(np.linalg.norm(mean)), 1e-8))
        matrix = np.stack(rows).astype(np.float32)
        if len(self._matrix_cache) >= 64:  # free-text label sets vary: keep the cache bounded
            self._matrix_cache.clear()
        self._matrix_cache[key] = matrix
        return matrix

    def embed(self, ecgs: Sequence[Ecg]) -> np.ndarray:
        """L2-normalised ECG embeddings (n, embed_dim): window embeddings averaged per ECG."""
        out: list[np.ndarray] = []
        for start in range(0, len(ecgs), self.batch_size):
            out.append(
                self.embed_windows(self._preprocess_all(ecgs[start : start + self.batch_size]))
            )
        if not out:
            return np.zeros((0, self.config.embed_dim), dtype=np.float32)
        return np.concatenate(out)

    @torch.inference_mode()
    def embed_windows(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of preprocessed ECGs (one (n_windows, 12, samples) array each)."""
        out: list[np.ndarray] = []
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start : start + self.batch_size]
            owners = np.repeat(np.arange(len(chunk)), [len(w) for w in chunk])
            emb = self._encode(np.concatenate(chunk))
            pooled = np.zeros((len(chunk), emb.shape[1]), dtype=np.float32)
            np.add.at(pooled, owners, emb)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-8)
            out.append(pooled)
        if not out:
            return np.zeros((0, self.config.embed_dim), dtype=np.float32)
        return np.concatenate(out)

    def _encode(self, windows: np.ndarray) -> np.ndarray:
        """``encode_ecg`` of stacked windows, on ONNX Runtime where the folder allows it."""
        onnx = self.onnx_encoder()
        if onnx is not None:
            return onnx(windows)
        return self.model.encode_ecg(torch.from_numpy(windows)).numpy()

    def onnx_encoder(self) -> OnnxEncoder | None:
        """The ONNX encoder for this classifier's thread count, or None (torch serves).

        The count is the classifier's own (one once the cores are taken), not the calling
        thread's torch setting, which torch keeps per thread."""
        if self.encoder_runtime == "torch":
            return None
        threads = 1 if self._cores_taken else self.threads
        with self._onnx_lock:  # one session per count, however many threads ask at once
            if threads not in self._onnx:
                self._onnx[threads] = load_onnx_encoder(
                    self.directory, threads, self._weights_sha256
                )
            return self._onnx[threads]

    def _preprocess_all(self, ecgs: Sequence[Ecg]) -> list[np.ndarray]:
        """Preprocess a batch, on ``threads`` threads: scipy's filters release the GIL, and
        filtering is about half the cost of a batch."""
        if len(ecgs) < 2 or self.threads < 2:
            return [preprocess(ecg, self.config).windows for ecg in ecgs]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ecg-preprocess")
        return list(self._pool.map(lambda ecg: preprocess(ecg, self.config).windows, ecgs))

    def similarities(self, ecgs: Sequence[Ecg], labels: LabelCatalog) -> np.ndarray:
        """Raw cosine similarity (n_ecgs, n_labels)."""
        return self.embed(ecgs) @ self.label_embeddings(labels).T

    def nearest_training_similarity(self, embeddings: np.ndarray) -> np.ndarray | None:
        if self._ood_bank is None or len(embeddings) == 0:
            return None
        return (embeddings @ self._ood_bank.T).max(axis=1)

    # ---- classification --------------------------------------------------------------------

    def resolve_labels(self, labels: Sequence[str] | LabelCatalog | None) -> LabelCatalog:
        if labels is None:
            return self.catalog
        if isinstance(labels, LabelCatalog):
            return labels
        return LabelCatalog.from_texts(list(labels))

    def mapping(self, label: Label) -> tuple[Platt, bool]:
        """The label's cosine-to-probability map, and whether it is calibrated: a fit for
        exactly these prompts, else the catalog's own, else the default map."""
        fitted = self.calibration.labels.get(label.id)
        if fitted is not None and self.calibration.label_prompts.get(label.id) == prompts_digest(
            self.label_prompts(label)
        ):
            return fitted, True
        if label.calibration is not None:
            return Platt(label.calibration.slope, label.calibration.intercept), True
        return self.default_mapping, False

    def probabilities(self, label: Label, cosine: np.ndarray) -> tuple[np.ndarray, bool]:
        """Calibrated where a fit exists for exactly these prompts; else the default map."""
        mapping, calibrated = self.mapping(label)
        return mapping(cosine), calibrated

    def classify(
        self,
        ecgs: Ecg | Sequence[Ecg],
        labels: Sequence[str] | LabelCatalog | None = None,
    ) -> list[ClassificationResult]:
        """Quality gate, measurements and calibrated scores for each ECG, in input order.

        ``labels``: None for the catalog, a :class:`LabelCatalog`, or any list of free texts.
        """
        batch: list[Ecg] = [ecgs] if isinstance(ecgs, Ecg) else list(ecgs)
        label_set = self._label_set(self.resolve_labels(labels))
        results: list[ClassificationResult] = []
        # Each part is encoded and scored as it arrives, while the workers prepare the next:
        # scoring the whole batch after its last part left a core idle meanwhile.
        for part in self._signal_pool.parts(batch, self.config):
            results.extend(self._score(part, label_set))
        return results

    def _label_set(self, catalog: LabelCatalog) -> LabelSet:
        maps = [self.mapping(label) for label in catalog]
        return LabelSet(
            labels=list(catalog),
            embeddings=self.label_embeddings(catalog),
            # Every label's Platt map at once, in the cosines' float32 as Platt.__call__ does.
            slopes=np.array([m.slope for m, _ in maps], dtype=np.float32),
            intercepts=np.array([m.intercept for m, _ in maps], dtype=np.float32),
            calibrated=[c or self.site_calibration is not None for _, c in maps],
            stamp=self.calibration_in_use,
        )

    def _score(
        self, works: Sequence[SignalWork], label_set: LabelSet
    ) -> list[ClassificationResult]:
        """Results of one part of a batch: embeddings, embedding and fused probabilities and
        evidence, every label at once over the part's accepted ECGs."""
        accepted = [w for w in works if w.acceptable]
        emb = self.embed_windows([w.model_input() for w in accepted])
        cos = emb @ label_set.embeddings.T
        values = PartValues.of_measurements([w.measurements for w in accepted])
        p_embedding = sigmoid(label_set.slopes * cos + label_set.intercepts)
        evidences = self.scorer.evidences(label_set.labels, values)
        fused = self.scorer.fuse_all(label_set.labels, p_embedding, evidences)
        nearest = self.nearest_training_similarity(emb)
        threshold = self.calibration.ood_threshold
        return part_results(
            works,
            label_set,
            PartScores(cos, p_embedding, fused, evidences),
            None if nearest is None or threshold is None else nearest < threshold,
            self.model_version,
        )

    def save_text_cache(self) -> None:
        """Persist the text-feature cache beside the weights (used when shipping a model)."""
        save_numpy(dict(self.text_encoder.cache), str(self.directory / "text_cache.safetensors"))


def _measurements(ecg: Ecg) -> dict[str, Measurement]:
    """One ECG's measurements exactly as :meth:`ZeroShotClassifier.classify` gets them."""
    return measurements_of(ecg)
