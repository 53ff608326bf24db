"""Stage 2: masked modelling of learned codes (paper: 25% masking, lr 5e-4, batch 2048, 500k steps).

The encoder reads the frozen tokenizer embedding of every position; a fraction
``mask_ratio`` of positions is replaced by a learned mask vector and the model
predicts, at those positions, the code of every tokenizer level.

Masks are a pure function of (seed, step, global sample index), and the sample
order a pure function of (seed, epoch), so a run is reproducible from its
config alone, whatever the process count.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from vqdna import VqdnaError
from vqdna.io import atomic_dir, write_csv, write_json
from vqdna.lm.configuration import VqdnaConfig
from vqdna.lm.modeling import VqdnaForMaskedLM
from vqdna.tokenizer.api import best_device, load_tokenizer
from vqdna.tokens import Codes, read_codes

log = logging.getLogger(__name__)

ENCODER_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "rope_theta",
    "initializer_range",
)


@dataclass
class PretrainConfig:
    """A ``runs:`` entry. Defaults follow the paper's stage 2."""

    tokenizer: str = ""
    pretrain_genomes: list[str] = field(default_factory=list)
    encoder: dict = field(default_factory=dict)  # VqdnaConfig sizes; empty: BERT-base
    mask_ratio: float = 0.25
    steps: int = 500_000
    batch_size: int = 2048
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 10_000
    max_length: int | None = None  # cut windows into pieces of this many tokens; None: whole windows
    log_every: int = 100
    heldout_windows: int = 1024
    seed: int = 0

    @classmethod
    def from_settings(cls, name: str, settings: dict) -> "PretrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise VqdnaError(f"runs.{name}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        config = cls(**settings)
        bad = sorted(set(config.encoder) - set(ENCODER_KEYS))
        if bad:
            raise VqdnaError(f"runs.{name}.encoder: unknown key(s) {', '.join(bad)}; known: {', '.join(ENCODER_KEYS)}")
        if not 0 < config.mask_ratio < 1:
            raise VqdnaError(f"runs.{name}: mask_ratio must lie in (0, 1), got {config.mask_ratio}")
        return config


def _uniform_keys(seed: int, step: int, sample_index: np.ndarray, length: int) -> np.ndarray:
    """Counter-based uniform numbers in [0, 1): splitmix64 of (seed, step, sample, position)."""
    with np.errstate(over="ignore"):
        x = (
            np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
            + np.uint64(step) * np.uint64(0xBF58476D1CE4E5B9)
            + sample_index.astype(np.uint64)[:, None] * np.uint64(0x94D049BB133111EB)
            + np.arange(length, dtype=np.uint64)[None, :]
        )
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def mask_positions(
    seed: int, step: int, sample_index: np.ndarray, length: int, ratio: float, lengths: np.ndarray | None = None
) -> np.ndarray:
    """Exactly round(ratio * n) masked positions among each sample's n real tokens.

    Keyed by (seed, step, global sample index): a sample's mask does not depend
    on the batch it is in or on the process count. ``lengths`` (per sample)
    leaves padding unmasked; without it every position is real.
    """
    lengths = np.full(len(sample_index), length) if lengths is None else np.asarray(lengths)
    keys = _uniform_keys(seed, step, sample_index, length)
    keys[np.arange(length)[None, :] >= lengths[:, None]] = np.inf  # padding is never chosen
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    counts = np.maximum(1, np.rint(ratio * lengths)).astype(np.int64)
    return rank < counts[:, None]


@functools.lru_cache(maxsize=2)
def sample_order(seed: int, epoch: int, num_windows: int) -> np.ndarray:
    """The order windows are read in during one epoch (cached: one permutation per epoch, not per step)."""
    return np.random.default_rng([seed, epoch]).permutation(num_windows)


def global_batch_indices(seed: int, step: int, batch_size: int, num_windows: int) -> np.ndarray:
    """Global sample indices of ``step`` (1-based) and the windows they read, epoch by epoch."""
    first = (step - 1) * batch_size
    sample_index = np.arange(first, first + batch_size)
    epochs = sample_index // num_windows
    windows = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        here = epochs == epoch
        windows[here] = sample_order(seed, int(epoch), num_windows)[sample_index[here] % num_windows]
    return np.stack([sample_index, windows])


def _masked_batch(codes: Codes, rows: np.ndarray, sample_index: np.ndarray, seed: int, step: int, ratio: float, device: torch.device):
    """Inputs, mask, labels (-100 where unscored) and attention mask of the windows ``rows``."""
    lengths = codes.lengths[rows]
    longest = int(lengths.max())
    values = codes.values[rows, :longest]
    mask = mask_positions(seed, step, sample_index, longest, ratio, lengths)
    input_ids = torch.as_tensor(values.astype(np.int64), device=device)  # (B, L, levels)
    masked = torch.as_tensor(mask, device=device)
    labels = torch.where(masked[..., None], input_ids, torch.full_like(input_ids, -100))
    attention = torch.as_tensor(np.arange(longest)[None, :] < lengths[:, None], device=device)
    return input_ids, masked, labels, attention


