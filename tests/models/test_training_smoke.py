"""Training smoke test: a few steps on a handful of real PTB-XL records (runs in CI, < 60 s)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapters import load_ecg
from models.classifier import ZeroShotClassifier
from models.release import prepare_release
from models.training import TrainArgs, index_data, train

pytestmark = pytest.mark.slow


def _args(ptbxl_dir: Path, out: Path, cache: Path, **kw: object) -> TrainArgs:
    args = TrainArgs(
        data=ptbxl_dir,
        out_dir=out,
        max_records=8,
        batch_size=4,
        max_steps=2,
        min_fact_count=1,
        reports_per_record=2,
        text_cache=cache,
        progress=False,
        config_overrides={"stage_channels": (16, 32), "stem_channels": 16, "embed_dim": 32},
    )
    for key, value in kw.items():
        setattr(args, key, value)
    return args


def test_train_resume_release_and_classify(tmp_path: Path, ptbxl_dir: Path) -> None:
    cache = tmp_path / "text.safetensors"
    first = train(_args(ptbxl_dir, tmp_path / "a", cache))
    again = train(_args(ptbxl_dir, tmp_path / "b", cache))
    # Same seed, same data: the same weights.
    wa, wb = (
        load_file(str(first / "model.safetensors")),
        load_file(str(again / "model.safetensors")),
    )
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # Resume: a longer run picks up the checkpoint instead of starting over.
    resumed = _args(ptbxl_dir, tmp_path / "a", cache, max_steps=3, resume=True)
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["step"] == 2
    train(resumed)
    assert torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=False)["step"] == 3

    prepare_release(first, ptbxl_dir, refs=index_data(resumed))
    clf = ZeroShotClassifier.from_pretrained(first)
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
    prepare_release(model_dir, args.data, refs=refs)
    clf = ZeroShotClassifier.from_pretrained(model_dir)
    [result] = clf.classify([load_ecg(ptbxl_dir / "records100/00000/00001_lr.hea")], ["normal ECG"])
    assert result.scores and clf.calibration.ood_threshold is not None
