"""Result tables: the paper's Tables 1-7, ours beside the published numbers, and a summary of every result.

Results are read from their contract paths:

    results/finetune/{run}/{dataset}/seed{seed}/metrics.json     LoRA fine-tuning
    results/kmer_baseline/{dataset}/seed{seed}/metrics.json      bag of k-mers + logistic regression
    results/probe/{tokenizer}/{dataset}/metrics.json             linear probe on tokenizer features
    results/tokenizers/{tokenizer}/metrics.json                  held-out reconstruction
    results/pretrain/{run}/metrics.json                          accepted, in no paper table (see vqdna.evaluation.compare)

and a plan written from the config (:func:`read_plan`): each run's tokenizer and
its type, and each sweep variant's ablation axis and value. Our VQ-VAE and HRQ
rows stand beside the paper's VQDNA and VQDNA (HRQ) rows; the difference is
shown as ours minus published.

Scores are percent, as the paper prints them. Every table is written twice:
a tidy CSV, one row per cell (table, part, row, method, source, column, value,
std, seeds, delta, note), for pandas and DuckDB; and Markdown in the paper's layout.
A cell without a result is empty in the CSV and "–" in Markdown, never zero.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from vqdna.artifacts import atomic_path
from vqdna.result_files import OLDER_RESULT, read_result_file

PUBLISHED_OF_TYPE = {"vq": "vqdna_vq", "hrq": "vqdna_hrq"}  # our rows stand beside these published rows
PUBLISHED_FILES = {
    1: "table1_tokenizer_efficiency.csv",
    2: "table2_average_rank.csv",
    3: "table3_pd_cpd_tfp_human.csv",
    4: "table4_tfp_mouse_cvc_ssp_eep.csv",
    5: "table5_emp.csv",
    6: "table6_species.csv",
}
ABLATION_FILES = {"code_size": "table7a_code_size.csv", "code_dim": "table7b_code_dim.csv", "mask_ratio": "table7c_mask_ratio.csv"}
COVID = "covid"
TABLE7C_DATASETS = ("emp_h3", COVID)
CSV_COLUMNS = ["table", "part", "row", "method", "source", "column", "value", "std", "seeds", "delta", "note"]
KMER_ROW = "kmer_lr"
KMER_METHOD = "bag of 3-6-mers + logistic regression (ours)"


# -- results ---------------------------------------------------------------------------------------


@dataclass
class Score:
    """Mean ± sample std over seeds, in percent; ``nonstandard`` when trained on a split the benchmark did not give."""

    values: list[float]
    nonstandard: bool = False

    @property
    def mean(self) -> float:
        return _mean_std(self.values)[0]

    @property
    def std(self) -> float:
        return _mean_std(self.values)[1]


def _mean_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof=1); a single value's std is 0, not NaN.

    Series reductions, not ``groupby().mean()/.std()``: those use other algorithms (compensated
    sums, Welford) whose last digit can differ, and the summary CSV prints every digit.
    """
    values = pd.Series(values, dtype=float)
    return float(values.mean()), float(values.std()) if len(values) > 1 else 0.0


@dataclass
class Results:
    finetune: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # (run, dataset) -> per seed
    kmer: dict[str, list[dict]] = field(default_factory=dict)  # dataset -> per seed
    probe: dict[tuple[str, str], dict] = field(default_factory=dict)  # (tokenizer, dataset) -> metrics
    tokenizer: dict[str, dict] = field(default_factory=dict)  # tokenizer -> metrics

    def score(self, results: list[dict] | None) -> Score | None:
        if not results:
            return None
        metric = results[0]["metric"]
        return Score([100 * r["test"][metric] for r in results], any(r.get("train_from") for r in results))


def read_results(paths: list[str | Path]) -> Results:
    """Sort result files by their contract path (see the module docstring)."""
    results = Results()
    for result in (read_result_file(path) for path in paths):
        if result.stage == "finetune":
            results.finetune.setdefault((result.run, result.dataset), []).append(result.metrics)
        elif result.stage == "kmer_baseline":
            results.kmer.setdefault(result.dataset, []).append(result.metrics)
        elif result.stage == "probe":
            results.probe[(result.tokenizer, result.dataset)] = result.metrics
        elif result.stage == "tokenizers":
            results.tokenizer[result.tokenizer] = result.metrics
        # pretrain/{run}/metrics.json is in no paper table (vqdna.evaluation.compare tables it)
    return results


