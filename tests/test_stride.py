"""Strided VQ-VAE and HRQ tokenizers (beyond the paper): one code per ``stride`` nucleotides.

The model (patch merge before each level's code search, patch expansion before the
decoder, tail padding held at zero), the tokenizer API, the files of codes, ``inspect
--decode``, and pretraining and fine-tuning on strided codes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pysam
import pytest
import torch
from helpers import TINY_RUN, write_ggg_gue_folder

from vqdna import VqdnaError
from vqdna.artifacts import read_metadata
from vqdna.dataset_tokens import read_split_tokens, tokenize_dataset
from vqdna.datasets.prepare import prepare_dataset
from vqdna.datasets.spec import DatasetSpec
from vqdna.finetune.train import finetune
from vqdna.genome import base_ids
from vqdna.inspection import decode_row
from vqdna.lm.pretrain import pretrain
from vqdna.predict import embed, predict
from vqdna.tokenizer.api import VQTokenizer, load_tokenizer, onehot
from vqdna.tokenizer.hrq import HRQ, HRQConfig
from vqdna.tokenizer.tokens import tokenize_windows
from vqdna.tokenizer.train import split_config
from vqdna.tokenizer.vq import VQVAE, VQConfig
from vqdna.windows import WindowSettings, write_windows

STRIDE = 4
WINDOW = 30  # not a multiple of the stride: every window has a padded last code


def _vq(stride: int = STRIDE, seed: int = 0) -> VQVAE:
    torch.manual_seed(seed)
    return VQVAE(VQConfig(width=16, depth=2, codebook_size=16, stride=stride))


def _hrq(stride: int = STRIDE, seed: int = 0) -> HRQ:
    torch.manual_seed(seed)
    return HRQ(HRQConfig(width=16, depth=2, codebook_size=4, taps=[1, 2], codebook_sizes=[8, 16], stride=stride))


def _ids(length: int, rows: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).integers(0, 4, (rows, length)))


# -- the model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_vq, _hrq], ids=["vq", "hrq"])
@pytest.mark.parametrize("length", [32, 30, 3])
def test_one_code_per_stride_nucleotides_and_logits_for_every_base(make, length):
    model = make().train()
    ids = _ids(length)
    out = model(onehot(ids), ids)
    assert out.logits.shape == (3, length, 5)
    assert [tuple(c.shape) for c in out.codes] == [(3, math.ceil(length / STRIDE))] * len(model.config.level_sizes)
    model.eval()
    codes = model.encode(onehot(ids))
    assert [tuple(c.shape) for c in codes] == [(3, math.ceil(length / STRIDE))] * len(codes)
    assert model.decode(codes).shape == (3, math.ceil(length / STRIDE) * STRIDE, 5)  # the caller cuts the tail
    assert all(logits.shape == (3, length, 5) for logits in model.decode_levels(onehot(ids)))


@pytest.mark.parametrize("make", [_vq, _hrq], ids=["vq", "hrq"])
def test_tail_padding_is_held_at_zero_so_real_positions_see_what_they_would_unpadded(make):
    """The encoder's hidden states at the real positions of a padded sequence equal those of the unpadded one."""
    model = make().eval()
    x = onehot(_ids(30))
    padded, mask = model.pad_to_stride(x)
    assert padded.shape[1] == 32 and mask[0, :, 0].tolist() == [True] * 30 + [False] * 2
    assert torch.equal(padded[:, 30:], torch.zeros(3, 2, 5))
    with torch.no_grad():
        unpadded = model.encoder(x)
        held = model.encoder(padded, mask)
        unheld = model.encoder(padded)
    for a, b in zip(unpadded, held, strict=True):
        torch.testing.assert_close(b[:, :30], a)
        assert torch.equal(b[:, 30:], torch.zeros_like(b[:, 30:]))
    # without the mask the padding leaks into the last real positions (the test can tell the difference)
    assert not torch.allclose(unheld[-1][:, :30], unpadded[-1])


def test_a_changed_base_moves_only_the_codes_within_the_encoders_reach():
    """Codes cover disjoint stretches of s bases, but the convolutions see context: only codes near a change move."""
    model = _vq().eval()
    ids = _ids(64, rows=1)
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 4
    before, after = model.encode(onehot(ids))[0], model.encode(onehot(changed))[0]
    # receptive field of stem (5) + 2 blocks of kernel 7: 2 + 3 + 3 = 8 bases each side, so the first codes are untouched
    assert torch.equal(before[0, :12], after[0, :12])


