"""The workflow's plan: the config and its two sheets compiled into what Snakemake runs.

In: the config as Snakemake loaded it (a dict; left unchanged) and the folder of
the JSON Schemas (``workflow/schemas``). A copy of the config is validated
against ``config.schema.yaml`` with the schema's defaults filled in, as
Snakemake's ``validate`` does; the genome and datasets sheets it names (TSV
files) are read, each cell typed by its column's type in the sheet's schema,
and validated row by row.

Out: a frozen :class:`Plan`: genomes, archives, datasets (and the datasets
skipped, with why), tokenizers and runs with their sweep variants (Table 7:
``variant_of`` and the ablation points), the fine-tuning, probe and k-mer
jobs, what ``vqdna tables`` needs to know of the config, the inputs of each
stage and the files a plain ``snakemake`` builds. A mistake in the config or
a sheet is a one-line :class:`~vqdna.VqdnaError` naming the config key or the
sheet line.

Nothing here imports Snakemake: ``workflow/rules/common.smk`` reads the plan
through thin input functions, and tests build plans directly.
"""

from __future__ import annotations

import copy
import csv
import json
import re
import shlex
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema
import yaml

from vqdna import VqdnaError
from vqdna.compiling import CompileSettings
from vqdna.sources import check_scheme, is_local, parse_archive_source

SPLITS = ("train", "dev", "test")
# The paper's tables, our methods compared (with paired bootstrap intervals), and the summary of every result.
TABLE_FILES = tuple(f"table{n}" for n in range(1, 8)) + ("comparison", "paired", "summary")

# Keys of a `tokenizers:` entry that only change how it is measured
# (vqdna.tokenizer.evaluate.TokenizerEvalConfig): they go to evaluate_tokenizer,
# never to train_tokenizer, so changing them does not retrain anything.
_TOKENIZER_EVALUATION_KEYS = frozenset({"heldout_windows", "probe_windows"})
# How many GPUs and nodes a run uses: resources, results do not depend on them.
_LAUNCH_KEYS = frozenset({"gpus", "nodes"})
# Keys of a `runs:` entry that belong to fine-tuning, not pretraining: changing one
# reruns that run's fine-tuning jobs only.
_RUN_FINETUNE_KEYS = frozenset({"finetune"})
# Columns of the datasets sheet that change the prepared dataset (the rest are
# fine-tuning settings, read by the finetune rule).
_DATASET_BUILD_KEYS = frozenset(
    {
        "dataset", "task", "num_labels", "source", "sha256", "genomes", "kind", "train_from", "max_length",
        "samples_per_genome", "max_train_samples", "max_n_fraction",
        "split_samples", "train_chromosomes", "dev_chromosomes", "test_chromosomes",
    }
)
# Columns of the datasets sheet only the fine-tuning optimiser reads.
_OPTIMISER_KEYS = frozenset({"epochs", "batch_size", "learning_rate", "warmup_steps"})
_METRICS_OF_TASK = MappingProxyType(
    {"classification": frozenset({"mcc", "f1", "accuracy"}), "regression": frozenset({"spearman"})}
)

Cell = str | int | float | None

# Names of archives, tokenizers, runs, sweep axes and sweep variants become folders under results/ and logs/.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
NAME_RULE = "is not allowed: a name starts with a letter or digit and holds only letters, digits, '_', '.' and '-'"


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: a param whose text changes only when its content does."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> dict:
    """JSON's fallback for the plan's read-only mappings."""
    if isinstance(value, MappingProxyType):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _frozen(value: Any) -> Any:
    """A read-only deep copy of a YAML value: mappings become MappingProxyType, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _frozen(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return value


# ---- what the plan holds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Genome:
    """A row of the genome sheet."""

    name: str
    source: str
    sha256: str  # empty: recorded on first download
    assembly_report: str  # empty: none
    assembly_report_sha256: str
    # The local file download_genome reads, an input of its job (editing it reruns the download); None for
    # a URL, and for a local file since removed from which the genome here was built (nothing to redo).
    source_file: str | None


@dataclass(frozen=True)
class Archive:
    """An `archives:` entry: a zip fetched once and unpacked into resources/archives/NAME."""

    name: str
    source: str
    sha256: str


@dataclass(frozen=True)
class Dataset:
    """A row of the datasets sheet whose data can be had."""

    name: str
    cells: Mapping[str, Cell]  # the row, typed; an empty cell of a numeric column is None
    genomes: tuple[str, ...]  # genome-tiles and species sets: their genomes, in label order
    archive: str | None  # the NAME of an `archive:NAME/FOLDER` source

    @property
    def source(self) -> str:
        return self.cells.get("source") or ""

    @property
    def is_species(self) -> bool:
        return self.cells.get("kind") == "species"

    @property
    def trains_on_dev(self) -> bool:
        """GUE folders without train.csv: trained on 90% of dev.csv."""
        return self.cells.get("train_from") == "dev"

    @property
    def max_length(self) -> int:
        """Sequences are cut to this many nt before they are encoded (dataset tokens, fine-tuning, the floor)."""
        return int(self.cells["max_length"])

    @property
    def build_spec(self) -> dict[str, Cell]:
        """The cells that build the dataset (fine-tuning settings are left out)."""
        return {k: v for k, v in self.cells.items() if k in _DATASET_BUILD_KEYS and v not in ("", None)}

    @property
    def runs(self) -> tuple[str, ...]:
        """The `runs` cell: the runs that fine-tune this dataset; empty: every run of `finetune.runs`."""
        return tuple(name.strip() for name in (self.cells.get("runs") or "").split(",") if name.strip())

    @property
    def finetune_spec(self) -> dict[str, Cell]:
        return {k: v for k, v in self.cells.items() if k not in ("description", "runs") and v not in ("", None)}

    @property
    def scoring_spec(self) -> dict[str, Cell]:
        """The floor's and the probes' spec: the fine-tuning optimiser's cells are left out, so changing
        a dataset's epochs or learning rate reruns its fine-tunings only."""
        return {k: v for k, v in self.finetune_spec.items() if k not in _OPTIMISER_KEYS}


