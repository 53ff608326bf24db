"""Result tables: fine-tuning metrics over seeds as mean ± sample std, one row per (run, dataset)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
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


def test_the_summary_csv_prints_the_mean_and_std_numpy_computes_to_the_last_digit(tmp_path):
    """groupby's mean of 0.1, 0.2, 0.3 is 0.19999999999999998; numpy's, which the file has always held, 0.20000000000000004."""
    scores = [0.1, 0.2, 0.3]
    files = [_metrics(tmp_path, "vq", "prom", seed, "EMP", "mcc", {"mcc": mcc}) for seed, mcc in enumerate(scores)]
    write_tables(files, tmp_path / "summary.csv", tmp_path / "summary.md")
    with open(tmp_path / "summary.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["score_mean"] == repr(float(np.mean(scores))) == "0.20000000000000004"
    assert row["score_std"] == repr(float(np.std(scores, ddof=1)))


# -- the paper's tables, ours beside the published -------------------------------------------------

from vqdna.tables import average_rank_table, write_paper_tables  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "resources" / "published"
PLAN = {
    "runs": {
        "hrq_bert": {"tokenizer": "hrq", "type": "hrq", "variant_of": None, "ablation": [{"axis": "mask_ratio", "value": 0.25}]},
        "hrq_bert_mask_ratio0.15": {
            "tokenizer": "hrq", "type": "hrq", "variant_of": "hrq_bert", "ablation": [{"axis": "mask_ratio", "value": 0.15}],
        },
    },
    "tokenizers": {
        "hrq": {"type": "hrq", "variant_of": None, "ablation": [{"axis": "code_size", "value": 512}]},
        "hrq_code_size128": {"type": "hrq", "variant_of": "hrq", "ablation": [{"axis": "code_size", "value": 128}]},
        "kmer6": {"type": "kmer", "variant_of": None, "ablation": []},
    },
}


def _write(root: Path, relative: str, value: dict) -> Path:
    path = root / "results" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


@pytest.fixture
def paper_tables(tmp_path):
    def finetune(run, dataset, seed, metric, score):
        test = {metric: score, "accuracy": 0.5}
        return _write(tmp_path, f"finetune/{run}/{dataset}/seed{seed}/metrics.json",
                      {"dataset": dataset, "group": "PD", "metric": metric, "seed": seed, "test": test,
                       "encoder_parameters": 86_000_000, "tokenizer_parameters": 17_000_000, "forward_gflops": 1.5})

    files = [
        finetune("hrq_bert", "prom_300_all", 0, "mcc", 0.90),
        finetune("hrq_bert", "prom_300_all", 1, "mcc", 0.92),
        finetune("hrq_bert", "covid", 0, "f1", 0.70),
        finetune("hrq_bert", "emp_h3", 0, "mcc", 0.80),
        finetune("hrq_bert_mask_ratio0.15", "emp_h3", 0, "mcc", 0.75),
        _write(tmp_path, "kmer_baseline/emp_h3/seed0/metrics.json",
               {"dataset": "emp_h3", "group": "EMP", "metric": "mcc", "seed": 0, "test": {"mcc": 0.55}, "train_from": "dev"}),
        _write(tmp_path, "kmer_baseline/prom_300_all/seed0/metrics.json",
               {"dataset": "prom_300_all", "group": "PD", "metric": "mcc", "seed": 0, "test": {"mcc": 0.85}}),
        _write(tmp_path, "kmer_baseline/covid/seed0/metrics.json",
               {"dataset": "covid", "group": "CVC", "metric": "f1", "seed": 0, "test": {"f1": 0.60}}),
        _write(tmp_path, "probe/hrq/covid/metrics.json", {"dataset": "covid", "metric": "f1", "test": {"f1": 0.45}, "token_usage": 0.99}),
        _write(tmp_path, "probe/hrq_code_size128/covid/metrics.json", {"dataset": "covid", "metric": "f1", "test": {"f1": 0.40}}),
        _write(tmp_path, "tokenizers/hrq/metrics.json", {"reconstruction_accuracy": 0.997}),
        _write(tmp_path, "tokenizers/hrq_code_size128/metrics.json", {"reconstruction_accuracy": 0.98}),
    ]
    out = tmp_path / "tables"
    write_paper_tables(files, PLAN, PUBLISHED, out)
    return out


def _csv_cells(path: Path) -> dict[tuple[str, str, str], dict]:
    with open(path, newline="") as handle:
        return {(r["part"], r["row"], r["column"]): r for r in csv.DictReader(handle)}


def test_table3_puts_ours_beside_the_published_with_the_difference(paper_tables):
    cells = _csv_cells(paper_tables / "table3.csv")
    published = cells[("", "vqdna_hrq", "prom_300_all")]
    assert published["source"] == "published" and float(published["value"]) == 90.75
    ours = cells[("", "hrq_bert", "prom_300_all")]
    assert float(ours["value"]) == pytest.approx(91.0) and float(ours["std"]) == pytest.approx(math.sqrt(2), abs=1e-4)
    assert ours["seeds"] == "2" and float(ours["delta"]) == pytest.approx(91.0 - 90.75)
    assert cells[("", "hrq_bert", "prom_core_tata")]["value"] == ""  # no result: empty, never zero
    assert float(cells[("", "kmer_lr", "prom_300_all")]["value"]) == pytest.approx(85.0)
    assert not any(row == "hrq_bert_mask_ratio0.15" for _, row, _ in cells)  # sweep variants only in Table 7
    lines = (paper_tables / "table3.md").read_text().splitlines()
    assert lines[2].startswith("| Method | prom_300_all | prom_300_notata |")
    ours_line = next(line for line in lines if line.startswith("| hrq_bert (hrq, hrq; ours)"))
    assert ours_line.split("|")[2].strip() == "91.00 ± 1.41 (+0.25)"
    assert ours_line.split("|")[3].strip() == "–"


def test_table1_table7_and_the_covid_f1(paper_tables):
    table1 = _csv_cells(paper_tables / "table1.csv")
    assert float(table1[("", "hrq", "usage")]["value"]) == pytest.approx(99.0)
    assert float(table1[("", "hrq", "lin")]["delta"]) == pytest.approx(45.0 - 48.87)
    assert float(table1[("", "hrq", "ft")]["value"]) == pytest.approx(70.0)
    assert table1[("", "kmer6", "lin")]["value"] == ""
    assert float(table1[("", "kmer_lr", "ft")]["value"]) == pytest.approx(60.0)  # the floor in every table
    table7 = _csv_cells(paper_tables / "table7.csv")
    assert float(table7[("code_size", "128 hrq_code_size128", "hrq_rec")]["value"]) == pytest.approx(98.0)
    assert float(table7[("code_size", "128 hrq_code_size128", "hrq_rec")]["delta"]) == pytest.approx(98.0 - 98.4)
    assert float(table7[("code_size", "512 hrq", "hrq_lin")]["value"]) == pytest.approx(45.0)
    assert float(table7[("mask_ratio", "0.15 hrq_bert_mask_ratio0.15", "hrq_h3")]["value"]) == pytest.approx(75.0)
    assert float(table7[("mask_ratio", "0.25 hrq_bert", "hrq_cvc")]["value"]) == pytest.approx(70.0)
    assert float(table7[("mask_ratio", "0.25 hrq_bert", "hrq_cvc")]["delta"]) == pytest.approx(70.0 - 74.3)
    assert "### Table 7a" in (paper_tables / "table7.md").read_text()


def test_average_rank_by_hand_with_ties_and_missing_entries():
    from vqdna.tables import Cell

    # d1: a 90, b 80, ours 90 -> ranks a 1.5, ours 1.5, b 3; d2: a 70, b 75 (ours missing) -> b 1, a 2
    cells = {
        3: [
            Cell("a", "A", "published", "d1", 90.0), Cell("b", "B", "published", "d1", 80.0), Cell("ours", "O", "ours", "d1", 90.0),
            Cell("a", "A", "published", "d2", 70.0), Cell("b", "B", "published", "d2", 75.0), Cell("ours", "O", "ours", "d2", None),
        ]
    }
    published = [{"key": "a", "method": "A", "date": "", "tokenizer": "t", "params_m": "1", "flops_g": "1", "train_b": "1", "average_rank": "1"}]
    table = average_rank_table(published, cells, __import__("vqdna.tables", fromlist=["Results"]).Results(), {"runs": {}, "tokenizers": {}})
    ranks = {c.row: c.value for c in table if c.column == "rank_here"}
    assert ranks == {"a": pytest.approx((1.5 + 2) / 2), "b": pytest.approx((3 + 1) / 2), "ours": pytest.approx(1.5)}
    counted = {c.row: c.text for c in table if c.column == "datasets_ranked"}
    assert counted == {"a": "2", "b": "2", "ours": "1"}


def test_a_result_trained_on_the_dev_split_is_marked_nonstandard(paper_tables):
    cells = _csv_cells(paper_tables / "table5.csv")
    assert cells[("", "kmer_lr", "emp_h3")]["note"] == "nonstandard"
    assert cells[("", "hrq_bert", "emp_h3")]["note"] == ""
    markdown = (paper_tables / "table5.md").read_text()
    assert "| 55.00* |" in markdown and "trained on a split the benchmark does not give" in markdown


def test_the_plan_is_read_from_json_text_or_a_file(tmp_path):
    from vqdna.tables import read_plan

    text = json.dumps(PLAN)  # the rule passes it inline: longer than a file name may be
    assert read_plan(text * 1 if len(text) > 255 else text)["runs"] == PLAN["runs"]
    (tmp_path / "plan.json").write_text(text)
    assert read_plan(str(tmp_path / "plan.json"))["tokenizers"] == PLAN["tokenizers"]


def test_table2_says_older_result_where_a_fine_tuning_predates_its_sizes(tmp_path):
    """A metrics.json without encoder_parameters and forward_gflops is a result: not "–", which says none."""
    files = [
        _write(tmp_path, "finetune/hrq_bert/emp_h3/seed0/metrics.json",
               {"dataset": "emp_h3", "group": "EMP", "metric": "mcc", "seed": 0, "test": {"mcc": 0.8}}),
    ]
    write_paper_tables(files, PLAN, PUBLISHED, tmp_path / "tables")
    cells = _csv_cells(tmp_path / "tables" / "table2.csv")
    assert cells[("", "hrq_bert", "params_m")]["value"] == cells[("", "hrq_bert", "flops_g")]["value"] == "older result: rerun its stage"
    assert "older result: rerun its stage" in (tmp_path / "tables" / "table2.md").read_text()