@pytest.mark.parametrize("make", [_vq, _hrq], ids=["vq", "hrq"])
def test_gradients_reach_the_patch_merge_the_patch_expansion_and_the_stem(make):
    model = make().train()
    ids = _ids(30)
    model(onehot(ids), ids).loss.backward()
    for name in ["encoder.stem.weight", "downsample.0.reduction.weight", "upsample.expansion.weight", "decoder.head.weight"]:
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_stride_one_is_the_papers_model_with_no_extra_weights():
    paper = VQVAE(VQConfig(width=16, depth=2, codebook_size=16))
    assert paper.config.stride == 1
    assert not any(k.startswith(("downsample", "upsample")) for k in paper.state_dict())
    strided = _vq()
    assert {k for k in strided.state_dict() if k.startswith(("downsample", "upsample"))} == {
        "downsample.0.norm.weight", "downsample.0.norm.bias", "downsample.0.reduction.weight", "downsample.0.reduction.bias",
        "upsample.expansion.weight", "upsample.expansion.bias",
    }


@pytest.mark.parametrize("stride", [0, -2, 2.5, "4"])
def test_a_bad_stride_is_one_line(stride):
    with pytest.raises(VqdnaError, match=r"stride .* must be a whole number >= 1") as raised:
        split_config("vq_s", {"type": "vq", "stride": stride})
    assert "\n" not in str(raised.value)
    with pytest.raises(VqdnaError, match="stride"):
        HRQConfig(stride=stride)


def test_training_a_strided_tokenizer_lowers_its_reconstruction_loss():
    """A few hundred steps on a repetitive toy genome: the codes must carry the s bases they stand for."""
    torch.manual_seed(0)
    model = VQVAE(VQConfig(width=32, depth=2, codebook_size=64, stride=2)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(3)
    losses = []
    for _ in range(150):
        ids = torch.as_tensor(rng.integers(0, 4, (16, 24)))
        out = model(onehot(ids), ids)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.reconstruction_loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])


# -- the tokenizer API and its files ---------------------------------------------------------------


def test_saved_config_names_the_stride_only_above_one_so_paper_tokenizers_keep_their_hash(tmp_path):
    VQTokenizer(_vq(stride=1), device="cpu").save(tmp_path / "s1")
    VQTokenizer(_vq(), device="cpu").save(tmp_path / "s4")
    assert "stride" not in json.loads((tmp_path / "s1" / "config.json").read_text())
    assert json.loads((tmp_path / "s4" / "config.json").read_text())["stride"] == STRIDE
    assert load_tokenizer(tmp_path / "s1", device="cpu").stride == 1
    loaded = load_tokenizer(tmp_path / "s4", device="cpu")
    assert loaded.stride == STRIDE
    ids = _ids(30)
    for a, b in zip(loaded.encode_ids(ids), VQTokenizer(_vq(), device="cpu").encode_ids(ids), strict=True):
        assert np.array_equal(a, b)


def test_encode_decode_and_token_starts_of_sequences_of_any_length():
    tokenizer = VQTokenizer(_hrq(), device="cpu")
    rng = np.random.default_rng(5)
    sequences = ["".join(rng.choice(list("ACGT"), n)) for n in (30, 32, 7, 30, 1)]
    codes = tokenizer.encode(sequences)
    assert [c.shape for c in codes] == [(2, math.ceil(len(s) / STRIDE)) for s in sequences]
    # a sequence's codes do not depend on what it was encoded with
    assert np.array_equal(codes[0], tokenizer.encode([sequences[0]])[0])
    starts = tokenizer.encode_with_starts(sequences)
    assert [s.tolist() for _, s in starts] == [list(range(0, len(seq), STRIDE)) for seq in sequences]
    decoded = tokenizer.decode(codes, lengths=[len(s) for s in sequences])
    assert [len(d) for d in decoded] == [len(s) for s in sequences]
    assert [len(d) for d in tokenizer.decode(codes)] == [c.shape[1] * STRIDE for c in codes]


def _genome(folder: Path) -> Path:
    sequence = "".join(np.random.default_rng(9).choice(list("ACGT"), 1200))
    fasta = folder / "toy.fa"
    fasta.write_text(">chr1\n" + "\n".join(sequence[i : i + 60] for i in range(0, len(sequence), 60)) + "\n")
    pysam.faidx(str(fasta))
    return fasta


