"""Measure a saved tokenizer on held-out windows: its own stage, so that changing how it is measured never retrains it.

For every tokenizer, per level: codebook (vocabulary) usage, perplexity, the
held-out count of every code (``code_counts``, for frequency plots) and
reconstruction accuracy (decoded bases equal to the input, N excluded), on
test-split windows of its ``train_genomes``. For learned tokenizers also the
per-level reconstruction (decoding the embedding after n levels) and the
neighbour-base probe (fitted on train-split windows); for baselines the mean
number of tokens per window.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vqdna import VqdnaError
from vqdna.artifacts import write_json
from vqdna.genome import base_ids, bases_from_ids
from vqdna.tokenizer import metrics
from vqdna.tokenizer.api import VQTokenizer, load_tokenizer, onehot
from vqdna.windows import read_base_ids

TRAINING_FILE = "training.json"


@dataclass
class TokenizerEvalConfig:
    heldout_windows: int = 1024  # test-split windows measured
    probe_windows: int = 4096  # train-split windows that fit the neighbour probe's table
    seed: int = 0


def load_windows(paths: list[Path], split: str) -> np.ndarray:
    """Base ids (windows, length) of one split over several window files."""
    arrays = [read_base_ids(p, split) for p in paths]
    arrays = [a for a in arrays if len(a)]
    if not arrays:
        raise VqdnaError(f"no {split}-split windows in {', '.join(map(str, paths))}")
    lengths = {a.shape[1] for a in arrays}
    if len(lengths) > 1:
        raise VqdnaError(f"window files differ in window length {sorted(lengths)}: {', '.join(map(str, paths))}")
    return np.concatenate(arrays)


def subsample(windows: np.ndarray, count: int, seed: int) -> np.ndarray:
    if len(windows) <= count:
        return windows
    return windows[np.sort(np.random.default_rng(seed).choice(len(windows), count, replace=False))]


def _encode_all(tokenizer: VQTokenizer, windows: np.ndarray, batch: int = 128) -> np.ndarray:
    """(N, L) ids -> (levels, N, ceil(L / stride)) codes."""
    parts = [tokenizer.encode_ids(windows[i : i + batch]) for i in range(0, len(windows), batch)]
    return np.stack([np.concatenate([p[level] for p in parts]) for level in range(tokenizer.num_levels)])


@torch.no_grad()
def _decode_levels_all(tokenizer: VQTokenizer, windows: np.ndarray, batch: int = 128) -> np.ndarray:
    """(N, L) ids -> (levels, N, L) bases decoded after 1..N levels."""
    parts = []
    for i in range(0, len(windows), batch):
        x = onehot(torch.as_tensor(windows[i : i + batch], device=tokenizer.device))
        parts.append([logits.argmax(-1).cpu().numpy() for logits in tokenizer.model.decode_levels(x)])
    return np.stack([np.concatenate([p[level] for p in parts]) for level in range(tokenizer.num_levels)])


def measure_learned(tokenizer: VQTokenizer, probe_train: np.ndarray, heldout: np.ndarray) -> dict:
    """Held-out reconstruction per level, usage, perplexity and neighbour probe of a VQ/HRQ tokenizer."""
    train_codes = _encode_all(tokenizer, probe_train)
    heldout_codes = _encode_all(tokenizer, heldout)
    predicted = _decode_levels_all(tokenizer, heldout)
    stride = tokenizer.stride

    def per_base(codes: np.ndarray) -> np.ndarray:  # (N, T) -> (N, L): each base gets the code that covers it
        return np.repeat(codes, stride, axis=1)[:, : heldout.shape[1]]
    levels = []
    for level, size in enumerate(tokenizer.level_sizes):
        codes = heldout_codes[level]
        levels.append(
            {
                "level": level + 1,
                "codebook_size": size,
                "reconstruction_accuracy": metrics.reconstruction_accuracy(predicted[level], heldout),
                "usage": metrics.usage(codes, size),
                "perplexity": metrics.perplexity(codes, size),
                # at stride s > 1, neighbours inside a code's own s bases are part of what it encodes
                "neighbour_probe": metrics.neighbour_probe(per_base(train_codes[level]), probe_train, per_base(codes), heldout, size),
                "code_counts": np.bincount(codes.ravel(), minlength=size).tolist(),
            }
        )
    tokens_per_nt = heldout_codes.shape[2] / heldout.shape[1]
    return {"reconstruction_accuracy": levels[-1]["reconstruction_accuracy"], "stride": stride, "tokens_per_nt": tokens_per_nt, "levels": levels}


def measure_baseline(tokenizer, heldout: np.ndarray) -> dict:
    """Vocabulary usage, perplexity, exact round trip and tokens per window of a k-mer/BPE/char tokenizer."""
    sequences = [bases_from_ids(w) for w in heldout]
    codes = tokenizer.encode(sequences)
    decoded = np.stack([base_ids(s) for s in tokenizer.decode(codes)])
    ids = np.concatenate([c[0] for c in codes])
    size = tokenizer.level_sizes[0]
    level = {"level": 1, "codebook_size": size, "usage": metrics.usage(ids, size), "perplexity": metrics.perplexity(ids, size),
             "code_counts": np.bincount(ids.astype(np.int64), minlength=size).tolist()}
    level["reconstruction_accuracy"] = metrics.reconstruction_accuracy(decoded, heldout)
    level["tokens_per_window"] = float(np.mean([c.shape[1] for c in codes]))
    tokens_per_nt = level["tokens_per_window"] / heldout.shape[1]
    return {"reconstruction_accuracy": level["reconstruction_accuracy"], "tokens_per_nt": tokens_per_nt, "levels": [level]}


def evaluate_tokenizer(
    tokenizer_dir: str | Path, window_files: list[str | Path], settings: dict, output: str | Path, *, split: str = "test"
) -> dict:
    """Write ``metrics.json`` of the tokenizer in ``tokenizer_dir`` (training summary included).

    ``split="dev"`` measures on the dev-split windows instead, for choosing tokenizer settings without looking at
    the test split; such a file names its split (``heldout_split``), a test one keeps the workflow's shape.
    """
    if split not in ("test", "dev"):
        raise VqdnaError(f"evaluate_tokenizer: split {split!r} is not one of test, dev")
    config = TokenizerEvalConfig(**settings)
    tokenizer_dir = Path(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    paths = [Path(p) for p in window_files]
    heldout = subsample(load_windows(paths, split), config.heldout_windows, config.seed)
    if isinstance(tokenizer, VQTokenizer):
        probe_train = subsample(load_windows(paths, "train"), config.probe_windows, config.seed + 1)
        result = measure_learned(tokenizer, probe_train, heldout)
    else:
        result = measure_baseline(tokenizer, heldout)
    training = tokenizer_dir / TRAINING_FILE
    result.update(
        type=tokenizer.config.type,
        heldout_windows=int(len(heldout)),
        tokenizer_hash=tokenizer.hash,
        evaluation=asdict(config),
        training=json.loads(training.read_text()) if training.is_file() else None,
        **({"heldout_split": split} if split != "test" else {}),
    )
    write_json(output, result)
    return result
