"""Turn trained weights into a servable model folder: calibration, OOD bank, text cache.

After :func:`models.training.train`, :func:`prepare_release`:

0. exports the encoder for ONNX Runtime (``ecg_encoder.onnx``, :mod:`models.onnx_encoder`);
1. embeds the training ECGs (a subsample of at most ``bank_size``) as the out-of-distribution
   bank; the OOD threshold is a low percentile of validation ECGs' nearest-neighbour cosine;
2. fits per-label Platt calibration on the validation split for every catalog label with a
   PTB-XL mapping (PTB-XL layouts only; a label needs 3 positives and 3 negatives);
3. caches the MiniLM features of every catalog prompt and criteria phrase, so serving the
   catalog never loads the text transformer;
4. refits the criteria fusion (``fusion.json``) on the validation data only: the PTB-XL
   validation fold plus the CinC validation sources when a ``cinc`` folder sits beside the
   data (:func:`models.fusion_fit.fit_validation_fusion`); too few positives keep the
   defaults, said in the file.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file as save_numpy

from models.calibration import Calibration, fit_platt
from models.catalog import LabelCatalog, load_catalog, ptbxl_statements_with_superclasses
from models.classifier import OOD_BANK_NAME, ZeroShotClassifier, prompts_digest
from models.data import RecordRef, is_ptbxl_layout, ptbxl_records, read_record, read_scp_statements
from models.onnx_encoder import export_encoder
from models.text import parse_scp_codes

OOD_PERCENTILE = 1.0


def _embed_refs(clf: ZeroShotClassifier, refs: list[RecordRef]) -> np.ndarray:
    out = [clf.embed([read_record(r) for r in refs[i : i + 64]]) for i in range(0, len(refs), 64)]
    return np.concatenate(out) if out else np.zeros((0, clf.config.embed_dim), dtype=np.float32)


def ptbxl_val_statements(root: Path, refs: list[RecordRef]) -> list[set[str]]:
    """SCP codes plus superclasses of each reference record (for catalog ``ptbxl`` mappings)."""
    classes = {
        k: str(v.get("diagnostic_class") or "") for k, v in read_scp_statements(root).items()
    }
    codes: dict[str, dict[str, float]] = {}
    with (root / "ptbxl_database.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            codes[f"ptbxl:{int(float(row['ecg_id']))}"] = parse_scp_codes(row["scp_codes"])
    return [ptbxl_statements_with_superclasses(codes[r.record_id], classes) for r in refs]


def prepare_release(
    model_dir: Path,
    data: Path,
    refs: list[RecordRef] | None = None,
    catalog: LabelCatalog | None = None,
    bank_size: int = 2000,
    seed: int = 0,
) -> Calibration:
    model_dir = Path(model_dir)
    catalog = catalog or load_catalog()
    clf = ZeroShotClassifier.from_pretrained(model_dir, catalog=catalog, threads=None)
    export_encoder(clf.model, model_dir)
    if refs is None:
        refs = ptbxl_records(data) if is_ptbxl_layout(data) else []
    train = [r for r in refs if r.split == "train"]
    val = [r for r in refs if r.split == "val"]
    rng = np.random.default_rng(seed)
    if len(train) > bank_size:
        train = [train[i] for i in sorted(rng.choice(len(train), bank_size, replace=False))]
    calibration = Calibration(source=f"{data} validation split ({len(val)} records)")
    if train:
        bank = _embed_refs(clf, train)
        save_numpy({"embeddings": bank.astype(np.float32)}, str(model_dir / OOD_BANK_NAME))
        if val:
            val_emb = _embed_refs(clf, val)
            nearest = (val_emb @ bank.T).max(axis=1)
            calibration.ood_threshold = float(np.percentile(nearest, OOD_PERCENTILE))
            if is_ptbxl_layout(data):
                statements = ptbxl_val_statements(data, val)
                cos = val_emb @ clf.label_embeddings(catalog).T
                for j, label in enumerate(catalog):
                    flags = [label.is_ptbxl_positive(s) for s in statements]
                    if flags[0] is None:
                        continue
                    fit = fit_platt(cos[:, j], np.array(flags, dtype=float), clf.default_mapping)
                    if fit is not None:
                        calibration.labels[label.id] = fit
                        calibration.label_prompts[label.id] = prompts_digest(
                            clf.label_prompts(label)
                        )
    calibration.save(model_dir)
    clf.label_embeddings(catalog)  # fills the text cache with every catalog prompt
    clf.text_encoder.encode(list(clf.scorer.resolver.phrases))  # and every criteria phrase
    clf.save_text_cache()
    if is_ptbxl_layout(data):
        _refit_fusion(model_dir, data, catalog)
    return calibration


def _refit_fusion(model_dir: Path, data: Path, catalog: LabelCatalog) -> None:
    from models.fusion import Fusion
    from models.fusion_fit import fit_validation_fusion

    clf = ZeroShotClassifier.from_pretrained(model_dir, catalog=catalog, threads=None)
    clf.fusion = Fusion()
    cinc = data.parent / "cinc"
    try:
        fusion = fit_validation_fusion(clf, data, cinc if cinc.is_dir() else None)
    except ValueError as exc:  # a tiny run: keep the defaults, and say why
        fusion = Fusion(fitted_on=f"not fitted ({exc}): defaults")
    fusion.save(model_dir)
