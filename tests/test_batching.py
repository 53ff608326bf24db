"""Length-grouped batches: every row once per epoch, little padding, and equal lengths batched as before grouping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TINY_ENCODER

from vqdna.batching import evaluation_batches, padding_fraction, token_lengths, training_batches
from vqdna.finetune.train import predict_logits
from vqdna.lm.configuration import VqdnaConfig
from vqdna.lm.modeling import VqdnaForSequenceClassification


def _bpe_like_lengths(rows: int, seed: int = 0) -> np.ndarray:
    """Token counts like BPE's on equal-length sequences: a spread of about a fifth around the mean."""
    return np.clip(np.random.default_rng(seed).normal(20, 4, rows).round(), 5, None).astype(np.int64)


def test_padding_fraction_by_hand():
    lengths = np.array([4, 2, 3, 3])
    # [4, 2] pads to 8 slots holding 6 tokens; [3, 3] fills its 6 slots: 2 of 14 slots are padding
    assert padding_fraction(lengths, [np.array([0, 1]), np.array([2, 3])]) == pytest.approx(2 / 14)
    assert padding_fraction(lengths, [np.array([0, 2]), np.array([1, 3])]) == pytest.approx(2 / 14)  # [4, 3] and [2, 3]: 1 + 1 slots


def test_each_row_once_per_epoch_in_batches_of_at_most_the_batch_size():
    lengths = _bpe_like_lengths(1003)
    batches = training_batches(lengths, 32, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1003))
    assert all(1 <= len(b) <= 32 for b in batches)
    assert sum(len(b) < 32 for b in batches) <= -(-1003 // (32 * 50))  # only each group's last batch is short


def test_grouped_batches_pad_far_less_than_random_ones_and_still_come_in_a_random_order():
    lengths = _bpe_like_lengths(6000)
    grouped = training_batches(lengths, 32, np.random.default_rng(1))
    order = np.random.default_rng(1).permutation(6000)
    plain = [order[i : i + 32] for i in range(0, 6000, 32)]
    assert padding_fraction(lengths, plain) > 0.15
    assert padding_fraction(lengths, grouped) < 0.2 * padding_fraction(lengths, plain)
    longest = [int(lengths[b].max()) for b in grouped]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)  # not one sweep from long to short
    again = training_batches(lengths, 32, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(grouped, again))
    other = training_batches(lengths, 32, np.random.default_rng(2))
    assert not all(np.array_equal(a, b) for a, b in zip(grouped, other))


def test_equal_lengths_are_batched_exactly_as_the_plain_shuffle_and_draw_the_same_randomness():
    lengths = np.full(100, 101)
    rng, reference = np.random.default_rng(5), np.random.default_rng(5)
    batches = training_batches(lengths, 16, rng)
    order = reference.permutation(100)
    assert [b.tolist() for b in batches] == [order[i : i + 16].tolist() for i in range(0, 100, 16)]
    assert rng.random() == reference.random()  # the next epoch's draw is unchanged too


def test_evaluation_batches_go_longest_first_and_cover_every_row():
    lengths = _bpe_like_lengths(500)
    batches = evaluation_batches(lengths, 64)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(500))
    assert np.all(np.diff(lengths[order]) <= 0)
    in_row_order = [np.arange(i, min(i + 64, 500)) for i in range(0, 500, 64)]
    assert padding_fraction(lengths, batches) < 0.5 * padding_fraction(lengths, in_row_order)


def test_predict_logits_batches_by_length_and_returns_rows_in_their_own_order():
    torch.manual_seed(0)
    model = VqdnaForSequenceClassification(VqdnaConfig(vocab_sizes=[16], code_embedding_dim=12, num_labels=2, **TINY_ENCODER)).eval()
    rng = np.random.default_rng(0)
    codes = [rng.integers(0, 16, (1, int(n))) for n in rng.integers(3, 30, 37)]
    assert len(set(token_lengths(codes))) > 10
    one_by_one = np.concatenate([predict_logits(model, [c], 1, torch.device("cpu")) for c in codes])
    batched = predict_logits(model, codes, 8, torch.device("cpu"))
    assert batched.shape == (37, 2)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
