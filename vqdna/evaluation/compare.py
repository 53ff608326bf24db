"""Our methods compared: scores per dataset and method, paired bootstrap intervals of their differences, and what
each tokenizer and pretraining run measured.

Every method predicts the same test rows (row i of ``results/datasets/{dataset}/test.parquet``), so two methods
can be compared row by row: a bootstrap that resamples test rows, one resample shared by every seed of both
methods, keeps that pairing and gives the difference an interval that two separate mean ± std cannot.

Results are read from their contract paths, each ``predictions.parquet`` beside its ``metrics.json`` (columns
index, label, prediction, logits):

    results/finetune/{run}/{dataset}/seed{seed}/metrics.json     a fine-tuned run: method ``{run}``
    results/kmer_baseline/{dataset}/seed{seed}/metrics.json      the floor: method ``kmer_lr``
    results/probe/{tokenizer}/{dataset}/metrics.json             method ``probe:{tokenizer}`` (a draw's: its tokenizer's)
    results/tokenizers/{tokenizer}/metrics.json                  usage, perplexity, reconstruction per level
    results/pretrain/{run}/metrics.json                          held-out masked-code accuracy and its baselines

with the tables plan (``vqdna tables --plan``): each run's tokenizer, whether it is the random-init control,
its place in the config, and which run a draw remakes (``draws:``). A method's replicates are (draw, seed):
draw k of a run (``{run}_draw{k}``, its tokenizer and encoder made again from every seed + k) adds its
fine-tuning seeds to that run's, and two methods are paired replicate by replicate. Written
(:func:`write_comparison_tables`):

- ``comparison.csv``: one row per fact, columns :data:`COMPARISON_COLUMNS`; ``section`` says which:
  ``score`` (a method's test metric on a dataset, percent, mean and sample std over its replicates, counted in
  ``seeds``; a probe's replicates are its tokenizer's draws), ``tokenizer`` (usage and reconstruction percent,
  perplexity, per level; ``probe_{metric}``: each tokenizer's own probe per dataset, percent), ``pretrain``
  (held-out masked-code accuracy and the most-frequent-code baseline, percent, per level), ``tokens`` (tokens
  per nucleotide on a dataset's test split);
- ``paired.csv``: one row per (method A, method B, dataset or ``average``), columns :data:`PAIRED_COLUMNS`:
  A minus B in percentage points with its 95% percentile interval; ``beats`` when the interval lies above 0;
  ``draws`` and ``per_draw``: how many draws were paired and the difference in each (mean over its seeds,
  ``;``-separated), so a reader sees whether a draw of the tokenizer and encoder flips the sign (the interval
  resamples test rows, not draws). Pairs: every fine-tuned run minus the floor, then every two fine-tuned runs,
  A before B in the config;
- ``comparison.md`` and ``paired.md``: the same, readable.

A result that is missing is an empty CSV field and "–" in Markdown, never zero.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vqdna import VqdnaError
from vqdna.artifacts import atomic_path
from vqdna.metrics import classification_metrics, regression_metrics
from vqdna.result_files import OLDER_RESULT, read_result_file

FLOOR = "kmer_lr"
PROBE = "probe:"
CLASSIFICATION = ("accuracy", "f1", "mcc")
REGRESSION = ("spearman",)
REPLICATES = 1000
INTERVAL = (2.5, 97.5)  # percentiles of the replicates: a 95% interval
COMPARISON_COLUMNS = ["section", "dataset", "method", "tokenizer", "run", "level", "quantity", "value", "std", "seeds", "note"]
PAIRED_COLUMNS = [
    "method_a", "method_b", "dataset", "metric", "difference", "low", "high", "beats", "seeds_a", "seeds_b", "datasets", "replicates",
    "draws", "per_draw",
]
Replicate = tuple[int, int]  # (draw, fine-tuning seed)


# -- metrics of every bootstrap replicate at once --------------------------------------------------------


def resample_counts(rows: int, replicates: int, generator: np.random.Generator) -> np.ndarray:
    """(replicates, rows): how often each test row is drawn when ``rows`` rows are drawn with replacement.

    Counts rather than drawn indices: a metric of a resample is then a weighted metric of the rows,
    computed for every replicate at once, and one array serves every seed of every method.
    """
    counts = np.empty((replicates, rows), dtype=np.int32)
    for replicate in range(replicates):
        counts[replicate] = np.bincount(generator.integers(0, rows, rows), minlength=rows)
    return counts


def resampled_metric(labels: np.ndarray, predictions: np.ndarray, metric: str, counts: np.ndarray) -> np.ndarray:
    """``metric`` of each resample ``counts`` describes, (replicates,): what :mod:`vqdna.metrics` gives on it."""
    if metric in CLASSIFICATION:
        confusion = _confusions(labels, predictions, counts)
        return {"accuracy": _accuracy, "f1": _macro_f1, "mcc": _mcc}[metric](confusion)
    if metric in REGRESSION:
        return _spearman(labels, predictions, counts)
    raise VqdnaError(f"paired bootstrap: no resampled {metric!r}; it knows {', '.join(CLASSIFICATION + REGRESSION)}")


def metric_on_all_rows(labels: np.ndarray, predictions: np.ndarray, metric: str) -> float:
    """The metric as the stages wrote it into metrics.json."""
    scores = classification_metrics(labels, predictions) if metric in CLASSIFICATION else regression_metrics(labels, predictions)
    return scores[metric]


def _group_sums(counts: np.ndarray, groups: np.ndarray, size: int) -> np.ndarray:
    """(replicates, size): each replicate's counts summed over the rows of each group (``groups``: a group id per row)."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    sums = np.zeros((len(counts), size), dtype=np.float64)
    sums[:, sorted_groups[starts]] = np.add.reduceat(counts[:, order], starts, axis=1)
    return sums


