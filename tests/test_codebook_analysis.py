"""The codebook analysis (the paper's Figure 4): enriched codes, where they sit, the 2-D map of profiles."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from helpers import data_file, tiny_tokenizer, write_ggg_gue_folder

from vqdna import VqdnaError
from vqdna.artifacts import read_metadata
from vqdna.dataset_tokens import tokenize_dataset
from vqdna.datasets.prepare import prepare_dataset
from vqdna.datasets.spec import DatasetSpec
from vqdna.evaluation.codebook_analysis import (
    AnalysisSettings,
    analyse_codebook,
    code_counts,
    enrichment,
    top_codes,
)
from vqdna.tokenizer.baselines import KmerConfig, KmerTokenizer
from vqdna.tokenizer.train import train_tokenizer
from vqdna.windows import WindowSettings, write_windows

MOTIF = "TGACGTCATTGC"  # 12 nt, planted once in every sequence of class 1
LENGTH = 100


def _motif_dataset(folder: Path) -> dict[tuple[str, int], int]:
    """GUE-format CSVs of random 100-nt sequences; odd rows (label 1) carry the motif at a random offset. Returns the offsets."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    offsets = {}
    for split, rows in [("train", 300), ("dev", 60), ("test", 60)]:
        lines = ["sequence,label"]
        for row in range(rows):
            sequence = "".join(rng.choice(list("ACGT"), LENGTH))
            if row % 2:
                offset = int(rng.integers(5, LENGTH - len(MOTIF) - 5))
                sequence = sequence[:offset] + MOTIF + sequence[offset + len(MOTIF) :]
                offsets[(split, row)] = offset
            lines.append(f"{sequence},{row % 2}")
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return offsets


@pytest.fixture(scope="module")
def motif_analysis(test_data, tmp_path_factory, one_torch_thread):
    """A VQ-VAE (K = 512) trained on the lambda phage genome, then the analysis of the planted-motif dataset."""
    folder = tmp_path_factory.mktemp("motif")
    write_windows(data_file(test_data, "genomes/lambda_virus.fa"), folder / "windows.parquet", "lambda", WindowSettings(length=128, step=64))
    settings = {"type": "vq", "codebook_size": 512, "width": 32, "depth": 2, "code_dim": 32, "steps": 300, "batch_size": 32,
                "crop_length": 128, "warmup_steps": 10, "restart_free_steps": 150, "learning_rate": 2e-3}
    train_tokenizer("vq", settings, [folder / "windows.parquet"], folder / "tokenizer", device="cpu")
    offsets = _motif_dataset(folder / "gue")
    spec = DatasetSpec(dataset="motif", group="EMP", task="classification", num_labels=2, max_length=LENGTH,
                       epochs=1, batch_size=8, learning_rate=1e-3, warmup_steps=1, source=str(folder / "gue"))
    prepare_dataset(spec, folder / "dataset")
    tokenize_dataset(folder / "tokenizer", "vq", folder / "dataset", LENGTH, folder / "tokens", device="cpu")
    summary = analyse_codebook(folder / "tokenizer", folder / "tokens", folder / "dataset", folder / "analysis", {"top_codes": 10})
    return folder, offsets, summary


