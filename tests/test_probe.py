"""Cheap evaluators beside fine-tuning: the bag-of-k-mers floor and linear probes on frozen features."""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from helpers import data_file, tiny_pretrained, tiny_tokenizer
from scipy.stats import spearmanr
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    matthews_corrcoef,
    mean_squared_error,
)

from vqdna import VqdnaError
from vqdna.datasets.prepare import prepare_dataset
from vqdna.datasets.spec import DatasetSpec
from vqdna.evaluation.kmer_baseline import kmer_baseline, kmer_features
from vqdna.evaluation.probe import linear_probe, tokenizer_features
from vqdna.tokenizer.api import load_tokenizer
from vqdna.tokenizer.baselines import KmerConfig, KmerTokenizer


def kmer_feature_names(ks: list[int]) -> list[str]:
    """kmer_features' column names: per k a block, k-mers in lexicographic order over ACGT (column = base-4 number)."""
    return ["".join(kmer) for k in ks for kmer in itertools.product("ACGT", repeat=k)]


# The keys fine-tuning's metrics.json shares with these evaluators (what the tables code reads), plus the method.
SHARED_KEYS = {"dataset", "group", "task", "metric", "num_labels", "max_length", "seed", "test", "best_dev", "train_seconds", "method"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_csv_folder(folder: Path, splits: dict[str, tuple[list[str], list]]) -> Path:
    folder.mkdir(parents=True)
    for split, (sequences, labels) in splits.items():
        rows = ["sequence,label"] + [f"{s},{y}" for s, y in zip(sequences, labels)]
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return folder


def _gc_sequence(rng: np.random.Generator, gc: float, length: int) -> str:
    return "".join(rng.choice(list("ACGT"), length, p=[(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]))


def _gc_classes(rng: np.random.Generator, count: int, levels: tuple[float, ...] = (0.3, 0.7), length: int = 60) -> tuple[list[str], list[int]]:
    """Class c: G+C fraction ``levels[c]``; classes in turn."""
    labels = [i % len(levels) for i in range(count)]
    return [_gc_sequence(rng, levels[c], length) for c in labels], labels


@pytest.fixture(scope="module")
def gc_dataset(tmp_path_factory) -> tuple[DatasetSpec, Path]:
    """A separable binary task: GC-rich against AT-rich 60-mers, prepared as the pipeline prepares GUE folders.

    At 60 nt the untrained tiny tokenizers' mean embeddings separate the classes with test accuracy 0.94-0.99
    over tokenizer and data seeds (40 nt: down to 0.90).
    """
    folder = tmp_path_factory.mktemp("gc")
    rng = np.random.default_rng(5)
    source = _write_csv_folder(folder / "csv", {split: _gc_classes(rng, n) for split, n in [("train", 200), ("dev", 100), ("test", 100)]})
    spec = DatasetSpec(dataset="gc_rich", task="classification", num_labels=2, max_length=60, source=str(source))
    prepare_dataset(spec, folder / "dataset")
    return spec, folder / "dataset"


def _check_against_scikit_learn(output_dir: Path, result: dict) -> None:
    """The recorded test metrics are scikit-learn's / SciPy's on the saved predictions, row for row."""
    table = pq.read_table(output_dir / "predictions.parquet")
    assert table.column_names == ["index", "label", "prediction", "logits"]
    assert table.column("index").to_pylist() == list(range(table.num_rows))
    labels, predictions = table.column("label").to_numpy(), table.column("prediction").to_numpy()
    if result["task"] == "regression":
        assert result["test"]["spearman"] == pytest.approx(spearmanr(labels, predictions).statistic)
        assert result["test"]["mse"] == pytest.approx(mean_squared_error(labels, predictions))
    else:
        logits = np.stack(table.column("logits").to_numpy(zero_copy_only=False))
        assert (logits.argmax(1) == predictions).all()
        assert result["test"]["accuracy"] == pytest.approx(accuracy_score(labels, predictions))
        assert result["test"]["f1"] == pytest.approx(f1_score(labels, predictions, average="macro"))
        assert result["test"]["mcc"] == pytest.approx(matthews_corrcoef(labels, predictions))
    assert json.loads((output_dir / "metrics.json").read_text()) == result


# -- k-mer features ------------------------------------------------------------------------------------


def test_kmer_frequencies_by_hand_drop_kmers_with_n():
    # 2-mers of ACGTNACGA: AC CG GT [TN NA] AC CG GA -> 6 kept; 3-mers: ACG CGT [GTN TNA NAC] ACG CGA -> 4 kept
    features = kmer_features(["ACGTNACGA"], [2, 3])
    assert sp.issparse(features) and features.shape == (1, 16 + 64)
    expected = np.zeros(16 + 64)
    # a 2-mer's column is its base-4 number over ACGT (AC = 0*4+1); 3-mers start after the 16 2-mers
    expected[[1, 6, 11, 8]] = [2 / 6, 2 / 6, 1 / 6, 1 / 6]  # AC CG GT GA
    expected[16 + np.array([6, 27, 24])] = [2 / 4, 1 / 4, 1 / 4]  # ACG CGT CGA
    assert features.toarray()[0] == pytest.approx(expected)
    names = kmer_feature_names([2, 3])
    assert [names[i] for i in (1, 6, 11, 8, 16 + 6, 16 + 27, 16 + 24)] == ["AC", "CG", "GT", "GA", "ACG", "CGT", "CGA"]


def test_kmer_features_for_k_3_to_6_are_sparse_frequencies_as_counted_naively():
    rng = np.random.default_rng(3)
    sequences = ["".join(rng.choice(list("ACGTN"), n, p=[0.24, 0.24, 0.24, 0.24, 0.04])) for n in (70, 70, 31, 5, 2)]
    sequences.append("NNNNNNNN")  # no k-mer without N: an all-zero row, not a division by zero
    ks = [3, 4, 5, 6]
    features = kmer_features(sequences, ks)
    assert isinstance(features, sp.csr_matrix) and features.shape == (len(sequences), 4**3 + 4**4 + 4**5 + 4**6)
    column = {name: i for i, name in enumerate(kmer_feature_names(ks))}
    assert len(column) == 5440
    for row, sequence in enumerate(sequences):
        expected = np.zeros(5440)
        for k in ks:
            counts = Counter(sequence[i : i + k] for i in range(len(sequence) - k + 1) if "N" not in sequence[i : i + k])
            for kmer, count in counts.items():
                expected[column[kmer]] = count / sum(counts.values())
        assert features[row].toarray()[0] == pytest.approx(expected), sequence
    assert features.nnz < 0.1 * np.prod(features.shape)


def test_kmer_baseline_on_real_core_promoters(test_data, tmp_path, capsys):
    source = data_file(test_data, "gue/prom/prom_core_notata")
    spec = DatasetSpec(dataset="prom_core_notata", group="CPD", task="classification", num_labels=2, max_length=70, source=str(source))
    prepare_dataset(spec, tmp_path / "dataset")
    result = kmer_baseline(spec, tmp_path / "dataset", tmp_path / "out")
    with capsys.disabled():
        print(f"\nkmer_lr prom_core_notata: test MCC {result['test']['mcc']:.4f}, C={result['C']}, "
              f"fit {result['train_seconds']} s, features {result['feature_seconds']} s")
    assert SHARED_KEYS <= set(result) and result["method"] == "kmer_lr" and result["k"] == [3, 4, 5, 6]
    assert set(result["test"]) == {"accuracy", "f1", "mcc"}
    # measured 0.603 (C = 10; 42,452 train rows, full dev and test); chance is 0
    assert result["test"]["mcc"] > 0.45
    assert [s["C"] for s in result["selection"]] == [0.1, 1.0, 10.0, 100.0, 1000.0]
    assert result["best_dev"] == max(s["dev_mcc"] for s in result["selection"])
    _check_against_scikit_learn(tmp_path / "out", result)


def test_kmer_baseline_ridge_follows_gc_fraction(tmp_path):
    rng = np.random.default_rng(8)

    def split(count):
        sequences = [_gc_sequence(rng, gc, 63) for gc in rng.uniform(0.2, 0.8, count)]
        labels = [(s.count("G") + s.count("C")) / 63 + rng.normal(0, 0.03) for s in sequences]
        return sequences, [f"{y:.5f}" for y in labels]

    source = _write_csv_folder(tmp_path / "csv", {"train": split(300), "dev": split(100), "test": split(100)})
    spec = DatasetSpec(dataset="gc_fraction", task="regression", num_labels=1, max_length=63, metric="spearman", source=str(source))
    prepare_dataset(spec, tmp_path / "dataset")
    result = kmer_baseline(spec, tmp_path / "dataset", tmp_path / "out", settings={"k": [3, 4]})
    assert set(result["test"]) == {"spearman", "mse"} and result["num_labels"] == 1 and "alpha" in result
    assert result["test"]["spearman"] > 0.8
    _check_against_scikit_learn(tmp_path / "out", result)


def test_kmer_baseline_is_multinomial_over_three_classes(tmp_path):
    rng = np.random.default_rng(4)
    levels = (0.2, 0.5, 0.8)
    source = _write_csv_folder(tmp_path / "csv", {s: _gc_classes(rng, n, levels) for s, n in [("train", 150), ("dev", 60), ("test", 60)]})
    spec = DatasetSpec(dataset="gc_levels", task="classification", num_labels=3, max_length=60, source=str(source))
    prepare_dataset(spec, tmp_path / "dataset")
    result = kmer_baseline(spec, tmp_path / "dataset", tmp_path / "out", settings={"C": 10.0})
    logits = np.stack(pq.read_table(tmp_path / "out" / "predictions.parquet").column("logits").to_numpy(zero_copy_only=False))
    assert logits.shape == (60, 3) and result["num_labels"] == 3
    assert result["test"]["accuracy"] > 0.8
    _check_against_scikit_learn(tmp_path / "out", result)


def test_kmer_baseline_bad_input_is_one_line_and_leaves_nothing(gc_dataset, tmp_path):
    spec, dataset = gc_dataset
    partial = tmp_path / "partial"
    partial.mkdir()
    for split in ("train", "dev"):
        shutil.copy(dataset / f"{split}.parquet", partial)
    with pytest.raises(VqdnaError, match=r"partial/test\.parquet not found; run prepare_dataset") as err:
        kmer_baseline(spec, partial, tmp_path / "out")
    assert "\n" not in str(err.value)
    with pytest.raises(VqdnaError, match="unknown setting.*penalty"):
        kmer_baseline(spec, dataset, tmp_path / "out", settings={"penalty": "l1"})
    with pytest.raises(VqdnaError, match="k must be"):
        kmer_baseline(spec, dataset, tmp_path / "out", settings={"k": [0, 3]})
    assert not (tmp_path / "out").exists()


# -- linear probes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("hrq", [False, True], ids=["vq", "hrq"])
def test_probe_on_tokenizer_embeddings_separates_gc_rich_from_at_rich(gc_dataset, tmp_path, hrq):
    spec, dataset = gc_dataset
    tiny_tokenizer(tmp_path / "tokenizer", seed=0, hrq=hrq)
    result = linear_probe(spec, dataset, tmp_path / "out", tokenizer_dir=tmp_path / "tokenizer", features="tokenizer", device="cpu")
    assert SHARED_KEYS <= set(result) and result["method"] == "linear_probe_tokenizer"
    assert result["feature_dim"] == 16  # the tiny tokenizers' code width
    assert result["tokenizer_hash"] == load_tokenizer(tmp_path / "tokenizer", device="cpu").hash
    assert result["test"]["accuracy"] > 0.9
    _check_against_scikit_learn(tmp_path / "out", result)


def test_vq_tokenizer_features_are_the_mean_code_embedding(tmp_path):
    tiny_tokenizer(tmp_path / "tokenizer", seed=0, hrq=True)
    tokenizer = load_tokenizer(tmp_path / "tokenizer", device="cpu")
    sequences = ["ACGTACGTTTGA", "GGGCCCNNA", "ACGTACGTTTGA"[:7]]
    features = tokenizer_features(tokenizer, tokenizer.encode(sequences))
    expected = [embedding.mean(0) for embedding in tokenizer.embed(tokenizer.encode(sequences))]
    assert features.shape == (3, 16)
    assert features == pytest.approx(np.stack(expected), abs=1e-6)


def test_baseline_tokenizer_features_are_token_id_histograms(gc_dataset, tmp_path):
    KmerTokenizer(KmerConfig(k=3)).save(tmp_path / "kmer3")
    tokenizer = load_tokenizer(tmp_path / "kmer3")
    # overlapping 3-mers of ACGTA: ACG CGT GTA, ids in base 4 over ACGT: 0*16+1*4+2, 1*16+2*4+3, 2*16+3*4+0
    histogram = tokenizer_features(tokenizer, tokenizer.encode(["ACGTA", "NNNAC"]))
    assert sp.issparse(histogram) and histogram.shape == (2, 65)
    expected = np.zeros((2, 65))
    expected[0, [6, 27, 44]] = 1 / 3
    expected[1, 64] = 1  # NNN NNA NAC: all three the unknown id
    assert histogram.toarray() == pytest.approx(expected)
    used = [np.zeros(65, dtype=bool)]
    tokenizer_features(tokenizer, tokenizer.encode(["ACGTA", "NNNAC", "ACGAC"]), used=used)  # ACG again, then CGA GAC
    assert used[0].sum() == 3 + 1 + 2

    spec, dataset = gc_dataset
    result = linear_probe(spec, dataset, tmp_path / "out", tokenizer_dir=tmp_path / "kmer3", features="tokenizer")
    assert result["feature_dim"] == 65 and "sparse" in result["standardisation"]
    assert 0 < result["token_usage"] <= 64 / 65  # the dataset has no N: at most the 64 ACGT 3-mers
    assert result["test"]["accuracy"] > 0.9
    _check_against_scikit_learn(tmp_path / "out", result)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pretrained")
    tiny_pretrained(folder, seed=31, length=2400)
    return folder


def test_probe_on_encoder_states_runs_end_to_end(gc_dataset, pretrained, tmp_path):
    spec, dataset = gc_dataset
    result = linear_probe(
        spec, dataset, tmp_path / "out", tokenizer_dir=pretrained / "tokenizer", pretrained_dir=pretrained / "pretrained",
        features="encoder", settings={"C": 1.0, "batch_size": 32}, device="cpu", threads=1,
    )
    assert SHARED_KEYS <= set(result) and result["method"] == "linear_probe_encoder"
    assert result["feature_dim"] == 32 and result["C"] == 1.0 and len(result["selection"]) == 1
    assert result["pretrained"] == str(pretrained / "pretrained")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"metrics.json", "predictions.parquet"}
    _check_against_scikit_learn(tmp_path / "out", result)


def test_probe_refuses_a_tokenizer_the_encoder_was_not_pretrained_on(gc_dataset, pretrained, tmp_path):
    spec, dataset = gc_dataset
    with pytest.raises(VqdnaError, match="was pretrained on tokenizer") as err:
        linear_probe(
            spec, dataset, tmp_path / "out", tokenizer_dir=pretrained / "other_tokenizer",
            pretrained_dir=pretrained / "pretrained", features="encoder", device="cpu",
        )
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": "encoder"}, "need a pretrained model folder"),
        ({"features": "tokenizer", "pretrained_dir": "somewhere"}, "drop pretrained_dir"),
        ({"features": "codes"}, "features must be one of"),
        ({"features": "tokenizer", "settings": {"C_grid": []}}, "C_grid"),
    ],
)
def test_probe_bad_arguments_are_one_line_errors(gc_dataset, tmp_path, kwargs, message):
    spec, dataset = gc_dataset
    tiny_tokenizer(tmp_path / "tokenizer", seed=0)
    with pytest.raises(VqdnaError, match=message) as err:
        linear_probe(spec, dataset, tmp_path / "out", tokenizer_dir=tmp_path / "tokenizer", device="cpu", **kwargs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_probe_missing_split_is_one_line(gc_dataset, tmp_path):
    spec, _ = gc_dataset
    tiny_tokenizer(tmp_path / "tokenizer", seed=0)
    with pytest.raises(VqdnaError, match=r"train\.parquet not found; run prepare_dataset"):
        linear_probe(spec, tmp_path / "nowhere", tmp_path / "out", tokenizer_dir=tmp_path / "tokenizer", device="cpu")
    assert not (tmp_path / "out").exists()