@dataclass(frozen=True)
class SkippedDataset:
    name: str
    reason: str


@dataclass(frozen=True)
class AblationPoint:
    """One value of a sweep (Table 7): the axis and the value of its config key."""

    axis: str
    value: Any

    def as_json(self) -> dict[str, Any]:
        return {"axis": self.axis, "value": self.value}


@dataclass(frozen=True)
class Tokenizer:
    """A `tokenizers:` entry, or a sweep variant of one."""

    name: str
    settings: Mapping[str, Any]  # the config entry; a variant's is its base's with the swept key set
    type: str  # vq, hrq, kmer, bpe or char; of a folder given by `path`, what its config.json says ("" if nothing)
    path: str | None  # a tokenizer folder made elsewhere, used as it is; None: trained by the workflow
    model_files: tuple[str, ...]  # those of the path's model.safetensors and tokenizer.json that exist
    variant_of: str | None
    ablation: tuple[AblationPoint, ...]
    draw: int = 0  # 0: the config's own; k: made again with every seed + k (`draws:`)
    draw_of: str | None = None  # the config's entry a draw remakes

    @property
    def windows(self) -> list[str]:
        """The window files it trains and is evaluated on."""
        return [f"results/windows/{genome}.parquet" for genome in self.settings["train_genomes"]]

    @property
    def training_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.settings.items() if k not in _TOKENIZER_EVALUATION_KEYS}

    @property
    def evaluation_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.settings.items() if k in _TOKENIZER_EVALUATION_KEYS | {"seed"}}

    @property
    def inputs(self) -> dict[str, str | list[str]]:
        """The files that make the tokenizer (their hash is its identity); measurements are not among them.

        A trained tokenizer's folder is rewritten as a whole, so its config.json
        stands for it; a folder given by `path` is the user's, so each model file
        is an input and editing one reruns what used it.
        """
        if self.path is None:
            return {"tokenizer_config": f"results/tokenizers/{self.name}/config.json"}
        return {"tokenizer_config": str(Path(self.path) / "config.json"), "tokenizer_model": list(self.model_files)}


@dataclass(frozen=True)
class Run:
    """A `runs:` entry (an encoder pretrained here or given by `pretrained`), or a sweep variant of one."""

    name: str
    settings: Mapping[str, Any]  # the config entry; a variant's is its base's with the swept key set
    tokenizer: str
    pretrained: str | None  # an encoder folder made elsewhere, fine-tuned as it is; None: pretrained by the workflow
    encoder_run: str | None  # the run whose pretraining made its encoder: itself, another run here, None (from elsewhere)
    variant_of: str | None
    ablation: tuple[AblationPoint, ...]
    draw: int = 0  # 0: the config's own; k: made again with every seed + k (`draws:`)
    draw_of: str | None = None  # the config's run a draw remakes

    @property
    def gpus(self) -> int:
        """GPUs (and processes) per node of the pretraining job."""
        return self.settings.get("gpus", 1)

    @property
    def nodes(self) -> int:
        return self.settings.get("nodes", 1)

    @property
    def model_settings(self) -> dict[str, Any]:
        """The entry less its launch keys and its fine-tuning keys: what pretraining reads."""
        return {k: v for k, v in self.settings.items() if k not in _LAUNCH_KEYS | _RUN_FINETUNE_KEYS}

    @property
    def weights(self) -> str:
        """The encoder fine-tuning starts from."""
        return str(Path(self.pretrained or f"results/pretrain/{self.name}") / "model.safetensors")


@dataclass(frozen=True)
class FinetuneJob:
    run: str
    dataset: str
    seeds: tuple[int, ...] = (0,)  # the finetune block's seeds; in draw k each + k

    def metrics(self, seed: int) -> str:
        return f"results/finetune/{self.run}/{self.dataset}/seed{seed}/metrics.json"


@dataclass(frozen=True)
class ProbeJob:
    tokenizer: str
    dataset: str

    @property
    def metrics(self) -> str:
        return f"results/probe/{self.tokenizer}/{self.dataset}/metrics.json"


@dataclass(frozen=True)
class AnalysisJob:
    """The codebook analysis (Figure 4) of one learned tokenizer on one classification dataset."""

    tokenizer: str
    dataset: str

    @property
    def summary(self) -> str:
        return f"results/codebook_analysis/{self.tokenizer}/{self.dataset}/summary.json"


@dataclass(frozen=True)
class KmerJob:
    dataset: str

    @property
    def metrics(self) -> str:
        return f"results/kmer_baseline/{self.dataset}/seed0/metrics.json"


