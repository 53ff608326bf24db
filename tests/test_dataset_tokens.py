"""Dataset tokens: a prepared dataset encoded once per tokenizer, read back by fine-tuning and the probes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import tiny_pretrained, tiny_tokenizer, write_ggg_gue_folder

from vqdna import VqdnaError, dataset_tokens
from vqdna.artifacts import SPLITS, read_metadata
from vqdna.dataset_tokens import (
    is_dataset_tokens,
    read_dataset_tokens,
    read_split_tokens,
    tokenize_dataset,
)
from vqdna.datasets.prepare import prepare_dataset
from vqdna.datasets.spec import DatasetSpec, read_split
from vqdna.evaluation.probe import linear_probe
from vqdna.finetune.train import finetune
from vqdna.inspection import inspect_path
from vqdna.tokenizer.api import load_tokenizer
from vqdna.tokenizer.baselines import KmerConfig, KmerTokenizer

MAX_LENGTH = 15  # of the 20-nt GGG sequences: the cut must show in the codes


@pytest.fixture(scope="module")
def ggg(tmp_path_factory) -> tuple[DatasetSpec, Path]:
    folder = tmp_path_factory.mktemp("ggg")
    write_ggg_gue_folder(folder / "gue")
    spec = DatasetSpec(
        dataset="ggg", group="EMP", task="classification", num_labels=2, max_length=MAX_LENGTH,
        epochs=2, batch_size=8, learning_rate=1e-3, warmup_steps=1, source=str(folder / "gue"),
    )
    prepare_dataset(spec, folder / "dataset")
    return spec, folder


def _tokenizer(kind: str, folder: Path) -> Path:
    if kind == "kmer3":
        KmerTokenizer(KmerConfig(k=3, overlapping=False)).save(folder / kind)
    else:
        tiny_tokenizer(folder / kind, seed=0, hrq=kind == "hrq")
    return folder / kind


@pytest.mark.parametrize("kind", ["vq", "hrq", "kmer3"])
def test_each_row_holds_the_codes_of_its_sequence_cut_to_max_length(ggg, tmp_path, monkeypatch, kind):
    monkeypatch.setattr(dataset_tokens, "CHUNK_SIZE", 7)  # several encode calls and row groups per split
    _, folder = ggg
    tokenizer_dir = _tokenizer(kind, tmp_path)
    tokenizer = load_tokenizer(tokenizer_dir, device="cpu")
    rows = tokenize_dataset(tokenizer_dir, kind, folder / "dataset", MAX_LENGTH, tmp_path / "out", device="cpu")
    assert rows == {"train": 40, "dev": 40, "test": 40}
    assert is_dataset_tokens(tmp_path / "out") and not is_dataset_tokens(folder / "dataset")
    for split in SPLITS:
        path = tmp_path / "out" / f"{split}.parquet"
        sequences, labels = read_split(folder / "dataset" / f"{split}.parquet")
        expected = tokenizer.encode([s[:MAX_LENGTH] for s in sequences])
        read_labels, codes = read_split_tokens(path, tokenizer.hash, MAX_LENGTH)
        assert read_labels.tolist() == labels.tolist()
        assert len(codes) == len(expected) and all(np.array_equal(c, e) for c, e in zip(codes, expected))
        assert all(c.dtype == np.int64 for c in codes)
        table = pq.read_table(path)
        levels = [f"codes_l{n}" for n in range(1, len(tokenizer.level_sizes) + 1)]
        assert table.column_names == ["index", "label", *levels]
        assert table.column("index").to_pylist() == list(range(40))
        assert table.schema.field("codes_l1").type.value_type == pa.uint16()
        assert pq.ParquetFile(path).num_row_groups == 6  # 40 rows written 7 at a time
        meta = read_metadata(path)
        assert meta["vqdna.dataset"] == "ggg" and meta["vqdna.split"] == split and meta["vqdna.max_length"] == str(MAX_LENGTH)
        assert meta["vqdna.tokenizer"] == kind and meta["vqdna.tokenizer_hash"] == tokenizer.hash
        frame = pd.read_parquet(path)  # what a user opens
        assert "vqdna.tokenizer_hash" in inspect_path(path)
        assert len(frame) == 40 and list(frame.codes_l1.iloc[0]) == expected[0][0].tolist()
    if kind == "kmer3":
        assert {len(c[0]) for c in read_dataset_tokens(tmp_path / "out", tokenizer.hash)["test"][1]} == {5}  # 15 nt / 3


def test_reading_with_another_tokenizer_or_another_cut_is_one_line(ggg, tmp_path):
    _, folder = ggg
    tokenize_dataset(_tokenizer("vq", tmp_path), "vq", folder / "dataset", MAX_LENGTH, tmp_path / "out", device="cpu")
    other = load_tokenizer(_tokenizer("hrq", tmp_path), device="cpu")
    with pytest.raises(VqdnaError, match=r"out/train\.parquet was made with tokenizer hash .* but the tokenizer given") as err:
        read_dataset_tokens(tmp_path / "out", other.hash)
    assert "\n" not in str(err.value)
    vq_hash = load_tokenizer(tmp_path / "vq").hash
    with pytest.raises(VqdnaError, match=r"cut to 15 nt, but the dataset's max_length is 20; delete its folder"):
        read_dataset_tokens(tmp_path / "out", vq_hash, 20)
    (tmp_path / "out" / "dev.parquet").unlink()
    with pytest.raises(VqdnaError, match=r"out/dev\.parquet not found; run tokenize_dataset"):
        read_dataset_tokens(tmp_path / "out", vq_hash)


def test_bad_input_is_one_line_and_leaves_no_folder(ggg, tmp_path):
    _, folder = ggg
    partial = tmp_path / "partial"
    partial.mkdir()
    for split in ("train", "dev"):
        shutil.copy(folder / "dataset" / f"{split}.parquet", partial)
    with pytest.raises(VqdnaError, match=r"partial/test\.parquet not found; run prepare_dataset"):
        tokenize_dataset(_tokenizer("vq", tmp_path), "vq", partial, MAX_LENGTH, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()
    # 6-mers of sequences cut to 4 nt: the tokenizer refuses, and the file is named
    KmerTokenizer(KmerConfig(k=6, overlapping=True)).save(tmp_path / "kmer6")
    with pytest.raises(VqdnaError, match=r"^\S*dataset/train\.parquet: kmer: sequence of 4 nt is shorter than k=6$"):
        tokenize_dataset(tmp_path / "kmer6", "kmer6", folder / "dataset", 4, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


@pytest.fixture(scope="module")
def encoder(ggg) -> Path:
    _, folder = ggg
    tiny_pretrained(folder, seed=22, length=2400)
    tokenize_dataset(folder / "tokenizer", "tiny", folder / "dataset", MAX_LENGTH, folder / "dataset_tokens", device="cpu")
    return folder


def test_finetuning_on_dataset_tokens_is_finetuning_on_the_dataset(ggg, encoder, tmp_path):
    spec, folder = ggg
    results = {
        source: finetune(spec, {}, 0, folder / "pretrained", folder / "tokenizer", folder / source, tmp_path / source, device="cpu")
        for source in ("dataset", "dataset_tokens")
    }
    assert results["dataset"]["history"] == results["dataset_tokens"]["history"]
    assert results["dataset"]["test"] == results["dataset_tokens"]["test"]
    assert pq.read_table(tmp_path / "dataset" / "predictions.parquet").equals(pq.read_table(tmp_path / "dataset_tokens" / "predictions.parquet"))
    tokenize_dataset(folder / "other_tokenizer", "other", folder / "dataset", MAX_LENGTH, tmp_path / "other_tokens", device="cpu")
    with pytest.raises(VqdnaError, match="other_tokens/train.parquet was made with tokenizer hash"):
        finetune(spec, {}, 0, folder / "pretrained", folder / "tokenizer", tmp_path / "other_tokens", tmp_path / "x", device="cpu")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("features", ["tokenizer", "encoder"])
def test_probing_dataset_tokens_is_probing_the_dataset(ggg, encoder, tmp_path, features):
    spec, folder = ggg
    pretrained = folder / "pretrained" if features == "encoder" else None
    results = {
        source: linear_probe(
            spec, folder / source, tmp_path / source, tokenizer_dir=folder / "tokenizer", pretrained_dir=pretrained,
            features=features, device="cpu",
        )
        for source in ("dataset", "dataset_tokens")
    }
    assert results["dataset"]["test"] == results["dataset_tokens"]["test"]
    assert results["dataset"].get("token_usage") == results["dataset_tokens"].get("token_usage")
    predictions = [pq.read_table(tmp_path / source / "predictions.parquet") for source in ("dataset", "dataset_tokens")]
    assert predictions[0].equals(predictions[1])
