"""The report's figures and tables, made from artifacts alone (workflow/rules/plots.smk).

Nothing here trains or measures: each function reads files other stages wrote
(metrics.json, curves.csv, the tables' tidy CSVs, the rules' benchmark TSVs) and
draws them, so a figure is remade in seconds without rerunning anything.

- :func:`plot_tokenizer`: training curves (loss, reconstruction, usage and
  perplexity per level), held-out code frequencies per level (rank order), the
  neighbour-base probe; baselines: vocabulary frequencies and tokens per window.
- :func:`plot_pretraining`: MLM loss and held-out masked-code accuracy beside the
  most-frequent-code and copy-neighbour baselines; throughput in the title.
- :func:`plot_finetuning`: per dataset, dev curves per run and seed, and test
  scores (mean and seeds) beside the k-mer floor and the linear probes.
- :func:`tables_html`: Tables 1-7, ours beside the published numbers, differences coloured.
- :func:`runtime_html`: wall time and peak memory per rule from the benchmark files.
"""

from __future__ import annotations

import csv
import html
import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vqdna.artifacts import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _column(rows: list[dict[str, str]], name: str) -> np.ndarray:
    return np.array([float(row[name]) if row.get(name) not in (None, "") else np.nan for row in rows])


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    _pyplot().close(fig)


# -- tokenizers ----------------------------------------------------------------------------------------