def test_the_codes_that_cover_a_planted_motif_are_its_class_top_codes_at_the_motifs_offsets(motif_analysis):
    folder, offsets, summary = motif_analysis
    tokens = pd.concat([pd.read_parquet(folder / "tokens" / f"{split}.parquet").assign(split=split) for split in ("train", "dev", "test")])
    # The codes that cover the motif: at each of its 12 positions, the code most motif-carrying sequences have there.
    motif_rows = tokens[tokens.label == 1]
    at_position = np.array([[codes[offsets[(split, row)] + j] for j in range(len(MOTIF))]
                            for split, row, codes in zip(motif_rows.split, motif_rows["index"], motif_rows.codes_l1)])
    covering = {int(np.bincount(at_position[:, j]).argmax()): j for j in range(len(MOTIF))}

    top = [entry["code"] for entry in summary["levels"][0]["top_codes"]["class 1"]]
    assert len(top) == 10
    assert sum(code in covering for code in top) >= 8, (top, covering)

    located = pd.read_parquet(folder / "analysis" / "code_offsets.parquet")
    located = located[(located.label == 1) & located.code.isin(covering)]
    located["from_motif_start"] = [offset - offsets[(split, row)] for split, row, offset in zip(located.split, located["index"], located.offset)]
    for code, rows in located.groupby("code"):
        assert rows.from_motif_start.mode().iloc[0] == covering[code]  # where the code sits most often: its motif position
        assert (rows.from_motif_start == covering[code]).mean() > 0.3  # against 1% for a code spread over 100 offsets

    # What each code stands for: the 5 nt centred on it, which for a motif code is the motif around its position.
    enriched = pd.read_parquet(folder / "analysis" / "enriched_codes.parquet").set_index(["label", "code"])
    inside = [code for code in top if code in covering and 2 <= covering[code] <= len(MOTIF) - 3]
    assert len(inside) >= 5, (top, covering)
    for code in inside:
        j = covering[code]
        assert enriched.loc[(1, code), "context"] == MOTIF[j - 2 : j + 3], (code, j)
        assert enriched.loc[(1, code), "context_share"] > 0.3
    assert enriched.loc[enriched["rank"] == 0, "context"].isna().all()  # contexts are read for the located (top) codes only


def test_the_analysis_writes_its_tables_and_plots_readable_as_documented(motif_analysis):
    folder, _, summary = motif_analysis
    out = folder / "analysis"
    assert sorted(p.name for p in out.iterdir()) == [
        "code_offsets.parquet", "codebook_map.parquet", "codebook_map.png", "embedding.parquet", "embedding.png",
        "enriched_codes.parquet", "enrichment.png", "offsets.png", "profiles.parquet", "summary.json",
    ]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert all(len(entry["context"]) == 5 for entry in summary["levels"][0]["top_codes"]["class 1"])
    profiles = pd.read_parquet(out / "profiles.parquet")
    tokens = pd.read_parquet(folder / "tokens" / "dev.parquet")
    dev = profiles[profiles.split == "dev"].set_index("index")
    for row, codes in zip(tokens["index"], tokens.codes_l1):  # the profile is each sequence's code counts
        present, counts = np.unique(codes, return_counts=True)
        assert list(dev.loc[row, "codes_l1"]) == present.tolist() and list(dev.loc[row, "counts_l1"]) == counts.tolist()
    enriched = pd.read_parquet(out / "enriched_codes.parquet")
    assert len(enriched) == 2 * 512 and enriched.q_value.between(0, 1).all() and (enriched.q_value >= enriched.p_value - 1e-12).all()
    assert sorted(enriched[(enriched.label == 1) & (enriched["rank"] > 0)]["rank"]) == list(range(1, 11))
    embedding = pd.read_parquet(out / "embedding.parquet")
    assert len(embedding) == 420 and np.isfinite(embedding[["x", "y"]].to_numpy()).all()
    assert summary["levels"][0]["silhouette_2d"] is not None and summary["classes"] == ["class 0", "class 1"]
    assert read_metadata(out / "enriched_codes.parquet")["vqdna.tokenizer_hash"] == summary["tokenizer_hash"]
    codebook = pd.read_parquet(out / "codebook_map.parquet")  # every code on the map, the motif's marked by its class
    assert codebook.code.tolist() == list(range(512)) and np.isfinite(codebook[["x", "y"]].to_numpy()).all()
    top = [entry["code"] for entry in summary["levels"][0]["top_codes"]["class 1"]]
    assert (codebook.set_index("code").loc[top, "label"] == 1).all()
    assert codebook.occurrences.sum() == profiles.counts_l1.map(sum).sum()
    for plot in ("codebook_map.png", "embedding.png", "enrichment.png", "offsets.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / plot).stat().st_size > 10_000


def test_enrichment_finds_a_code_only_one_class_holds_and_nothing_in_codes_both_hold_alike():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 40)
    codes = [rng.integers(0, 6, 50) for _ in labels]  # codes 0-5 alike everywhere
    for row in np.flatnonzero(labels == 2):
        codes[row][rng.integers(0, 50)] = 7  # code 7 only in class 2; code 6 nowhere
    table = enrichment(code_counts(codes, 8), labels, 3)
    assert table["q_value"][2, 7] < 1e-10 and table["log2_enrichment"][2, 7] > 3
    assert (table["q_value"][:, :6] > 0.01).all()
    assert (table["p_value"][:, 6] == 1).all()  # a code seen nowhere is not tested
    top = top_codes(table, 3, 0.05)
    assert top[2].tolist() == [7] and top[0].tolist() == [] and top[1].tolist() == []


