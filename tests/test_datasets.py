"""Labelled datasets: GUE CSV folders and genome classification, as {train,dev,test}.parquet."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest
from helpers import data_file, write_ggg_gue_folder

import vqdna
from vqdna import VqdnaError
from vqdna.datasets.prepare import prepare_dataset
from vqdna.datasets.spec import DatasetSpec
from vqdna.download import fetch_genome
from vqdna.windows import WindowSettings, write_windows

SPLITS = ("train", "dev", "test")
GUE_TASKS = {"prom_core_notata": "gue/prom/prom_core_notata", "mouse_0": "gue/mouse/0"}
GENOMES = {"lambda": "genomes/lambda_virus.fa", "sarscov2": "genomes/reference_seq.fasta"}
TILE = 64


def _spec(dataset: str = "ds", **fields) -> DatasetSpec:
    values = dict(
        dataset=dataset, group="test", task="classification", num_labels=2, metric="mcc", max_length=128,
        epochs=1, batch_size=8, learning_rate=1e-4, warmup_steps=0,
    )
    values.update(fields)
    return DatasetSpec(**values)


def _read_csv(path: Path) -> list[tuple[str, int]]:
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == ["sequence", "label"]
        return [(row[0], int(row[1])) for row in reader if row]


def _rows(path: Path) -> list[tuple[str, int]]:
    table = pq.read_table(path)
    return list(zip(table.column("sequence").to_pylist(), table.column("label").to_pylist()))


def _write_gue_folder(folder: Path, rows: dict[str, str]) -> Path:
    """A GUE folder of tiny valid CSVs, with any split's text replaced by ``rows[split]``."""
    folder.mkdir(parents=True)
    for split in SPLITS:
        text = rows.get(split, "sequence,label\nACGTACGT,0\nTTGGCCAA,1\nacgtnacg,1\n")
        (folder / f"{split}.csv").write_text(text)
    return folder


# --- GUE CSVs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", GUE_TASKS)
def test_gue_parquet_rows_and_labels_equal_the_csvs(test_data, tmp_path, task):
    source = data_file(test_data, GUE_TASKS[task])
    counts = prepare_dataset(_spec(task, source=str(source)), tmp_path / task)
    for split in SPLITS:
        expected = _read_csv(source / f"{split}.csv")
        rows = _rows(tmp_path / task / f"{split}.parquet")
        assert counts[split] == len(rows) == len(expected)
        assert {label for _, label in rows} == {label for _, label in expected} == {0, 1}
        assert rows == [(sequence.upper(), label) for sequence, label in expected]


def test_gue_parquet_schema_and_metadata(test_data, tmp_path):
    source = data_file(test_data, GUE_TASKS["mouse_0"])
    prepare_dataset(_spec("mouse_0", source=str(source)), tmp_path)
    for split in SPLITS:
        path = tmp_path / f"{split}.parquet"
        schema = pq.read_schema(path)
        assert [(f.name, f.type) for f in schema] == [
            ("sequence", pa.string()),
            ("label", pa.int64()),
            ("split", pa.dictionary(pa.int32(), pa.string())),
        ]
        metadata = {k.decode(): v.decode() for k, v in schema.metadata.items()}
        assert metadata["vqdna.dataset"] == "mouse_0"
        assert metadata["vqdna.schema_version"]
        assert metadata["vqdna.producer"] == f"vqdna {vqdna.__version__}"
        assert set(pq.read_table(path).column("split").to_pylist()) == {split}


