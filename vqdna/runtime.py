"""What every stage that runs a model needs: a device, model inputs from codes, and the tokenizer check.

A model is only meaningful with the tokenizer it was trained on: codes of one
tokenizer are noise to an encoder pretrained on another. Each consumer (token
files, pretrained encoders, fine-tuned runs) stores the tokenizer's content
hash, and `check_tokenizer_hash` is the one place that compares it.

This module imports no tokenizer, model, pysam or Snakemake code, so every
layer above can use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vqdna import VqdnaError


def best_device() -> torch.device:
    """The first GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_device(device: str | torch.device | None = None, threads: int | None = None) -> torch.device:
    """``device`` as given, else the best one; ``threads`` caps torch's CPU threads (a rule's `threads:`)."""
    if threads:
        torch.set_num_threads(threads)
    return torch.device(device) if device is not None else best_device()


def check_tokenizer_hash(expected: str | None, found: str, *, made: str, given: str | Path, remedy: str) -> None:
    """One line when an artifact was ``made`` (e.g. "results/pretrain/x was pretrained on") with another tokenizer than ``given``."""
    if expected != found:
        raise VqdnaError(f"{made} tokenizer hash {(expected or 'none')[:12]}... but {given} has hash {found[:12]}...; {remedy}")


def pad_codes(codes: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence (levels, L) codes -> input_ids (B, L_max, levels) and attention_mask (B, L_max), zero-padded."""
    levels, longest = codes[0].shape[0], max(c.shape[1] for c in codes)
    input_ids = np.zeros((len(codes), longest, levels), dtype=np.int64)
    attention = np.zeros((len(codes), longest), dtype=bool)
    for i, c in enumerate(codes):
        input_ids[i, : c.shape[1]] = c.T
        attention[i, : c.shape[1]] = True
    return torch.as_tensor(input_ids, device=device), torch.as_tensor(attention, device=device)


def encode_sequences(tokenizer, names: list[str], sequences: list[str]) -> list[np.ndarray]:
    """Per sequence its codes (levels, tokens); one line naming the first sequence that gives no token."""
    codes = tokenizer.encode(sequences)
    empty = [name for name, c in zip(names, codes) if c.shape[1] == 0]
    if empty:
        raise VqdnaError(f"sequence {empty[0]!r} gives no tokens (shorter than one token of this tokenizer)")
    return codes
