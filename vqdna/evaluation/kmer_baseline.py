"""The classical floor beside fine-tuning: bag of k-mers and a linear model.

Features are k-mer frequencies for k = 3..6 (configurable): per sequence and
per k, the count of each k-mer over A,C,G,T divided by the number of k-mers of
that k without N (k-mers containing N are dropped), so every k's block sums to
1 and sequences of different lengths compare. 4^3 + ... + 4^6 = 5440 columns,
kept as a scipy.sparse CSR matrix (a 70-nt sequence fills at most ~260 of
them). Classification: scikit-learn LogisticRegression (lbfgs, multinomial loss);
regression: Ridge. The frequencies go in as they are, not standardised: on GUE
core promoters both reach the same dev MCC (0.610 and 0.611), but unit-variance
scaling blows rare 6-mers up and the grid then takes five times as long to fit.
The regularisation strength is chosen on the dev split from
a small grid (the dataset's metric, as fine-tuning picks its best epoch),
fitted on train only, and the chosen model is scored once on test.

The fitting and the metrics.json / predictions.parquet layout are shared with
the linear probes (:mod:`vqdna.evaluation.probe`), so the tables code reads all
of them beside fine-tuned runs.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from vqdna import VqdnaError
from vqdna.artifacts import (
    SPLITS,
    atomic_dir,
    parquet_writer,
    with_metadata,
    write_json,
)
from vqdna.datasets.spec import DatasetSpec, read_split
from vqdna.genome import base_ids
from vqdna.metrics import classification_metrics, regression_metrics

log = logging.getLogger(__name__)

NUCLEOTIDES = 4  # A, C, G, T: base ids 0..3; id 4 is N (vqdna.genome.BASES)


# -- settings ------------------------------------------------------------------------------------------


@dataclass
class LinearSettings:
    """The linear model and its regularisation: a fixed ``C`` / ``alpha``, or the best of a grid on dev.

    The default grids suit standardised features (the probes); an evaluator
    whose features have another scale sets its own. Each spans several orders
    of magnitude so the chosen value is rarely at an edge, and
    metrics.json records every dev score, so an edge choice shows.
    """

    C: float | None = None  # LogisticRegression inverse regularisation; None: the best of C_grid on dev
    # Both ends are used: thousands of scaled, mostly-zero histogram columns want a strong penalty, while a
    # 64-wide mean code embedding on 10k GUE promoters still gains from C = 10 to 100 (dev MCC 0.548 -> 0.558).
    C_grid: list[float] = field(default_factory=lambda: [0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0])
    alpha: float | None = None  # Ridge penalty; None: the best of alpha_grid on dev
    alpha_grid: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0])
    # lbfgs iterations. A mean code embedding is ill-conditioned (condition number ~4500 for vq512 on GUE
    # promoters even standardised): at C >= 100 lbfgs needs 1200-1600 iterations; sparse k-mers take < 50.
    max_iter: int = 5000

    @classmethod
    def from_settings(cls, settings: dict | None, where: str):
        settings = dict(settings or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise VqdnaError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        options = cls(**settings)
        options.check(where)
        return options

    def check(self, where: str) -> None:
        for name in ("C", "alpha"):
            value, grid = getattr(self, name), getattr(self, f"{name}_grid")
            grid_ok = isinstance(grid, list) and grid and all(isinstance(g, int | float) and g > 0 for g in grid)
            if (value is not None and not (isinstance(value, int | float) and value > 0)) or (value is None and not grid_ok):
                raise VqdnaError(f"{where}: {name} must be > 0 (or {name}_grid a non-empty list of values > 0), got {value or grid!r}")
        if self.max_iter < 1:
            raise VqdnaError(f"{where}: max_iter must be >= 1, got {self.max_iter}")


@dataclass
class KmerBaselineSettings(LinearSettings):
    """Grids for raw frequencies (not standardised): a 6-mer seen once in a 70-mer has frequency 1/65, so
    useful penalties are weak. On GUE core promoters (42k train) the dev MCC peaks at C = 10, inside the grid."""

    k: list[int] = field(default_factory=lambda: [3, 4, 5, 6])
    C_grid: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0, 1000.0])
    alpha_grid: list[float] = field(default_factory=lambda: [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0])

    def check(self, where: str) -> None:
        super().check(where)
        if (
            not isinstance(self.k, list) or not self.k or len(set(self.k)) != len(self.k)
            or any(not isinstance(k, int) or not 1 <= k <= 8 for k in self.k)
        ):
            # 4^8 = 65536 columns per k is already far past what a bag of words needs
            raise VqdnaError(f"{where}: k must be distinct integers in 1..8, got {self.k!r}")


# -- features ------------------------------------------------------------------------------------------


def kmer_offsets(ks: list[int]) -> list[int]:
    """The first column of each k's block: blocks follow ``ks`` in order."""
    return [sum(NUCLEOTIDES**j for j in ks[:i]) for i in range(len(ks))]


