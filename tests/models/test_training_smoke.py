"""Training smoke test: a few steps on a handful of real PTB-XL records (runs in CI, < 60 s)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from adapters import load_ecg
from models.catalog import load_catalog
from models.classifier import ZeroShotClassifier
from models.release import prepare_release
from models.training import TrainArgs, index_data, rank_penalty, train
from models.training_losses import conditional_cooccurrence, cooccurrence_negative_weights

pytestmark = pytest.mark.slow
#: Releasing embeds every catalog prompt with MiniLM; three labels keep the test quick.
SMALL_CATALOG = load_catalog().subset(["normal_ecg", "sinus_rhythm", "atrial_fibrillation"])


def _args(ptbxl_dir: Path, out: Path, cache: Path, **kw: object) -> TrainArgs:
    args = TrainArgs(
        data=ptbxl_dir,
        out_dir=out,
        max_records=8,
        batch_size=4,
        epochs=2,
        min_fact_count=1,
        rate=100,
        reports_per_record=2,
        text_cache=cache,
        progress=False,
        config_overrides={"stage_channels": (16, 32), "stem_channels": 16, "embed_dim": 32},
    )
    for key, value in kw.items():
        setattr(args, key, value)
    return args


def test_train_is_deterministic_and_resumable(tmp_path: Path, ptbxl_dir: Path) -> None:
    cache = tmp_path / "text.safetensors"
    full = train(_args(ptbxl_dir, tmp_path / "a", cache))
    # The same run cut after one epoch and resumed ends with exactly the same weights.
    train(_args(ptbxl_dir, tmp_path / "b", cache, stop_after_epochs=1))
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["step"] == 2
    resumed = train(_args(ptbxl_dir, tmp_path / "b", cache, resume=True))
    wa, wb = (
        load_file(str(full / "model.safetensors")),
        load_file(str(resumed / "model.safetensors")),
    )
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    args = _args(ptbxl_dir, tmp_path / "a", cache)
    prepare_release(full, ptbxl_dir, refs=index_data(args), catalog=SMALL_CATALOG)
    clf = ZeroShotClassifier.from_pretrained(full)
    [result] = clf.classify([load_ecg(ptbxl_dir / "records500/00000/00009_hr.hea")], ["normal ECG"])
    assert result.model_version == clf.model_version
    assert 0.0 <= result.scores[0].probability <= 1.0


def test_folder_of_files_with_report_csv(tmp_path: Path, ptbxl_dir: Path) -> None:
    """A hospital archive: ECG files plus a CSV of report texts (here PTB-XL files)."""
    rows = ["file,report,split"]
    reports = [
        "sinus rhythm. normal ECG",
        "sinus rhythm. left axis deviation",
        "atrial fibrillation",
    ]
    for i in range(1, 10):
        rows.append(f"00000/{i:05d}_lr.hea,{reports[i % 3]},{'val' if i > 7 else 'train'}")
    csv_path = tmp_path / "reports.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    args = _args(ptbxl_dir / "records100", tmp_path / "run", tmp_path / "text.safetensors")
    args.reports_csv = csv_path
    args.max_records = None
    refs = index_data(args)
    assert len(refs) == 9 and {r.split for r in refs} == {"train", "val"}
    assert any(f.key == "stmt:atrial fibrillation" for r in refs for f in r.facts)
    model_dir = train(args)
    prepare_release(model_dir, args.data, refs=refs, catalog=SMALL_CATALOG)
    clf = ZeroShotClassifier.from_pretrained(model_dir)
    [result] = clf.classify([load_ecg(ptbxl_dir / "records100/00000/00001_lr.hea")], ["normal ECG"])
    assert result.scores and clf.calibration.ood_threshold is not None


def test_rank_penalty_prefers_spread_embeddings_and_has_a_gradient() -> None:
    """The optional rank-keeping term: low for embeddings that fill many dimensions, high
    for a batch collapsed onto three directions, and differentiable (it must train)."""
    gen = torch.Generator().manual_seed(0)
    spread = torch.randn(64, 256, generator=gen, requires_grad=True)
    centres = torch.randn(3, 256, generator=gen)
    picks = torch.randint(0, 3, (64,), generator=gen)
    collapsed = centres[picks] + 0.05 * torch.randn(64, 256, generator=gen)
    unit = torch.nn.functional.normalize
    low = rank_penalty(unit(spread, dim=1), 1.0, 1.0)
    high = rank_penalty(unit(collapsed, dim=1), 1.0, 1.0)
    assert float(low.detach()) < float(high.detach())
    low.backward()
    assert spread.grad is not None and float(spread.grad.abs().sum()) > 0


def test_cooccurrence_hard_negatives_weigh_the_facts_that_travel_together() -> None:
    """A negative fact weighs more the more often it comes with a fact the ECG carries;
    positives and facts never seen together keep weight 1."""
    # facts: 0 = LVH, 1 = ST-T change (with LVH on 2 of 3 LVH records), 2 = AF (never with LVH)
    y = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    cond = conditional_cooccurrence(y)
    assert cond[0, 1] == pytest.approx(2 / 3) and cond[1, 0] == pytest.approx(1.0)
    assert float(cond[0, 0]) == 0.0 and float(cond[0, 2]) == 0.0
    batch = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    weights = cooccurrence_negative_weights(batch, cond, 3.0)
    assert float(weights[0, 0]) == 1.0  # a positive
    assert float(weights[0, 1]) == pytest.approx(1.0 + 3.0 * 2 / 3)  # LVH record, no ST-T
    assert float(weights[0, 2]) == 1.0 and float(weights[1, 0]) == 1.0  # never together