@dataclass(frozen=True)
class Plan:
    """What the workflow builds, and from what: made by :func:`build_plan`, read by the rules' input functions."""

    mirror: str
    windows: Mapping[str, Any]  # the `windows:` keys the config sets
    genomes: Mapping[str, Genome]
    archives: Mapping[str, Archive]
    datasets: Mapping[str, Dataset]  # in sheet order
    skipped_datasets: tuple[SkippedDataset, ...]
    tokenizers: Mapping[str, Tokenizer]
    runs: Mapping[str, Run]
    finetune_jobs: tuple[FinetuneJob, ...]
    finetune_seeds: tuple[int, ...]
    finetune_settings: Mapping[str, Any]  # the `finetune:` block less runs and seeds
    probe_jobs: tuple[ProbeJob, ...]
    probe_settings: Mapping[str, Any]
    kmer_jobs: tuple[KmerJob, ...]
    kmer_settings: Mapping[str, Any]
    analysis_jobs: tuple[AnalysisJob, ...]
    analysis_settings: Mapping[str, Any]
    compile: CompileSettings = CompileSettings()  # read by the jobs at run time from the environment, never a param

    @property
    def unverified_plain_downloads(self) -> list[str]:
        """Genomes fetched over plain http:// or ftp:// with no sha256 in the sheet: nothing checks what arrives
        (trust on first use: the sha256 of the first download is recorded and checked from then on)."""
        return [
            name for name, genome in self.genomes.items()
            if urllib.parse.urlparse(genome.source).scheme in ("http", "ftp") and not genome.sha256
        ]

    @property
    def window_flags(self) -> str:
        """The `windows:` keys as `vqdna windows` flags (unset keys take the package defaults)."""
        flags = []
        for key, value in sorted(self.windows.items()):
            flag = f"--{key.replace('_', '-')}"
            if isinstance(value, bool):
                flags += [flag] if value else []
            else:
                flags += [flag, str(value)]
        return " ".join(flags)

    @property
    def genomes_with_reports(self) -> list[str]:
        return [name for name, genome in self.genomes.items() if genome.assembly_report]

    @property
    def trained_tokenizers(self) -> list[str]:
        """Tokenizers the workflow trains (the others are folders given by `path`)."""
        return sorted(name for name, tokenizer in self.tokenizers.items() if tokenizer.path is None)

    @property
    def pretrained_runs(self) -> list[str]:
        """Runs the workflow pretrains (the others are encoder folders given by `pretrained`)."""
        return sorted(name for name, run in self.runs.items() if run.pretrained is None)

    @property
    def tokenized_tokenizers(self) -> list[str]:
        """Every genome is tokenized by the tokenizers runs pretrain on (all of them when no run is configured).

        Baselines that only serve Table 1's probe, and sweep variants, tokenize datasets, not genomes.
        """
        used = {run.tokenizer for run in self.runs.values()}
        variants = {name for name, tokenizer in self.tokenizers.items() if tokenizer.variant_of}
        return sorted(used or set(self.tokenizers) - variants)

    def pretrain_inputs(self, run: str) -> dict[str, str | list[str]]:
        tokenizer = self.runs[run].tokenizer
        genomes = self.runs[run].settings["pretrain_genomes"]
        return {
            **self.tokenizers[tokenizer].inputs,
            "tokens": [f"results/tokens/{tokenizer}/{genome}.parquet" for genome in genomes],
        }

    def dataset_inputs(self, name: str) -> list[str]:
        """Windows of a genome-tiles set's genomes, the indexed genomes (and assembly reports) of a
        species set, the unpacked archive, or the CSVs of a local GUE folder."""
        dataset = self.datasets[name]
        if dataset.is_species:
            indexed = [f"resources/genomes/{g}.fa.gz{suffix}" for g in dataset.genomes for suffix in ("", ".fai", ".gzi")]
            reported = [g for g in dataset.genomes if self.genomes[g].assembly_report]
            return indexed + [f"resources/genomes/{g}.assembly_report.txt" for g in reported]
        if dataset.archive:
            return [f"resources/archives/{dataset.archive}"]
        if dataset.source and is_local(dataset.source):
            splits = [split for split in SPLITS if not (dataset.trains_on_dev and split == "train")]
            return [f"{dataset.source.rstrip('/')}/{split}.csv" for split in splits]
        return [f"results/windows/{genome}.parquet" for genome in dataset.genomes]

    def dataset_genome_args(self, name: str) -> str:
        """--windows of a genome-tiles set, or --fastas and --assembly-reports of a species set."""
        dataset = self.datasets[name]
        if not dataset.genomes:
            return ""
        if not dataset.is_species:
            return "--windows " + " ".join(shlex.quote(f"{g}=results/windows/{g}.parquet") for g in dataset.genomes)
        fastas = [shlex.quote(f"{g}=resources/genomes/{g}.fa.gz") for g in dataset.genomes]
        reports = [
            shlex.quote(f"{g}=resources/genomes/{g}.assembly_report.txt")
            for g in dataset.genomes
            if self.genomes[g].assembly_report
        ]
        return f"--fastas {' '.join(fastas)}" + (f" --assembly-reports {' '.join(reports)}" if reports else "")

    def dataset_tokens_inputs(self, tokenizer: str, dataset: str) -> dict[str, str | list[str]]:
        return {**self.tokenizers[tokenizer].inputs, "dataset": _dataset_files(dataset)}

    def finetune_inputs(self, run: str, dataset: str) -> dict[str, str | list[str]]:
        """The tokenizer (its hash is checked), the encoder, and the dataset as that tokenizer's codes."""
        tokenizer = self.runs[run].tokenizer
        return {
            **self.tokenizers[tokenizer].inputs,
            "pretrained": self.runs[run].weights,
            "dataset": _dataset_tokens_files(tokenizer, dataset),
        }

    def finetune_settings_of(self, run: str) -> dict[str, Any]:
        """The `finetune:` block less runs and seeds, with the keys the run's own `finetune:` sets in their place."""
        return {**self.finetune_settings, **self.runs[run].settings.get("finetune", {})}

    def probe_inputs(self, tokenizer: str, dataset: str) -> dict[str, str | list[str]]:
        return {**self.tokenizers[tokenizer].inputs, "dataset": _dataset_tokens_files(tokenizer, dataset)}

    def analysis_inputs(self, tokenizer: str, dataset: str) -> dict[str, str | list[str]]:
        """The tokenizer, its codes of the dataset, and the dataset itself (class names, genome coordinates)."""
        return {
            **self.tokenizers[tokenizer].inputs,
            "tokens": _dataset_tokens_files(tokenizer, dataset),
            "dataset": _dataset_files(dataset),
        }

    @property
    def table_inputs(self) -> dict[str, list[str]]:
        """Every metrics.json the tables read; the predictions.parquet beside each come from the same jobs."""
        finetuned = {job.run for job in self.finetune_jobs}
        return {
            "finetune": [job.metrics(seed) for job in self.finetune_jobs for seed in job.seeds],
            "kmer": [job.metrics for job in self.kmer_jobs],
            "probe": [job.metrics for job in self.probe_jobs],
            "tokenizers": [f"results/tokenizers/{name}/metrics.json" for name in self.trained_tokenizers],
            # held-out masked-code accuracy beside each fine-tuned run's scores (an encoder from elsewhere has none)
            "pretrain": [
                f"results/pretrain/{name}/metrics.json"
                for name in sorted({self.runs[run].encoder_run for run in finetuned} - {None})
            ],
        }

    @property
    def draw_of(self) -> dict[str, str]:
        """Every run and tokenizer a draw made -> the config's entry it remakes (the plots pool them)."""
        made = [*self.runs.values(), *self.tokenizers.values()]
        return {entry.name: entry.draw_of for entry in made if entry.draw_of}

    def tokenizer_curves(self, tokenizer: str) -> str | None:
        """A learned tokenizer's training curves (written with its training.json); baselines are built, not trained."""
        return f"results/tokenizers/{tokenizer}/curves.csv" if self.tokenizers[tokenizer].type in ("vq", "hrq") else None

    def finetuning_plot_inputs(self, dataset: str) -> dict[str, list[str]]:
        """Every fine-tuning result on the dataset (runs x seeds), its k-mer floor and its probes."""
        return {
            "finetune": [job.metrics(seed) for job in self.finetune_jobs if job.dataset == dataset for seed in job.seeds],
            "kmer": [job.metrics for job in self.kmer_jobs if job.dataset == dataset],
            "probe": [job.metrics for job in self.probe_jobs if job.dataset == dataset],
        }

    @property
    def plots(self) -> list[str]:
        """The report's figures and tables (workflow/rules/plots.smk); runtime.html comes last, after all of them."""
        return (
            [f"results/plots/tokenizers/{name}.png" for name in self.trained_tokenizers]
            + [f"results/plots/pretraining/{name}.png" for name in self.pretrained_runs if self.runs[name].settings.get("steps", 1)]
            + [f"results/plots/finetuning/{name}.png" for name in sorted({job.dataset for job in self.finetune_jobs})]
            + ["results/plots/tables.html"]
        )

    @property
    def tables_plan(self) -> dict[str, dict]:
        """What `vqdna tables` needs to know of the config: each run's tokenizer and type, sweep values,
        whether it is the random-init control (`steps: 0`) and its own fine-tuning mode; ``order``: its place
        in the config, which the JSON's sorted keys would otherwise lose (paired comparisons are A minus B,
        A first in the config); ``draw_of`` and ``draw``: the config's run a draw remakes, and which draw (its
        results are more replicates of that run)."""
        finetuned = {job.run for job in self.finetune_jobs}
        in_config_order = [name for name in self.runs if name in finetuned]  # sweep variants after the config's own runs
        return {
            "runs": {
                name: {
                    "tokenizer": self.runs[name].tokenizer,
                    "type": self.tokenizers[self.runs[name].tokenizer].type,
                    "variant_of": self.runs[name].variant_of,
                    "ablation": [point.as_json() for point in self.runs[name].ablation],
                    "control": self.runs[name].settings.get("steps") == 0,
                    "encoder_run": self.runs[name].encoder_run,
                    "finetune_mode": self.finetune_settings_of(name).get("mode"),
                    "draw_of": self.runs[name].draw_of,
                    "draw": self.runs[name].draw,
                    "order": order,
                }
                for order, name in enumerate(in_config_order)
            },
            "tokenizers": {
                name: {
                    "type": tokenizer.type,
                    "variant_of": tokenizer.variant_of,
                    "ablation": [point.as_json() for point in tokenizer.ablation],
                    "draw_of": tokenizer.draw_of,
                    "draw": tokenizer.draw,
                }
                for name, tokenizer in self.tokenizers.items()
            },
        }

    @property
    def final_outputs(self) -> list[str]:
        """Everything `snakemake` builds by default: tokens of every genome, tokenizer metrics, encoders, tables."""
        return (
            [f"results/tokens/{t}/{g}.parquet" for t in self.tokenized_tokenizers for g in sorted(self.genomes)]
            + [f"results/tokenizers/{name}/metrics.json" for name in self.trained_tokenizers]
            + [f"results/pretrain/{name}/model.safetensors" for name in self.pretrained_runs]
            + [f"results/tables/{table}.{suffix}" for table in TABLE_FILES for suffix in ("csv", "md")]
            + [job.summary for job in self.analysis_jobs]
            + self.plots
            + ["results/plots/runtime.html"]
        )


