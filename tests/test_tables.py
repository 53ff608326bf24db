"""Result tables: fine-tuning metrics over seeds as mean ± sample std, one row per (run, dataset)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from vqdna.tables import write_tables


def _metrics(root: Path, run: str, dataset: str, seed: int, group: str, metric: str, test: dict) -> Path:
    path = root / "results" / "finetune" / run / dataset / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"dataset": dataset, "group": group, "metric": metric, "seed": seed, "test": test}))
    return path


@pytest.fixture
def tables(tmp_path):
    files = [
        _metrics(tmp_path, "vq", "prom", 1, "EMP", "mcc", {"accuracy": 0.9, "f1": 0.85, "mcc": 0.7}),
        _metrics(tmp_path, "vq", "enhancer", 0, "CPD", "spearman", {"spearman": 0.5, "mse": 0.2}),
        _metrics(tmp_path, "vq", "prom", 0, "EMP", "mcc", {"accuracy": 0.8, "f1": 0.75, "mcc": 0.6}),
        _metrics(tmp_path, "kmer", "prom", 0, "EMP", "mcc", {"accuracy": 0.6, "f1": 0.55, "mcc": 0.2}),
    ]
    csv_path, markdown_path = tmp_path / "out" / "table.csv", tmp_path / "out" / "table.md"
    rows = write_tables(files, csv_path, markdown_path)
    return rows, csv_path, markdown_path


def test_one_row_per_run_and_dataset_with_mean_and_sample_std(tables):
    rows, csv_path, _ = tables
    assert [(r["run"], r["dataset"], r["seeds"]) for r in rows] == [("kmer", "prom", 1), ("vq", "enhancer", 1), ("vq", "prom", 2)]
    prom = rows[2]
    assert prom["group"] == "EMP" and prom["metric"] == "mcc"
    assert prom["score_mean"] == pytest.approx(0.65)
    assert prom["score_std"] == pytest.approx(math.sqrt(((0.7 - 0.65) ** 2 + (0.6 - 0.65) ** 2) / (2 - 1)))  # ddof=1
    assert prom["accuracy"] == f"0.8500 ± {math.sqrt(0.005):.4f}"
    assert prom["mcc"] == "0.6500 ± 0.0707"
    assert rows[1]["score_mean"] == pytest.approx(0.5) and rows[1]["score_std"] == 0.0  # one seed: std 0
    assert rows[1]["mse"] == "0.2000 ± 0.0000" and rows[1]["accuracy"] == ""
    assert rows[0]["score_mean"] == pytest.approx(0.2) and rows[0]["score_std"] == 0.0

    with open(csv_path, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [(r["run"], r["dataset"]) for r in written] == [("kmer", "prom"), ("vq", "enhancer"), ("vq", "prom")]
    assert float(written[2]["score_mean"]) == pytest.approx(0.65)
    assert float(written[2]["score_std"]) == pytest.approx(0.0707107, abs=1e-6)
    assert float(written[1]["score_std"]) == 0.0


def test_markdown_has_one_row_per_run_and_dataset(tables):
    _, _, markdown_path = tables
    lines = markdown_path.read_text().splitlines()
    assert lines[0].startswith("| run | dataset |")
    body = lines[2:]
    assert len(body) == 3
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in body]
    assert [(c[0], c[1]) for c in cells] == [("kmer", "prom"), ("vq", "enhancer"), ("vq", "prom")]
    assert "65.00 ± 7.07" in cells[2]
    assert "50.00 ± 0.00" in cells[1]
    assert cells[1][6] == "–"  # a regression reports no accuracy: an empty cell, never zero
