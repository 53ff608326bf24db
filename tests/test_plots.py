"""The report's figures and tables, drawn from artifact files alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from vqdna import plots


def _non_blank(path: Path) -> bool:
    image = imread(path)
    return image.shape[0] > 100 and image.shape[1] > 100 and float(image[..., :3].std()) > 0.05


def _write_csv(path: Path, rows: list[dict]) -> Path:
    path.write_text(",".join(rows[0]) + "\n" + "".join(",".join(str(v) for v in row.values()) + "\n" for row in rows))
    return path


def _learned_metrics(folder: Path) -> tuple[Path, Path]:
    levels = [{"level": n, "codebook_size": 8 * n, "usage": 0.9, "perplexity": 6.0 * n, "reconstruction_accuracy": 1.0,
               "neighbour_probe": {"-2": 0.5, "-1": 0.9, "+1": 0.8, "+2": 0.4, "mean": 0.65},
               "code_counts": list(range(8 * n))} for n in (1, 2)]
    metrics = folder / "metrics.json"
    metrics.write_text(json.dumps({"levels": levels, "reconstruction_accuracy": 1.0, "type": "hrq", "training": {"tokenizer": "hrq"}}))
    curves = _write_csv(folder / "curves.csv", [
        {"step": s, "loss": 1 / s, "reconstruction_loss": 0.5 / s, "commitment_loss": 0.2 / s, "batch_reconstruction_accuracy": 0.9,
         "batch_usage_l1": 0.8, "batch_perplexity_l1": 6, "batch_usage_l2": 0.7, "batch_perplexity_l2": 11, "restarts": 0,
         "learning_rate": 1e-3, "seconds": s / 10} for s in (10, 20, 30)])
    return metrics, curves


def test_a_tokenizer_figure_shows_its_curves_frequencies_and_probe_and_a_baseline_its_frequencies(tmp_path):
    metrics, curves = _learned_metrics(tmp_path)
    plots.plot_tokenizer(metrics, tmp_path / "hrq.png", curves)
    assert _non_blank(tmp_path / "hrq.png")
    baseline = tmp_path / "kmer.json"
    baseline.write_text(json.dumps({"type": "kmer", "reconstruction_accuracy": 1.0, "training": {"tokenizer": "kmer6"}, "levels": [
        {"level": 1, "codebook_size": 64, "usage": 0.5, "perplexity": 20.0, "tokens_per_window": 21.0, "code_counts": [3] * 32 + [0] * 32}]}))
    plots.plot_tokenizer(baseline, tmp_path / "kmer.png")
    assert _non_blank(tmp_path / "kmer.png")
    assert imread(tmp_path / "kmer.png").shape[1] < imread(tmp_path / "hrq.png").shape[1]  # one panel against three per row


def test_pretraining_and_fine_tuning_figures_are_drawn_from_their_metrics(tmp_path):
    metrics = tmp_path / "pretrain.json"
    metrics.write_text(json.dumps({
        "run": "tiny", "budget": {"windows": 100, "tokens": 12800, "train_tflops": 0.1}, "train_seconds": 4.0,
        "heldout_curve": [{"step": 5, "masked_accuracy": [0.2]}, {"step": 10, "masked_accuracy": [0.4]}],
        "heldout_masked_accuracy": [0.4], "heldout_baselines": {"most_frequent": [0.01], "copy_neighbour": [0.02]},
    }))
    curves = _write_csv(tmp_path / "curves.csv", [{"step": s, "loss": 5 - s / 5, "learning_rate": 1e-3, "seconds": s} for s in (5, 10)])
    plots.plot_pretraining(metrics, curves, tmp_path / "pretrain.png")
    assert _non_blank(tmp_path / "pretrain.png")

    finetuned = []
    for run in ("a", "b"):
        for seed in (0, 1):
            path = tmp_path / "finetune" / run / "ds" / f"seed{seed}" / "metrics.json"
            path.parent.mkdir(parents=True)
            history = [{"epoch": e, "dev_mcc": 0.1 * e + seed / 100} for e in (1, 2, 3)]
            path.write_text(json.dumps({"metric": "mcc", "seed": seed, "history": history, "test": {"mcc": 0.3 + seed / 10}}))
            finetuned.append(path)
    floor = tmp_path / "kmer" / "ds" / "seed0" / "metrics.json"
    probe = tmp_path / "probe" / "vq" / "ds" / "metrics.json"
    for path, value in ((floor, 0.5), (probe, 0.2)):
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"metric": "mcc", "test": {"mcc": value}}))
    plots.plot_finetuning("ds", finetuned, [floor], [probe], tmp_path / "ds.png")
    assert _non_blank(tmp_path / "ds.png")


def test_the_tables_page_shows_ours_beside_published_with_coloured_differences_and_missing_cells(tmp_path):
    header = "table,part,row,method,source,column,value,std,seeds,delta,note\n"
    (tmp_path / "table4.csv").write_text(header + "\n".join([
        "table4,,dnabert2,DNABERT-2,published,tf_0,56.76,,,,",
        "table4,,dnabert2,DNABERT-2,published,tf_1,84.77,,,,",
        "table4,,vq_bert,VQDNA (ours),ours,tf_0,60.10,1.20,3,3.34,",
        "table4,,vq_bert,VQDNA (ours),ours,tf_1,,,,,not run",
        "table4,,hrq_bert,HRQ (ours),ours,tf_0,50.00,0.50,3,-6.76,",
    ]) + "\n")
    plots.tables_html([tmp_path / "table4.csv"], tmp_path / "tables.html")
    page = (tmp_path / "tables.html").read_text()
    assert "<h3>table4</h3>" in page and page.count("<tr") == 4  # header + DNABERT-2 + two rows of ours
    assert "60.10 ± 1.20 <span class='up'>(+3.34)</span>" in page
    assert "50.00 ± 0.50 <span class='down'>(-6.76)</span>" in page
    assert page.count("<span class='missing'>–</span>") == 2  # ours on tf_1 (not run), HRQ on tf_1 (absent)


def test_the_runtime_table_sums_each_rules_jobs(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for relative, seconds, rss in (("finetune/a/seed0.tsv", 10.0, 500.0), ("finetune/b/seed0.tsv", 30.0, 700.0), ("make_tables/tables.tsv", 1.5, 80.0)):
        path = tmp_path / "benchmarks" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{seconds}\t0:00:10\t{rss}\t1\t1\t1\t0\t0\t0\t1\n")
    plots.runtime_html(tmp_path / "benchmarks", tmp_path / "runtime.html")
    page = (tmp_path / "runtime.html").read_text()
    assert "<tr><td>finetune</td><td>2</td><td>40.0</td><td>30.0</td><td>700</td></tr>" in page
    assert "<tr><td>make_tables</td><td>1</td><td>1.5</td><td>1.5</td><td>80</td></tr>" in page


@pytest.mark.parametrize(("arguments", "message"), [
    (["tokenizer"], "plot tokenizer: give --metrics"),
    (["pretraining", "--metrics", "m.json"], "plot pretraining: give --curves"),
])
def test_the_plot_command_names_what_is_missing_in_one_line(tmp_path, arguments, message):
    result = subprocess.run([sys.executable, "-m", "vqdna", "plot", *arguments, "--output", str(tmp_path / "x.png")],
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.strip() == f"error: {message}"
    assert not (tmp_path / "x.png").exists() and np.array(list(tmp_path.iterdir())).size == 0


def test_a_runs_draws_are_one_method_in_the_finetuning_plot(tmp_path, monkeypatch):
    """draws: run a and a_draw1 are one bar with a dot per replicate; probes of vq and vq_draw1 likewise."""
    finetuned, probes = [], []
    for run, seed in (("a", 0), ("a_draw1", 1)):
        path = tmp_path / "finetune" / run / "ds" / f"seed{seed}" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"metric": "mcc", "seed": seed, "history": [{"epoch": 1, "dev_mcc": 0.2}], "test": {"mcc": 0.3 + seed / 10}}))
        finetuned.append(path)
    for tokenizer, value in (("vq", 0.2), ("vq_draw1", 0.4)):
        path = tmp_path / "probe" / tokenizer / "ds" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"metric": "mcc", "test": {"mcc": value}}))
        probes.append(path)
    saved = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.setdefault("fig", fig))
    plots.plot_finetuning("ds", finetuned, [], probes, tmp_path / "ds.png", {"a_draw1": "a", "vq_draw1": "vq"})
    test_ax = saved["fig"].axes[1]
    assert [label.get_text() for label in test_ax.get_yticklabels()] == ["a", "probe: vq"]
    assert [bar.get_width() for bar in test_ax.patches] == pytest.approx([0.35, 0.3])  # means over the two draws
    assert [len(dots.get_offsets()) for dots in test_ax.collections] == [2, 2]