def _dataset_files(dataset: str) -> list[str]:
    return [f"results/datasets/{dataset}/{split}.parquet" for split in SPLITS]


def _dataset_tokens_files(tokenizer: str, dataset: str) -> list[str]:
    return [f"results/dataset_tokens/{tokenizer}/{dataset}/{split}.parquet" for split in SPLITS]


# ---- building it -----------------------------------------------------------------------------------


def build_plan(config: Mapping[str, Any], schemas: Path) -> Plan:
    """The plan of `config` (as loaded, not yet validated), checked against the schemas in `schemas`."""
    config = _validated(config, _load_schema(schemas / "config.schema.yaml"))
    genome_sheet, dataset_sheet = config["genomes"], config["datasets"]
    genome_rows = _read_sheet(genome_sheet, _load_schema(schemas / "genomes.schema.yaml"), "genome")
    genomes = {name: _genome(row, genome_sheet) for name, row in genome_rows.items()}
    rows = _read_sheet(dataset_sheet, _load_schema(schemas / "datasets.schema.yaml"), "dataset")
    for name, row in rows.items():
        check_scheme(row.get("source") or "", f"{dataset_sheet}: dataset {name}")
    usable = {name: row for name, row in rows.items() if not _missing_local_source(row)}
    skipped = tuple(_skipped(name, row) for name, row in rows.items() if name not in usable)

    tokenizer_sweeps = _expand_sweeps(config["ablations"], "tokenizers", config["tokenizers"])
    run_sweeps = _expand_sweeps(config["ablations"], "runs", config["runs"])
    finetune = config["finetune"]
    for name in finetune["runs"]:
        if name not in run_sweeps.entries:
            raise VqdnaError(f"finetune.runs: no run named {name!r}")
    draws = _expand_draws(config["draws"], tokenizer_sweeps.entries, run_sweeps.entries, finetune["runs"])
    tokenizers = {
        name: _tokenizer(name, entry, tokenizer_sweeps, genomes, genome_sheet, draws.tokenizer_of.get(name))
        for name, entry in draws.tokenizers.items()
    }
    runs = {
        name: _run(name, entry, run_sweeps, tokenizers, genomes, genome_sheet, _pretrained_here(draws.runs), draws.run_of.get(name))
        for name, entry in draws.runs.items()
    }
    datasets = {
        name: _dataset(f"{dataset_sheet} dataset {name}", row, genomes, genome_sheet, config["archives"])
        for name, row in usable.items()
    }
    for name, dataset in datasets.items():
        unknown = [run for run in dataset.runs if run not in finetune["runs"]]
        if unknown:
            raise VqdnaError(f"{dataset_sheet} dataset {name}: runs names {unknown[0]!r}, which is not in finetune.runs ({', '.join(finetune['runs'])})")

    probed = [name for name in config["probe"]["datasets"] if name in datasets]
    return Plan(
        mirror=config["mirror"],
        windows=_frozen(config["windows"]),
        genomes=MappingProxyType(genomes),
        archives=MappingProxyType(
            {name: Archive(name, entry["source"], entry.get("sha256", "")) for name, entry in config["archives"].items()}
        ),
        datasets=MappingProxyType(datasets),
        skipped_datasets=skipped,
        tokenizers=MappingProxyType(tokenizers),
        runs=MappingProxyType(runs),
        finetune_jobs=_finetune_jobs(finetune["runs"], finetune["seeds"], datasets, run_sweeps, config["ablations"], draws),
        finetune_seeds=tuple(finetune["seeds"]),
        finetune_settings=_frozen({k: v for k, v in finetune.items() if k not in ("runs", "seeds")}),
        probe_jobs=tuple(ProbeJob(tokenizer, name) for tokenizer in sorted(tokenizers) for name in probed),
        probe_settings=_frozen(config["probe"].get("settings", {})),
        kmer_jobs=tuple(KmerJob(name) for name in sorted(datasets)) if config["kmer_baseline"]["enabled"] else (),
        kmer_settings=_frozen(config["kmer_baseline"].get("settings", {})),
        analysis_jobs=_analysis_jobs(config["analysis"], tokenizers, datasets, set(rows)),
        analysis_settings=_frozen(config["analysis"].get("settings", {})),
        compile=CompileSettings.from_config(config.get("compile")),
    )


