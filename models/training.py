"""Train the ECG encoder and projections against frozen MiniLM text features.

Recipe for little data (what the model card reports on):

* frozen text tower: every training sentence is embedded once (mean-pooled MiniLM) and
  cached on disk; only a linear text projection is tuned, at a tenth of the ECG learning rate;
* a **label-aware sigmoid loss** over the vocabulary of facts (SCP statements, classes,
  axis, noise flags, or report sentences): each step draws one phrasing per fact, and an
  ECG is a positive for every fact it carries, so ECGs that share a statement are never
  pushed apart (the multi-positive problem of plain CLIP on PTB-XL);
* a **multi-positive CLIP loss** on whole English reports composed from the facts:
  targets spread evenly over every ECG in the batch with the same fact set;
* signal augmentation: random crops, gain, noise, baseline wander, lead dropout;
* an exponential moving average of the weights (validated and shipped);
* model selection on validation macro AUROC over the facts seen there.

Deterministic for a given seed and thread count; checkpoints every epoch; ``resume=True``
continues from the last checkpoint.

The loop, its optimiser and its checkpoint format stay here, as they change together; what
it learns from (vocabulary, measured facts, text features, lead scales) is in
``models.training_inputs``, the validation score in ``models.training_validation`` and the
losses beyond plain BCE in ``models.training_losses``, so this module reads as the recipe.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.augment import augment
from models.config import EcgClipConfig
from models.data import (
    RecordRef,
    SignalDataset,
    fit_window,
    folder_records,
    is_ptbxl_layout,
    ptbxl_records,
    read_scp_statements,
)
from models.modeling import EcgClipModel
from models.text import INTERVAL_FACTS, RATE_FACTS, compose_report
from models.text_encoder import text_key
from models.training_inputs import (
    MeasuredFacts,
    Vocabulary,
    estimate_lead_scales,
    load_text_features,
)
from models.training_losses import (
    conditional_cooccurrence,
    cooccurrence_negative_weights,
    rank_penalty,
)
from models.training_validation import validate, vocab_prompt_features


@dataclass
class TrainArgs:
    data: Path
    out_dir: Path = Path("runs/ecg-clip")
    reports_csv: Path | None = None
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-2
    text_lr_scale: float = 0.1
    seed: int = 0
    crop_s: float = 8.0
    min_fact_count: int = 2
    reports_per_record: int = 4
    report_loss_weight: float = 0.0  # off by default: it did not help on validation
    fact_loss_weight: float = 1.0
    #: Keep the embedding's rank (VICReg-style, Bardes et al. 2022): a hinge on each
    #: dimension's batch standard deviation and a penalty on off-diagonal covariance of the
    #: ECG embeddings. Shipped since issue 14 part 3 (0.5 / 1; 0 disables): the validation
    #: participation ratio 3.7 -> 6.8 with the served scores no worse, see the model card.
    variance_weight: float = 0.5
    covariance_weight: float = 1.0
    #: Hard negatives between co-occurring facts: a negative (ECG, fact) pair weighs
    #: ``1 + w * max P(fact | a fact the ECG carries)`` (``models.training_losses``). 0 disables.
    hard_negative_weight: float = 0.0
    lead_dropout: float = 0.1
    #: Exponential moving average of the weights, validated and shipped instead of the raw
    #: weights (0 disables). With ~5 steps per epoch, 0.95 averages about four epochs.
    ema_decay: float = 0.95
    #: Add "bradycardia"/"tachycardia"/"normal heart rate" facts measured from each signal.
    measured_rate_facts: bool = True
    #: Add rhythm-regularity, wide-QRS and long-PR facts from models.measurements.measure.
    measured_interval_facts: bool = False
    #: PTB-XL+ labels folder (``12sl_statements.csv`` + ``mapping/``): add the facts GE 12SL's
    #: machine statements state to the training records (``models.machine_statements``);
    #: validation and test records keep the cardiologists' facts only. None: off.
    machine_statements: Path | None = None
    augment: bool = True
    threads: int = 2
    resume: bool = False
    max_records: int | None = None  # smoke tests: a handful of records
    max_steps: int | None = None
    #: End this session after N epochs, keeping the schedule of ``epochs`` (resume later).
    stop_after_epochs: int | None = None
    rate: int = 500
    text_cache: Path | None = (
        None  # persistent MiniLM feature cache (default: out_dir/text_features.safetensors)
    )
    progress: bool = True
    config_overrides: dict[str, Any] = field(default_factory=dict)


def index_data(args: TrainArgs) -> list[RecordRef]:
    if args.machine_statements is not None and not is_ptbxl_layout(args.data):
        raise ValueError(
            f"--machine-statements needs a PTB-XL folder as --data ({args.data} is not one)"
        )
    if is_ptbxl_layout(args.data):
        refs = ptbxl_records(args.data, rate=args.rate)
    else:
        refs = folder_records(args.data, args.reports_csv)
    if not refs:
        raise ValueError(f"{args.data}: no records with signals and report text found")
    if args.machine_statements is not None:
        from models.machine_statements import add_machine_statements

        refs = add_machine_statements(refs, args.machine_statements, read_scp_statements(args.data))
    if args.max_records is not None:
        train = [r for r in refs if r.split == "train"][: args.max_records]
        val = [r for r in refs if r.split == "val"][: max(2, args.max_records // 4)]
        refs = train + val
    return refs


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], model: EcgClipModel, decay: float) -> None:
    for key, value in model.state_dict().items():
        if decay > 0 and value.is_floating_point():
            ema[key].mul_(decay).add_(value.detach(), alpha=1.0 - decay)
        else:
            ema[key].copy_(value)


def train(args: TrainArgs) -> Path:
    """Train; returns the folder of the best model (``out_dir/model``)."""
    seed_everything(args.seed, args.threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    refs = index_data(args)
    train_refs = [r for r in refs if r.split == "train"]
    val_refs = [r for r in refs if r.split == "val"]
    if not train_refs:
        raise ValueError(
            f"{args.data}: no training records (all records are in validation/test splits)"
        )
    vocab = Vocabulary.build(train_refs, args.min_fact_count)
    if not vocab.keys:
        raise ValueError("no fact occurs often enough to train on; lower --min-fact-count")
    if args.measured_rate_facts:
        vocab.add(RATE_FACTS)
    if args.measured_interval_facts:
        vocab.add(INTERVAL_FACTS)

    config = EcgClipConfig(**args.config_overrides)
    config.extra["lead_scale_mv"] = estimate_lead_scales(train_refs, config)
    rng_text = random.Random(args.seed)
    key_set = set(vocab.keys)
    reports: list[list[str]] = []
    for ref in train_refs:
        facts = [f for f in ref.facts if f.key in key_set]
        reports.append([compose_report(facts, rng_text) for _ in range(args.reports_per_record)])
    all_texts = [s for sents in vocab.sentences for s in sents] + [t for rs in reports for t in rs]
    feats = load_text_features(
        all_texts, args.text_cache or out / "text_features.safetensors", args.progress
    )

    sentence_feats = [
        torch.from_numpy(np.stack([feats[text_key(s)] for s in sents])) for sents in vocab.sentences
    ]
    report_feats = torch.from_numpy(np.stack([[feats[text_key(t)] for t in rs] for rs in reports]))
    y_train = torch.from_numpy(vocab.targets(train_refs))
    fact_sets = [frozenset(f.key for f in r.facts if f.key in key_set) for r in train_refs]
    val_y = vocab.targets(val_refs)
    prompts = vocab_prompt_features(vocab, feats)

    model = EcgClipModel(config)
    text_params = list(model.text_proj.parameters())
    other = [p for n, p in model.named_parameters() if not n.startswith("text_proj")]
    optimizer = torch.optim.AdamW(
        [
            {"params": other, "lr": args.lr},
            {"params": text_params, "lr": args.lr * args.text_lr_scale},
        ],
        weight_decay=args.weight_decay,
    )
    steps_per_epoch = max(1, len(train_refs) // args.batch_size)
    total_steps = args.max_steps or steps_per_epoch * args.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[args.lr, args.lr * args.text_lr_scale],
        total_steps=total_steps,
        pct_start=0.1,
    )
    train_ds = SignalDataset(train_refs, config)
    val_ds = SignalDataset(val_refs, config)
    rate_targets = MeasuredFacts(
        vocab, config.sample_rate, args.measured_rate_facts, args.measured_interval_facts
    )
    if rate_targets.enabled:
        for i in range(len(val_refs)):
            val_y[i] = np.maximum(val_y[i], rate_targets(val_ds, i))
    cooccurrence = None
    if args.hard_negative_weight > 0:
        # Measured facts included (their co-occurrence with statements counts too); the rate
        # is measured once per record and cached, so this only moves the first epoch's work.
        every = rate_targets.batch(y_train, train_ds, np.arange(len(train_refs)))
        cooccurrence = conditional_cooccurrence(every.numpy())
    np_rng = np.random.default_rng(args.seed)
    start_epoch, step, best, best_state = 0, 0, -1.0, None
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history: list[dict[str, float]] = []
    ckpt_path = out / "checkpoints" / "last.pt"
    if args.resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, step, best, best_state = (
            ckpt["epoch"] + 1,
            ckpt["step"],
            ckpt["best"],
            ckpt["best_state"],
        )
        history = ckpt["history"]
        ema = ckpt["ema"]
        np_rng.bit_generator.state = ckpt["np_rng"]
        torch.set_rng_state(ckpt["torch_rng"])

    crop = round(args.crop_s * config.sample_rate)
    epochs = (
        args.epochs if args.max_steps is None else max(1, -(-args.max_steps // steps_per_epoch))
    )
    bar = tqdm(total=total_steps, initial=step, desc="train", disable=not args.progress)
    last_epoch = epochs if args.stop_after_epochs is None else min(epochs, args.stop_after_epochs)
    for epoch in range(start_epoch, last_epoch):
        if step >= total_steps:
            break
        model.train()
        order = np_rng.permutation(len(train_refs))
        t0, losses = time.perf_counter(), []
        for b in range(steps_per_epoch):
            if step >= total_steps:
                break
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            xs = []
            for i in idx:
                x = fit_window(train_ds.signal(int(i)), crop, np_rng)
                xs.append(
                    augment(x, np_rng, config.sample_rate, args.lead_dropout) if args.augment else x
                )
            ecg = model.encode_ecg(torch.from_numpy(np.stack(xs)))
            pick = torch.from_numpy(np_rng.integers(0, 1 << 30, size=len(sentence_feats)))
            fact_text = torch.stack(
                [sf[int(p) % len(sf)] for sf, p in zip(sentence_feats, pick, strict=True)]
            )
            logits = model.logits(ecg, model.encode_text_features(fact_text))
            targets = rate_targets.batch(y_train, train_ds, idx)
            pair_weights = (
                None
                if cooccurrence is None
                else cooccurrence_negative_weights(targets, cooccurrence, args.hard_negative_weight)
            )
            loss = (
                args.fact_loss_weight
                * F.binary_cross_entropy_with_logits(
                    logits, targets, weight=pair_weights, reduction="sum"
                )
                / len(idx)
            )
            if args.variance_weight > 0 or args.covariance_weight > 0:
                loss = loss + rank_penalty(ecg, args.variance_weight, args.covariance_weight)
            if args.report_loss_weight > 0:
                r = torch.from_numpy(np_rng.integers(0, args.reports_per_record, size=len(idx)))
                rep = model.encode_text_features(report_feats[torch.from_numpy(idx), r])
                sim = model.logit_scale.exp().clamp(max=100.0) * ecg @ rep.T
                same = torch.tensor(
                    [[float(fact_sets[i] == fact_sets[j]) for j in idx] for i in idx]
                )
                target = same / same.sum(1, keepdim=True)
                clip = (
                    -(target * F.log_softmax(sim, 1)).sum(1).mean()
                    - (target * F.log_softmax(sim.T, 1)).sum(1).mean()
                )
                loss = loss + args.report_loss_weight * clip / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            step += 1
            update_ema(ema, model, args.ema_decay)
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses):.3f}", best=f"{best:.3f}")
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if args.ema_decay > 0:
            model.load_state_dict(ema)
        score = validate(model, val_ds, val_y, prompts) if len(val_refs) else float("nan")
        if np.isnan(score) or score > best:
            best = -1.0 if np.isnan(score) else score
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(raw)
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)) if losses else float("nan"),
                "val_macro_auroc": score,
                "seconds": time.perf_counter() - t0,
            }
        )
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "step": step,
                "best": best,
                "best_state": best_state,
                "ema": ema,
                "history": history,
                "np_rng": np_rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
            },
            ckpt_path.with_suffix(".tmp"),
        )
        # Atomic: an interrupted save never leaves a half-written checkpoint to resume from.
        os.replace(ckpt_path.with_suffix(".tmp"), ckpt_path)
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    model_dir = model.save_pretrained(out / "model")
    summary = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
        "records": {"train": len(train_refs), "val": len(val_refs)},
        "vocabulary": vocab.keys,
        "best_val_macro_auroc_facts": best,
        "history": history,
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return model_dir