@torch.no_grad()
def masked_accuracy(model: VqdnaForMaskedLM, codes: Codes, seed: int, ratio: float, device: torch.device, batch: int = 64) -> list[float]:
    """Held-out masked-code accuracy per level, with masks fixed by (seed, step 0)."""
    model.eval()
    correct = np.zeros(codes.values.shape[-1])
    total = 0
    for i in range(0, len(codes), batch):
        rows = np.arange(i, min(i + batch, len(codes)))
        input_ids, masked, labels, attention = _masked_batch(codes, rows, rows, seed, 0, ratio, device)
        out = model(input_ids, attention_mask=attention, masked_positions=masked)
        for level, logits in enumerate(out.level_logits):
            correct[level] += (logits.argmax(-1)[masked] == labels[..., level][masked]).sum().item()
        total += int(masked.sum())
    model.train()
    return (correct / max(1, total)).tolist()


def _heldout_sample(parts: list[Codes], count: int, seed: int) -> Codes:
    """A seeded sample of held-out windows spread over every genome (not the first genome's first windows)."""
    held = Codes.concatenate(parts)
    if len(held) <= count:
        return held
    pick = np.sort(np.random.default_rng(seed).choice(len(held), count, replace=False))
    return Codes(held.values[pick], held.lengths[pick])


def pretrain(
    name: str,
    settings: dict,
    tokenizer_dir: str | Path,
    token_files: list[str | Path],
    output_dir: str | Path,
    *,
    threads: int | None = None,
    device: str | None = None,
) -> dict:
    """Pretrain run ``name`` on ``token_files`` and save the final model with ``save_pretrained``."""
    run = PretrainConfig.from_settings(name, settings)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(run.seed)
    device = torch.device(device) if device else best_device()
    tokenizer = load_tokenizer(tokenizer_dir, device="cpu")
    train_codes = Codes.concatenate([read_codes(p, tokenizer.hash, "train") for p in token_files])
    heldout = _heldout_sample([read_codes(p, tokenizer.hash, "test") for p in token_files], run.heldout_windows, run.seed)
    if len(train_codes) == 0:
        raise VqdnaError(f"runs.{name}: no train-split windows in {', '.join(map(str, token_files))}")
    if run.max_length:  # every window cut into max_length pieces: all of the corpus is read
        train_codes, heldout = train_codes.chunked(run.max_length), heldout.chunked(run.max_length)
    length = train_codes.values.shape[1]

    config = VqdnaConfig(
        vocab_sizes=tokenizer.level_sizes,
        code_embedding_dim=tokenizer.embedding_dim,
        tokenizer_name=run.tokenizer,
        tokenizer_hash=tokenizer.hash,
        tokenizer_type=tokenizer.config.type,
        **run.encoder,
    )
    model = VqdnaForMaskedLM(config)
    if tokenizer.embedding_dim is not None:  # learned tokenizers: their codebooks are the frozen input embedding
        model.vqdna.set_code_embeddings(tokenizer.codebook_tables())
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=run.learning_rate, weight_decay=run.weight_decay, betas=(0.9, 0.98))
    schedule = get_cosine_schedule_with_warmup(optimizer, run.warmup_steps, run.steps)
    use_bf16 = device.type == "cuda"
    log.info(
        "run %s: %d train sequences of up to %d tokens, %.1fM trainable parameters, %s",
        name, len(train_codes), length, sum(p.numel() for p in trainable) / 1e6, device,
    )

    curves = []
    started = time.time()
    for step in tqdm(range(1, run.steps + 1), desc=f"pretrain {name}", mininterval=10):
        sample_index, rows = global_batch_indices(run.seed, step, run.batch_size, len(train_codes))
        input_ids, masked, labels, attention = _masked_batch(train_codes, rows, sample_index, run.seed, step, run.mask_ratio, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = model(input_ids, attention_mask=attention, masked_positions=masked, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        if not math.isfinite(loss.item()):
            raise VqdnaError(f"runs.{name}: loss became {loss.item()} at step {step}; lower learning_rate")
        if step % run.log_every == 0 or step == run.steps:
            curves.append({"step": step, "loss": loss.item(), "learning_rate": schedule.get_last_lr()[0], "seconds": round(time.time() - started, 1)})
            log.info("step %d loss %.4f", step, loss.item())

    accuracy = masked_accuracy(model, heldout, run.seed, run.mask_ratio, device)
    result = {
        "run": name,
        "tokenizer": run.tokenizer,
        "tokenizer_hash": tokenizer.hash,
        "train_sequences": int(len(train_codes)),
        "heldout_sequences": int(len(heldout)),
        "steps": run.steps,
        "final_loss": curves[-1]["loss"],
        "heldout_masked_accuracy": accuracy,
        "train_seconds": round(time.time() - started, 1),
        "run_config": asdict(run),
    }
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp)
        write_json(tmp / "metrics.json", result)
        write_csv(tmp / "curves.csv", curves)
    return result
