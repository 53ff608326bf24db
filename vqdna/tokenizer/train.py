"""Stage 1: train a tokenizer on the windows of its ``train_genomes`` (measuring it is :mod:`evaluate`'s job).

Learned tokenizers (VQ-VAE, HRQ) train on random crops of random train-split
windows; the final ``restart_free_steps`` steps run without dead-code restarts,
so the codebook a user gets has settled (a restart makes usage jump for a
while). BPE learns its merges from the same windows; k-mer and char need no
training and are only written down.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from vqdna import VqdnaError
from vqdna.artifacts import atomic_dir, write_csv, write_json
from vqdna.distributed import (
    all_gather_cat,
    all_reduce_sum,
    barrier,
    is_distributed,
    join_process_group,
    rank_device,
)
from vqdna.genome import bases_from_ids
from vqdna.runtime import check_finite_loss, optimizer_step
from vqdna.tokenizer import metrics
from vqdna.tokenizer.api import MODEL_TYPES, VQTokenizer, onehot
from vqdna.tokenizer.baselines import BASELINE_TYPES, BPETokenizer
from vqdna.tokenizer.evaluate import TRAINING_FILE, TokenizerEvalConfig, load_windows

log = logging.getLogger(__name__)


@dataclass
class TokenizerTrainConfig:
    """Optimisation of stage 1. Defaults follow the paper (AdamW, lr 1e-4, cosine, batch 1024)."""

    steps: int = 20000
    batch_size: int = 1024
    crop_length: int | None = None  # None: whole windows
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 500
    restart_free_steps: int = 500  # final stretch without dead-code restarts
    log_every: int = 50
    seed: int = 0


def split_config(name: str, settings: dict) -> tuple[object, TokenizerTrainConfig | None, TokenizerEvalConfig]:
    """Split a ``tokenizers:`` entry by field name into its model, training and evaluation configs.

    Baselines have no training config (k-mer and char are rules; BPE's options are its model's).
    """
    settings = {k: v for k, v in settings.items() if k != "train_genomes"}
    kind = settings.get("type", "vq")
    if kind not in MODEL_TYPES and kind not in BASELINE_TYPES:
        raise VqdnaError(f"tokenizers.{name}: unknown type {kind!r} (known: {', '.join([*MODEL_TYPES, *BASELINE_TYPES])})")
    model_class = (MODEL_TYPES.get(kind) or BASELINE_TYPES[kind])[0]
    groups = [model_class, TokenizerTrainConfig, TokenizerEvalConfig] if kind in MODEL_TYPES else [model_class, TokenizerEvalConfig]
    keys = [{f.name for f in fields(group)} for group in groups]
    unknown = sorted(set(settings) - set().union(*keys))
    if unknown:
        raise VqdnaError(
            f"tokenizers.{name}: unknown setting(s) {', '.join(unknown)} for type {kind}; "
            f"known: {', '.join(sorted(set().union(*keys)))}"
        )
    configs = [group(**{k: v for k, v in settings.items() if k in names}) for group, names in zip(groups, keys)]
    if kind in MODEL_TYPES:
        return configs[0], configs[1], configs[2]
    return configs[0], None, configs[1]


def train_tokenizer(
    name: str,
    settings: dict,
    window_files: list[str | Path],
    output_dir: str | Path,
    *,
    threads: int | None = None,
    device: str | None = None,
) -> dict:
    """Train and save the tokenizer ``name`` (config, model, curves, training.json); returns the training summary.

    Under torchrun every step draws one global batch of crops (the same draw on
    every rank, so the run does not depend on the process count) and rank r
    encodes its own disjoint slice of it; the codebooks' EMA statistics and
    restart candidates are reduced across ranks, gradients by DDP. Rank 0 saves.
    """
    model_config, train, _ = split_config(name, settings)
    paths = [Path(p) for p in window_files]
    if train is None:
        return _write_baseline(name, model_config, paths, output_dir)
    rank, world = join_process_group()
    if train.batch_size % world:
        raise VqdnaError(f"tokenizers.{name}: batch_size {train.batch_size} is not divisible by {world} processes")
    if threads:
        torch.set_num_threads(threads)
    device = rank_device(device, rank, world)
    torch.manual_seed(train.seed)  # same initial weights on every rank
    rng = np.random.default_rng(train.seed)
    windows = load_windows(paths, "train")
    crop = min(train.crop_length or windows.shape[1], windows.shape[1])

    tokenizer = VQTokenizer(MODEL_TYPES[model_config.type][1](model_config), device=device)
    model = tokenizer.model.train()
    # Codebook buffers are kept equal by the codebooks' own all-reduce: DDP need not broadcast them.
    step_model = DistributedDataParallel(model, broadcast_buffers=False) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, train.warmup_steps, train.steps)
    use_bf16 = tokenizer.device.type == "cuda"
    per_rank = train.batch_size // world
    mine = slice(rank * per_rank, (rank + 1) * per_rank)
    log.info("tokenizer %s: %d train windows, crop %d, process %d of %d, %s", name, len(windows), crop, rank, world, tokenizer.device)

    curves = []
    started = time.time()
    restarts_total = 0
    for step in tqdm(range(1, train.steps + 1), desc=f"train {name}", mininterval=10, disable=rank > 0):
        for codebook in model.codebooks:
            codebook.restarts_enabled = step <= train.steps - train.restart_free_steps
        rows = rng.integers(len(windows), size=train.batch_size)[mine]
        offsets = rng.integers(windows.shape[1] - crop + 1, size=train.batch_size)[mine]
        batch = windows[rows[:, None], offsets[:, None] + np.arange(crop)]
        targets = torch.as_tensor(batch, device=tokenizer.device).long()
        with torch.autocast(tokenizer.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = step_model(onehot(targets), targets)
        out.loss.backward()
        optimizer_step(optimizer, schedule, model.parameters())
        restarts_total += sum(c.last_restarts for c in model.codebooks)
        # The curves hold the logged step's batch: its loss is read there, once per interval.
        if step % train.log_every == 0 or step == train.steps:
            curves.append(_curve_row(step, out, batch, model_config.level_sizes, restarts_total, schedule, started))
            check_finite_loss(curves[-1]["loss"], step, f"tokenizers.{name}")
            log.info("step %d %s", step, {k: round(v, 4) for k, v in curves[-1].items() if k != "step"})

    summary = {
        "tokenizer": name,
        "type": model_config.type,
        "train_windows": int(len(windows)),
        "processes": world,
        "steps": train.steps,
        "train_seconds": round(time.time() - started, 1),
        "restarts": restarts_total,
        "train_config": asdict(train),
    }
    if rank == 0:
        with atomic_dir(output_dir) as tmp:
            summary["tokenizer_hash"] = tokenizer.save(tmp)
            write_csv(tmp / "curves.csv", curves)
            plot_curves(curves, tmp / "curves.png", title=f"tokenizer {name}")
            write_json(tmp / TRAINING_FILE, summary)
    barrier()
    return summary


def _write_baseline(name: str, config, paths: list[Path], output_dir: str | Path) -> dict:
    """k-mer and char are rules; BPE learns its merges from the train-split windows."""
    started = time.time()
    if config.type == "bpe":
        windows = load_windows(paths, "train")
        tokenizer = BPETokenizer.train(config, [bases_from_ids(w) for w in windows])
    else:
        tokenizer = BASELINE_TYPES[config.type][1](config)
    summary = {"tokenizer": name, "type": config.type, "train_seconds": round(time.time() - started, 1)}
    with atomic_dir(output_dir) as tmp:
        summary["tokenizer_hash"] = tokenizer.save(tmp)
        write_json(tmp / TRAINING_FILE, summary)
    return summary


def _curve_row(step, out, batch, level_sizes, restarts_total, schedule, started) -> dict:
    """One row of the training curves, over the global batch (gathered from every rank under DDP)."""
    losses = torch.stack([out.loss, out.reconstruction_loss, out.commitment_loss]).detach().float()
    losses = all_reduce_sum(losses) / (dist.get_world_size() if is_distributed() else 1)
    predicted = all_gather_cat(out.logits.detach().argmax(-1)).cpu().numpy()
    targets = all_gather_cat(torch.as_tensor(batch, device=out.logits.device)).cpu().numpy()
    row = {
        "step": step,
        "loss": losses[0].item(),
        "reconstruction_loss": losses[1].item(),
        "commitment_loss": losses[2].item(),
        "batch_reconstruction_accuracy": metrics.reconstruction_accuracy(predicted, targets),
    }
    for level, size in enumerate(level_sizes, start=1):
        codes = all_gather_cat(out.codes[level - 1].detach()).cpu().numpy()
        row[f"batch_usage_l{level}"] = metrics.usage(codes, size)
        row[f"batch_perplexity_l{level}"] = metrics.perplexity(codes, size)
    row.update(restarts=restarts_total, learning_rate=schedule.get_last_lr()[0], seconds=round(time.time() - started, 3))
    return row


def plot_curves(rows: list[dict], path: Path, title: str) -> None:
    """Loss, batch reconstruction and per-level codebook usage against step, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(steps, [r["loss"] for r in rows], label="loss")
    axes[0].plot(steps, [r["reconstruction_loss"] for r in rows], label="reconstruction (CE)")
    axes[0].set_yscale("log")
    axes[1].plot(steps, [r["batch_reconstruction_accuracy"] for r in rows])
    axes[1].set_ylabel("batch reconstruction accuracy")
    for key in [k for k in rows[0] if k.startswith("batch_usage_l")]:
        axes[2].plot(steps, [r[key] for r in rows], label=f"level {key.rsplit('l', 1)[1]}")
    axes[2].set_ylabel("codebook usage (batch)")
    axes[2].set_ylim(0, 1.02)
    for ax in axes:
        ax.set_xlabel("step")
    axes[0].legend()
    axes[2].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
