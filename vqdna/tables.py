"""Result tables: fine-tuning metrics gathered over seeds, mean ± std, as CSV and Markdown.

A metric a task does not report (MCC of a regression, Spearman of a
classification) is left empty, never shown as zero.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from vqdna.io import atomic_path

COLUMNS = ["run", "dataset", "group", "metric", "seeds", "score_mean", "score_std", "accuracy", "f1", "mcc", "spearman", "mse"]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(metrics_files: list[str | Path]) -> list[dict]:
    """One row per (run, dataset): the dataset's metric and every test metric, mean ± std over seeds."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for path in metrics_files:
        path = Path(path)
        result = json.loads(path.read_text())
        run = path.parents[2].name  # results/finetune/{run}/{dataset}/seed{seed}/metrics.json
        grouped.setdefault((run, result["dataset"]), []).append(result)
    rows = []
    for (run, dataset), results in sorted(grouped.items()):
        first = results[0]
        row = {"run": run, "dataset": dataset, "group": first["group"], "metric": first["metric"], "seeds": len(results)}
        row["score_mean"], row["score_std"] = _mean_std([r["test"][first["metric"]] for r in results])
        for name in ("accuracy", "f1", "mcc", "spearman", "mse"):
            values = [r["test"][name] for r in results if name in r["test"]]
            row[name] = "{:.4f} ± {:.4f}".format(*_mean_std(values)) if values else ""
        rows.append(row)
    return rows


def to_markdown(rows: list[dict]) -> str:
    metrics = ["accuracy", "f1", "mcc", "spearman", "mse"]
    header = ["run", "dataset", "group", "metric", "score (mean ± std)", "seeds", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        score = f"{100 * r['score_mean']:.2f} ± {100 * r['score_std']:.2f}"
        cells = [r["run"], r["dataset"], r["group"], r["metric"], score, str(r["seeds"]), *(r[m] or "–" for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(metrics_files: list[str | Path], csv_path: str | Path, markdown_path: str | Path) -> list[dict]:
    rows = summarize(metrics_files)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buffer.getvalue())
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(to_markdown(rows))
    return rows
