"""The VQDNA encoder (HF classes, eq. 10 embedding, padding) and stage-2 masked-code pretraining."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import TINY_ENCODER, TINY_RUN, tiny_pretrained
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForMaskedLM

import vqdna.lm.modeling  # noqa: F401  (registers model_type "vqdna" with the Auto classes)
from vqdna import VqdnaError
from vqdna.datasets.prepare import prepare_dataset
from vqdna.datasets.spec import DatasetSpec
from vqdna.finetune.train import finetune
from vqdna.lm.configuration import VqdnaConfig
from vqdna.lm.modeling import (
    VqdnaForMaskedLM,
    VqdnaForSequenceClassification,
    VqdnaModel,
)
from vqdna.batching import padding_fraction
from vqdna.lm.corpus import Codes
from vqdna.lm.pretrain import global_batch_indices, mask_positions, pretrain
from vqdna.tokenizer.api import load_tokenizer, tokenizer_hash


def _config(vocab_sizes=(16,), code_embedding_dim: int | None = 12, **overrides) -> VqdnaConfig:
    return VqdnaConfig(vocab_sizes=list(vocab_sizes), code_embedding_dim=code_embedding_dim, **{**TINY_ENCODER, **overrides})


def _model(vocab_sizes=(16,), seed: int = 0) -> tuple[VqdnaForMaskedLM, list[torch.Tensor]]:
    torch.manual_seed(seed)
    model = VqdnaForMaskedLM(_config(vocab_sizes))
    tables = [torch.randn(size, 12) for size in vocab_sizes]
    model.vqdna.set_code_embeddings(tables)
    return model.eval(), tables


def _codes(shape, high: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


# -- HF integration ---------------------------------------------------------------------------------


def test_save_pretrained_then_auto_from_pretrained_gives_identical_logits(tmp_path):
    model, _ = _model()
    ids = _codes((2, 10), 16)
    masked = _codes((2, 10), 2, seed=2).bool()
    with torch.no_grad():
        logits = model(ids, masked_positions=masked).logits
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), VqdnaConfig)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "vqdna"
    assert isinstance(AutoConfig.for_model("vqdna"), VqdnaConfig)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is VqdnaForMaskedLM
    with torch.no_grad():
        assert torch.equal(loaded(ids, masked_positions=masked).logits, logits)


def test_code_embeddings_are_frozen_copies_of_the_codebooks():
    model, tables = _model(vocab_sizes=(8, 16))
    for table, expected in zip(model.vqdna.embeddings.code_embeddings, tables, strict=True):
        assert not table.weight.requires_grad
        assert torch.equal(table.weight, expected)
    assert model.vqdna.embeddings.projection.weight.requires_grad
    model.train()
    ids = _codes((2, 6, 2), 8)
    labels = torch.where(_codes((2, 6), 2, seed=3).bool()[..., None], ids, -100)
    model(ids, labels=labels).loss.backward()
    assert all(t.weight.grad is None for t in model.vqdna.embeddings.code_embeddings)
    assert model.vqdna.embeddings.projection.weight.grad is not None


def test_code_embeddings_stay_frozen_after_from_pretrained(tmp_path):
    model, tables = _model(vocab_sizes=(8, 16))
    model.save_pretrained(tmp_path)
    for loaded in (AutoModelForMaskedLM.from_pretrained(tmp_path), VqdnaForSequenceClassification.from_pretrained(tmp_path)):
        for table, expected in zip(loaded.vqdna.embeddings.code_embeddings, tables, strict=True):
            assert torch.equal(table.weight, expected)
            assert not table.weight.requires_grad


def test_labels_minus_100_are_not_scored():
    model, _ = _model()
    ids = _codes((2, 10), 16)
    labels = torch.full_like(ids, -100)
    scored = [(0, 1), (0, 7), (1, 0), (1, 4), (1, 9)]
    for b, i in scored:
        labels[b, i] = (ids[b, i] + 3) % 16
    with torch.no_grad():
        out = model(ids, labels=labels)
    by_hand = np.mean(
        [float(torch.logsumexp(out.logits[b, i], 0) - out.logits[b, i, labels[b, i]]) for b, i in scored]
    )
    assert float(out.loss) == pytest.approx(by_hand, rel=1e-5)


# -- several tokenizer levels (eq. 10) ---------------------------------------------------------------


def test_multi_level_embedding_is_the_mean_of_the_level_embeddings():
    model, tables = _model(vocab_sizes=(8, 16))
    ids = torch.stack([_codes((3, 7), 8), _codes((3, 7), 16, seed=4)], dim=-1)  # (B, L, 2)
    projection = model.vqdna.embeddings.projection
    mean = (tables[0][ids[..., 0]] + tables[1][ids[..., 1]]) / 2  # eq. 10, N = 2
    with torch.no_grad():
        by_hand = mean @ projection.weight.t() + projection.bias
        assert torch.allclose(model.vqdna.embeddings(ids), by_hand, atol=1e-6)
        masked = torch.zeros(3, 7, dtype=torch.bool)
        masked[1, 2] = True
        x = model.vqdna.embeddings(ids, masked)
    assert torch.equal(x[1, 2], model.vqdna.embeddings.mask_embedding)
    assert torch.allclose(x[0], by_hand[0], atol=1e-6)


def test_one_head_per_level_and_the_loss_is_their_mean():
    model, _ = _model(vocab_sizes=(8, 16))
    assert [head.decoder.out_features for head in model.heads] == [8, 16]
    ids = torch.stack([_codes((2, 5), 8), _codes((2, 5), 16, seed=4)], dim=-1)
    labels = torch.where(_codes((2, 5), 2, seed=5).bool()[..., None], ids, -100)
    with torch.no_grad():
        out = model(ids, labels=labels)
    assert [tuple(l.shape) for l in out.level_logits] == [(2, 5, 8), (2, 5, 16)]
    assert torch.equal(out.logits, out.level_logits[0])
    per_level = []
    for n, logits in enumerate(out.level_logits):
        keep = labels[..., n] != -100
        chosen = logits[keep].gather(1, labels[..., n][keep][:, None]).squeeze(1)
        per_level.append(float((torch.logsumexp(logits[keep], -1) - chosen).mean()))
    assert float(out.loss) == pytest.approx(np.mean(per_level), rel=1e-5)


def test_baseline_tokenizers_get_a_learned_embedding():
    model = VqdnaForMaskedLM(_config(vocab_sizes=(40,), code_embedding_dim=None))
    table = model.vqdna.embeddings.code_embeddings[0]
    assert table.weight.shape == (40, 32) and table.weight.requires_grad


# -- padding --------------------------------------------------------------------------------------


def test_padded_positions_do_not_change_real_positions():
    model, _ = _model()
    short, long = _codes((1, 9), 16), _codes((1, 14), 16, seed=6)
    padded = torch.cat([short, _codes((1, 5), 16, seed=7)], dim=1)
    ids = torch.cat([padded, long])
    attention = torch.ones(2, 14, dtype=torch.bool)
    attention[0, 9:] = False
    with torch.no_grad():
        batch = model(ids, attention_mask=attention).logits
        assert torch.allclose(batch[0, :9], model(short).logits[0], atol=1e-5)
        assert torch.allclose(batch[1], model(long).logits[0], atol=1e-5)
        # Without the mask the padding leaks into real positions: the check above can fail.
        assert not torch.allclose(model(ids).logits[0, :9], model(short).logits[0], atol=1e-5)


def test_classification_pools_over_real_positions_only():
    torch.manual_seed(0)
    model = VqdnaForSequenceClassification(_config(num_labels=3)).eval()
    short, long = _codes((1, 6), 16), _codes((1, 11), 16, seed=8)
    ids = torch.cat([torch.cat([short, _codes((1, 5), 16, seed=9)], dim=1), long])
    attention = torch.ones(2, 11, dtype=torch.bool)
    attention[0, 6:] = False
    with torch.no_grad():
        batch = model(ids, attention_mask=attention).logits
        assert torch.allclose(batch[0], model(short).logits[0], atol=1e-5)
        assert torch.allclose(batch[1], model(long).logits[0], atol=1e-5)


# -- masks and sample order --------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "ratio"), [(20, 0.25), (64, 0.15), (37, 0.4), (3, 0.1)])
def test_mask_positions_masks_exactly_round_ratio_times_length(length, ratio):
    mask = mask_positions(0, 1, np.arange(6), length, ratio)
    assert mask.shape == (6, length) and mask.dtype == bool
    assert (mask.sum(1) == max(1, round(ratio * length))).all()


def test_mask_positions_is_keyed_by_seed_step_and_global_sample_index():
    indices = np.arange(5)
    first = mask_positions(3, 10, indices, 50, 0.25)
    assert np.array_equal(first, mask_positions(3, 10, indices, 50, 0.25))
    assert not np.array_equal(first, mask_positions(3, 11, indices, 50, 0.25))
    assert not np.array_equal(first, mask_positions(4, 10, indices, 50, 0.25))
    # A row depends only on its own index: rows 3 and 4 alone equal rows 3 and 4 of the batch 0..4.
    assert np.array_equal(mask_positions(3, 10, np.array([3, 4]), 50, 0.25), first[3:5])
    assert not np.array_equal(first[3], first[4])


@pytest.mark.parametrize(("length", "span"), [(128, 8), (101, 8), (50, 3), (20, 32)])
def test_span_masks_cover_whole_blocks_and_keep_the_count(length, span):
    lengths = np.array([length, length, length - 7, length // 2])
    mask = mask_positions(5, 2, np.arange(4), length, 0.25, lengths, span=span)
    assert (mask.sum(1) == np.maximum(1, np.rint(0.25 * lengths))).all()
    assert not (mask & (np.arange(length)[None, :] >= lengths[:, None])).any()  # padding never masked
    for row, n in zip(mask, lengths):
        blocks = [row[i : min(i + span, n)] for i in range(0, n, span)]
        partial = [b for b in blocks if b.any() and not b.all()]
        assert len(partial) <= 1  # every chosen block is masked whole but the one cut to keep the count
        if partial:  # and the cut one keeps its first positions: one run, not scattered tokens
            assert np.array_equal(partial[0], np.sort(partial[0])[::-1])
    assert not np.array_equal(mask, mask_positions(5, 2, np.arange(4), length, 0.25, lengths))


def test_span_one_is_the_papers_independent_positions():
    lengths = np.array([100, 77])
    assert np.array_equal(mask_positions(1, 3, np.arange(2), 100, 0.25, lengths, span=1), mask_positions(1, 3, np.arange(2), 100, 0.25, lengths))


def _corpus(lengths: np.ndarray) -> Codes:
    return Codes(np.zeros((len(lengths), int(lengths.max()), 1), dtype=np.uint16), lengths)


@pytest.mark.parametrize("varying", [False, True], ids=["equal-lengths", "varying-lengths"])
def test_global_batch_indices_read_every_window_once_per_epoch(varying):
    for num_windows, batch_size in ((12, 4), (10, 4), (7, 3), (130, 8)):
        lengths = np.random.default_rng(num_windows).integers(5, 40, num_windows) if varying else np.full(num_windows, 9)
        codes = _corpus(lengths)
        steps = -(-2 * num_windows // batch_size) + 1
        batches = [global_batch_indices(5, step, batch_size, codes) for step in range(1, steps + 1)]
        sample_index = np.concatenate([b[0] for b in batches])
        windows = np.concatenate([b[1] for b in batches])
        assert np.array_equal(sample_index, np.arange(len(sample_index)))  # consecutive global indices
        for epoch in (0, 1):
            seen = windows[epoch * num_windows : (epoch + 1) * num_windows]
            assert sorted(seen.tolist()) == list(range(num_windows))
        assert not np.array_equal(windows[:num_windows], windows[num_windows : 2 * num_windows])
        again = [global_batch_indices(5, step, batch_size, _corpus(lengths)) for step in range(1, steps + 1)]
        assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_equal_lengths_are_read_in_the_plain_permutation_of_each_epoch():
    codes = _corpus(np.full(10, 9))
    windows = np.concatenate([global_batch_indices(5, step, 4, codes)[1] for step in range(1, 6)])
    assert np.array_equal(windows[:10], np.random.default_rng([5, 0]).permutation(10))
    assert np.array_equal(windows[10:20], np.random.default_rng([5, 1]).permutation(10))


def test_varying_lengths_are_read_in_length_grouped_batches_aligned_with_the_steps():
    """Window counts that are no multiple of the batch: each epoch starts mid-step, and still every later step is one group."""
    lengths = np.clip(np.random.default_rng(0).normal(100, 10, 1003).round(), 1, None).astype(np.int64)
    codes, batch_size = _corpus(lengths), 32
    steps = range(1, 3 * 1003 // batch_size)
    rows = [global_batch_indices(3, step, batch_size, codes)[1] for step in steps]
    shuffled = [np.random.default_rng(step).choice(1003, batch_size, replace=False) for step in steps]
    assert padding_fraction(lengths, shuffled) > 0.05
    assert padding_fraction(lengths, rows) < 0.25 * padding_fraction(lengths, shuffled)
    # only the step that crosses an epoch's end mixes two epochs' groups; every other step is one group
    crossing = [(step - 1) * batch_size // 1003 != (step * batch_size - 1) // 1003 for step in steps]
    within = [r for r, crosses in zip(rows, crossing) if not crosses]
    assert sum(crossing) == 2 and padding_fraction(lengths, within) < 0.02


# -- stage 2 end to end ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stage2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stage2")
    return folder, tiny_pretrained(folder, seed=12)


def test_pretrain_writes_a_model_stamped_with_its_tokenizer(stage2):
    folder, result = stage2
    out = folder / "pretrained"
    assert {"config.json", "model.safetensors", "metrics.json"} <= {p.name for p in out.iterdir()}
    digest = tokenizer_hash(folder / "tokenizer")
    config = AutoConfig.from_pretrained(out)
    assert config.tokenizer_hash == digest == result["tokenizer_hash"]
    assert config.tokenizer_name == "tiny" and config.vocab_sizes == [16] and config.code_embedding_dim == 16
    assert config.hidden_size == 32 and config.num_hidden_layers == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["tokenizer_hash"] == digest
    assert np.isfinite(metrics["final_loss"])
    assert len(metrics["heldout_masked_accuracy"]) == 1


def test_pretraining_leaves_the_code_embeddings_equal_to_the_codebook(stage2):
    folder, _ = stage2
    weights = load_file(folder / "pretrained" / "model.safetensors")
    codebook = load_file(folder / "tokenizer" / "model.safetensors")["codebooks.0.embed"]
    assert torch.equal(weights["vqdna.embeddings.code_embeddings.0.weight"], codebook)
    model = VqdnaModel(_config(code_embedding_dim=16))
    assert weights["vqdna.embeddings.projection.weight"].shape == model.embeddings.projection.weight.shape


def test_pretrain_is_reproducible(stage2, tmp_path):
    folder, _ = stage2
    pretrain("tiny_run", TINY_RUN, folder / "tokenizer", [folder / "tokens.parquet"], tmp_path / "again", device="cpu")
    first, second = load_file(folder / "pretrained" / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_pretrain_refuses_tokens_of_another_tokenizer(stage2, tmp_path):
    folder, _ = stage2
    with pytest.raises(VqdnaError, match="another tokenizer"):
        pretrain("tiny_run", TINY_RUN, folder / "other_tokenizer", [folder / "tokens.parquet"], tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("settings", "named"),
    [({**TINY_RUN, "stepz": 3}, "stepz"), ({**TINY_RUN, "encoder": {**TINY_ENCODER, "hiden_size": 8}}, "hiden_size")],
)
def test_pretrain_refuses_unknown_settings(stage2, tmp_path, settings, named):
    folder, _ = stage2
    with pytest.raises(VqdnaError, match=named):
        pretrain("tiny_run", settings, folder / "tokenizer", [folder / "tokens.parquet"], tmp_path / "out", device="cpu")


def test_a_two_level_hrq_tokenizer_runs_through_pretraining_and_fine_tuning(tmp_path):
    """Codes of two levels in, one head per level, the encoder's input the mean of both codebooks (eq. 10)."""
    result = tiny_pretrained(tmp_path, seed=5, hrq=True)
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "pretrained")
    assert model.config.vocab_sizes == [8, 16]
    assert [head.decoder.out_features for head in model.heads] == [8, 16]
    assert len(result["heldout_masked_accuracy"]) == 2
    tokenizer = load_tokenizer(tmp_path / "tokenizer", device="cpu")
    for table, codebook in zip(model.vqdna.embeddings.code_embeddings, tokenizer.codebook_tables(), strict=True):
        assert torch.equal(table.weight.detach(), codebook)
    gue = tmp_path / "gue"
    gue.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "dev", "test"):
        rows = ["sequence,label"] + [f"{''.join(rng.choice(list('ACGT'), 20))},{i % 2}" for i in range(16)]
        (gue / f"{split}.csv").write_text("\n".join(rows) + "\n")
    spec = DatasetSpec(dataset="toy", task="classification", num_labels=2, max_length=20, epochs=1, batch_size=8, source=str(gue))
    prepare_dataset(spec, tmp_path / "dataset")
    metrics = finetune(spec, {}, 0, tmp_path / "pretrained", tmp_path / "tokenizer", tmp_path / "dataset", tmp_path / "finetuned", device="cpu")
    assert set(metrics["test"]) == {"accuracy", "f1", "mcc"}