def kmer_features(sequences: list[str], ks: list[int]) -> sp.csr_matrix:
    """Sequences -> (N, sum 4^k) k-mer frequencies, CSR float64; each k's block sums to 1 (0 when no k-mer is free of N).

    Sequences of one length are counted together (one sliding-window view per
    length), so the per-sequence Python work is only the base-id lookup.
    """
    offsets = kmer_offsets(ks)
    width = sum(NUCLEOTIDES**k for k in ks)
    rows, columns, values = [], [], []
    by_length: dict[int, list[int]] = {}
    for i, s in enumerate(sequences):
        by_length.setdefault(len(s), []).append(i)
    for length, members in by_length.items():
        ids = np.stack([base_ids(sequences[i]) for i in members]).astype(np.int64)  # (n, L)
        for k, offset in zip(ks, offsets):
            if length < k:
                continue
            windows = np.lib.stride_tricks.sliding_window_view(ids, k, axis=1)  # (n, L-k+1, k)
            valid = (windows < NUCLEOTIDES).all(-1)  # N is id 4: a k-mer containing it is dropped
            codes = windows @ (NUCLEOTIDES ** np.arange(k - 1, -1, -1))  # (n, L-k+1)
            per_row = valid.sum(1)
            row, position = np.nonzero(valid)
            rows.append(np.asarray(members)[row])
            columns.append(offset + codes[row, position])
            values.append(1.0 / per_row[row])
    if not rows:
        return sp.csr_matrix((len(sequences), width))
    matrix = sp.coo_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))), shape=(len(sequences), width)
    ).tocsr()  # duplicates (a k-mer seen twice) are summed here
    return matrix


# -- fitting -------------------------------------------------------------------------------------------


@dataclass
class LinearFit:
    """The chosen model and how it was chosen."""

    model: LogisticRegression | Ridge
    scaler: StandardScaler | None  # None: the features are used as they are
    parameter: str  # "C" or "alpha"
    value: float
    best_dev: float
    selection: list[dict]  # per grid value: the value, every dev metric, whether lbfgs converged


def _model(task: str, value: float, max_iter: int, seed: int) -> LogisticRegression | Ridge:
    if task == "regression":
        return Ridge(alpha=value, random_state=seed)
    # lbfgs minimises the multinomial (softmax) loss for any number of classes
    return LogisticRegression(C=value, solver="lbfgs", max_iter=max_iter, random_state=seed)