def test_code_counts_sums_repeats_per_sequence():
    counts = code_counts([np.array([1, 1, 3]), np.array([0])], 4)
    assert isinstance(counts, sp.csr_matrix) and counts.toarray().tolist() == [[0, 2, 0, 1], [1, 0, 0, 0]]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"embedding": "mds"}, "embedding must be one of pca, tsne, umap"),
        ({"splits": ["train", "val"]}, "splits must be a non-empty subset"),
        ({"fdr": 0}, "fdr in (0, 1]"),
        ({"top": 3}, "unknown setting(s) top"),
        ({"context": 4}, "context must be an odd number of nt"),
        pytest.param({"embedding": "umap"}, "embedding umap needs umap-learn: pip install umap-learn",
                     marks=pytest.mark.skipif(importlib.util.find_spec("umap") is not None, reason="umap-learn is installed")),
    ],
)
def test_bad_settings_are_one_line(settings, message):
    with pytest.raises(VqdnaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AnalysisSettings.from_config(settings, "analysis.settings")


def test_a_baseline_tokenizer_other_tokens_or_a_regression_dataset_are_one_line_and_leave_nothing(tmp_path):
    write_ggg_gue_folder(tmp_path / "gue")
    spec = DatasetSpec(dataset="ggg", group="EMP", task="classification", num_labels=2, max_length=20,
                       epochs=1, batch_size=8, learning_rate=1e-3, warmup_steps=1, source=str(tmp_path / "gue"))
    prepare_dataset(spec, tmp_path / "dataset")
    KmerTokenizer(KmerConfig(k=3, overlapping=False)).save(tmp_path / "kmer3")
    tokenize_dataset(tmp_path / "kmer3", "kmer3", tmp_path / "dataset", 20, tmp_path / "kmer_tokens", device="cpu")
    with pytest.raises(VqdnaError, match="kmer tokenizer has no codebook"):
        analyse_codebook(tmp_path / "kmer3", tmp_path / "kmer_tokens", tmp_path / "dataset", tmp_path / "out")
    tiny_tokenizer(tmp_path / "vq", seed=0)
    with pytest.raises(VqdnaError, match="kmer_tokens/train.parquet was made with tokenizer hash"):  # tokens of another tokenizer
        analyse_codebook(tmp_path / "vq", tmp_path / "kmer_tokens", tmp_path / "dataset", tmp_path / "out")
    regression = DatasetSpec(**{**spec.__dict__, "dataset": "ggg_level", "task": "regression", "num_labels": 1})
    prepare_dataset(regression, tmp_path / "regression")
    tokenize_dataset(tmp_path / "vq", "vq", tmp_path / "regression", 20, tmp_path / "vq_tokens", device="cpu")
    with pytest.raises(VqdnaError, match="labels are not classes; the codebook analysis needs a classification dataset"):
        analyse_codebook(tmp_path / "vq", tmp_path / "vq_tokens", tmp_path / "regression", tmp_path / "out")
    assert not (tmp_path / "out").exists()
