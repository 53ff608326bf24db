"""Batches of variable-length token sequences with little padding.

A learned tokenizer gives one code per ``stride`` nucleotides, so a dataset of
equal-length sequences has equal-length inputs; BPE and k-mer tokens vary in number per
sequence, and a batch padded to its longest row spends part of every step on
padding (measured on GUE data: benchmarks/padding.py). Training batches are
therefore drawn as Hugging Face's ``group_by_length`` does: shuffle, cut the
order into groups of ``group`` batches, sort each group by length, cut it into
batches and shuffle the batches. Each batch holds rows of similar length, and
the epoch is still a random order of the whole split. Evaluation needs no
randomness: its rows are batched longest first and the scores put back in order.
"""

from __future__ import annotations

import numpy as np

# Batches per length-sorted group. Larger groups pad less but make a batch's rows
# less random; 50 is the multiplier of Hugging Face's LengthGroupedSampler.
GROUP_BATCHES = 50


def token_lengths(codes: list[np.ndarray]) -> np.ndarray:
    """Tokens per row of per-row codes (levels, tokens)."""
    return np.array([c.shape[1] for c in codes], dtype=np.int64)


def training_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, group: int = GROUP_BATCHES) -> list[np.ndarray]:
    """One epoch's batches (row indices) in a random order, each of rows of similar length.

    Where every row has the same length nothing is grouped: the batches are the
    plain shuffled order, drawn from ``rng`` exactly as before grouping existed.
    """
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    if len(lengths) == 0 or lengths.min() == lengths.max():
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = []
    span = batch_size * group
    for start in range(0, len(order), span):
        members = order[start : start + span]
        members = members[np.argsort(-lengths[members], kind="stable")]
        batches += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def evaluation_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices batched longest first; scores come back in row order through the indices."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padding_fraction(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """The share of the batches' token slots that are padding (each batch padded to its longest row)."""
    lengths = np.asarray(lengths)
    slots = sum(len(rows) * int(lengths[rows].max()) for rows in batches if len(rows))
    return 1.0 - float(lengths[np.concatenate(batches)].sum()) / slots if slots else 0.0
