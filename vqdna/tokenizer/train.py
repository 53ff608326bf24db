"""Stage 1: train a VQ tokenizer on the windows of its ``train_genomes``, then measure it on held-out windows.

Training draws random crops of random train-split windows; the final
``restart_free_steps`` steps run without dead-code restarts, so the codebook a
user gets has settled (a restart makes usage jump for a while). Metrics are
taken at the end on the test-split windows of the same genomes.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from vqdna import VqdnaError
from vqdna.io import atomic_dir, write_json
from vqdna.tokenizer import metrics
from vqdna.tokenizer.api import MODEL_TYPES, Tokenizer, onehot
from vqdna.windows import read_base_ids

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
    heldout_windows: int = 1024  # test-split windows measured at the end
    probe_windows: int = 4096  # train-split windows that fit the neighbour probe's table
    log_every: int = 50
    seed: int = 0


def split_config(name: str, settings: dict) -> tuple[object, TokenizerTrainConfig]:
    """Split a ``tokenizers:`` entry into its model config and its training config, by field name."""
    settings = dict(settings)
    settings.pop("train_genomes", None)
    kind = settings.get("type", "vq")
    if kind not in MODEL_TYPES:
        raise VqdnaError(f"tokenizers.{name}: type {kind!r} is not trainable here (known: {', '.join(MODEL_TYPES)})")
    model_class = MODEL_TYPES[kind][0]
    model_keys = {f.name for f in fields(model_class)}
    train_keys = {f.name for f in fields(TokenizerTrainConfig)}
    unknown = sorted(set(settings) - model_keys - train_keys)
    if unknown:
        raise VqdnaError(
            f"tokenizers.{name}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(model_keys | train_keys))}"
        )
    model_config = model_class(**{k: v for k, v in settings.items() if k in model_keys})
    train_config = TokenizerTrainConfig(**{k: v for k, v in settings.items() if k in train_keys})
    return model_config, train_config


def _load_windows(paths: list[Path], split: str) -> np.ndarray:
    arrays = [read_base_ids(p, split) for p in paths]
    arrays = [a for a in arrays if len(a)]
    if not arrays:
        raise VqdnaError(f"no {split}-split windows in {', '.join(map(str, paths))}")
    lengths = {a.shape[1] for a in arrays}
    if len(lengths) > 1:
        raise VqdnaError(f"window files differ in window length {sorted(lengths)}: {paths}")
    return np.concatenate(arrays)


def _subsample(windows: np.ndarray, count: int, seed: int) -> np.ndarray:
    if len(windows) <= count:
        return windows
    pick = np.random.default_rng(seed).choice(len(windows), count, replace=False)
    return windows[np.sort(pick)]


def measure(tokenizer: Tokenizer, probe_train: np.ndarray, heldout: np.ndarray) -> dict:
    """Held-out reconstruction, usage, perplexity and neighbour probe, per level."""
    result: dict = {"heldout_windows": int(len(heldout)), "levels": []}
    train_codes = _encode_all(tokenizer, probe_train)
    heldout_codes = _encode_all(tokenizer, heldout)
    predicted = _decode_all(tokenizer, heldout_codes)
    result["reconstruction_accuracy"] = metrics.reconstruction_accuracy(predicted, heldout)
    for level, size in enumerate(tokenizer.level_sizes):
        codes = heldout_codes[level]
        result["levels"].append(
            {
                "level": level + 1,
                "codebook_size": size,
                "usage": metrics.usage(codes, size),
                "perplexity": metrics.perplexity(codes, size),
                "neighbour_probe": metrics.neighbour_probe(train_codes[level], probe_train, codes, heldout, size),
            }
        )
    return result


def _encode_all(tokenizer: Tokenizer, windows: np.ndarray, batch: int = 128) -> np.ndarray:
    """(N, L) ids -> (levels, N, L) codes."""
    parts = [tokenizer.encode_ids(windows[i : i + batch]) for i in range(0, len(windows), batch)]
    return np.stack([np.concatenate([p[level] for p in parts]) for level in range(tokenizer.num_levels)])


@torch.no_grad()
def _decode_all(tokenizer: Tokenizer, codes: np.ndarray, batch: int = 128) -> np.ndarray:
    out = []
    for i in range(0, codes.shape[1], batch):
        level_codes = [torch.as_tensor(codes[level, i : i + batch], device=tokenizer.device) for level in range(len(codes))]
        out.append(tokenizer.model.decode(level_codes).argmax(-1).cpu().numpy())
    return np.concatenate(out)


def train_tokenizer(
    name: str,
    settings: dict,
    window_files: list[str | Path],
    output_dir: str | Path,
    *,
    threads: int | None = None,
    device: str | None = None,
) -> dict:
    """Train, measure and save the tokenizer ``name``; returns its metrics (also in metrics.json)."""
    model_config, train = split_config(name, settings)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(train.seed)
    rng = np.random.default_rng(train.seed)
    paths = [Path(p) for p in window_files]
    windows = _load_windows(paths, "train")
    heldout = _subsample(_load_windows(paths, "test"), train.heldout_windows, train.seed)
    probe_train = _subsample(windows, train.probe_windows, train.seed + 1)
    crop = min(train.crop_length or windows.shape[1], windows.shape[1])

    model_class = MODEL_TYPES[model_config.type][1]
    tokenizer = Tokenizer(model_class(model_config), device=device)
    model = tokenizer.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, train.warmup_steps, train.steps)
    use_bf16 = tokenizer.device.type == "cuda"
    log.info("tokenizer %s: %d train windows, %d held-out, crop %d, %s", name, len(windows), len(heldout), crop, tokenizer.device)

    curves = []
    started = time.time()
    restarts_total = 0
    for step in tqdm(range(1, train.steps + 1), desc=f"train {name}", mininterval=10):
        for codebook in model.codebooks:
            codebook.restarts_enabled = step <= train.steps - train.restart_free_steps
        rows = rng.integers(len(windows), size=train.batch_size)
        offsets = rng.integers(windows.shape[1] - crop + 1, size=train.batch_size)
        batch = windows[rows[:, None], offsets[:, None] + np.arange(crop)]
        targets = torch.as_tensor(batch, device=tokenizer.device).long()
        with torch.autocast(tokenizer.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = model(onehot(targets), targets)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        schedule.step()
        restarts = sum(c.last_restarts for c in model.codebooks)
        restarts_total += restarts
        if step % train.log_every == 0 or step == train.steps:
            codes = out.codes[0].detach().cpu().numpy()
            predicted = out.logits.detach().argmax(-1).cpu().numpy()
            curves.append(
                {
                    "step": step,
                    "loss": out.loss.item(),
                    "reconstruction_loss": out.reconstruction_loss.item(),
                    "commitment_loss": out.commitment_loss.item(),
                    "batch_reconstruction_accuracy": metrics.reconstruction_accuracy(predicted, batch),
                    "batch_usage": metrics.usage(codes, model_config.level_sizes[0]),
                    "batch_perplexity": metrics.perplexity(codes, model_config.level_sizes[0]),
                    "restarts": restarts_total,
                    "learning_rate": schedule.get_last_lr()[0],
                    "seconds": round(time.time() - started, 1),
                }
            )
            log.info("step %d %s", step, {k: round(v, 4) for k, v in curves[-1].items() if k != "step"})
        if not math.isfinite(out.loss.item()):
            raise VqdnaError(f"tokenizer {name}: loss became {out.loss.item()} at step {step}; lower learning_rate")

    model.eval()
    result = measure(tokenizer, probe_train, heldout)
    result.update(
        tokenizer=name,
        train_windows=int(len(windows)),
        steps=train.steps,
        train_seconds=round(time.time() - started, 1),
        restarts=restarts_total,
        train_config=asdict(train),
    )
    with atomic_dir(output_dir) as tmp:
        result["tokenizer_hash"] = tokenizer.save(tmp)
        _write_curves(tmp / "curves.csv", curves)
        write_json(tmp / "metrics.json", result)
    return result


def _write_curves(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
