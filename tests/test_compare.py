"""Methods compared (vqdna.evaluation.compare): paired bootstrap differences on shared test rows, and the tables stage's
comparison.{csv,md} and paired.{csv,md}."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vqdna.cli import main
from vqdna.evaluation.compare import (
    COMPARISON_COLUMNS,
    PAIRED_COLUMNS,
    PairedDataset,
    metric_on_all_rows,
    paired_bootstrap,
    paired_bootstrap_average,
    resampled_metric,
)

REPO = Path(__file__).resolve().parents[1]
REPLICATES = 200


def _noisy(labels: np.ndarray, wrong: float, classes: int, rng: np.random.Generator) -> np.ndarray:
    """``labels`` with about a ``wrong`` share of rows replaced by a random class."""
    return np.where(rng.random(len(labels)) < wrong, rng.integers(0, classes, len(labels)), labels)


# -- the vectorised metrics and the bootstrap ---------------------------------------------------------


@pytest.mark.parametrize("metric", ["accuracy", "f1", "mcc"])
@pytest.mark.parametrize("classes", [2, 3, 6])
def test_resampled_classification_metrics_equal_vqdna_metrics_on_each_resample(metric, classes):
    rng = np.random.default_rng(classes)
    for _ in range(3):
        labels = rng.integers(0, classes, 80)
        predictions = _noisy(labels, 0.5, classes, rng)
        drawn = rng.integers(0, 80, (25, 80))
        counts = np.stack([np.bincount(rows, minlength=80) for rows in drawn])
        expected = [metric_on_all_rows(labels[rows], predictions[rows], metric) for rows in drawn]
        np.testing.assert_allclose(resampled_metric(labels, predictions, metric, counts), expected, rtol=0, atol=1e-12)


def test_resampled_spearman_equals_vqdna_metrics_with_ties_and_a_constant_side():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 60).astype(float)  # many ties
    predictions = labels + rng.normal(0, 3, 60)
    predictions[:15] = 0.5
    drawn = rng.integers(0, 60, (25, 60))
    counts = np.stack([np.bincount(rows, minlength=60) for rows in drawn])
    expected = [metric_on_all_rows(labels[rows], predictions[rows], "spearman") for rows in drawn]
    np.testing.assert_allclose(resampled_metric(labels, predictions, "spearman", counts), expected, rtol=0, atol=1e-12)
    constant = resampled_metric(labels, np.ones(60), "spearman", counts)
    assert np.array_equal(constant, np.zeros(25))  # vqdna.metrics: rho undefined -> 0


def test_a_clearly_better_method_has_an_interval_above_zero():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    better = [_noisy(labels, 0.1, 2, rng) for _ in range(3)]
    worse = [_noisy(labels, 0.6, 2, rng)]  # one array, the floor's, for every seed of A
    result = paired_bootstrap(labels, better, worse, "mcc", replicates=REPLICATES)
    floor = metric_on_all_rows(labels, worse[0], "mcc")
    assert result["per_seed"] == pytest.approx([metric_on_all_rows(labels, p, "mcc") - floor for p in better])
    assert result["difference"] == pytest.approx(np.mean(result["per_seed"]))
    assert 0 < result["low"] < result["difference"] < result["high"]
    assert result["replicates"] == REPLICATES


def test_identical_predictions_differ_by_exactly_zero():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 150)
    predictions = [_noisy(labels, 0.4, 3, rng) for _ in range(2)]
    result = paired_bootstrap(labels, predictions, list(predictions), "f1", replicates=REPLICATES)
    assert (result["difference"], result["low"], result["high"]) == (0.0, 0.0, 0.0)
    assert result["per_seed"] == [0.0, 0.0]


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    a, b = [_noisy(labels, 0.3, 2, rng)], [_noisy(labels, 0.4, 2, rng)]
    first = paired_bootstrap(labels, a, b, "mcc", replicates=REPLICATES, seed=7)
    assert paired_bootstrap(labels, a, b, "mcc", replicates=REPLICATES, seed=7) == first
    other = paired_bootstrap(labels, a, b, "mcc", replicates=REPLICATES, seed=8)
    assert other["difference"] == first["difference"] and (other["low"], other["high"]) != (first["low"], first["high"])


def test_the_average_is_the_mean_of_the_datasets_differences_and_seeded():
    rng = np.random.default_rng(4)
    datasets = {}
    for name, size in (("d1", 300), ("d2", 120)):
        labels = rng.integers(0, 2, size)
        datasets[name] = PairedDataset(labels, [_noisy(labels, 0.1, 2, rng)], [_noisy(labels, 0.7, 2, rng)], "mcc")
    average = paired_bootstrap_average(datasets, replicates=REPLICATES, seed=0)
    alone = [paired_bootstrap(d.labels, d.predictions_a, d.predictions_b, "mcc", replicates=REPLICATES) for d in datasets.values()]
    assert average["difference"] == pytest.approx(np.mean([r["difference"] for r in alone]))
    assert 0 < average["low"] < average["difference"] < average["high"]
    assert paired_bootstrap_average(datasets, replicates=REPLICATES, seed=0) == average


# -- the tables stage ----------------------------------------------------------------------------------

PLAN = {
    "runs": {  # names sort the other way round from the config: pairs follow "order"
        "zeta_vq": {"tokenizer": "vq", "type": "vq", "variant_of": None, "ablation": [], "control": False, "finetune_mode": None, "order": 0},
        "alpha_random": {
            "tokenizer": "bpe", "type": "bpe", "variant_of": None, "ablation": [], "control": True, "finetune_mode": "full", "order": 1,
        },
        "never_run": {"tokenizer": "vq", "type": "vq", "variant_of": None, "ablation": [], "control": False, "finetune_mode": None, "order": 2},
    },
    "tokenizers": {
        "vq": {"type": "vq", "variant_of": None, "ablation": []},
        "bpe": {"type": "bpe", "variant_of": None, "ablation": []},
    },
}
DATASETS = {"d1": ("mcc", 2, 300, 80, 70), "d2": ("f1", 3, 200, 50, 100)}  # metric, classes, test rows, nt, max_length


def _write_json(path: Path, value: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def _result(folder: Path, dataset: str, labels: np.ndarray, predictions: np.ndarray, **fields) -> Path:
    """metrics.json (its test metric computed from the predictions) and predictions.parquet, as the stages write them."""
    metric = DATASETS[dataset][0]
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"index": np.arange(len(labels)), "label": labels, "prediction": predictions,
                             "logits": [np.zeros(2, np.float32)] * len(labels)}), folder / "predictions.parquet")
    test = {metric: metric_on_all_rows(labels, predictions, metric)}
    return _write_json(folder / "metrics.json", {"dataset": dataset, "group": "G", "metric": metric, "test": test,
                                                 "max_length": DATASETS[dataset][4], **fields})


@pytest.fixture
def results(tmp_path) -> list[Path]:
    """zeta_vq (good, 2 seeds, both datasets), alpha_random (the control: poor, d1 only), the floor, a probe, measurements."""
    rng = np.random.default_rng(5)
    root = tmp_path / "results"
    files, labels_of = [], {}
    for dataset, (_, classes, rows, nt, _) in DATASETS.items():
        labels = labels_of[dataset] = rng.integers(0, classes, rows)
        pq.write_table(pa.table({"sequence": ["A" * nt] * rows, "label": labels}), _mkdir(root / "datasets" / dataset) / "test.parquet")
        for seed in (0, 1):
            files.append(_result(root / "finetune" / "zeta_vq" / dataset / f"seed{seed}", dataset, labels, _noisy(labels, 0.1, classes, rng),
                                 seed=seed, mean_test_tokens=14.0, mode="lora"))
            if dataset == "d1":
                files.append(_result(root / "finetune" / "alpha_random" / dataset / f"seed{seed}", dataset, labels,
                                     _noisy(labels, 0.8, classes, rng), seed=seed, mean_test_tokens=20.0, mode="full"))
        files.append(_result(root / "kmer_baseline" / dataset / "seed0", dataset, labels, _noisy(labels, 0.6, classes, rng), seed=0))
    files.append(_result(root / "probe" / "vq" / "d1", "d1", labels_of["d1"], _noisy(labels_of["d1"], 0.3, 2, rng), seed=0))
    files.append(_write_json(root / "tokenizers" / "vq" / "metrics.json",
                             {"reconstruction_accuracy": 0.9, "levels": [{"level": 1, "usage": 0.5, "perplexity": 300.0, "reconstruction_accuracy": 0.9}]}))
    files.append(_write_json(root / "pretrain" / "zeta_vq" / "metrics.json",
                             {"steps": 600, "tokenizer": "vq", "heldout_masked_accuracy": [0.4], "heldout_baselines": {"most_frequent": [0.1], "copy_neighbour": [0.2]}}))
    files.append(_write_json(root / "pretrain" / "alpha_random" / "metrics.json",
                             {"steps": 0, "tokenizer": "bpe", "heldout_masked_accuracy": [0.05], "heldout_baselines": {"most_frequent": [0.1], "copy_neighbour": [0.2]}}))
    return files


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def tables(results, tmp_path) -> Path:
    out = tmp_path / "results" / "tables"
    code = main(["tables", "--plan", json.dumps(PLAN), "--output-dir", str(out), "--replicates", str(REPLICATES), *map(str, results)])
    assert code == 0
    return out


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_tables_command_writes_tidy_comparison_and_paired_files(tables):
    for name, columns in (("comparison.csv", COMPARISON_COLUMNS), ("paired.csv", PAIRED_COLUMNS)):
        text = (tables / name).read_bytes()
        assert b"\r" not in text
        assert list(pd.read_csv(tables / name).columns) == columns
    assert (tables / "comparison.md").is_file() and (tables / "summary.csv").is_file() and (tables / "table3.csv").is_file()


def test_scores_are_percent_mean_and_std_over_seeds_and_a_missing_one_is_empty(tables):
    scores = {(r["dataset"], r["method"]): r for r in _rows(tables / "comparison.csv") if r["section"] == "score"}
    methods = [method for dataset, method in scores if dataset == "d1"]
    assert methods == ["zeta_vq", "alpha_random", "never_run", "kmer_lr", "probe:vq"]  # config order, the floor, probes
    vq = scores[("d1", "zeta_vq")]
    assert (vq["quantity"], vq["seeds"], vq["tokenizer"], vq["note"]) == ("mcc", "2", "vq", "")
    assert 80 < float(vq["value"]) <= 100 and float(vq["std"]) >= 0
    assert scores[("d1", "alpha_random")]["note"] == "control; full"
    for missing in (("d2", "alpha_random"), ("d1", "never_run"), ("d2", "probe:vq")):
        assert scores[missing]["value"] == scores[missing]["std"] == scores[missing]["seeds"] == ""  # never zero
    assert scores[("d2", "zeta_vq")]["quantity"] == "f1"


def test_tokenizer_pretrain_and_tokens_facts(tables):
    rows = [r for r in _rows(tables / "comparison.csv") if r["section"] != "score"]
    facts = {(r["section"], r["tokenizer"], r["run"], r["dataset"], r["quantity"]): r for r in rows}
    assert float(facts[("tokenizer", "vq", "", "", "usage")]["value"]) == 50.0
    assert float(facts[("tokenizer", "vq", "", "", "perplexity")]["value"]) == 300.0
    assert facts[("tokenizer", "bpe", "", "", "usage")]["value"] == ""  # not measured here
    assert float(facts[("pretrain", "vq", "zeta_vq", "", "masked_accuracy")]["value"]) == 40.0
    assert float(facts[("pretrain", "vq", "zeta_vq", "", "most_frequent_baseline")]["value"]) == 10.0
    assert facts[("pretrain", "bpe", "alpha_random", "", "masked_accuracy")]["note"] == "control"
    assert facts[("pretrain", "vq", "never_run", "", "masked_accuracy")]["value"] == ""
    assert float(facts[("tokens", "vq", "", "d1", "tokens_per_nt")]["value"]) == pytest.approx(14 / 70, abs=1e-4)  # 80 nt cut to 70; 4 decimals
    assert float(facts[("tokens", "vq", "", "d2", "tokens_per_nt")]["value"]) == pytest.approx(14 / 50, abs=1e-4)
    assert float(facts[("tokens", "bpe", "", "d1", "tokens_per_nt")]["value"]) == pytest.approx(20 / 70, abs=1e-4)


def test_paired_rows_beat_the_floor_and_leave_what_cannot_be_paired_empty(tables):
    paired = {(r["method_a"], r["method_b"], r["dataset"]): r for r in _rows(tables / "paired.csv")}
    pairs = list(dict.fromkeys((a, b) for a, b, _ in paired))
    assert pairs == [("zeta_vq", "kmer_lr"), ("alpha_random", "kmer_lr"), ("never_run", "kmer_lr"),
                     ("zeta_vq", "alpha_random"), ("zeta_vq", "never_run"), ("alpha_random", "never_run")]
    average = paired[("zeta_vq", "kmer_lr", "average")]
    assert (average["beats"], average["datasets"], average["metric"], average["replicates"]) == ("True", "2", "mixed", str(REPLICATES))
    assert 0 < float(average["low"]) < float(average["difference"]) < float(average["high"])
    d1 = paired[("zeta_vq", "kmer_lr", "d1")]
    assert (d1["seeds_a"], d1["seeds_b"], d1["metric"]) == ("2", "1", "mcc")
    assert paired[("alpha_random", "kmer_lr", "average")]["beats"] == "False"
    assert paired[("zeta_vq", "alpha_random", "average")]["datasets"] == "1"  # d1 only: the control has no d2
    for missing in (("zeta_vq", "alpha_random", "d2"), ("never_run", "kmer_lr", "average")):
        assert paired[missing]["difference"] == paired[missing]["low"] == paired[missing]["beats"] == ""


def test_markdown_shows_intervals_ticks_and_dashes(tables):
    paired = (tables / "paired.md").read_text()
    line = next(line for line in paired.splitlines() if line.startswith("| zeta_vq − kmer_lr |"))
    assert "✓" in line and "[" in line
    assert "| never_run − kmer_lr | – | – |" in paired
    comparison = (tables / "comparison.md").read_text()
    assert "alpha_random (control; full)" in comparison and "| – |" in comparison


def test_the_benchmark_keeps_the_tables_and_the_averages(tables, tmp_path):
    log = tmp_path / "snakemake.log"
    log.write_text("Building DAG of jobs...\n[Mon Nov  2 10:00:00 2026]\nrule all:\n[Mon Nov  2 11:30:05 2026]\nFinished job 0.\n")
    out = tmp_path / "small"
    command = [sys.executable, str(REPO / "benchmarks" / "small.py"), "--results", str(tables.parent), "--output", str(out), "--snakemake-log", str(log)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "Paired differences A − B" in finished.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["wall_seconds"] == 5405.0
    first = summary["paired_average"][0]
    assert (first["method_a"], first["method_b"], first["beats"], first["datasets"]) == ("zeta_vq", "kmer_lr", True, 2)
    assert summary["paired_average"][2]["difference"] is None  # never_run: nothing to compare
    assert (out / "paired.csv").read_text() == (tables / "paired.csv").read_text()


def test_the_benchmark_names_the_results_by_their_checkout_and_commit(tables, tmp_path):
    """An absolute path names one machine; the folder within its checkout and the commit say how to make it again."""
    checkout = tmp_path / "clone"
    results = checkout / "results"
    shutil.copytree(tables.parent, results)
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    (checkout / "Snakefile").write_text("# tracked\n")
    subprocess.run([*git, "add", "Snakefile"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    out = tmp_path / "small"
    command = [sys.executable, str(REPO / "benchmarks" / "small.py"), "--results", str(results), "--output", str(out), "--wall-seconds", "60"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["results"], summary["commit"], summary["wall_seconds_from"]) == ("results", head, "--wall-seconds")
    (checkout / "Snakefile").write_text("# changed\n")
    subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert json.loads((out / "summary.json").read_text())["commit"] == head + "+uncommitted changes"


def test_a_methods_notes_show_once_in_the_markdown_header():
    from vqdna.evaluation.compare import _method_notes

    notes = pd.Series(["control; full; nonstandard", "control; full", "control; full"])
    assert _method_notes(notes) == "control; full"
    assert _method_notes(pd.Series(["", "nonstandard"])) == ""


def test_a_result_older_than_the_field_a_table_reads_says_so_not_a_dash(results, tmp_path):
    """Pretraining before it measured its baselines, fine-tuning before it wrote its sizes: the result exists."""
    pretrain = next(p for p in results if p.parent.name == "zeta_vq" and p.parent.parent.name == "pretrain")
    metrics = json.loads(pretrain.read_text())
    del metrics["heldout_baselines"]
    pretrain.write_text(json.dumps(metrics))
    out = tmp_path / "results" / "tables"
    assert main(["tables", "--plan", json.dumps(PLAN), "--output-dir", str(out), "--replicates", "50", *map(str, results)]) == 0
    facts = {(r["section"], r["run"], r["quantity"]): r for r in _rows(out / "comparison.csv") if r["section"] == "pretrain"}
    assert facts[("pretrain", "zeta_vq", "most_frequent_baseline")]["note"] == "older result: rerun its stage"
    assert facts[("pretrain", "alpha_random", "most_frequent_baseline")]["note"] == "control"
    assert "older result: rerun its stage" in (out / "comparison.md").read_text()


def test_draws_are_pooled_as_replicates_of_their_run_and_paired_draw_by_draw(tmp_path):
    """Draw 1 flips the sign: the pooled difference hides it, the per-draw columns and table show it."""
    rng = np.random.default_rng(3)
    root = tmp_path / "results"
    labels = rng.integers(0, 2, 300)
    pq.write_table(pa.table({"sequence": ["A" * 80] * 300, "label": labels}), _mkdir(root / "datasets" / "d1") / "test.parquet")
    wrong = {("pre", 0): 0.1, ("ctl", 0): 0.7, ("pre", 1): 0.5, ("ctl", 1): 0.3}  # pretrained wins draw 0, loses draw 1
    files = [_result(root / "kmer_baseline" / "d1" / "seed0", "d1", labels, _noisy(labels, 0.6, 2, rng), seed=0)]
    for (run, draw), share in wrong.items():
        name = run if draw == 0 else f"{run}_draw{draw}"  # draw k fine-tunes with seed + k
        files.append(_result(root / "finetune" / name / "d1" / f"seed{draw}", "d1", labels, _noisy(labels, share, 2, rng), seed=draw))
        files.append(_write_json(root / "pretrain" / name / "metrics.json",
                                 {"steps": 10, "tokenizer": "vq", "heldout_masked_accuracy": [0.3 + draw / 10], "heldout_baselines": {"most_frequent": [0.1]}}))
    for draw, tokenizer in enumerate(["vq", "vq_draw1"]):
        files.append(_result(root / "probe" / tokenizer / "d1", "d1", labels, _noisy(labels, 0.3 + draw / 5, 2, rng), seed=0))
    info = {"type": "vq", "variant_of": None, "ablation": [], "control": False, "finetune_mode": None}
    plan = {"runs": {
        "pre": {**info, "tokenizer": "vq", "encoder_run": "pre", "draw_of": None, "draw": 0, "order": 0},
        "ctl": {**info, "tokenizer": "vq", "encoder_run": "ctl", "draw_of": None, "draw": 0, "order": 1},
        "pre_draw1": {**info, "tokenizer": "vq_draw1", "encoder_run": "pre_draw1", "draw_of": "pre", "draw": 1, "order": 2},
        "ctl_draw1": {**info, "tokenizer": "vq_draw1", "encoder_run": "ctl_draw1", "draw_of": "ctl", "draw": 1, "order": 3},
    }, "tokenizers": {"vq": {"type": "vq", "variant_of": None, "ablation": [], "draw_of": None, "draw": 0},
                      "vq_draw1": {"type": "vq", "variant_of": None, "ablation": [], "draw_of": "vq", "draw": 1}}}
    out = root / "tables"
    assert main(["tables", "--plan", json.dumps(plan), "--output-dir", str(out), "--replicates", "100", *map(str, files)]) == 0

    scores = {r["method"]: r for r in _rows(out / "comparison.csv") if r["section"] == "score"}
    assert list(scores) == ["pre", "ctl", "kmer_lr", "probe:vq"]  # a draw is no method of its own
    assert (scores["pre"]["seeds"], scores["pre"]["tokenizer"]) == ("2", "vq") and scores["probe:vq"]["seeds"] == "2"
    probes = {r["tokenizer"]: float(r["value"]) for r in _rows(out / "comparison.csv") if r["quantity"] == "probe_mcc"}
    assert list(probes) == ["vq", "vq_draw1"] and probes["vq"] > probes["vq_draw1"]  # each draw's own probe
    assert float(scores["probe:vq"]["value"]) == pytest.approx((probes["vq"] + probes["vq_draw1"]) / 2, abs=1e-3)
    assert "| vq_draw1 |" in (out / "comparison.md").read_text()
    pretrained = [r["run"] for r in _rows(out / "comparison.csv") if r["section"] == "pretrain" and r["quantity"] == "masked_accuracy"]
    assert pretrained == ["pre", "pre_draw1", "ctl", "ctl_draw1"]  # each draw's pretraining has its row

    paired = {(r["method_a"], r["method_b"], r["dataset"]): r for r in _rows(out / "paired.csv")}
    row = paired[("pre", "ctl", "d1")]
    per_draw = [float(v) for v in row["per_draw"].split(";")]
    assert row["draws"] == "2" and per_draw[0] > 30 and per_draw[1] < -3
    assert float(row["difference"]) == pytest.approx(np.mean(per_draw), abs=1e-3)
    assert paired[("pre", "kmer_lr", "d1")]["seeds_b"] == "1"  # the floor has one draw: each draw minus its score
    assert paired[("pre", "ctl", "average")]["per_draw"] == row["per_draw"]
    markdown = (out / "paired.md").read_text()
    assert "in each draw" in markdown
    assert any(line.startswith("| pre − ctl |") and " / -" in line for line in markdown.splitlines())

    table3 = [r for r in _rows(out / "table3.csv") if r["row"] == "pre" and r["value"]]
    assert not table3 or all(r["seeds"] == "2" for r in table3)
    assert "pre_draw1" not in (out / "table3.csv").read_text()