def plot_tokenizer(metrics_path: str | Path, output: str | Path, curves_path: str | Path | None = None) -> None:
    """Training curves (learned tokenizers), code frequencies per level and the neighbour probe, in one figure."""
    metrics = json.loads(Path(metrics_path).read_text())
    levels = metrics["levels"]
    curves = _read_csv(Path(curves_path)) if curves_path else []
    panels = (3 if curves else 0) + 1 + (1 if "neighbour_probe" in levels[0] else 0)
    plt = _pyplot()
    columns = min(panels, 3)
    fig, grid = plt.subplots(-(-panels // columns), columns, figsize=(4.4 * columns, 3.4 * -(-panels // columns)), squeeze=False)
    axes = list(grid.ravel())
    for spare in axes[panels:]:
        spare.set_visible(False)
    if curves:
        step = _column(curves, "step")
        ax = axes.pop(0)
        for name in ("loss", "reconstruction_loss", "commitment_loss"):
            ax.plot(step, _column(curves, name), label=name.replace("_", " "))
        ax.set_yscale("log"), ax.set_xlabel("step"), ax.set_title("training loss"), ax.legend(fontsize=7)
        ax = axes.pop(0)
        ax.plot(step, _column(curves, "batch_reconstruction_accuracy"), label="reconstruction (batch)")
        for level in levels:
            ax.plot(step, _column(curves, f"batch_usage_l{level['level']}"), label=f"usage, level {level['level']}")
        ax.set_ylim(0, 1.02), ax.set_xlabel("step"), ax.set_title("reconstruction and codebook usage"), ax.legend(fontsize=7)
        ax = axes.pop(0)
        for level in levels:
            ax.plot(step, _column(curves, f"batch_perplexity_l{level['level']}"), label=f"level {level['level']} (K = {level['codebook_size']})")
        ax.set_xlabel("step"), ax.set_title("code perplexity (batch)"), ax.legend(fontsize=7)
    ax = axes.pop(0)
    for level in levels:
        counts = np.sort(np.asarray(level.get("code_counts") or [], dtype=float))[::-1]
        if counts.sum():
            ax.plot(np.arange(1, len(counts) + 1), counts / counts.sum(), label=f"level {level['level']}: usage {level['usage']:.0%}")
    if "code_counts" not in levels[0]:
        ax.text(0.5, 0.5, "no code counts in metrics.json:\nrerun evaluate_tokenizer", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.set_yscale("log"), ax.legend(fontsize=7)
    ax.set_xlabel("code rank"), ax.set_ylabel("held-out frequency")
    extra = f", {levels[0]['tokens_per_window']:.1f} tokens per window" if "tokens_per_window" in levels[0] else ""
    ax.set_title(f"code frequencies{extra}", fontsize=9)
    if axes:
        ax = axes.pop(0)
        offsets = ["-2", "-1", "+1", "+2"]
        width = 0.8 / len(levels)
        for i, level in enumerate(levels):
            ax.bar(np.arange(4) + i * width, [level["neighbour_probe"][o] for o in offsets], width, label=f"level {level['level']}")
        ax.set_xticks(np.arange(4) + 0.4 - width / 2, [f"base {o}" for o in offsets])
        ax.set_ylim(0, 1), ax.set_title("neighbour-base probe (held-out accuracy)", fontsize=9), ax.legend(fontsize=7)
    fig.suptitle(f"{metrics['training']['tokenizer'] if metrics.get('training') else ''} ({metrics['type']}): "
                 f"held-out reconstruction {metrics['reconstruction_accuracy']:.2%}", fontsize=10)
    _save(fig, output)


# -- pretraining ---------------------------------------------------------------------------------------


def plot_pretraining(metrics_path: str | Path, curves_path: str | Path, output: str | Path) -> None:
    """MLM loss, and held-out masked-code accuracy per level beside the baselines it must beat."""
    metrics = json.loads(Path(metrics_path).read_text())
    curves = _read_csv(Path(curves_path))
    plt = _pyplot()
    fig, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    if curves:
        loss_ax.plot(_column(curves, "step"), _column(curves, "loss"))
    loss_ax.set_xlabel("step"), loss_ax.set_ylabel("masked-code cross-entropy"), loss_ax.set_title("training loss")
    heldout = metrics.get("heldout_curve") or []
    levels = len(metrics.get("heldout_masked_accuracy") or [])
    for level in range(levels):
        line = accuracy_ax.plot([p["step"] for p in heldout], [p["masked_accuracy"][level] for p in heldout], marker="o", label=f"model, level {level + 1}")
        for name, style in (("most_frequent", ":"), ("copy_neighbour", "--")):
            value = metrics.get("heldout_baselines", {}).get(name, [None] * levels)[level]
            if value is not None:
                accuracy_ax.axhline(value, ls=style, color=line[0].get_color(), label=f"{name.replace('_', ' ')}, level {level + 1}")
    accuracy_ax.set_ylim(0, 1), accuracy_ax.set_xlabel("step"), accuracy_ax.set_title("held-out masked-code accuracy")
    accuracy_ax.legend(fontsize=7)
    budget, seconds = metrics.get("budget", {}), metrics.get("train_seconds")
    speed = f", {budget['tokens'] / seconds:,.0f} tokens/s" if budget.get("tokens") and seconds else ""
    fig.suptitle(f"{metrics['run']}: {budget.get('windows', 0):,} windows, {budget.get('train_tflops', 0)} TFLOPs{speed}", fontsize=10)
    _save(fig, output)


# -- fine-tuning ---------------------------------------------------------------------------------------


def plot_finetuning(
    dataset: str,
    finetuned: list[str | Path],
    floors: list[str | Path],
    probes: list[str | Path],
    output: str | Path,
    draw_of: Mapping[str, str] | None = None,
) -> None:
    """Dev curves per run, seed and draw; test scores per method (replicates as dots) beside the floor and the probes.

    ``draw_of``: run or tokenizer -> the config's entry its draw remakes (``draws:``); a draw is drawn as
    more replicates of that entry, in its colour, not as a method of its own.
    """
    draw_of = draw_of or {}
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in finetuned:
        run = Path(path).parents[2].name
        runs[draw_of.get(run, run)].append(json.loads(Path(path).read_text()))
    metric = next(iter(runs.values()))[0]["metric"] if runs else "mcc"
    plt = _pyplot()
    fig, (dev_ax, test_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names, scores = [], []
    for i, (run, results) in enumerate(sorted(runs.items())):
        for j, metrics in enumerate(sorted(results, key=lambda m: m["seed"])):
            history = metrics.get("history") or []
            dev_ax.plot([h["epoch"] for h in history], [h.get(f"dev_{metric}") for h in history], color=colours[i % len(colours)],
                        alpha=0.8, label=run if j == 0 else None)
        names.append(run)
        scores.append([m["test"][metric] for m in results])
    probe_scores: dict[str, list[float]] = defaultdict(list)
    for path in probes:
        tokenizer = Path(path).parents[1].name
        probe_scores[draw_of.get(tokenizer, tokenizer)].append(json.loads(Path(path).read_text())["test"][metric])
    for path in floors:
        names.append("k-mer floor")
        scores.append([json.loads(Path(path).read_text())["test"][metric]])
    for tokenizer, values in probe_scores.items():
        names.append(f"probe: {tokenizer}")
        scores.append(values)
    replicates = "seed and draw" if draw_of else "seed"
    dev_ax.set_xlabel("epoch"), dev_ax.set_ylabel(f"dev {metric}"), dev_ax.set_title(f"dev curves (one line per {replicates})")
    dev_ax.legend(fontsize=7)
    means = [float(np.mean(s)) for s in scores]
    test_ax.barh(np.arange(len(names)), means, color=["tab:blue"] * len(runs) + ["tab:grey"] * (len(names) - len(runs)))
    for i, values in enumerate(scores):
        test_ax.scatter(values, [i] * len(values), color="black", s=10, zorder=3)
    test_ax.set_yticks(np.arange(len(names)), names, fontsize=8), test_ax.invert_yaxis()
    test_ax.set_xlabel(f"test {metric} (bar: mean; dots: each {replicates})"), test_ax.set_title("test")
    fig.suptitle(dataset, fontsize=10)
    _save(fig, output)


# -- tables --------------------------------------------------------------------------------------------

_STYLE = (
    "<style>body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse;margin:0 0 24px} "
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right} td:first-child,th:first-child{text-align:left} "
    ".ours{background:#f3f7ff} .up{color:#1a7f37} .down{color:#cf222e} .missing{color:#999}</style>"
)


def tables_html(table_csvs: list[str | Path], output: str | Path) -> None:
    """One HTML page: each table's rows (published and ours) by column; our cells with their difference, coloured."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Tables</title>{_STYLE}</head><body>"]
    for path in table_csvs:
        rows = _read_csv(Path(path))
        columns = list(dict.fromkeys(row["column"] for row in rows))
        cells: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
        for row in rows:
            cells[(row["method"], row["source"])][row["column"]] = row
        parts.append(f"<h3>{html.escape(Path(path).stem)}</h3><table><tr><th>method</th><th>source</th>")
        parts += [f"<th>{html.escape(c)}</th>" for c in columns] + ["</tr>"]
        for (method, source), by_column in cells.items():
            parts.append(f"<tr class='{'ours' if source != 'published' else ''}'><td>{html.escape(method)}</td><td>{html.escape(source)}</td>")
            for column in columns:
                parts.append(f"<td>{_cell(by_column.get(column))}</td>")
            parts.append("</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    _write_text(output, "".join(parts))


def _cell(row: dict | None) -> str:
    if row is None or row["value"] == "":
        return "<span class='missing'>–</span>"
    text = row["value"] + (f" ± {row['std']}" if row.get("std") else "")
    if row.get("delta"):
        delta = float(row["delta"])
        text += f" <span class='{'up' if delta >= 0 else 'down'}'>({delta:+.2f})</span>"
    return text


# -- runtime -------------------------------------------------------------------------------------------


def runtime_html(benchmark_dir: str | Path, output: str | Path) -> None:
    """Per rule: jobs, total and longest wall time, peak memory, from Snakemake's benchmark files."""
    by_rule: dict[str, list[dict[str, str]]] = defaultdict(list)
    root = Path(benchmark_dir)
    for path in sorted(root.rglob("*.tsv")):
        with open(path, newline="") as handle:
            by_rule[path.relative_to(root).parts[0]] += list(csv.DictReader(handle, delimiter="\t"))
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Runtime</title>{_STYLE}</head><body>",
             "<table><tr><th>rule</th><th>jobs</th><th>wall time, total (s)</th><th>longest job (s)</th><th>peak memory (MB)</th></tr>"]
    for rule, jobs in sorted(by_rule.items()):
        seconds = [float(job["s"]) for job in jobs]
        memory = [float(job["max_rss"]) for job in jobs if job.get("max_rss") not in (None, "", "NA", "-")]
        parts.append(f"<tr><td>{html.escape(rule)}</td><td>{len(jobs)}</td><td>{sum(seconds):,.1f}</td><td>{max(seconds):,.1f}</td>"
                     f"<td>{max(memory):,.0f}</td></tr>" if memory else
                     f"<tr><td>{html.escape(rule)}</td><td>{len(jobs)}</td><td>{sum(seconds):,.1f}</td><td>{max(seconds):,.1f}</td><td>–</td></tr>")
    parts.append("</table></body></html>")
    _write_text(output, "".join(parts))


def _write_text(output: str | Path, text: str) -> None:
    with atomic_path(output) as tmp:
        Path(tmp).write_text(text)