def test_max_train_samples_subsets_only_train_and_is_reproducible(test_data, tmp_path):
    source = data_file(test_data, GUE_TASKS["mouse_0"])
    spec = _spec("mouse_0", source=str(source), max_train_samples=100, seed=7)
    first = prepare_dataset(spec, tmp_path / "first")
    second = prepare_dataset(spec, tmp_path / "second")
    other_seed = prepare_dataset(_spec("mouse_0", source=str(source), max_train_samples=100, seed=8), tmp_path / "other")

    assert first == second == other_seed
    assert first["train"] == 100
    train = _rows(tmp_path / "first" / "train.parquet")
    assert train == _rows(tmp_path / "second" / "train.parquet")
    assert train != _rows(tmp_path / "other" / "train.parquet")
    full_train = Counter(_read_csv(source / "train.csv"))
    assert not Counter(train) - full_train  # every picked row is a row of the CSV, none twice more than there
    for split in ("dev", "test"):
        assert _rows(tmp_path / "first" / f"{split}.parquet") == _read_csv(source / f"{split}.csv")


BAD_DEV_CSVS = [
    pytest.param("seq,lab\nACGT,0\n", ["header"], id="bad-header"),
    pytest.param("", ["header"], id="empty-csv"),
    pytest.param("sequence,label\nACGT,0\nACGT,2\n", ["line 3", "label 2"], id="label-too-large"),
    pytest.param("sequence,label\nACGT,0\nACGT,-1\n", ["line 3", "label -1"], id="negative-label"),
    pytest.param("sequence,label\nACGT,0\nACGT,one\n", ["line 3", "'one'"], id="label-not-an-integer"),
    pytest.param("sequence,label\nACGT,0\nACXGT,1\n", ["line 3", "'X'"], id="invalid-character"),
    pytest.param("sequence,label\nACGT,0\n\nAC GT,1\n", ["line 4", "' '"], id="space-after-blank-line"),
    pytest.param("sequence,label\nACGT,0\nACGT\n", ["line 3"], id="missing-label"),
]


@pytest.mark.parametrize(("dev_text", "expected_parts"), BAD_DEV_CSVS)
def test_bad_csv_is_a_one_line_error_naming_the_file_and_line(tmp_path, dev_text, expected_parts):
    source = _write_gue_folder(tmp_path / "gue", {"dev": dev_text})
    output = tmp_path / "out"
    with pytest.raises(VqdnaError) as caught:
        prepare_dataset(_spec(source=str(source)), output)
    message = str(caught.value)
    assert "\n" not in message
    assert str(source / "dev.csv") in message
    for part in expected_parts:
        assert part in message
    assert not output.exists() or list(output.iterdir()) == []


# What the prepare_dataset rule runs, given what users have fed it: rc 1, one line naming the file
# and line (or the split), and no output folder. Each was accepted, or a traceback, before.
BAD_INPUTS_THROUGH_THE_COMMAND = [
    pytest.param({"dev": b"sequence,label\nACGT,0\n,1\n"}, r"dev\.csv line 3: empty sequence$", id="empty-sequence"),
    pytest.param({"dev": b"sequence,label\nACGT,0\n  ,1\n"}, r"dev\.csv line 3: empty sequence$", id="blank-sequence"),
    pytest.param(
        {"test": b"sequence,label\nACGT,0\nACGT,1\nAC\xe9GT,1\n"}, r"test\.csv line 4: byte 0xe9 is not UTF-8 text", id="latin-1-csv"
    ),
    pytest.param(
        {"train": b"sequence,label\nACGT,1\nTTGG,1\n"}, r"the train split has only class 1 \(2 rows\); nothing to learn", id="one-class-train"
    ),
    pytest.param(
        {"test": b"sequence,label\nACGT,0\nTTGG,0\n"}, r"the test split has only class 0 \(2 rows\); its metric is undefined", id="one-class-test"
    ),
]