def predict_scores(fit: LinearFit, features, num_labels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, logits): the class index and (N, num_labels) logits, or the value and (N, 1).

    A binary LogisticRegression has one decision value z; logits (0, z) give
    the same softmax probabilities and argmax as a two-column head. A class
    the train split lacks gets logit -inf, so column k is always class k.
    """
    x = fit.scaler.transform(features) if fit.scaler is not None else features
    if isinstance(fit.model, Ridge):
        values = np.asarray(fit.model.predict(x), dtype=np.float64)
        return values, values[:, None]
    decision = np.asarray(fit.model.decision_function(x), dtype=np.float64)
    compact = np.stack([np.zeros_like(decision), decision], 1) if decision.ndim == 1 else decision
    classes = fit.model.classes_
    logits = np.full((len(compact), max(num_labels or 0, int(classes.max()) + 1)), -np.inf)
    logits[:, classes] = compact
    return classes[compact.argmax(1)], logits


def task_metrics(task: str, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return regression_metrics(labels, predictions) if task == "regression" else classification_metrics(labels, predictions)


def fit_on_dev(
    spec: DatasetSpec, options: LinearSettings, features: dict, labels: dict, seed: int, *, standardise: bool
) -> LinearFit:
    """Fit on train for each candidate strength, keep the best by the dataset's metric on dev (ties: the stronger penalty).

    ``standardise``: scale every column to unit variance with train's statistics
    (and centre it, unless the features are sparse: centring would densify them).
    """
    regression = spec.task == "regression"
    if not regression and len(np.unique(labels["train"])) < 2:
        raise VqdnaError(f"dataset {spec.dataset}: the train split has a single class; a classifier needs two or more")
    parameter = "alpha" if regression else "C"
    fixed = options.alpha if regression else options.C
    # strongest penalty first, so a tie keeps the simpler model
    grid = [fixed] if fixed is not None else sorted(options.alpha_grid if regression else options.C_grid, reverse=regression)
    scaler = StandardScaler(with_mean=not sp.issparse(features["train"])).fit(features["train"]) if standardise else None
    train = scaler.transform(features["train"]) if scaler is not None else features["train"]
    best, selection = None, []
    for value in grid:
        model = _model(spec.task, value, options.max_iter, seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(train, labels["train"])
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        candidate = LinearFit(model, scaler, parameter, value, 0.0, selection)
        dev_metrics = task_metrics(spec.task, labels["dev"], predict_scores(candidate, features["dev"])[0])
        candidate.best_dev = dev_metrics[spec.metric]
        selection.append({parameter: value, **{f"dev_{k}": v for k, v in dev_metrics.items()}, "converged": converged})
        log.info("%s %s=%g dev %s%s", spec.dataset, parameter, value, dev_metrics, "" if converged else " (not converged)")
        if best is None or candidate.best_dev > best.best_dev:
            best = candidate
    if not next(s["converged"] for s in selection if s[parameter] == best.value):
        log.warning("%s: lbfgs did not converge in %d iterations at %s=%g; raise max_iter", spec.dataset, options.max_iter, parameter, best.value)
    return best


# -- shared input and output ---------------------------------------------------------------------------


def read_splits(spec: DatasetSpec, dataset_dir: str | Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """split -> (sequences cut to ``max_length`` as fine-tuning cuts them, labels); a missing file is one line."""
    dataset_dir = Path(dataset_dir)
    out = {}
    for split in SPLITS:
        path = dataset_dir / f"{split}.parquet"
        if not path.is_file():
            raise VqdnaError(f"dataset {spec.dataset}: {path} not found; run prepare_dataset for it first")
        sequences, labels = read_split(path)
        if not sequences:
            raise VqdnaError(f"dataset {spec.dataset}: {path} has no rows")
        out[split] = ([s[: spec.max_length] for s in sequences], labels)
    return out


def result_record(spec: DatasetSpec, seed: int, method: str, test_metrics: dict, fit: LinearFit, train_seconds: float) -> dict:
    """metrics.json in fine-tuning's layout (dataset ... test, train_seconds), plus the method and the chosen penalty."""
    return {
        **spec.result_fields(),
        "seed": seed,
        "method": method,
        "test": test_metrics,
        "best_dev": fit.best_dev,
        fit.parameter: fit.value,
        "selection": fit.selection,
        "train_seconds": round(train_seconds, 2),
    }


def write_outputs(output_dir: str | Path, spec: DatasetSpec, result: dict, labels: np.ndarray, predictions: np.ndarray, logits: np.ndarray) -> None:
    """metrics.json and predictions.parquet (fine-tuning's columns: index, label, prediction, logits), all or nothing."""
    table = pa.table(
        {
            "index": pa.array(np.arange(len(labels)), pa.int64()),
            "label": pa.array(labels),
            "prediction": pa.array(predictions),
            "logits": pa.array(list(logits.astype(np.float32))),
        }
    )
    schema = with_metadata(table.schema, dataset=spec.dataset, method=result["method"])
    with atomic_dir(output_dir) as tmp:
        with parquet_writer(tmp / "predictions.parquet", schema) as writer:
            writer.write_table(table.replace_schema_metadata(schema.metadata))
        write_json(tmp / "metrics.json", result)


# -- the evaluator -------------------------------------------------------------------------------------


def kmer_baseline(
    spec: DatasetSpec, dataset_dir: Path, output_dir: Path, *, settings: dict | None = None, seed: int = 0
) -> dict:
    """Bag of k-mers + LogisticRegression / Ridge on ``dataset_dir``; writes metrics.json and predictions.parquet."""
    options = KmerBaselineSettings.from_settings(settings, f"kmer_baseline {spec.dataset}")
    data = read_splits(spec, dataset_dir)
    started = time.time()
    features = {split: kmer_features(sequences, options.k) for split, (sequences, _) in data.items()}
    feature_seconds = time.time() - started
    labels = {split: y for split, (_, y) in data.items()}
    log.info(
        "%s: %d train / %d dev / %d test, %d k-mer columns (k=%s), %.1f s",
        spec.dataset, *(len(labels[s]) for s in SPLITS), features["train"].shape[1], options.k, feature_seconds,
    )
    started = time.time()
    fit = fit_on_dev(spec, options, features, labels, seed, standardise=False)
    train_seconds = time.time() - started
    predictions, logits = predict_scores(fit, features["test"], spec.num_labels)
    test_metrics = task_metrics(spec.task, labels["test"], predictions)
    result = result_record(spec, seed, "kmer_lr", test_metrics, fit, train_seconds)
    result |= {"k": options.k, "max_iter": options.max_iter, "feature_seconds": round(feature_seconds, 2)}
    log.info("%s kmer_lr test %s", spec.dataset, test_metrics)
    write_outputs(output_dir, spec, result, labels["test"], predictions, logits)
    return result