def _confusions(labels: np.ndarray, predictions: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(replicates, classes, classes) confusion matrices, true class by predicted class."""
    classes, ids = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    true, predicted = ids[: len(labels)], ids[len(labels) :]
    size = len(classes)
    return _group_sums(counts, true * size + predicted, size * size).reshape(len(counts), size, size)


def _accuracy(confusion: np.ndarray) -> np.ndarray:
    return np.trace(confusion, axis1=1, axis2=2) / confusion.sum(axis=(1, 2))


def _macro_f1(confusion: np.ndarray) -> np.ndarray:
    """scikit-learn's macro F1 (zero_division=0): the mean over classes that occur among labels or predictions."""
    true_positive = np.diagonal(confusion, axis1=1, axis2=2)
    occurrences = confusion.sum(axis=2) + confusion.sum(axis=1)  # 2 tp + fp + fn
    f1 = np.divide(2 * true_positive, occurrences, out=np.zeros_like(occurrences), where=occurrences > 0)
    return f1.sum(axis=1) / (occurrences > 0).sum(axis=1)


def _mcc(confusion: np.ndarray) -> np.ndarray:
    """scikit-learn's multiclass Matthews correlation (Gorodkin's R_K), 0 where a margin is constant."""
    true, predicted = confusion.sum(axis=2), confusion.sum(axis=1)
    correct, rows = np.trace(confusion, axis1=1, axis2=2), confusion.sum(axis=(1, 2))
    covariance = correct * rows - (true * predicted).sum(axis=1)
    variance_predicted = rows**2 - (predicted * predicted).sum(axis=1)
    variance_true = rows**2 - (true * true).sum(axis=1)
    denominator = np.sqrt(variance_true * variance_predicted)
    return np.divide(covariance, denominator, out=np.zeros_like(covariance), where=variance_true * variance_predicted != 0)


def _spearman(labels: np.ndarray, predictions: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman's rho of each resample (ties ranked by their mean), 0 where either side is constant, as vqdna.metrics."""
    weights = counts.astype(np.float64)
    total = weights.sum(axis=1, keepdims=True)
    centred, constant = [], np.zeros(len(counts), dtype=bool)
    for values in (labels, predictions):
        ranks, distinct = _resampled_ranks(values, weights)
        centred.append(ranks - (weights * ranks).sum(axis=1, keepdims=True) / total)
        constant |= distinct == 1  # its centred ranks are rounding error, not exactly 0: decided by counting
    covariance = (weights * centred[0] * centred[1]).sum(axis=1)
    variance = (weights * centred[0] ** 2).sum(axis=1) * (weights * centred[1] ** 2).sum(axis=1)
    return np.divide(covariance, np.sqrt(variance), out=np.zeros_like(covariance), where=~constant)


def _resampled_ranks(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(replicates, rows): the rank every copy of a row has among the resampled values (ties: their mean rank);
    and (replicates,): how many distinct values each resample holds."""
    distinct, groups = np.unique(values, return_inverse=True)
    per_value = _group_sums(weights, groups, len(distinct))  # how many resampled rows hold each distinct value
    below = np.cumsum(per_value, axis=1) - per_value
    return (below + (per_value + 1) / 2)[:, groups], (per_value > 0).sum(axis=1)


# -- paired bootstrap ------------------------------------------------------------------------------------


@dataclass
class SeedScores:
    """One method on one dataset's test rows: its metric per (draw, seed) on all rows, and their mean in each bootstrap replicate."""

    seeds: list[Replicate]
    on_all_rows: list[float]
    replicates: np.ndarray  # (replicates,)

    @property
    def mean(self) -> float:
        return float(np.mean(self.on_all_rows))


@dataclass
class Difference:
    """A minus B (means over replicates): on all rows, per (draw, seed), per draw, and in each bootstrap replicate."""

    value: float
    per_seed: list[float]
    per_draw: list[float]  # mean over each draw's seeds, draws in order
    replicates: np.ndarray  # (replicates,)

    def summary(self) -> dict:
        low, high = np.percentile(self.replicates, INTERVAL)
        return {
            "difference": self.value, "low": float(low), "high": float(high), "replicates": len(self.replicates),
            "per_seed": self.per_seed, "per_draw": self.per_draw,
        }


def score_seeds(
    labels: np.ndarray, predictions: list[np.ndarray], metric: str, counts: np.ndarray, seeds: list[Replicate] | None = None
) -> SeedScores:
    """Every replicate's predictions on all rows and on each resample of ``counts`` (default: draw 0, seeds 0, 1, ...)."""
    replicates = np.mean([resampled_metric(labels, p, metric, counts) for p in predictions], axis=0)
    seeds = seeds or [(0, seed) for seed in range(len(predictions))]
    return SeedScores(seeds, [metric_on_all_rows(labels, p, metric) for p in predictions], replicates)


def difference(a: SeedScores, b: SeedScores) -> Difference:
    """Per (draw, seed): A's minus B's same replicate where both have the same ones, else minus B's mean (the floor,
    an encoder from elsewhere: one draw)."""
    if a.seeds == b.seeds:
        per_seed = [x - y for x, y in zip(a.on_all_rows, b.on_all_rows, strict=True)]
    else:
        per_seed = [x - b.mean for x in a.on_all_rows]
    by_draw: dict[int, list[float]] = {}
    for (draw, _), value in zip(a.seeds, per_seed, strict=True):
        by_draw.setdefault(draw, []).append(value)
    per_draw = [float(np.mean(by_draw[draw])) for draw in sorted(by_draw)]
    return Difference(a.mean - b.mean, per_seed, per_draw, a.replicates - b.replicates)


def mean_difference(differences: list[Difference]) -> Difference:
    """The mean over datasets; per seed (per draw) only where every dataset has the same number of them."""

    def mean_where_aligned(lists: list[list[float]]) -> list[float]:
        return [float(v) for v in np.mean(lists, axis=0)] if len({len(values) for values in lists}) == 1 else []

    return Difference(
        float(np.mean([d.value for d in differences])),
        mean_where_aligned([d.per_seed for d in differences]),
        mean_where_aligned([d.per_draw for d in differences]),
        np.mean([d.replicates for d in differences], axis=0),
    )


def dataset_generator(seed: int, dataset: str) -> np.random.Generator:
    """A dataset's own random stream: resampled independently of the other datasets, the same in every comparison."""
    return np.random.default_rng([seed, zlib.crc32(dataset.encode())])


def paired_bootstrap(
    labels: np.ndarray, predictions_a: list[np.ndarray], predictions_b: list[np.ndarray], metric: str, *, replicates: int = REPLICATES, seed: int = 0
) -> dict:
    """Mean over seeds of ``metric`` of A minus that of B, with a 95% percentile interval.

    A and B predict the same rows; B may have one array (the floor) for every seed of A. Each replicate
    draws the test rows with replacement once, for every seed of both methods.
    Returns ``{difference, low, high, replicates, per_seed, per_draw}`` (metric units, not percent).
    """
    counts = resample_counts(len(labels), replicates, np.random.default_rng(seed))
    return difference(score_seeds(labels, predictions_a, metric, counts), score_seeds(labels, predictions_b, metric, counts)).summary()


@dataclass
class PairedDataset:
    """One dataset's share of a paired comparison: its test labels, A's and B's predictions per seed, its metric."""

    labels: np.ndarray
    predictions_a: list[np.ndarray]
    predictions_b: list[np.ndarray]
    metric: str


def paired_bootstrap_average(datasets: Mapping[str, PairedDataset], *, replicates: int = REPLICATES, seed: int = 0) -> dict:
    """The mean over datasets of :func:`paired_bootstrap`'s statistic; each replicate resamples every dataset's rows
    independently (:func:`dataset_generator`). Same fields as :func:`paired_bootstrap`."""
    differences = []
    for name, paired in datasets.items():
        counts = resample_counts(len(paired.labels), replicates, dataset_generator(seed, name))
        a = score_seeds(paired.labels, paired.predictions_a, paired.metric, counts)
        differences.append(difference(a, score_seeds(paired.labels, paired.predictions_b, paired.metric, counts)))
    return mean_difference(differences).summary()


# -- results -------------------------------------------------------------------------------------------


@dataclass
class MethodResult:
    """One method on one dataset: each replicate's metrics.json, and the file it was read from."""

    method: str
    dataset: str
    tokenizer: str  # "" for the floor
    run: str  # "" unless fine-tuned
    by_seed: dict[Replicate, tuple[dict, Path]] = field(default_factory=dict)  # (draw, seed) ->

    @property
    def metric(self) -> str:
        return next(iter(self.by_seed.values()))[0]["metric"]

    @property
    def seeds(self) -> list[Replicate]:
        return sorted(self.by_seed)

    @property
    def scores(self) -> list[float]:
        """The test metric of each replicate, percent."""
        return [100 * self.by_seed[seed][0]["test"][self.metric] for seed in self.seeds]

    @property
    def prediction_files(self) -> list[Path] | None:
        """predictions.parquet of each seed; None unless every seed has one (older results have none)."""
        files = [self.by_seed[seed][1].with_name("predictions.parquet") for seed in self.seeds]
        return files if all(f.is_file() for f in files) else None

    def note(self, control: bool) -> str:
        """How the method departs from the plain protocol: the random-init control, full fine-tuning, a non-standard split."""
        results = [metrics for metrics, _ in self.by_seed.values()]
        notes = ["control"] if control else []
        notes += ["full"] if any(r.get("mode") == "full" for r in results) else []  # no mode: LoRA, as before modes
        notes += ["nonstandard"] if any(r.get("train_from") for r in results) else []
        return "; ".join(notes)


@dataclass
class ComparisonInputs:
    """Every result file, sorted by its contract path."""

    methods: dict[tuple[str, str], MethodResult] = field(default_factory=dict)  # (dataset, method) ->
    tokenizers: dict[str, dict] = field(default_factory=dict)  # tokenizer -> metrics.json
    pretrain: dict[str, dict] = field(default_factory=dict)  # run -> metrics.json
    probes: dict[tuple[str, str], dict] = field(default_factory=dict)  # (tokenizer, each draw's own, dataset) -> metrics.json
    results_root: Path = Path("results")  # the folder the files lie in: the datasets' test splits are there too

    @property
    def datasets(self) -> list[str]:
        return sorted({dataset for dataset, _ in self.methods})


def read_comparison_inputs(paths: list[str | Path], plan: dict) -> ComparisonInputs:
    """Sort result files by their contract path (see the module docstring), keeping each file's path: the
    predictions lie beside it."""
    inputs = ComparisonInputs()
    for result in (read_result_file(path, reader="the comparison tables") for path in paths):
        inputs.results_root = result.results_root
        entry = (result.metrics, result.path)
        if result.stage == "finetune":
            info = plan["runs"].get(result.run, {})
            run = info.get("draw_of") or result.run  # a draw's results are more replicates of the run it remakes
            tokenizer = plan["runs"].get(run, {}).get("tokenizer", "")
            _method(inputs, result.dataset, run, tokenizer, run).by_seed[(info.get("draw", 0), result.seed)] = entry
        elif result.stage == "kmer_baseline":
            _method(inputs, result.dataset, FLOOR, "", "").by_seed[(0, result.seed)] = entry
        elif result.stage == "probe":
            info = plan["tokenizers"].get(result.tokenizer, {})
            tokenizer = info.get("draw_of") or result.tokenizer  # each draw's probe, a replicate of its tokenizer's
            _method(inputs, result.dataset, PROBE + tokenizer, tokenizer, "").by_seed[(info.get("draw", 0), result.seed)] = entry
            inputs.probes[(result.tokenizer, result.dataset)] = result.metrics
        elif result.stage == "tokenizers":
            inputs.tokenizers[result.tokenizer] = result.metrics
        else:
            inputs.pretrain[result.run] = result.metrics
    return inputs


def _method(inputs: ComparisonInputs, dataset: str, method: str, tokenizer: str, run: str) -> MethodResult:
    return inputs.methods.setdefault((dataset, method), MethodResult(method, dataset, tokenizer, run))


def finetuned_runs(plan: dict, inputs: ComparisonInputs) -> list[str]:
    """The plan's fine-tuned runs in config order (their draws are replicates of them), then any other run with results (by name)."""
    methods = [run for run, info in plan["runs"].items() if not info.get("draw_of")]
    planned = sorted(methods, key=lambda run: (plan["runs"][run].get("order", len(plan["runs"])), run))
    found = sorted({m.run for m in inputs.methods.values() if m.run} - set(planned))
    return planned + found


def is_control(plan: dict, inputs: ComparisonInputs, run: str) -> bool:
    """The random-init control: `steps: 0` in the config, or in its pretraining metrics."""
    return bool(plan["runs"].get(run, {}).get("control")) or inputs.pretrain.get(run, {}).get("steps") == 0


def methods_in_order(plan: dict, inputs: ComparisonInputs) -> list[str]:
    """Fine-tuned runs, the floor, then the probes by tokenizer."""
    probes = sorted({m.method for m in inputs.methods.values() if m.method.startswith(PROBE)})
    return finetuned_runs(plan, inputs) + [FLOOR] + probes


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) in test-row order."""
    table = pq.read_table(path, columns=["index", "label", "prediction"]).to_pandas().sort_values("index")
    if not np.array_equal(table["index"].to_numpy(), np.arange(len(table))):
        raise VqdnaError(f"{path}: its index column is not the test rows 0..{len(table) - 1}; rerun the job that wrote it")
    return table["label"].to_numpy(), table["prediction"].to_numpy()


# -- comparison rows ---------------------------------------------------------------------------------------


def score_rows(plan: dict, inputs: ComparisonInputs) -> list[dict]:
    """One row per dataset and method, empty where the method has no result there."""
    rows = []
    for dataset in inputs.datasets:
        metric = next(m.metric for (d, _), m in inputs.methods.items() if d == dataset)
        for method in methods_in_order(plan, inputs):
            result = inputs.methods.get((dataset, method))
            row = {"section": "score", "dataset": dataset, "method": method, "quantity": metric}
            if method.startswith(PROBE):
                row["tokenizer"] = method.removeprefix(PROBE)
            elif method != FLOOR:
                row |= {"run": method, "tokenizer": plan["runs"].get(method, {}).get("tokenizer", "")}
            if result is not None:
                mean, std = _mean_std(result.scores)
                note = result.note(bool(result.run) and is_control(plan, inputs, result.run))
                row |= {"value": mean, "std": std, "seeds": len(result.scores), "note": note}
            rows.append(row)
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1), as tables.py prints them; one value's std is 0."""
    series = pd.Series(values, dtype=float)
    return float(series.mean()), float(series.std()) if len(series) > 1 else 0.0


def tokenizer_rows(plan: dict, inputs: ComparisonInputs) -> list[dict]:
    """Usage (%), perplexity and reconstruction (%) per level of every tokenizer; empty where it was not measured here."""
    of_runs = {info["tokenizer"] for info in plan["runs"].values() if info.get("tokenizer")}
    names = sorted(set(plan["tokenizers"]) | set(inputs.tokenizers) | of_runs)
    rows = []
    for name in names:
        measured = inputs.tokenizers.get(name, {})
        for level in measured.get("levels") or [{}]:
            for quantity, scale in (("usage", 100), ("perplexity", 1), ("reconstruction_accuracy", 100)):
                value = level.get(quantity)
                rows.append({
                    "section": "tokenizer", "tokenizer": name, "level": level.get("level"), "quantity": quantity,
                    "value": None if value is None else scale * value,
                })
        # on the held-out windows, for every tokenizer (the datasets' tokens table has only the fine-tuned ones)
        rows.append({"section": "tokenizer", "tokenizer": name, "level": None, "quantity": "tokens_per_nt", "value": measured.get("tokens_per_nt")})
    # each tokenizer's own probes, draws apart (the scores section pools a tokenizer's draws)
    for (name, dataset), metrics in sorted(inputs.probes.items()):
        rows.append({
            "section": "tokenizer", "tokenizer": name, "dataset": dataset, "quantity": f"probe_{metrics['metric']}",
            "value": 100 * metrics["test"][metrics["metric"]],
        })
    return rows


def draws_of(plan: dict, run: str) -> list[str]:
    """The run, then each of its draws in order."""
    drawn = sorted((info.get("draw", 0), name) for name, info in plan["runs"].items() if info.get("draw_of") == run)
    return [run] + [name for _, name in drawn]


def pretrain_rows(plan: dict, inputs: ComparisonInputs) -> list[dict]:
    """Held-out masked-code accuracy (%) of each fine-tuned run's pretraining (each draw's) and the most-frequent-code
    baseline, per level."""
    rows = []
    for run in (drawn for method in finetuned_runs(plan, inputs) for drawn in draws_of(plan, method)):
        info = plan["runs"].get(run, {})
        metrics = inputs.pretrain.get(info.get("encoder_run") or run, {})  # a borrowed encoder: its maker's pretraining
        note = "control" if is_control(plan, inputs, run) else ""
        if metrics and "heldout_baselines" not in metrics:  # written before pretraining measured its baselines
            note = f"{note}; {OLDER_RESULT}" if note else OLDER_RESULT
        quantities = {
            "masked_accuracy": metrics.get("heldout_masked_accuracy"),
            "most_frequent_baseline": metrics.get("heldout_baselines", {}).get("most_frequent"),
        }
        tokenizer = info.get("tokenizer", metrics.get("tokenizer", ""))
        for quantity, per_level in quantities.items():
            for level, value in enumerate(per_level or [None], start=1):
                rows.append({
                    "section": "pretrain", "run": run, "tokenizer": tokenizer,
                    "level": level if per_level else None, "quantity": quantity,
                    "value": None if value is None else 100 * value, "note": note,
                })
        budget = metrics.get("budget", {})  # the same nucleotides seen, and what they cost on each tokenizer
        for quantity in ("windows", "tokens", "train_tflops"):
            rows.append({
                "section": "pretrain", "run": run, "tokenizer": tokenizer, "level": None, "quantity": quantity,
                "value": budget.get(quantity), "note": note,
            })
    return rows


def token_rows(inputs: ComparisonInputs) -> list[dict]:
    """Tokens per nucleotide of each tokenizer on each dataset's test split (mean tokens / mean length cut to max_length)."""
    tokens: dict[tuple[str, str], list[float]] = {}
    max_length: dict[str, int] = {}
    for (dataset, _), result in inputs.methods.items():
        for metrics, _ in result.by_seed.values():
            if result.run and result.tokenizer and {"mean_test_tokens", "max_length"} <= metrics.keys():
                tokens.setdefault((result.tokenizer, dataset), []).append(metrics["mean_test_tokens"])
                max_length[dataset] = metrics["max_length"]
    lengths = {dataset: mean_test_length(inputs.results_root, dataset, limit) for dataset, limit in max_length.items()}
    return [
        {
            "section": "tokens", "tokenizer": tokenizer, "dataset": dataset, "quantity": "tokens_per_nt",
            "value": float(np.mean(values)) / lengths[dataset] if lengths[dataset] else None,
        }
        for (tokenizer, dataset), values in sorted(tokens.items())
    ]


def mean_test_length(results_root: Path, dataset: str, max_length: int) -> float | None:
    """Mean length (nt) of the test sequences as fine-tuning saw them, cut to ``max_length``; None if the split is not there."""
    path = results_root / "datasets" / dataset / "test.parquet"
    if not path.is_file():
        return None
    lengths = pc.utf8_length(pq.read_table(path, columns=["sequence"]).column("sequence")).to_numpy()
    return float(np.minimum(lengths, max_length).mean()) if len(lengths) else None


# -- paired rows -------------------------------------------------------------------------------------------


@dataclass
class PairedRow:
    """A minus B on one dataset, or their mean over the datasets both have (``dataset`` "average"); percentage points."""

    method_a: str
    method_b: str
    dataset: str
    metric: str
    difference: float | None = None
    low: float | None = None
    high: float | None = None
    beats: bool | None = None  # the interval lies above 0
    seeds_a: int | None = None
    seeds_b: int | None = None
    datasets: int | None = None
    replicates: int | None = None
    draws: int | None = None
    per_draw: str | None = None  # each draw's difference, ";"-separated (with more than one draw)

    @classmethod
    def measured(cls, a: str, b: str, dataset: str, metric: str, found: Difference, seeds: tuple[int | None, int | None], datasets: int) -> PairedRow:
        summary = found.summary()
        low, high = 100 * summary["low"], 100 * summary["high"]
        draws = len(found.per_draw) or None
        per_draw = ";".join(f"{100 * value:.4f}" for value in found.per_draw) if len(found.per_draw) > 1 else None
        return cls(a, b, dataset, metric, 100 * summary["difference"], low, high, low > 0, *seeds, datasets, summary["replicates"], draws, per_draw)


def pairs_in_order(plan: dict, inputs: ComparisonInputs) -> list[tuple[str, str]]:
    """Every fine-tuned run minus the floor, then every two fine-tuned runs, A before B in the config."""
    runs = finetuned_runs(plan, inputs)
    return [(run, FLOOR) for run in runs] + list(itertools.combinations(runs, 2))


def scored_methods(inputs: ComparisonInputs, methods: set[str], *, replicates: int, seed: int) -> dict[tuple[str, str], SeedScores]:
    """Every method with predictions on every dataset, scored on that dataset's resamples (shared by all its methods)."""
    scored = {}
    for dataset in inputs.datasets:
        found = {m: r for (d, m), r in inputs.methods.items() if d == dataset and m in methods and r.prediction_files}
        if not found:
            continue
        predictions = {m: [read_predictions(path) for path in r.prediction_files] for m, r in found.items()}
        labels, first = next((p[0][0], m) for m, p in predictions.items())
        for method, per_seed in predictions.items():
            if any(len(y) != len(labels) or not np.allclose(y, labels, rtol=0, atol=1e-6) for y, _ in per_seed):
                raise VqdnaError(
                    f"{dataset}: {method} and {first} predicted different test rows (their labels differ); "
                    f"rerun the older of the two on the current results/datasets/{dataset}/test.parquet"
                )
        counts = resample_counts(len(labels), replicates, dataset_generator(seed, dataset))
        for method, per_seed in predictions.items():
            result = found[method]
            scored[(dataset, method)] = score_seeds(labels, [p for _, p in per_seed], result.metric, counts, result.seeds)
    return scored


def paired_rows(plan: dict, inputs: ComparisonInputs, *, replicates: int = REPLICATES, seed: int = 0) -> list[PairedRow]:
    """Per pair: a row per dataset where either method has a result (empty unless both have predictions), then the average."""
    pairs = pairs_in_order(plan, inputs)
    scored = scored_methods(inputs, {m for pair in pairs for m in pair}, replicates=replicates, seed=seed)
    rows = []
    for a, b in pairs:
        found = []
        for dataset in inputs.datasets:
            if (dataset, a) not in inputs.methods and (dataset, b) not in inputs.methods:
                continue
            metric = (inputs.methods.get((dataset, a)) or inputs.methods[(dataset, b)]).metric
            if (dataset, a) in scored and (dataset, b) in scored:
                score_a, score_b = scored[(dataset, a)], scored[(dataset, b)]
                found.append((metric, difference(score_a, score_b)))
                seeds = (len(score_a.seeds), len(score_b.seeds))
                rows.append(PairedRow.measured(a, b, dataset, metric, found[-1][1], seeds, 1))
            else:
                rows.append(PairedRow(a, b, dataset, metric))
        metrics = {metric for metric, _ in found}
        average_metric = metrics.pop() if len(metrics) == 1 else "mixed" if metrics else ""
        if found:
            average = mean_difference([d for _, d in found])
            rows.append(PairedRow.measured(a, b, "average", average_metric, average, (None, None), len(found)))
        else:
            rows.append(PairedRow(a, b, "average", average_metric))
    return rows


# -- writing -----------------------------------------------------------------------------------------------


def comparison_markdown(plan: dict, rows: list[dict]) -> str:
    frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    frame[["tokenizer", "note"]] = frame[["tokenizer", "note"]].fillna("")
    return "\n".join([
        _scores_markdown(frame[frame.section == "score"]),
        _tokenizers_markdown(frame[frame.section == "tokenizer"]),
        _pretrain_markdown(frame[frame.section == "pretrain"]),
        _tokens_markdown(frame[frame.section == "tokens"]),
    ])


def _shown(value, std=None, seeds=None, digits: int = 2) -> str:
    if value is None or pd.isna(value):
        return "–"
    shown = f"{value:.{digits}f}"
    return shown + (f" ± {std:.{digits}f}" if seeds is not None and not pd.isna(seeds) and seeds > 1 else "")


def _table(title: str, header: list[str], lines: list[list[str]], footer: str = "") -> str:
    text = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    text += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(text + ([f"\n{footer}"] if footer else [])) + "\n"


def _method_notes(notes: pd.Series) -> str:
    """A method's notes over its datasets, each once ("control; full"); the non-standard split is starred per cell instead."""
    words = {word for note in notes if note for word in note.split("; ")} - {"nonstandard"}
    return "; ".join(sorted(words))


def _scores_markdown(scores: pd.DataFrame) -> str:
    """Datasets by methods; a method's notes (control, full fine-tuning) beside its name."""
    methods = list(dict.fromkeys(scores.method))
    notes = scores.dropna(subset=["value"]).groupby("method").note.agg(_method_notes)
    header = ["dataset", "metric"] + [f"{m} ({notes[m]})" if notes.get(m) else m for m in methods]
    lines = []
    for dataset, rows in scores.groupby("dataset", sort=False):
        by_method = rows.set_index("method")
        cells = [_shown(r.value, r.std, r.seeds) + ("*" if "nonstandard" in r.note else "") for r in by_method.loc[methods].itertuples()]
        lines.append([dataset, rows.quantity.iloc[0], *cells])
    footer = "\\* trained on a split the benchmark does not give (its dev split)." if scores.note.str.contains("nonstandard").any() else ""
    return _table("Test scores (%, mean ± sample std over seeds, and draws where there are several) per dataset and method", header, lines, footer)


def _per_level(rows: pd.DataFrame, quantity: str, digits: int = 2) -> str:
    values = rows[rows.quantity == quantity].sort_values("level").value
    return " / ".join(_shown(v, digits=digits) for v in values) if values.notna().any() else "–"


def _tokenizers_markdown(tokenizers: pd.DataFrame) -> str:
    """Held-out measurements per level, then the linear probe's score on each dataset probed."""
    probes = tokenizers[tokenizers.quantity.str.startswith("probe_")].sort_values("dataset")
    probe_score = {(row.tokenizer, row.dataset): _shown(row.value) for row in probes.itertuples()}
    probed = list(dict.fromkeys(probes.dataset))
    metric = {row.dataset: row.quantity.removeprefix("probe_") for row in probes.itertuples()}
    tokenizers = tokenizers[~tokenizers.quantity.str.startswith("probe_")]
    lines = [
        [name, _per_level(rows, "tokens_per_nt", 3), _per_level(rows, "usage"), _per_level(rows, "perplexity", 1), _per_level(rows, "reconstruction_accuracy")]
        + [probe_score.get((name, dataset), "–") for dataset in probed]
        for name, rows in tokenizers.groupby("tokenizer", sort=False)
    ]
    header = ["tokenizer", "tokens per nt", "usage % (per level)", "perplexity", "reconstruction %", *(f"probe {d} ({metric[d]} %)" for d in probed)]
    return _table("Tokenizers: held-out windows (levels separated by /) and linear probes", header, lines)


def _pretrain_markdown(pretrain: pd.DataFrame) -> str:
    lines = [
        [
            run, rows.tokenizer.iloc[0] or "–", rows.note.iloc[0], _per_level(rows, "masked_accuracy"),
            _per_level(rows, "most_frequent_baseline"), _per_level(rows, "windows", 0), _per_level(rows, "tokens", 0),
            _per_level(rows, "train_tflops", 1),
        ]
        for run, rows in pretrain.groupby("run", sort=False)
    ]
    header = [
        "run", "tokenizer", "note", "held-out masked-code accuracy %", "most-frequent-code baseline %",
        "windows seen", "tokens seen", "training TFLOPs",
    ]
    footer = "–: no pretraining metrics (not run yet, or an encoder from elsewhere)." if any("–" in line[3] for line in lines) else ""
    return _table("Pretraining: held-out masked-code accuracy per level", header, lines, footer)


def _tokens_markdown(tokens: pd.DataFrame) -> str:
    title = "Tokens per nucleotide on each test split (mean tokens / mean length cut to max_length)"
    if tokens.empty:
        return _table(title, ["tokenizer"], [])
    grid = tokens.pivot_table(index="tokenizer", columns="dataset", values="value", aggfunc="last", dropna=False)
    lines = [[name] + [_shown(v, digits=3) for v in values] for name, values in zip(grid.index, grid.to_numpy(), strict=True)]
    return _table(title, ["tokenizer", *grid.columns], lines)


def paired_markdown(rows: list[PairedRow], replicates: int) -> str:
    """One line per pair (A − B), one column per dataset (its metric beside it), then the mean over datasets;
    with more than one draw, the same grid again with each draw's difference."""
    frame = pd.DataFrame([asdict(r) for r in rows], columns=PAIRED_COLUMNS)
    frame["pair"] = frame.method_a + " − " + frame.method_b
    title = (
        f"Paired differences A − B (percentage points of each dataset's metric; [95% paired bootstrap interval], "
        f"{replicates} replicates; ✓: the interval lies above 0)"
    )
    frame["shown"] = [_difference_shown(r) for r in frame.itertuples()]
    text = _paired_grid(frame, title)
    if frame.per_draw.notna().any():
        frame["shown"] = [" / ".join(f"{float(v):+.2f}" for v in r.per_draw.split(";")) if isinstance(r.per_draw, str) else "–" for r in frame.itertuples()]
        title = (
            "Paired differences A − B in each draw (draw 0 / 1 / ..., mean over its seeds): the intervals above resample "
            "test rows, not draws of the tokenizer and encoder"
        )
        text += "\n" + _paired_grid(frame, title)
    return text


def _paired_grid(frame: pd.DataFrame, title: str) -> str:
    """Pairs by datasets of the ``shown`` column, the mean over datasets last."""
    per_dataset = frame[frame.dataset != "average"]
    metric = per_dataset.groupby("dataset").metric.first()
    average = frame[frame.dataset == "average"].set_index("pair")
    grid = per_dataset.pivot_table(index="pair", columns="dataset", values="shown", aggfunc="last")
    grid = grid.reindex(index=average.index, columns=metric.index).fillna("–")
    header = ["A − B", *(f"{dataset} ({metric[dataset]})" for dataset in metric.index), "mean over datasets", "datasets"]
    lines = [
        [pair, *cells, average.shown[pair], str(int(average.datasets[pair])) if pd.notna(average.datasets[pair]) else "–"]
        for pair, cells in zip(grid.index, grid.to_numpy(), strict=True)
    ]
    return _table(title, header, lines)


def _difference_shown(row) -> str:
    if pd.isna(row.difference):
        return "–"
    return f"{row.difference:+.2f} [{row.low:.2f}, {row.high:.2f}]" + (" ✓" if row.beats else "")


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    """Tidy CSV: object columns (seeds 3, not 3.0), None as an empty field, numbers to 4 decimals, LF line ends."""
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    for column in ("value", "std", "difference", "low", "high"):
        if column in frame:
            frame[column] = [None if v is None or pd.isna(v) else round(float(v), 4) for v in frame[column]]
    return frame.to_csv(index=False, lineterminator="\n")


def write_comparison_tables(
    result_files: list[str | Path], plan: dict, output_dir: str | Path, *, replicates: int = REPLICATES, seed: int = 0
) -> dict[str, Path]:
    """``comparison.{csv,md}`` and ``paired.{csv,md}`` in ``output_dir``; returns the paths written."""
    inputs = read_comparison_inputs(result_files, plan)
    comparison = score_rows(plan, inputs) + tokenizer_rows(plan, inputs) + pretrain_rows(plan, inputs) + token_rows(inputs)
    paired = paired_rows(plan, inputs, replicates=replicates, seed=seed)
    texts = {
        "comparison.csv": _csv_text(comparison, COMPARISON_COLUMNS),
        "comparison.md": comparison_markdown(plan, comparison),
        "paired.csv": _csv_text([asdict(r) for r in paired], PAIRED_COLUMNS),
        "paired.md": paired_markdown(paired, replicates),
    }
    written = {}
    for name, text in texts.items():
        path = Path(output_dir) / name
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        written[name] = path
    return written