@pytest.mark.parametrize(("files", "expected"), BAD_INPUTS_THROUGH_THE_COMMAND)
def test_bad_gue_csvs_are_one_line_through_the_rules_command(tmp_path, files, expected):
    source = _write_gue_folder(tmp_path / "gue", {})
    for split, raw in files.items():
        (source / f"{split}.csv").write_bytes(raw)
    spec = {"dataset": "ds", "task": "classification", "num_labels": 2, "max_length": 128, "source": str(source)}
    result = subprocess.run(
        [sys.executable, "-m", "vqdna", "prepare-dataset", "--spec", json.dumps(spec), "--output", str(tmp_path / "out")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert re.search(expected, result.stderr.strip()), result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_split_csv_is_an_error_naming_the_file(tmp_path):
    source = _write_gue_folder(tmp_path / "gue", {})
    (source / "test.csv").unlink()
    with pytest.raises(VqdnaError, match="test.csv"):
        prepare_dataset(_spec(source=str(source)), tmp_path / "out")


def test_csv_sequences_follow_the_sequence_policy(tmp_path):
    source = _write_gue_folder(tmp_path / "gue", {"train": "sequence,label\nacgtRYkmN,0\nACGT,1\n"})
    prepare_dataset(_spec(source=str(source)), tmp_path / "out")
    assert _rows(tmp_path / "out" / "train.parquet") == [("ACGTNNNNN", 0), ("ACGT", 1)]


# --- genome classification ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def genome_windows(test_data, tmp_path_factory) -> dict[str, dict]:
    """Windows of lambda and SARS-CoV-2 made by fetch_genome + write_windows, with each genome's contigs."""
    folder = tmp_path_factory.mktemp("genome_windows")
    settings = WindowSettings(length=256, step=256, dev_fraction=0.1, test_fraction=0.1)
    made = {}
    for genome, relative in GENOMES.items():
        stored = folder / f"{genome}.fa.gz"
        fetch_genome(genome, str(data_file(test_data, relative)), stored)
        windows = folder / f"{genome}.windows.parquet"
        write_windows(stored, windows, genome, settings)
        with pysam.FastaFile(str(stored)) as fasta:
            contigs = {name: fasta.fetch(name).upper() for name in fasta.references}
        table = pq.read_table(windows)
        by_split = {
            split: [s for s, p in zip(table.column("sequence").to_pylist(), table.column("split").to_pylist()) if p == split]
            for split in SPLITS
        }
        made[genome] = {"windows": windows, "contigs": contigs, "sequence": "".join(contigs.values()), "by_split": by_split}
    return made


def _classify(genome_windows, output: Path, genomes: str = "lambda,sarscov2", **fields) -> dict[str, list[tuple[str, int]]]:
    spec = _spec("genomes", genomes=genomes, max_length=TILE, **fields)
    windows = {genome: info["windows"] for genome, info in genome_windows.items()}
    counts = prepare_dataset(spec, output, windows)
    rows = {split: _rows(output / f"{split}.parquet") for split in SPLITS}
    assert counts == {split: len(rows[split]) for split in SPLITS}
    return rows


@pytest.mark.parametrize("samples_per_genome", [None, 5])
def test_genome_classification_is_balanced_in_every_split(genome_windows, tmp_path, samples_per_genome):
    rows = _classify(genome_windows, tmp_path, samples_per_genome=samples_per_genome)
    for split in SPLITS:
        per_label = Counter(label for _, label in rows[split])
        assert set(per_label) == {0, 1}
        assert per_label[0] == per_label[1] > 0
        if samples_per_genome:
            assert per_label[0] == samples_per_genome
        assert all(len(sequence) == TILE for sequence, _ in rows[split])


@pytest.mark.parametrize("order", [("lambda", "sarscov2"), ("sarscov2", "lambda")])
def test_genome_classification_labels_follow_the_genome_order(genome_windows, tmp_path, order):
    rows = _classify(genome_windows, tmp_path, genomes=",".join(order))
    for split in SPLITS:
        for sequence, label in rows[split]:
            own, other = genome_windows[order[label]], genome_windows[order[1 - label]]
            assert any(sequence in window for window in own["by_split"][split]), (split, label)
            assert sequence not in other["sequence"]


def test_genome_classification_samples_appear_in_one_split_only(genome_windows, tmp_path):
    rows = _classify(genome_windows, tmp_path)
    sequences = {split: {sequence for sequence, _ in rows[split]} for split in SPLITS}
    assert all(sequences.values())
    assert not sequences["train"] & sequences["dev"]
    assert not sequences["train"] & sequences["test"]
    assert not sequences["dev"] & sequences["test"]


def _split_ranges(windows: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """contig -> split -> (first start, last end) of that split's windows, read from the windows file's coordinates."""
    ranges: dict[str, dict[str, tuple[int, int]]] = {}
    for row in pq.read_table(windows, columns=["contig", "start", "end", "split"]).to_pylist():
        first, last = ranges.setdefault(row["contig"], {}).get(row["split"], (row["start"], row["end"]))
        ranges[row["contig"]][row["split"]] = (min(first, row["start"]), max(last, row["end"]))
    return ranges


def _places(contigs: dict[str, str], tile: str) -> list[tuple[str, int]]:
    """Every (contig, start) where ``tile`` occurs in a genome."""
    places = []
    for contig, sequence in contigs.items():
        start = sequence.find(tile)
        while start != -1:
            places.append((contig, start))
            start = sequence.find(tile, start + 1)
    return places


def test_genome_classification_splits_come_from_disjoint_coordinate_ranges(genome_windows, tmp_path):
    """The windows of each split cover a coordinate range of their own, and every tile lies, by its place in the
    genome, inside the range of its own split: no stretch of a genome feeds two splits."""
    order = ["lambda", "sarscov2"]
    rows = _classify(genome_windows, tmp_path, genomes=",".join(order))
    for label, genome in enumerate(order):
        info = genome_windows[genome]
        ranges = _split_ranges(info["windows"])
        for contig, by_split in ranges.items():
            assert set(by_split) == set(SPLITS), (genome, contig)
            for one, other in [("train", "dev"), ("train", "test"), ("dev", "test")]:
                (a, b), (c, d) = by_split[one], by_split[other]
                assert b <= c or d <= a, (genome, contig, one, by_split[one], other, by_split[other])
        for split in SPLITS:
            tiles = [sequence for sequence, own in rows[split] if own == label]
            assert tiles, (genome, split)
            for tile in tiles:
                places = _places(info["contigs"], tile)
                assert len(places) == 1, (genome, split, tile)  # each tile occurs once in these small genomes: one place
                contig, start = places[0]
                first, last = ranges[contig][split]
                assert first <= start and start + TILE <= last, (genome, split, contig, start, ranges[contig])


@pytest.mark.parametrize("max_train_samples", [None, 7])
def test_genome_classification_rows_carry_the_contig_and_start_their_sequence_was_cut_from(genome_windows, tmp_path, max_train_samples):
    order = ["lambda", "sarscov2"]
    _classify(genome_windows, tmp_path, genomes=",".join(order), max_train_samples=max_train_samples)
    for split in SPLITS:
        table = pq.read_table(tmp_path / f"{split}.parquet")
        assert table.schema.field("contig").type == pa.string() and table.schema.field("start").type == pa.int64()
        rows = table.to_pylist()
        assert rows and all(len(r["sequence"]) == TILE for r in rows)
        for row in rows:
            contigs = genome_windows[order[row["label"]]]["contigs"]
            assert contigs[row["contig"]][row["start"] : row["start"] + TILE] == row["sequence"], (split, row["contig"], row["start"])
        if split == "train" and max_train_samples:
            assert len(rows) == max_train_samples


def test_a_gue_dataset_has_no_coordinates(tmp_path):
    write_ggg_gue_folder(tmp_path / "gue")
    prepare_dataset(_spec("ggg", source=str(tmp_path / "gue")), tmp_path / "out")
    assert pq.read_schema(tmp_path / "out" / "train.parquet").names == ["sequence", "label", "split"]


def test_genome_classification_is_identical_on_two_runs_with_the_same_seed(genome_windows, tmp_path):
    _classify(genome_windows, tmp_path / "first", seed=3)
    _classify(genome_windows, tmp_path / "second", seed=3)
    _classify(genome_windows, tmp_path / "other", seed=4)
    for split in SPLITS:
        first = pq.read_table(tmp_path / "first" / f"{split}.parquet")
        assert first.equals(pq.read_table(tmp_path / "second" / f"{split}.parquet"), check_metadata=True)
    assert not pq.read_table(tmp_path / "first" / "train.parquet").equals(pq.read_table(tmp_path / "other" / "train.parquet"))


def test_genome_classification_without_windows_for_a_genome_is_an_error(genome_windows, tmp_path):
    spec = _spec("genomes", genomes="lambda,sarscov2,ecoli", max_length=TILE)
    windows = {genome: info["windows"] for genome, info in genome_windows.items()}
    with pytest.raises(VqdnaError, match="ecoli"):
        prepare_dataset(spec, tmp_path, windows)


def test_eep_regression_csvs_keep_float_efficiencies(tmp_path):
    """EEP's format (63-nt gRNA target sites, a measured editing efficiency per row), as users place it."""
    rng = np.random.default_rng(3)
    rows = {}
    expected = {}
    for split, count in (("train", 20), ("dev", 5), ("test", 6)):
        sequences = ["".join(rng.choice(list("ACGT"), 63)) for _ in range(count)]
        efficiencies = rng.random(count).round(4)
        expected[split] = list(zip(sequences, efficiencies.tolist()))
        rows[split] = "sequence,label\n" + "".join(f"{s},{e}\n" for s, e in expected[split])
    folder = _write_gue_folder(tmp_path / "k562", rows)
    spec = _spec("eep_k562", task="regression", num_labels=1, metric="spearman", max_length=63, source=str(folder))
    counts = prepare_dataset(spec, tmp_path / "out")
    assert counts == {"train": 20, "dev": 5, "test": 6}
    for split in SPLITS:
        table = pq.read_table(tmp_path / "out" / f"{split}.parquet")
        assert table.schema.field("label").type == pa.float64()
        assert _rows(tmp_path / "out" / f"{split}.parquet") == expected[split]
    with pytest.raises(VqdnaError, match=r"train\.csv line 2: label 'high' is not a number"):
        bad = _write_gue_folder(tmp_path / "bad", {"train": "sequence,label\nACGT,high\n"})
        prepare_dataset(_spec("bad", task="regression", num_labels=1, metric="spearman", source=str(bad)), tmp_path / "bad_out")


def test_emp_h3_without_a_train_split_trains_on_90_percent_of_dev_and_says_so(test_data, tmp_path):
    folder = test_data / "gue" / "EMP" / "H3"
    spec = _spec("emp_h3", source=str(folder), max_length=500, train_from="dev")
    counts = prepare_dataset(spec, tmp_path / "out")
    dev_rows, test_rows = _read_csv(folder / "dev.csv"), _read_csv(folder / "test.csv")
    assert counts["train"] + counts["dev"] == len(dev_rows) and counts["test"] == len(test_rows)
    assert counts["train"] == round(0.9 * len(dev_rows))
    train, dev = _rows(tmp_path / "out" / "train.parquet"), _rows(tmp_path / "out" / "dev.parquet")
    assert Counter(train) + Counter(dev) == Counter((s.upper(), label) for s, label in dev_rows)
    assert _rows(tmp_path / "out" / "test.parquet") == [(s.upper(), label) for s, label in test_rows]
    meta = pq.read_schema(tmp_path / "out" / "train.parquet").metadata
    assert b"trained on a seeded 90% of dev.csv" in meta[b"vqdna.nonstandard"]
    with pytest.raises(VqdnaError, match="train.csv not found"):
        prepare_dataset(_spec("emp_h3", source=str(folder), max_length=500), tmp_path / "standard")
