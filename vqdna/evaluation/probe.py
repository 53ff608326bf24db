"""Linear probes on frozen features: the "Lin." columns of the paper's Tables 1 and 7.

Two kinds of features, nothing trained but the linear model on top:

- ``tokenizer``: stage 1 alone. A learned VQ/HRQ tokenizer gives each
  sequence the mean over its positions of the code embedding (eq. 2; HRQ: the
  mean over levels, eq. 10, as ``VQTokenizer.embed`` gives it), a (D,) vector.
  A baseline tokenizer (k-mer, BPE, char) has no embedding, so a sequence is
  the normalised histogram of its token ids: their vocabularies (4^6 + 1 = 4,097
  overlapping 6-mers at most, 4,096 BPE merges by default, 5 chars) are small
  enough for a sparse (N, V) matrix.
- ``encoder``: the mean over tokens of a pretrained encoder's last hidden
  states (``vqdna.predict``'s pooling), from a pretrained folder or a fine-tuned
  run (its LoRA-adapted encoder, base found as ``vqdna predict`` finds it).

Features are standardised with the train split's statistics (sparse histograms
are scaled, not centred: centring would densify them), then a
LogisticRegression (classification) or Ridge (regression) is fitted on train
for each penalty of a grid, the best on dev is kept and scored once on test.
Sequences are cut to the dataset's ``max_length`` as fine-tuning cuts them, and
their codes are read from the dataset tokens when the workflow made them
(:mod:`vqdna.dataset_tokens`), else encoded here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

from vqdna import VqdnaError
from vqdna.artifacts import SPLITS
from vqdna.dataset_tokens import dataset_codes
from vqdna.datasets.spec import DatasetSpec
from vqdna.evaluation.kmer_baseline import (
    LinearSettings,
    fit_on_dev,
    predict_scores,
    result_record,
    task_metrics,
    write_outputs,
)
from vqdna.predict import load_encoder, matching_tokenizer, mean_pooled
from vqdna.runtime import choose_device
from vqdna.tokenizer.api import Tokenizer, VQTokenizer, load_tokenizer

log = logging.getLogger(__name__)

FEATURES = ("tokenizer", "encoder")
EMBED_POSITIONS = 1 << 18  # positions per VQTokenizer.embed call: (2^18, D) float32 is 256 MB at D = 256


@dataclass
class ProbeSettings(LinearSettings):
    """LinearSettings' grids (standardised features); ``batch_size`` is the encoder's, ``chunk_size`` sequences per progress step."""

    batch_size: int = 64
    chunk_length: int | None = None  # encoder: tokens per piece of a long sequence (vqdna.predict.mean_pooled)
    chunk_size: int = 1024

    def check(self, where: str) -> None:
        super().check(where)
        if self.batch_size < 1 or self.chunk_size < 1 or (self.chunk_length is not None and self.chunk_length < 1):
            raise VqdnaError(f"{where}: batch_size, chunk_size and chunk_length must be >= 1")


# -- features ------------------------------------------------------------------------------------------


def _vq_mean_embedding(tokenizer: VQTokenizer, codes: list[np.ndarray]) -> np.ndarray:
    """Per sequence the mean over positions of the tokenizer embedding, (n, D) float32.

    The embedding is per position (a codebook lookup, levels averaged), so the
    sequences' codes are laid end to end and embedded in a few large calls.
    """
    lengths = np.array([c.shape[1] for c in codes])
    joined = np.concatenate(codes, axis=1)  # (levels, total positions)
    owners = np.repeat(np.arange(len(codes)), lengths)  # sorted, so each slice reduces with reduceat
    sums = np.zeros((len(codes), tokenizer.embedding_dim), dtype=np.float64)
    for start in range(0, joined.shape[1], EMBED_POSITIONS):
        embedded = tokenizer.embed([joined[:, start : start + EMBED_POSITIONS]])[0]  # (P, D)
        owner = owners[start : start + EMBED_POSITIONS]
        firsts = np.flatnonzero(np.diff(owner, prepend=-1))
        sums[owner[firsts]] += np.add.reduceat(embedded.astype(np.float64), firsts, axis=0)
    return (sums / lengths[:, None]).astype(np.float32)


def _id_histogram(codes: list[np.ndarray], vocab_size: int) -> sp.csr_matrix:
    """Per sequence the frequency of each token id, (n, V) CSR; rows sum to 1."""
    lengths = np.array([c.shape[1] for c in codes])
    rows = np.repeat(np.arange(len(codes)), lengths)
    columns = np.concatenate([c[0] for c in codes]).astype(np.int64)
    return sp.coo_matrix((1.0 / lengths[rows], (rows, columns)), shape=(len(codes), vocab_size)).tocsr()  # repeats summed


def tokenizer_features(tokenizer: Tokenizer, codes: list[np.ndarray], *, used: list[np.ndarray] | None = None) -> np.ndarray | sp.csr_matrix:
    """Stage-1 features of per sequence codes: VQ/HRQ -> mean code embedding (N, D) dense; baseline -> id histogram (N, V) sparse.

    ``used`` (one boolean array per level, vocabulary long) marks every id seen: Table 1's token usage.
    """
    for level, seen in enumerate(used or []):
        seen[np.concatenate([c[level] for c in codes]).astype(np.int64)] = True
    if isinstance(tokenizer, VQTokenizer):
        return _vq_mean_embedding(tokenizer, codes)
    return _id_histogram(codes, tokenizer.level_sizes[0])


def encoder_features(
    encoder: torch.nn.Module, codes: list[np.ndarray], device: torch.device, *,
    batch_size: int = 64, chunk_length: int | None = None, chunk_size: int = 1024, desc: str = "features",
) -> np.ndarray:
    """Mean-pooled last hidden states (N, H) float32 of per sequence codes, as ``vqdna embed`` computes them."""
    parts = []
    with tqdm(total=len(codes), desc=desc, unit="seq", mininterval=10) as progress:
        for start in range(0, len(codes), chunk_size):
            parts.append(mean_pooled(encoder, codes[start : start + chunk_size], batch_size, device, chunk_length))
            progress.update(len(parts[-1]))
    return np.concatenate(parts)


# -- the evaluator -------------------------------------------------------------------------------------


def linear_probe(
    spec: DatasetSpec,
    dataset_dir: str | Path,
    output_dir: str | Path,
    *,
    tokenizer_dir: str | Path,
    pretrained_dir: str | Path | None = None,
    features: str = "tokenizer",
    settings: dict | None = None,
    seed: int = 0,
    device: str | None = None,
    threads: int | None = None,
) -> dict:
    """Probe frozen ``features`` on ``dataset_dir``; writes metrics.json and predictions.parquet to ``output_dir``.

    ``pretrained_dir`` (a pretrained folder or a fine-tuned run) is required
    for encoder features and refused for tokenizer features, so a probe's
    folder name never suggests an encoder that was not used.
    """
    where = f"linear_probe {spec.dataset}"
    if features not in FEATURES:
        raise VqdnaError(f"{where}: features must be one of {', '.join(FEATURES)}, got {features!r}")
    if features == "encoder" and pretrained_dir is None:
        raise VqdnaError(f"{where}: encoder features need a pretrained model folder (pretrained_dir)")
    if features == "tokenizer" and pretrained_dir is not None:
        raise VqdnaError(f"{where}: tokenizer features use the tokenizer alone; drop pretrained_dir ({pretrained_dir})")
    options = ProbeSettings.from_settings(settings, where)
    torch.manual_seed(seed)
    device = choose_device(device, threads)
    record: dict = {"features": features, "tokenizer": str(tokenizer_dir)}

    if features == "encoder":
        model_dir = Path(pretrained_dir)
        encoder, config, base_dir = load_encoder(model_dir, None)
        tokenizer = matching_tokenizer(config, tokenizer_dir, model_dir, device)
        encoder = encoder.to(device)
        record |= {"model": str(model_dir), "pretrained": str(base_dir)}
    else:
        tokenizer = load_tokenizer(tokenizer_dir, device=device)
    started = time.time()
    data = dataset_codes(tokenizer, dataset_dir, spec.max_length)
    for split, (labels, _) in data.items():
        if not len(labels):
            raise VqdnaError(f"dataset {spec.dataset}: the {split} split of {dataset_dir} has no rows")
    if features == "encoder":
        matrices = {
            split: encoder_features(
                encoder, codes, device, batch_size=options.batch_size,
                chunk_length=options.chunk_length, chunk_size=options.chunk_size, desc=f"{spec.dataset} {split}",
            )
            for split, (_, codes) in data.items()
        }
    else:
        used = [np.zeros(size, dtype=bool) for size in tokenizer.level_sizes]
        matrices = {split: tokenizer_features(tokenizer, codes, used=used) for split, (_, codes) in data.items()}
        # Table 1's usage: the share of the vocabulary (every level) that the dataset's sequences use.
        record["token_usage"] = float(sum(int(u.sum()) for u in used) / sum(len(u) for u in used))
    feature_seconds = time.time() - started
    labels = {split: y for split, (y, _) in data.items()}
    sparse = sp.issparse(matrices["train"])
    log.info(
        "%s: %s features, %d columns%s, %d train / %d dev / %d test, %.1f s",
        spec.dataset, features, matrices["train"].shape[1], " (sparse)" if sparse else "",
        *(len(labels[s]) for s in SPLITS), feature_seconds,
    )

    started = time.time()
    fit = fit_on_dev(spec, options, matrices, labels, seed, standardise=True)
    train_seconds = time.time() - started
    predictions, logits = predict_scores(fit, matrices["test"], spec.num_labels)
    test_metrics = task_metrics(spec.task, labels["test"], predictions)
    result = result_record(spec, seed, f"linear_probe_{features}", test_metrics, fit, train_seconds)
    result |= record | {
        "tokenizer_hash": tokenizer.hash,
        "feature_dim": int(matrices["train"].shape[1]),
        "standardisation": "scaled by train's std (sparse, not centred)" if sparse else "centred and scaled by train's mean and std",
        "max_iter": options.max_iter,
        "feature_seconds": round(feature_seconds, 2),
    }
    log.info("%s %s test %s", spec.dataset, result["method"], test_metrics)
    write_outputs(output_dir, spec, result, labels["test"], predictions, logits)
    return result