def read_plan(path_or_text: str) -> dict:
    """``{"runs": {run: {tokenizer, type, variant_of, ablation, draw_of, draw}}, "tokenizers": {name: {...the same}}}``.

    ``variant_of``: the base a sweep generated this one from (None for the
    config's own); ``ablation``: ``[{axis, value}]``, every sweep it stands in;
    ``draw_of``: the entry a draw (``draws:``) made again from its seeds + ``draw``.
    """
    text = path_or_text if path_or_text.lstrip().startswith("{") else Path(path_or_text).read_text()
    plan = json.loads(text)
    plan.setdefault("runs", {})
    plan.setdefault("tokenizers", {})
    return plan


def read_published(folder: str | Path, name: str) -> list[dict]:
    """The paper's rows, every cell as printed: a string, "" where the paper gives none."""
    return pd.read_csv(Path(folder) / name, dtype=str, keep_default_na=False).to_dict("records")


def _number(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


# -- tables as cells -------------------------------------------------------------------------------


@dataclass
class Cell:
    row: str
    method: str
    source: str  # published | ours
    column: str
    value: float | None
    std: float | None = None
    seeds: int | None = None
    delta: float | None = None
    text: str | None = None  # non-numeric published cells (params "86+16")
    note: str = ""  # "nonstandard": trained on a split the benchmark did not give

    def shown(self) -> str:
        if self.text is not None:
            return self.text
        if self.value is None:
            return "–"
        if self.std is None or not self.seeds or self.seeds < 2:
            shown = f"{self.value:.2f}"
        else:
            shown = f"{self.value:.2f} ± {self.std:.2f}"
        shown += f" ({self.delta:+.2f})" if self.delta is not None else ""
        return shown + ("*" if self.note else "")


def _ours(row: str, method: str, column: str, score: Score | None, published: float | None = None) -> Cell:
    if score is None:
        return Cell(row, method, "ours", column, None)
    delta = score.mean - published if published is not None else None
    return Cell(row, method, "ours", column, score.mean, score.std, len(score.values), delta, note="nonstandard" if score.nonstandard else "")


def _main_runs(plan: dict) -> list[str]:
    """Runs that are neither sweep variants nor draws, in config order."""
    return [run for run, info in plan["runs"].items() if not info.get("variant_of") and not info.get("draw_of")]


def pool_draws(results: Results, plan: dict) -> Results:
    """A draw's fine-tuning results counted among the run it remakes: one cell, mean ± std over draws and seeds."""
    pooled = Results(kmer=results.kmer, probe=results.probe, tokenizer=results.tokenizer)
    for (run, dataset), per_seed in results.finetune.items():
        base = plan["runs"].get(run, {}).get("draw_of") or run
        pooled.finetune.setdefault((base, dataset), []).extend(per_seed)
    return pooled


def _run_label(plan: dict, run: str) -> str:
    info = plan["runs"][run]
    return f"{run} ({info.get('tokenizer', '?')}, {info.get('type', '?')}; ours)"


def dataset_table(number: int, published: list[dict], results: Results, plan: dict) -> list[Cell]:
    """Tables 3-6: published rows, then each of our runs and the k-mer baseline, over the published columns."""
    columns = [c for c in published[0] if c not in ("key", "method")]
    by_key = {row["key"]: row for row in published}
    cells = [Cell(row["key"], row["method"], "published", c, _number(row[c])) for row in published for c in columns]
    for run in _main_runs(plan):
        beside = by_key.get(PUBLISHED_OF_TYPE.get(plan["runs"][run].get("type", "")), {})
        for column in columns:
            cells.append(_ours(run, _run_label(plan, run), column, results.score(results.finetune.get((run, column))), _number(beside.get(column))))
    for column in columns:
        cells.append(_ours(KMER_ROW, KMER_METHOD, column, results.score(results.kmer.get(column))))
    return cells


def average_rank_table(published: list[dict], dataset_tables: dict[int, list[Cell]], results: Results, plan: dict) -> list[Cell]:
    """Table 2: each row's mean rank over the datasets of Tables 3-6 where it has a result (ties share the mean rank)."""
    scored = pd.DataFrame([c for cells in dataset_tables.values() for c in cells if c.value is not None])
    # rows x datasets, ranked within each dataset, best first; no result there: no rank (NaN), not the last one
    ranks = scored.pivot_table(index="row", columns="column", values="value", aggfunc="last").rank(ascending=False)
    # one line per row, in the order rows first appear; a run named like a published row counts as ours
    rows = scored.groupby("row", sort=False).agg(method=("method", "first"), source=("source", "last"))
    cells = []
    for row in published:
        method = f"{row['method']} ({row['tokenizer']})"
        for column in ("tokenizer", "params_m", "flops_g", "train_b"):
            cells.append(Cell(row["key"], method, "published", column, None, text=row[column]))
        cells.append(Cell(row["key"], method, "published", "average_rank", _number(row["average_rank"])))
    for row, method in rows.method[rows.source == "ours"].items():
        cells += _our_size_cells(row, method, results, plan)
    for row, method, source in rows.itertuples():
        cells.append(Cell(row, method, source, "rank_here", float(ranks.loc[row].mean())))
        cells.append(Cell(row, method, source, "datasets_ranked", None, text=str(ranks.loc[row].count())))
    return cells


def _our_size_cells(row: str, method: str, results: Results, plan: dict) -> list[Cell]:
    """Tokenizer, parameters (encoder + tokenizer, M) and mean forward GFLOPs of one of our runs."""
    info = plan["runs"].get(row, {})
    runs = [r for (run, _), rs in results.finetune.items() if run == row for r in rs]
    cells = [Cell(row, method, "ours", "tokenizer", None, text=info.get("type", "k-mer counts" if row == KMER_ROW else "–"))]
    if runs:
        encoder, tokenizer = runs[0].get("encoder_parameters"), runs[0].get("tokenizer_parameters", 0)
        gflops = [r["forward_gflops"] for r in runs if "forward_gflops" in r]
        params = f"{encoder / 1e6:.1f}+{tokenizer / 1e6:.1f}" if encoder is not None else OLDER_RESULT
        cells.append(Cell(row, method, "ours", "params_m", None, text=params))
        if gflops:
            cells.append(Cell(row, method, "ours", "flops_g", _mean_std(gflops)[0]))
        else:
            cells.append(Cell(row, method, "ours", "flops_g", None, text=OLDER_RESULT))
    return cells


def tokenizer_table(published: list[dict], results: Results, plan: dict) -> list[Cell]:
    """Table 1, on covid: token usage (%), linear-probe macro F1 and fine-tuned macro F1, per tokenizer."""
    cells = []
    by_key = {row["key"]: row for row in published}
    for row in published:
        for column in ("usage", "lin", "ft"):
            cells.append(Cell(row["key"], f"{row['method']} ({row['tokenizer']})", "published", column, _number(row[column])))
    runs_of = {}
    for run in _main_runs(plan):
        runs_of.setdefault(plan["runs"][run].get("tokenizer"), []).append(run)
    for name, info in plan["tokenizers"].items():
        if info.get("variant_of") or info.get("draw_of"):
            continue
        beside = by_key.get(PUBLISHED_OF_TYPE.get(info.get("type", "")), {})
        method = f"{name} ({info.get('type', '?')}; ours)"
        probe = results.probe.get((name, COVID))
        usage = Score([100 * probe["token_usage"]]) if probe and "token_usage" in probe else None
        lin = Score([100 * probe["test"]["f1"]]) if probe else None
        cells.append(_ours(name, method, "usage", usage, _number(beside.get("usage"))))
        cells.append(_ours(name, method, "lin", lin, _number(beside.get("lin"))))
        fine = [r for run in runs_of.get(name, []) for r in results.finetune.get((run, COVID), [])]
        ft = Score([100 * r["test"]["f1"] for r in fine]) if fine else None
        cells.append(_ours(name, method, "ft", ft, _number(beside.get("ft"))))
    floor = results.kmer.get(COVID)  # the classical floor: k-mer counts need no tokenizer or probe
    cells.append(_ours(KMER_ROW, KMER_METHOD, "ft", Score([100 * r["test"]["f1"] for r in floor]) if floor else None))
    return cells


def ablation_table(axis: str, published: list[dict], results: Results, plan: dict) -> list[Cell]:
    """Table 7 (a) code size, (b) code dim: Rec. and Lin. per tokenizer type; (c) mask ratio: H3 and CVC after fine-tuning."""
    key = next(iter(published[0]))  # code_size | code_dim | mask_ratio
    cells = []
    for row in published:
        for column, value in row.items():
            if column != key:
                cells.append(Cell(row[key], f"{key} {row[key]}", "published", column, _number(value)))
    published_by_value = {float(row[key]): row for row in published}
    if axis == "mask_ratio":
        variants = [(run, info) for run, info in plan["runs"].items() if _ablation_value(info, axis) is not None]
    else:
        variants = [(name, info) for name, info in plan["tokenizers"].items() if _ablation_value(info, axis) is not None]
    for name, info in variants:
        value = _ablation_value(info, axis)
        prefix = {"vq": "vqdna", "hrq": "hrq"}.get(info.get("type", ""))
        if prefix is None:
            continue
        beside = published_by_value.get(float(value), {})
        row, method = f"{_format_value(value)} {name}", f"{key} {_format_value(value)}: {name} (ours)"
        if axis == "mask_ratio":
            for dataset, column in zip(TABLE7C_DATASETS, ("h3", "cvc")):
                score = results.score(results.finetune.get((name, dataset)))
                cells.append(_ours(row, method, f"{prefix}_{column}", score, _number(beside.get(f"{prefix}_{column}"))))
        else:
            metrics = results.tokenizer.get(name)
            rec = Score([100 * metrics["reconstruction_accuracy"]]) if metrics else None
            probe = results.probe.get((name, COVID))
            lin = Score([100 * probe["test"]["f1"]]) if probe else None
            cells.append(_ours(row, method, f"{prefix}_rec", rec, _number(beside.get(f"{prefix}_rec"))))
            cells.append(_ours(row, method, f"{prefix}_lin", lin, _number(beside.get(f"{prefix}_lin"))))
    return cells


def _ablation_value(info: dict, axis: str):
    return next((a["value"] for a in info.get("ablation") or [] if a["axis"] == axis), None)


def _format_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- writing ---------------------------------------------------------------------------------------


def to_markdown(title: str, cells: list[Cell]) -> str:
    """The paper's layout: one line per (row, source), one column per column, both in first-seen order; "–" where no cell."""
    frame = pd.DataFrame(cells).assign(shown=[c.shown() for c in cells])
    methods = frame.groupby(["row", "source"], sort=False).method.last()  # each line's label, lines in first-seen order
    columns = frame.column.unique()
    shown = frame.pivot_table(index=["row", "source"], columns="column", values="shown", aggfunc="last")
    shown = shown.reindex(index=methods.index, columns=columns).fillna("–")
    lines = [f"### {title}", "", "| Method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {method} | " + " | ".join(line) + " |" for method, line in zip(methods, shown.to_numpy(), strict=True)]
    if any(c.note for c in cells):
        lines += ["", "\\* trained on a split the benchmark does not give (its dev split): not comparable with the published number."]
    return "\n".join(lines) + "\n"


def _csv_text(table: str, parts: dict[str, list[Cell]]) -> str:
    rows = [
        {
            **asdict(c), "table": table, "part": part,
            "value": c.text if c.text is not None and c.value is None else _rounded(c.value),
            "std": _rounded(c.std), "delta": _rounded(c.delta),
        }
        for part, cells in parts.items() for c in cells
    ]
    # object columns: every value written as Python prints it (seeds 2, not 2.0); None as an empty field
    return pd.DataFrame(rows, columns=CSV_COLUMNS, dtype=object).to_csv(index=False, lineterminator="\n")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)  # not Series.round: numpy rounds some halfway cases the other way