@pytest.fixture(scope="module")
def strided(tmp_path_factory):
    """Windows of 30 nt, a stride-4 VQ tokenizer and a stride-1 one, their token files, a tiny GUE-format dataset."""
    folder = tmp_path_factory.mktemp("strided")
    write_windows(_genome(folder), folder / "windows.parquet", "toy", WindowSettings(length=WINDOW, step=WINDOW))
    VQTokenizer(_vq(), device="cpu").save(folder / "tokenizer")
    VQTokenizer(_vq(stride=1), device="cpu").save(folder / "paper_tokenizer")
    for name in ("tokenizer", "paper_tokenizer"):
        tokenize_windows(folder / name, name, folder / "windows.parquet", folder / f"{name}.tokens.parquet", batch_size=7, device="cpu")
    write_ggg_gue_folder(folder / "gue")
    spec = DatasetSpec(dataset="ggg", group="EMP", task="classification", num_labels=2, max_length=15,
                       epochs=1, batch_size=8, learning_rate=1e-3, warmup_steps=1, source=str(folder / "gue"))
    prepare_dataset(spec, folder / "dataset")
    return folder, spec


def test_token_file_holds_ceil_l_over_s_codes_per_window_and_names_its_stride(strided):
    folder, _ = strided
    table = pq.read_table(folder / "tokenizer.tokens.parquet")
    windows = pq.read_table(folder / "windows.parquet")
    assert table.num_rows == windows.num_rows > 0
    expected = VQTokenizer(_vq(), device="cpu").encode_ids(np.stack([base_ids(s) for s in windows.column("sequence").to_pylist()]))[0]
    assert np.array_equal(np.array(table.column("codes_l1").to_pylist()), expected)
    assert expected.shape[1] == math.ceil(WINDOW / STRIDE)
    assert read_metadata(folder / "tokenizer.tokens.parquet")["vqdna.stride"] == str(STRIDE)
    # stride-1 files keep the shape they had before the option: no stride key
    assert "vqdna.stride" not in read_metadata(folder / "paper_tokenizer.tokens.parquet")


def test_inspect_decodes_a_strided_row_to_the_windows_length_with_token_boundaries(strided):
    folder, _ = strided
    text = decode_row(folder / "tokenizer.tokens.parquet", 0, tokenizer_dir=folder / "tokenizer", windows_path=folder / "windows.parquet")
    decoded = next(line for line in text.splitlines() if line.startswith("    decoded  "))
    assert len(decoded.removeprefix("    decoded  ")) == WINDOW
    assert "lengths differ" not in text
    assert "    tokens   |   |   |" in text  # a code every fourth base


def test_dataset_tokens_pretraining_and_finetuning_on_strided_codes(strided, tmp_path):
    folder, spec = strided
    rows = tokenize_dataset(folder / "tokenizer", "tiny", folder / "dataset", spec.max_length, tmp_path / "dataset_tokens", device="cpu")
    assert rows == {"train": 40, "dev": 40, "test": 40}
    assert read_metadata(tmp_path / "dataset_tokens" / "train.parquet")["vqdna.stride"] == str(STRIDE)
    tokenizer = load_tokenizer(folder / "tokenizer", device="cpu")
    _, codes = read_split_tokens(tmp_path / "dataset_tokens" / "train.parquet", tokenizer.hash, spec.max_length)
    assert {c.shape for c in codes} == {(1, math.ceil(spec.max_length / STRIDE))}
    summary = pretrain("tiny_run", TINY_RUN, folder / "tokenizer", [folder / "tokenizer.tokens.parquet"], tmp_path / "pretrained", device="cpu")
    assert summary["budget"]["mean_tokens_per_window"] == math.ceil(WINDOW / STRIDE)
    result = finetune(spec, {}, 0, tmp_path / "pretrained", folder / "tokenizer", tmp_path / "dataset_tokens", tmp_path / "ft", device="cpu")
    assert result["mean_test_tokens"] == math.ceil(spec.max_length / STRIDE)
    assert pq.read_table(tmp_path / "ft" / "predictions.parquet").num_rows == 40
    # embed and predict: sequences of any length, a code per 4 nt, pieces of chunk_length codes
    rng = np.random.default_rng(4)
    fasta = tmp_path / "mine.fa"
    fasta.write_text("".join(f">s{n}\n{''.join(rng.choice(list('ACGT'), n))}\n" for n in (13, 40, 101)))
    assert embed(folder / "tokenizer", tmp_path / "pretrained", fasta, tmp_path / "embedded.parquet", chunk_length=8, device="cpu") == 3
    assert pq.read_table(tmp_path / "embedded.parquet").column("length").to_pylist() == [13, 40, 101]
    assert predict(folder / "tokenizer", tmp_path / "ft", fasta, tmp_path / "predicted.csv", device="cpu") == 3
