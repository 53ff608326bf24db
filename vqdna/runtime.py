"""What every stage that runs a model needs: a device, model inputs from codes, the tokenizer check, and the
pieces the three training loops (tokenizer, pretraining, fine-tuning) share.

A model is only meaningful with the tokenizer it was trained on: codes of one
tokenizer are noise to an encoder pretrained on another. Each consumer (token
files, pretrained encoders, fine-tuned runs) stores the tokenizer's content
hash, and `check_tokenizer_hash` is the one place that compares it.

Every training loop updates through `optimizer_step` (clipping included),
reads its loss on the host only once per log interval (`RunningLoss`, or the
logged step's loss), and stops with `check_finite_loss` once it is NaN or
infinite.

This module imports no tokenizer, model, pysam or Snakemake code, so every
layer above can use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

from vqdna import VqdnaError

# Gradients are clipped to this global L2 norm unless a caller says otherwise: BERT's own
# optimizer (which the paper's pretraining and fine-tuning follow), HF Trainer's
# max_grad_norm and nanoGPT all use 1.0. It caps spikes without touching ordinary steps:
# training the demo tokenizer (config/config.yaml, real genomes), 40 of 400 steps went
# above it, all in the first 50 (warm-up), and held-out reconstruction, usage and
# perplexity came out the same (1.0, 0.996 vs 0.992, 417 vs 420) as without clipping.
MAX_GRAD_NORM = 1.0


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


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    schedule: LRScheduler,
    parameters: Iterable[torch.nn.Parameter],
    max_norm: float = MAX_GRAD_NORM,
) -> None:
    """One update from the gradients that ``backward`` left: clip their global norm, step, advance the schedule.

    The gradients are freed (set to None) afterwards, so the next forward pass
    does not hold them in memory; the next ``backward`` creates them anew.
    """
    torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)


class RunningLoss:
    """Per-step training losses kept on the device; their mean crosses to the host once per log interval.

    ``loss.item()`` after every step makes the host wait until the device has
    finished that step before it can queue the next one: the GPU idles while
    the host prepares each batch. ``add`` only keeps a reference to the loss.
    The losses are kept, not summed on the device, so that ``mean`` is the
    float64 mean of exactly the values a per-step ``item()`` would have read.
    A NaN or infinite loss in the interval makes the mean NaN or infinite:
    checking the mean checks every step.
    """

    def __init__(self) -> None:
        self._losses: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor) -> None:
        self._losses.append(loss.detach())

    def mean(self) -> float:
        """The mean of the losses added since the last call (at least one), read with one host sync."""
        values = torch.stack(self._losses).float().tolist()
        self._losses = []
        return float(np.mean(values))


def check_finite_loss(
    loss: float, step: int, stage: str, remedy: str = "lower learning_rate or raise warmup_steps, then rerun"
) -> None:
    """One line naming ``stage`` and ``step`` once the training loss is NaN or infinite.

    Such a loss never recovers (its gradients make every weight NaN), so the
    run stops instead of writing a model of NaNs. The loops check the loss they
    log, once per log interval, hence "by step".
    """
    if not math.isfinite(loss):
        raise VqdnaError(f"{stage}: the training loss became {loss} by step {step}; {remedy}")