TITLES = {
    1: "Table 1: tokenizer efficiency on covid (usage %, linear-probe and fine-tuned macro F1 %)",
    2: "Table 2: average rank over the datasets of Tables 3-6 (rank_here: among every row with a result, ours included)",
    3: "Table 3: MCC (%) on promoter, core promoter and human TF datasets",
    4: "Table 4: mouse TF (MCC %), covid (F1 %), splice (MCC %), gRNA editing efficiency (Spearman %)",
    5: "Table 5: MCC (%) on epigenetic marks (yeast)",
    6: "Table 6: species classification top-1 accuracy (%) by input length",
}
ABLATION_TITLES = {
    "code_size": "Table 7a: codebook size (Rec. %: held-out reconstruction; Lin. %: linear probe macro F1 on covid)",
    "code_dim": "Table 7b: code dimension (Rec. %, Lin. %)",
    "mask_ratio": "Table 7c: MLM mask ratio (H3 MCC %, covid F1 %, after fine-tuning)",
}


def write_paper_tables(result_files: list[str | Path], plan: dict, published_dir: str | Path, output_dir: str | Path) -> dict[str, Path]:
    """``table{1..7}.csv`` and ``.md`` in ``output_dir``; returns the paths written."""
    results = pool_draws(read_results(result_files), plan)
    output_dir = Path(output_dir)
    dataset_tables = {n: dataset_table(n, read_published(published_dir, PUBLISHED_FILES[n]), results, plan) for n in (3, 4, 5, 6)}
    tables: dict[int, dict[str, list[Cell]]] = {
        1: {"": tokenizer_table(read_published(published_dir, PUBLISHED_FILES[1]), results, plan)},
        2: {"": average_rank_table(read_published(published_dir, PUBLISHED_FILES[2]), dataset_tables, results, plan)},
        **{n: {"": cells} for n, cells in dataset_tables.items()},
        7: {axis: ablation_table(axis, read_published(published_dir, name), results, plan) for axis, name in ABLATION_FILES.items()},
    }
    written = {}
    for number, parts in tables.items():
        if number == 7:
            markdown = "\n".join(to_markdown(ABLATION_TITLES[axis], cells) for axis, cells in parts.items())
        else:
            markdown = to_markdown(TITLES[number], parts[""])
        for suffix, text in (("csv", _csv_text(f"table{number}", parts)), ("md", markdown)):
            path = output_dir / f"table{number}.{suffix}"
            with atomic_path(path) as tmp:
                tmp.write_text(text)
            written[path.name] = path
    return written