def _analysis_jobs(
    analysis: Mapping[str, Any], tokenizers: Mapping[str, Tokenizer], datasets: Mapping[str, Dataset], sheet: set[str]
) -> tuple[AnalysisJob, ...]:
    """Every listed tokenizer on every listed dataset; a dataset whose local source is missing is skipped as elsewhere."""
    for name in analysis["datasets"]:
        if name not in sheet:
            raise VqdnaError(f"analysis.datasets: no dataset named {name!r} in the datasets sheet")
    for name in analysis["tokenizers"]:
        if name not in tokenizers:
            raise VqdnaError(f"analysis.tokenizers: no tokenizer named {name!r}")
        kind = tokenizers[name].type
        if kind not in ("vq", "hrq"):
            raise VqdnaError(f"analysis.tokenizers: {name} is a {kind} tokenizer; the codebook analysis reads learned codes (vq or hrq)")
    listed = [name for name in analysis["datasets"] if name in datasets]
    for name in listed:
        task = datasets[name].cells.get("task")
        if task != "classification":
            raise VqdnaError(f"analysis.datasets: {name} is a {task} task; the codebook analysis compares classes")
    return tuple(AnalysisJob(tokenizer, name) for tokenizer in analysis["tokenizers"] for name in listed)


def _load_schema(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _validated(instance: Mapping[str, Any], schema: Mapping) -> dict:
    """A copy of the config, valid under `schema`, with the schema's defaults filled in."""
    filled = copy.deepcopy(dict(instance))
    _check(_validator_filling_defaults(schema), filled, "config")
    return filled


def _validator_filling_defaults(schema: Mapping) -> jsonschema.protocols.Validator:
    """A validator that sets each absent property that has a default, as Snakemake's `validate` does."""
    check_properties = jsonschema.Draft202012Validator.VALIDATORS["properties"]

    def properties(validator, properties, instance, schema):
        if validator.is_type(instance, "object"):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(jsonschema.Draft202012Validator, {"properties": properties})(schema)


def _check(validator: jsonschema.protocols.Validator, instance: Any, where: str) -> None:
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        key = ".".join(str(part) for part in error.absolute_path)
        raise VqdnaError(f"{where}: {key + ': ' if key else ''}{_problem(error)}")


def _problem(error: jsonschema.ValidationError) -> str:
    if error.validator == "oneOf" and error.context:
        # jsonschema's own message prints the whole entry; what each allowed form misses says more.
        # ("not" errors print the entry again: left out.)
        misses = dict.fromkeys(sub.message for sub in error.context if sub.validator != "not")
        return f"fits none of the allowed forms ({'; '.join(misses)})"
    if "propertyNames" in error.schema_path:
        return f"the name {error.instance!r} {NAME_RULE}"
    return error.message


def _column_types(schema: Mapping) -> dict[str, type]:
    """int or float for each column the schema declares an integer or a number (nullable or not)."""
    types = {}
    for column, spec in schema["properties"].items():
        declared = spec.get("type", [])
        declared = [declared] if isinstance(declared, str) else declared
        if "integer" in declared:
            types[column] = int
        elif "number" in declared:
            types[column] = float
    return types


def _read_sheet(path: str, schema: Mapping, key: str) -> dict[str, dict[str, Cell]]:
    """Rows of a TSV sheet keyed by their `key` column, typed and validated against `schema`.

    Blank lines and lines starting with '#' are skipped; errors name the line of the file.
    """
    if not Path(path).is_file():
        raise VqdnaError(f"sheet {path} not found (named in the config)")
    with open(path, newline="") as handle:
        numbered = [(number, line) for number, line in enumerate(handle, start=1) if line.strip() and not line.startswith("#")]
    if len(numbered) < 2:
        raise VqdnaError(f"sheet {path} has no rows")
    _check_header(path, numbered[0], schema)
    column_types = _column_types(schema)
    validator = jsonschema.Draft202012Validator(schema)
    rows: dict[str, dict[str, Cell]] = {}
    reader = csv.DictReader([line for _, line in numbered], delimiter="\t")
    for (number, _), cells in zip(numbered[1:], reader):
        where = f"{path} line {number}"
        # A row longer than the header puts its extra cells under None: they are dropped.
        row: dict[str, Cell] = {name.strip(): (text or "").strip() for name, text in cells.items() if name}
        for column in column_types.keys() & row.keys():
            row[column] = _typed_cell(where, column, row[column], column_types[column])
        _check(validator, row, where)
        if row[key] in rows:
            raise VqdnaError(f"{where}: duplicate {key} {row[key]!r}")
        rows[row[key]] = row
    return rows


def _check_header(path: str, header: tuple[int, str], schema: Mapping) -> None:
    """One line naming an unknown or a missing column and what the sheet allows, before any row is read."""
    number, line = header
    columns = [name.strip() for name in line.rstrip("\r\n").split("\t")]
    allowed, required = list(schema["properties"]), list(schema.get("required", []))
    unknown = [name for name in columns if name not in allowed]
    if unknown:
        raise VqdnaError(f"{path} line {number}: unknown column {unknown[0]!r}; the columns are {', '.join(allowed)}")
    missing = [name for name in required if name not in columns]
    if missing:
        raise VqdnaError(f"{path} line {number}: column {missing[0]!r} is missing; required: {', '.join(required)}")


def _typed_cell(where: str, column: str, text: str, kind: type) -> int | float | None:
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise VqdnaError(f"{where}: {column}: {text!r} is not {'an integer' if kind is int else 'a number'}") from None


def _genome(row: Mapping[str, Cell], sheet: str) -> Genome:
    name, source = row["genome"], row["source"]
    check_scheme(source, f"{sheet}: genome {name}")
    return Genome(
        name=name,
        source=source,
        sha256=row.get("sha256", ""),
        assembly_report=row.get("assembly_report", ""),
        assembly_report_sha256=row.get("assembly_report_sha256", ""),
        source_file=_local_source_file(name, source, sheet) if is_local(source) else None,
    )


def _local_source_file(name: str, source: str, sheet: str) -> str | None:
    """The source file, or None when it is gone but the genome here was built from it.

    Snakemake does not rerun a job whose input is missing while its outputs exist: a source
    changed to a path that does not exist would silently keep the old genome. One line instead.
    """
    if Path(source).is_file():
        return source
    built = Path("resources/genomes") / f"{name}.fa.gz"
    sidecar = built.with_name(f"{name}.source.json")
    recorded = json.loads(sidecar.read_text()).get("source") if built.is_file() and sidecar.is_file() else None
    if recorded == source:
        return None
    origin = f"; {built} was built from {recorded}: restore the file, or point the sheet at one that exists" if recorded else ""
    raise VqdnaError(f"{sheet}: genome {name}: source {source} not found{origin}")


def _missing_local_source(row: Mapping[str, Cell]) -> bool:
    """A local CSV folder that does not exist (the EEP data a user supplies): skipped, not fatal."""
    source = row.get("source") or ""
    return bool(source) and is_local(source) and not Path(source).is_dir()


def _skipped(name: str, row: Mapping[str, Cell]) -> SkippedDataset:
    return SkippedDataset(
        name,
        f"its source folder {row['source']} does not exist (see the README for where its data comes from);"
        " its table cells stay empty",
    )


@dataclass(frozen=True)
class _Sweeps:
    """The `tokenizers:` or `runs:` entries with the variants the `ablations:` sweeps add."""

    entries: Mapping[str, Mapping[str, Any]]
    variant_of: Mapping[str, str]  # generated name -> base name
    points: Mapping[str, tuple[AblationPoint, ...]]  # every name a sweep reaches, in the order first reached


def _expand_sweeps(ablations: Mapping[str, Mapping], kind: str, entries: Mapping[str, Mapping]) -> _Sweeps:
    """Ablations (Table 7) are sweeps: one config key per axis, each value a tokenizer or run of its own
    (`{base}_{axis}{value}`), trained like any other. A value equal to the base's own setting is the base
    itself, not a copy."""
    entries = dict(entries)
    variant_of: dict[str, str] = {}
    points: dict[str, list[AblationPoint]] = {}
    for axis, sweep in ablations.items():
        for base in sweep.get(kind, []):
            if base not in entries:
                raise VqdnaError(f"ablations.{axis}.{kind}: no {kind[:-1]} named {base!r}")
            for value in sweep["values"]:
                name = base
                if entries[base].get(sweep["key"]) != value:
                    name = f"{base}_{axis}{value:g}" if isinstance(value, float) else f"{base}_{axis}{value}"
                    if not NAME_PATTERN.match(name):
                        raise VqdnaError(f"ablations.{axis}.values: {value!r} makes the variant {name!r}, which {NAME_RULE}")
                    entries[name] = {**entries[base], sweep["key"]: value}
                    variant_of[name] = base
                points.setdefault(name, []).append(AblationPoint(axis, _frozen(value)))
    return _Sweeps(entries, variant_of, {name: tuple(reached) for name, reached in points.items()})


# Tokenizer types trained from a seed (VQ-VAE and HRQ codebooks, BPE's sampled windows): a draw trains them
# again. K-mer and character tokenizers are fixed by their settings.
_DRAWN_TOKENIZER_TYPES = frozenset({"vq", "hrq", "bpe"})


@dataclass(frozen=True)
class _Draws:
    """The `tokenizers:` and `runs:` entries with those the `draws:` option remakes."""

    tokenizers: Mapping[str, Mapping[str, Any]]
    runs: Mapping[str, Mapping[str, Any]]
    tokenizer_of: Mapping[str, tuple[str, int]]  # generated tokenizer -> (the config's tokenizer, draw)
    run_of: Mapping[str, tuple[str, int]]  # generated run -> (the config's run, draw)


def _expand_draws(draws: int, tokenizers: Mapping[str, Mapping], runs: Mapping[str, Mapping], finetuned: list[str]) -> _Draws:
    """Draws 1 .. draws - 1 of every fine-tuned run: the pipeline made again from its seeds, each seed + k.

    A learned tokenizer and an encoder are one draw of their seeds, and their scores move with it more than
    with the fine-tuning seed. Draw k of a run trains its tokenizer again (when the workflow trains it from a
    seed: vq, hrq, bpe) and pretrains its encoder again (the random-init control's initial weights too), each
    with `seed` + k, as ``{name}_draw{k}``; its fine-tuning seeds are the finetune block's + k. Draw 0 is the
    config's own entries. What comes from elsewhere (`path`, a `pretrained` folder the workflow does not make)
    has nothing to draw and stays one.
    """
    tokenizers, runs, tokenizer_of, run_of = dict(tokenizers), dict(runs), {}, {}

    def drawn(entries: dict, of: dict, name: str, k: int, changes: dict) -> str:
        variant = f"{name}_draw{k}"
        if variant in entries and variant not in of:
            raise VqdnaError(f"draws: {k + 1} draws name draw {k} of {name!r} {variant!r}, which the config already uses; rename it")
        entries[variant] = {**entries[name], **changes}
        of[variant] = (name, k)
        return variant

    def drawn_tokenizer(name: str, k: int) -> str:
        entry = tokenizers[name]
        if "path" in entry or entry["type"] not in _DRAWN_TOKENIZER_TYPES:
            return name
        return drawn(tokenizers, tokenizer_of, name, k, {"seed": entry.get("seed", 0) + k})  # 0: every trainer's default seed

    def drawn_encoder(name: str, k: int) -> str:
        entry = runs[name]
        return drawn(runs, run_of, name, k, {"tokenizer": drawn_tokenizer(entry["tokenizer"], k), "seed": entry.get("seed", 0) + k})

    for k in range(1, draws):
        pretrained_here = _pretrained_here(runs)
        for name in finetuned:
            entry = runs[name]
            if "pretrained" not in entry:
                drawn_encoder(name, k)
                continue
            maker = pretrained_here.get(str(Path(entry["pretrained"])))
            if maker is None:
                continue
            encoder = f"{maker[0]}_draw{k}"
            if encoder not in run_of:  # its maker is not fine-tuned itself, or comes later in finetune.runs
                encoder = drawn_encoder(maker[0], k)
            drawn(runs, run_of, name, k, {"tokenizer": runs[encoder]["tokenizer"], "pretrained": f"results/pretrain/{encoder}"})
    return _Draws(tokenizers, runs, tokenizer_of, run_of)


def _check_genomes(where: str, names: Iterable[str], genomes: Mapping[str, Genome], sheet: str) -> None:
    unknown = [name for name in names if name not in genomes]
    if unknown:
        raise VqdnaError(f"{where}: genome(s) {', '.join(unknown)} are not in {sheet}")


def _check_folder(where: str, folder: str, file: str) -> None:
    if not (Path(folder) / file).is_file():
        raise VqdnaError(f"{where}: {folder} has no {file}")


def _tokenizer(
    name: str, entry: Mapping[str, Any], sweeps: _Sweeps, genomes: Mapping[str, Genome], sheet: str, draw: tuple[str, int] | None
) -> Tokenizer:
    path = entry.get("path")
    if path is None:
        _check_genomes(f"tokenizers.{name}.train_genomes", entry["train_genomes"], genomes, sheet)
        kind, model_files = entry["type"], ()
    else:
        _check_folder(f"tokenizers.{name}.path", path, "config.json")
        kind = _saved_tokenizer_type(f"tokenizers.{name}.path", Path(path) / "config.json")
        models = [Path(path) / file for file in ("model.safetensors", "tokenizer.json")]
        model_files = tuple(str(model) for model in models if model.is_file())
    return Tokenizer(
        name=name,
        settings=_frozen(entry),
        type=kind,
        path=path,
        model_files=model_files,
        variant_of=sweeps.variant_of.get(name),
        ablation=sweeps.points.get(name, ()),
        draw=draw[1] if draw else 0,
        draw_of=draw[0] if draw else None,
    )


def _saved_tokenizer_type(where: str, config_file: Path) -> str:
    try:
        return json.loads(config_file.read_text()).get("type", "")
    except (json.JSONDecodeError, AttributeError) as err:  # AttributeError: JSON that is not an object
        raise VqdnaError(f"{where}: {config_file} is not a JSON object ({err})") from None


def _run(
    name: str,
    entry: Mapping[str, Any],
    sweeps: _Sweeps,
    tokenizers: Mapping[str, Tokenizer],
    genomes: Mapping[str, Genome],
    sheet: str,
    pretrained_here: Mapping[str, tuple[str, str]],
    draw: tuple[str, int] | None,
) -> Run:
    if entry["tokenizer"] not in tokenizers:
        raise VqdnaError(f"runs.{name}.tokenizer: no tokenizer named {entry['tokenizer']!r}")
    encoder_run = name
    if "pretrained" in entry:
        other = pretrained_here.get(str(Path(entry["pretrained"])))
        encoder_run = other[0] if other else None
        if other is None:
            _check_folder(f"runs.{name}.pretrained", entry["pretrained"], "model.safetensors")
        elif other[1] != entry["tokenizer"]:
            raise VqdnaError(
                f"runs.{name}: pretrained {entry['pretrained']} is run {other[0]}'s encoder, pretrained on tokenizer {other[1]}, "
                f"not {entry['tokenizer']}"
            )
    else:
        _check_genomes(f"runs.{name}.pretrain_genomes", entry["pretrain_genomes"], genomes, sheet)
    return Run(
        name=name,
        settings=_frozen(entry),
        tokenizer=entry["tokenizer"],
        pretrained=entry.get("pretrained"),
        encoder_run=encoder_run,
        variant_of=sweeps.variant_of.get(name),
        ablation=sweeps.points.get(name, ()),
        draw=draw[1] if draw else 0,
        draw_of=draw[0] if draw else None,
    )


def _pretrained_here(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """results/pretrain/RUN -> (RUN, its tokenizer) for each run the workflow pretrains.

    Another run's `pretrained` may name such a folder before it exists: its
    weights are then an input, so Snakemake pretrains that run first (e.g. a
    pretrained encoder fine-tuned a second way).
    """
    return {
        str(Path(f"results/pretrain/{name}")): (name, entry["tokenizer"])
        for name, entry in entries.items()
        if "pretrained" not in entry
    }


def _split_list(text: str | None) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c'] (sheet cells that list genomes)."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _dataset(where: str, row: Mapping[str, Cell], genomes: Mapping[str, Genome], sheet: str, archives: Mapping) -> Dataset:
    listed = _split_list(row.get("genomes"))
    _check_genomes(where, listed, genomes, sheet)
    source = row.get("source") or ""
    if bool(listed) == bool(source):
        raise VqdnaError(f"{where}: give either a source or genomes")
    archive = _archive_name(where, source, archives) if urllib.parse.urlparse(source).scheme == "archive" else None
    metrics = _METRICS_OF_TASK[row["task"]]
    if row["metric"] not in metrics:
        raise VqdnaError(
            f"{where}: metric {row['metric']} does not fit task {row['task']} (use one of {', '.join(sorted(metrics))})"
        )
    return Dataset(name=row["dataset"], cells=MappingProxyType(dict(row)), genomes=tuple(listed), archive=archive)


def _archive_name(where: str, source: str, archives: Mapping) -> str:
    """The NAME of an `archive:NAME/FOLDER` source, which the config's `archives:` must hold."""
    try:
        name, _ = parse_archive_source(source)
    except VqdnaError as err:
        raise VqdnaError(f"{where}: {err}") from None
    if name not in archives:
        raise VqdnaError(f"{where}: source {source} names archive {name!r}, which is not under archives: in the config")
    return name


def _finetune_jobs(
    finetuned: list[str],
    seeds: list[int],
    datasets: Mapping[str, Dataset],
    run_sweeps: _Sweeps,
    ablations: Mapping[str, Mapping],
    draws: _Draws,
) -> tuple[FinetuneJob, ...]:
    """The `finetune:` runs on every dataset (or those its `runs` cell names), then each sweep run (Table 7c) not
    among them on its axis's datasets, then each draw of a `finetune:` run where that run goes, its seeds + k."""
    seeds = tuple(seeds)
    jobs = [
        FinetuneJob(run, name, seeds) for run in finetuned for name in sorted(datasets) if run in (datasets[name].runs or finetuned)
    ]
    for run, points in run_sweeps.points.items():
        if run not in finetuned:
            # The axis that reached the run last names its datasets (every dataset when it names none).
            swept = ablations[points[-1].axis].get("datasets") or sorted(datasets)
            jobs += [FinetuneJob(run, name, seeds) for name in swept if name in datasets]
    of_run = {job.run: [] for job in jobs}
    for job in jobs:
        of_run[job.run].append(job.dataset)
    for variant, (run, k) in draws.run_of.items():
        if run in finetuned:
            jobs += [FinetuneJob(variant, name, tuple(seed + k for seed in seeds)) for name in of_run[run]]
    return tuple(jobs)