# -- summary of every fine-tuning result -------------------------------------------------------------

SUMMARY_METRICS = ["accuracy", "f1", "mcc", "spearman", "mse"]
SUMMARY_COLUMNS = ["run", "dataset", "group", "metric", "seeds", "score_mean", "score_std", *SUMMARY_METRICS]


def summarize(metrics_files: list[str | Path]) -> list[dict]:
    """One row per (run, dataset): the dataset's metric and every test metric, mean ± std over seeds."""
    grouped = read_results(metrics_files).finetune
    rows = []
    for (run, dataset), results in sorted(grouped.items()):
        first = results[0]
        row = {"run": run, "dataset": dataset, "group": first["group"], "metric": first["metric"], "seeds": len(results)}
        row["score_mean"], row["score_std"] = _mean_std([r["test"][first["metric"]] for r in results])
        for name in SUMMARY_METRICS:
            values = [r["test"][name] for r in results if name in r["test"]]
            row[name] = "{:.4f} ± {:.4f}".format(*_mean_std(values)) if values else ""
        rows.append(row)
    return rows


def summary_markdown(rows: list[dict]) -> str:
    header = ["run", "dataset", "group", "metric", "score (mean ± std)", "seeds", *SUMMARY_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        score = f"{100 * r['score_mean']:.2f} ± {100 * r['score_std']:.2f}"
        cells = [r["run"], r["dataset"], r["group"], r["metric"], score, str(r["seeds"]), *(r[m] or "–" for m in SUMMARY_METRICS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(metrics_files: list[str | Path], csv_path: str | Path, markdown_path: str | Path) -> list[dict]:
    """The summary of every fine-tuning result (``results/tables/summary.{csv,md}``)."""
    finetune_files = [p for p in metrics_files if "finetune" in Path(p).parts]
    rows = summarize(finetune_files)
    with atomic_path(csv_path) as tmp:
        # object columns, as in _csv_text; CRLF, as this file has always been written (the csv module's default)
        pd.DataFrame(rows, columns=SUMMARY_COLUMNS, dtype=object).to_csv(tmp, index=False, lineterminator="\r\n")
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(summary_markdown(rows))
    return rows
