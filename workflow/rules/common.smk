# Sheets, validation, wildcard constraints and the input functions of every rule.
import csv
import hashlib
import json
import re
import shlex
import sys
import urllib.parse
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)
from vqdna import STAGE_VERSIONS  # vqdna/__init__.py only: no heavy imports here

validate(config, "../schemas/config.schema.yaml")

SPLITS = ["train", "dev", "test"]

ENV = "../../envs/vqdna.yaml"

# Every rule calls `python -m vqdna`. It reaches the package through the
# workflow's folder, so it also runs in conda envs that carry only the
# dependencies (Snakemake copies env files elsewhere, which breaks a relative
# `pip: -e .`). The mirror is exported here, read at run time and not a
# param: switching it reruns nothing. A prefix is not part of a rule's code,
# so moving the repository reruns nothing either.
_shell_prefix = [
    # (a prefix is formatted like a shell command: doubled braces stay literal)
    f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}};",
]
if config["mirror"]:
    _shell_prefix.append(f"export VQDNA_MIRROR={shlex.quote(config['mirror'])};")
shell.prefix(f"{' '.join(_shell_prefix)} ")

# Keys of a `tokenizers:` entry that only change how it is measured
# (vqdna.tokenizer.evaluate.TokenizerEvalConfig): they go to evaluate_tokenizer,
# never to train_tokenizer, so changing them does not retrain anything.
TOKENIZER_EVALUATION_KEYS = {"heldout_windows", "probe_windows"}
# Columns of the datasets sheet that change the prepared dataset (the rest are
# fine-tuning settings, read by the finetune rule).
DATASET_BUILD_KEYS = {
    "dataset",
    "task",
    "num_labels",
    "source",
    "sha256",
    "genomes",
    "samples_per_genome",
    "max_train_samples",
    "max_length",
    "kind",
    "train_from",
    "split_samples",
    "train_chromosomes",
    "dev_chromosomes",
    "test_chromosomes",
    "max_n_fraction",
}
_INTEGER_COLUMNS = {
    "num_labels",
    "max_length",
    "epochs",
    "batch_size",
    "warmup_steps",
    "samples_per_genome",
    "max_train_samples",
}
_FLOAT_COLUMNS = {"learning_rate", "max_n_fraction"}
_METRICS_OF_TASK = {
    "classification": {"mcc", "f1", "accuracy"},
    "regression": {"spearman"},
}


def read_sheet(path, schema, key):
    """Rows of a TSV sheet as dicts keyed by `key`, typed and validated against `schema`."""
    if not Path(path).is_file():
        raise WorkflowError(f"sheet {path} not found (named in the config)")
    with open(path, newline="") as handle:
        numbered = [
            (number, line)
            for number, line in enumerate(handle, start=1)
            if line.strip() and not line.startswith("#")
        ]
    if len(numbered) < 2:
        raise WorkflowError(f"sheet {path} has no rows")
    reader = csv.DictReader([line for _, line in numbered], delimiter="\t")
    rows = {}
    for (number, _), row in zip(numbered[1:], reader):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        try:
            for column in _INTEGER_COLUMNS & row.keys():
                row[column] = int(row[column]) if row[column] else None
            for column in _FLOAT_COLUMNS & row.keys():
                row[column] = float(row[column]) if row[column] else None
            validate(row, schema)
        except (ValueError, WorkflowError) as err:
            raise WorkflowError(f"{path} line {number}: {err}") from None
        if row[key] in rows:
            raise WorkflowError(f"{path} line {number}: duplicate {key} {row[key]!r}")
        rows[row[key]] = row
    return rows


def split_list(text):
    """'a, b,c' -> ['a', 'b', 'c'] (sheet cells that list genomes)."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def is_local(source):
    return urllib.parse.urlparse(source).scheme not in (
        "http",
        "https",
        "ftp",
        "archive",
    )


def archive_of(source):
    """'archive:gue/GUE/EMP/H3' -> 'gue'; None for other sources."""
    if not (source or "").startswith("archive:"):
        return None
    return source.removeprefix("archive:").split("/", 1)[0]


GENOMES = read_sheet(config["genomes"], "../schemas/genomes.schema.yaml", "genome")
DATASETS = read_sheet(config["datasets"], "../schemas/datasets.schema.yaml", "dataset")
TOKENIZERS = dict(config["tokenizers"])
RUNS = dict(config["runs"])
FINETUNE = config["finetune"]
ARCHIVES = config["archives"]


def _missing_local_source(row):
    """A local CSV folder that does not exist (the EEP data a user supplies): skipped, not fatal."""
    source = row.get("source") or ""
    return bool(source) and is_local(source) and not Path(source).is_dir()


for _name in [n for n, row in DATASETS.items() if _missing_local_source(row)]:
    print(
        f"vqdna: dataset {_name} skipped: its source folder {DATASETS[_name]['source']} does not exist"
        " (see the README for where its data comes from); its table cells stay empty",
        file=sys.stderr,
    )
    del DATASETS[_name]

# Ablations (Table 7) are sweeps: one config key per axis, each value a
# tokenizer or run of its own (`{base}_{axis}{value}`), trained like any other.
# A value equal to the base's own setting is the base itself, not a copy.
SWEEP_OF = {"tokenizers": {}, "runs": {}}  # name -> [{"axis", "value"}]
VARIANT_OF = {"tokenizers": {}, "runs": {}}  # generated name -> base name
ABLATION_DATASETS = {}  # run variant -> the datasets it is fine-tuned on


def _expand_sweep(axis, sweep, kind, entries):
    for base in sweep.get(kind, []):
        if base not in entries:
            raise WorkflowError(
                f"ablations.{axis}.{kind}: no {kind[:-1]} named {base!r}"
            )
        for value in sweep["values"]:
            name = base
            if entries[base].get(sweep["key"]) != value:
                name = (
                    f"{base}_{axis}{value:g}"
                    if isinstance(value, float)
                    else f"{base}_{axis}{value}"
                )
                entries[name] = {**entries[base], sweep["key"]: value}
                VARIANT_OF[kind][name] = base
            SWEEP_OF[kind].setdefault(name, []).append({"axis": axis, "value": value})
            if kind == "runs":
                ABLATION_DATASETS[name] = sweep.get("datasets") or sorted(DATASETS)


for _axis, _sweep in config["ablations"].items():
    _expand_sweep(_axis, _sweep, "tokenizers", TOKENIZERS)
    _expand_sweep(_axis, _sweep, "runs", RUNS)


def _check_genomes(where, genomes):
    unknown = [g for g in genomes if g not in GENOMES]
    if unknown:
        raise WorkflowError(
            f"{where}: genome(s) {', '.join(unknown)} are not in {config['genomes']}"
        )


def _check_folder(where, folder, file):
    if not (Path(folder) / file).is_file():
        raise WorkflowError(f"{where}: {folder} has no {file}")


for _name, _tokenizer in TOKENIZERS.items():
    if "path" in _tokenizer:
        _check_folder(f"tokenizers.{_name}.path", _tokenizer["path"], "config.json")
    else:
        _check_genomes(f"tokenizers.{_name}.train_genomes", _tokenizer["train_genomes"])
for _name, _run in RUNS.items():
    if _run["tokenizer"] not in TOKENIZERS:
        raise WorkflowError(
            f"runs.{_name}.tokenizer: no tokenizer named {_run['tokenizer']!r}"
        )
    if "pretrained" in _run:
        _check_folder(
            f"runs.{_name}.pretrained", _run["pretrained"], "model.safetensors"
        )
    else:
        _check_genomes(f"runs.{_name}.pretrain_genomes", _run["pretrain_genomes"])
for _run in FINETUNE["runs"]:
    if _run not in RUNS:
        raise WorkflowError(f"finetune.runs: no run named {_run!r}")
for _name, _dataset in DATASETS.items():
    _where = f"{config['datasets']} dataset {_name}"
    _check_genomes(_where, split_list(_dataset.get("genomes")))
    if bool(split_list(_dataset.get("genomes"))) == bool(_dataset.get("source")):
        raise WorkflowError(f"{_where}: give either a source or genomes")
    _archive = archive_of(_dataset.get("source"))
    if _archive is not None and _archive not in ARCHIVES:
        raise WorkflowError(
            f"{_where}: source {_dataset['source']} names archive {_archive!r}, which is not under archives: in the config"
        )
    if _dataset["metric"] not in _METRICS_OF_TASK[_dataset["task"]]:
        raise WorkflowError(
            f"{_where}: metric {_dataset['metric']} does not fit task {_dataset['task']}"
            f" (use one of {', '.join(sorted(_METRICS_OF_TASK[_dataset['task']]))})"
        )


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


wildcard_constraints:
    genome=_alternatives(GENOMES),
    tokenizer=_alternatives(TOKENIZERS),
    run=_alternatives(RUNS),
    dataset=_alternatives(DATASETS),
    split="|".join(SPLITS),
    seed=r"\d+",


# ---- params shared by rules --------------------------------------------------------------------


def _json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def folder_of(path):
    return str(Path(path).parent)


def output_folder(wildcards, output):
    """The folder a stage writes as a whole (atomically): the parent of its first output."""
    return folder_of(output[0])


def tokenizer_folder(wildcards, input):
    return folder_of(input.tokenizer_config)


def pretrained_folder(wildcards, input):
    return folder_of(input.pretrained)


def dataset_folder(wildcards, input):
    return folder_of(input.dataset[0])


# ---- download_genome ---------------------------------------------------------------------------


def get_local_genome_source(wildcards):
    """A local source file is an input (editing it reruns the download); URLs are not files."""
    source = GENOMES[wildcards.genome]["source"]
    return [source] if is_local(source) else []


def get_genome_source(wildcards):
    return GENOMES[wildcards.genome]["source"]


def get_genome_sha256(wildcards):
    return GENOMES[wildcards.genome].get("sha256", "")


def genomes_with_reports():
    return [g for g, row in GENOMES.items() if row.get("assembly_report")]


def get_assembly_report_source(wildcards):
    return GENOMES[wildcards.genome]["assembly_report"]


def get_assembly_report_sha256(wildcards):
    return GENOMES[wildcards.genome].get("assembly_report_sha256", "")


# ---- download_archive, unpack_archive -----------------------------------------------------------


def get_archive_source(wildcards):
    return ARCHIVES[wildcards.archive]["source"]


def get_archive_sha256(wildcards):
    return ARCHIVES[wildcards.archive].get("sha256", "")


# ---- make_windows ------------------------------------------------------------------------------


def get_window_options():
    """The config's `windows:` keys as `vqdna windows` flags (unset keys take the package defaults)."""
    flags = []
    for key, value in sorted(config["windows"].items()):
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            flags += [flag] if value else []
        else:
            flags += [flag, str(value)]
    return " ".join(flags)


# ---- train_tokenizer, evaluate_tokenizer, tokenize_genome ------------------------------------


def get_tokenizer_windows(wildcards):
    genomes = TOKENIZERS[wildcards.tokenizer]["train_genomes"]
    return expand("results/windows/{genome}.parquet", genome=genomes)


def get_tokenizer_settings(wildcards):
    entry = TOKENIZERS[wildcards.tokenizer]
    return _json({k: v for k, v in entry.items() if k not in TOKENIZER_EVALUATION_KEYS})


def get_tokenizer_evaluation(wildcards):
    entry = TOKENIZERS[wildcards.tokenizer]
    return _json(
        {k: v for k, v in entry.items() if k in TOKENIZER_EVALUATION_KEYS | {"seed"}}
    )


def trained_tokenizers():
    """Tokenizers this workflow trains (the others are folders given by `path`)."""
    return sorted(name for name, entry in TOKENIZERS.items() if "path" not in entry)


def pretrained_runs():
    """Runs this workflow pretrains (the others are encoder folders given by `pretrained`)."""
    return sorted(name for name, entry in RUNS.items() if "pretrained" not in entry)


def tokenizer_files(tokenizer):
    """The files that make a tokenizer (their hash is its identity); measurements are not among them.

    A trained tokenizer's folder is rewritten as a whole, so its config.json
    stands for it; a folder given by `path` is the user's, so each model file
    is an input and editing one reruns what used it.
    """
    path = TOKENIZERS[tokenizer].get("path")
    if path is None:
        return {"tokenizer_config": f"results/tokenizers/{tokenizer}/config.json"}
    models = [
        str(Path(path) / name) for name in ("model.safetensors", "tokenizer.json")
    ]
    return {
        "tokenizer_config": str(Path(path) / "config.json"),
        "tokenizer_model": [m for m in models if Path(m).is_file()],
    }


def pretrained_weights(run):
    """The encoder a fine-tuning run starts from: pretrained here, or a folder given by `pretrained`."""
    folder = RUNS[run].get("pretrained", f"results/pretrain/{run}")
    return str(Path(folder) / "model.safetensors")


def get_tokenizer_of_rule(wildcards):
    return tokenizer_files(wildcards.tokenizer)


# ---- pretrain_mlm ------------------------------------------------------------------------------


def get_pretrain_inputs(wildcards):
    run = RUNS[wildcards.run]
    return {
        **tokenizer_files(run["tokenizer"]),
        "tokens": expand(
            "results/tokens/{tokenizer}/{genome}.parquet",
            tokenizer=run["tokenizer"],
            genome=run["pretrain_genomes"],
        ),
    }


# How many GPUs and nodes a run uses: resources, results do not depend on them.
LAUNCH_KEYS = ("gpus", "nodes")


def get_run_settings(wildcards):
    """The run's entry less its launch keys."""
    return _json({k: v for k, v in RUNS[wildcards.run].items() if k not in LAUNCH_KEYS})


def get_run_gpus(wildcards):
    """GPUs (and processes) per node."""
    return RUNS[wildcards.run].get("gpus", 1)


def get_run_nodes(wildcards):
    return RUNS[wildcards.run].get("nodes", 1)


# On one node the SLURM executor plugin asks for `--gpus=N` and runs the job in an
# `srun` step. On several it asks for one task and N GPUs per node, and an `mpi`
# resource keeps it from wrapping the job in a one-node step: `vqdna pretrain
# --nodes M` then starts its own `srun` step across the nodes (torchrun on each).
# A resource that is None is not set.
def get_run_single_node_gpus(wildcards):
    return get_run_gpus(wildcards) if get_run_nodes(wildcards) == 1 else None


def get_run_mpi(wildcards):
    return "srun" if get_run_nodes(wildcards) > 1 else None


def get_run_tasks(wildcards):
    return get_run_nodes(wildcards) if get_run_nodes(wildcards) > 1 else None


def get_run_slurm_extra(wildcards):
    if get_run_nodes(wildcards) == 1:
        return None
    return f"--ntasks-per-node=1 --gpus-per-node={get_run_gpus(wildcards)}"


# ---- prepare_dataset ---------------------------------------------------------------------------


def get_dataset_genomes(wildcards):
    return split_list(DATASETS[wildcards.dataset].get("genomes"))


def is_species(dataset):
    return DATASETS[dataset].get("kind") == "species"


def get_dataset_inputs(wildcards):
    """Windows of a genome-classification set's genomes, the indexed genomes (and
    assembly reports) of a species set, the unpacked archive, or the CSVs of a local GUE folder.
    """
    source = DATASETS[wildcards.dataset].get("source")
    if is_species(wildcards.dataset):
        genomes = get_dataset_genomes(wildcards)
        reports = [g for g in genomes if GENOMES[g].get("assembly_report")]
        return expand(
            "resources/genomes/{genome}.fa.gz{suffix}",
            genome=genomes,
            suffix=["", ".fai", ".gzi"],
        ) + expand("resources/genomes/{genome}.assembly_report.txt", genome=reports)
    if archive_of(source):
        return [f"resources/archives/{archive_of(source)}"]
    if source and is_local(source):
        from_dev = DATASETS[wildcards.dataset].get("train_from") == "dev"
        splits = [s for s in SPLITS if not (from_dev and s == "train")]
        return expand(f"{source.rstrip('/')}/{{split}}.csv", split=splits)
    return expand(
        "results/windows/{genome}.parquet", genome=get_dataset_genomes(wildcards)
    )


def get_dataset_genome_args(wildcards):
    """--windows of a genome-tiles set, or --fastas and --assembly-reports of a species set."""
    genomes = get_dataset_genomes(wildcards)
    if not genomes:
        return ""
    if not is_species(wildcards.dataset):
        return "--windows " + " ".join(
            shlex.quote(f"{g}=results/windows/{g}.parquet") for g in genomes
        )
    fastas = [shlex.quote(f"{g}=resources/genomes/{g}.fa.gz") for g in genomes]
    reports = [
        shlex.quote(f"{g}=resources/genomes/{g}.assembly_report.txt")
        for g in genomes
        if GENOMES[g].get("assembly_report")
    ]
    return f"--fastas {' '.join(fastas)}" + (
        f" --assembly-reports {' '.join(reports)}" if reports else ""
    )


def get_dataset_spec(wildcards):
    """The sheet columns that build the dataset (fine-tuning settings are left out)."""
    row = DATASETS[wildcards.dataset]
    return _json(
        {
            k: v
            for k, v in row.items()
            if k in DATASET_BUILD_KEYS and v not in ("", None)
        }
    )


# ---- finetune, make_tables ---------------------------------------------------------------------


def get_finetune_inputs(wildcards):
    run = RUNS[wildcards.run]
    return {
        **tokenizer_files(run["tokenizer"]),
        "pretrained": pretrained_weights(wildcards.run),
        "dataset": expand(
            "results/datasets/{dataset}/{split}.parquet",
            dataset=wildcards.dataset,
            split=SPLITS,
        ),
    }


def get_finetune_spec(wildcards):
    row = DATASETS[wildcards.dataset]
    return _json(
        {k: v for k, v in row.items() if k != "description" and v not in ("", None)}
    )


def get_finetune_settings(wildcards):
    """The `finetune:` block less `runs` and `seeds`: adding a seed or a run reruns no existing job."""
    return _json({k: v for k, v in FINETUNE.items() if k not in ("runs", "seeds")})


def finetune_jobs():
    """(run, dataset) pairs: the `finetune:` runs on every dataset, sweep runs (Table 7c) on theirs."""
    jobs = [(run, dataset) for run in FINETUNE["runs"] for dataset in sorted(DATASETS)]
    for run, datasets in ABLATION_DATASETS.items():
        if run not in FINETUNE["runs"]:
            jobs += [(run, d) for d in datasets if d in DATASETS]
    return jobs


def get_finetune_metrics(wildcards):
    return [
        f"results/finetune/{run}/{dataset}/seed{seed}/metrics.json"
        for run, dataset in finetune_jobs()
        for seed in FINETUNE["seeds"]
    ]


# ---- kmer_baseline, linear_probe, make_tables ------------------------------------------------


def get_kmer_metrics(wildcards):
    if not config["kmer_baseline"]["enabled"]:
        return []
    return expand(
        "results/kmer_baseline/{dataset}/seed0/metrics.json", dataset=sorted(DATASETS)
    )


def get_kmer_settings(wildcards):
    return _json(config["kmer_baseline"].get("settings", {}))


def probe_jobs():
    """Every tokenizer, sweep variants included, on the probe datasets (Tables 1 and 7)."""
    datasets = [d for d in config["probe"]["datasets"] if d in DATASETS]
    return [(tokenizer, d) for tokenizer in sorted(TOKENIZERS) for d in datasets]


def get_probe_metrics(wildcards):
    return [
        f"results/probe/{tokenizer}/{dataset}/metrics.json"
        for tokenizer, dataset in probe_jobs()
    ]


def get_probe_inputs(wildcards):
    return {
        **tokenizer_files(wildcards.tokenizer),
        "dataset": expand(
            "results/datasets/{dataset}/{split}.parquet",
            dataset=wildcards.dataset,
            split=SPLITS,
        ),
    }


def get_probe_settings(wildcards):
    return _json(config["probe"].get("settings", {}))


def tokenizer_type(name):
    entry = TOKENIZERS[name]
    if "type" in entry:
        return entry["type"]
    return json.loads((Path(entry["path"]) / "config.json").read_text()).get("type", "")


def get_table_inputs(wildcards):
    return {
        "finetune": get_finetune_metrics(wildcards),
        "kmer": get_kmer_metrics(wildcards),
        "probe": get_probe_metrics(wildcards),
        "tokenizers": expand(
            "results/tokenizers/{tokenizer}/metrics.json",
            tokenizer=trained_tokenizers(),
        ),
    }


def published_digest():
    """sha256 of the published tables shipped in resources/published: editing them reruns
    make_tables, moving the repository does not (their paths are not inputs)."""
    digest = hashlib.sha256()
    for path in sorted(Path(workflow.basedir, "resources", "published").glob("*.csv")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def get_tables_plan(wildcards):
    """What the tables need to know of the config: each run's tokenizer and type, sweep values."""
    runs = sorted({run for run, _ in finetune_jobs()})
    return _json(
        {
            "runs": {
                run: {
                    "tokenizer": RUNS[run]["tokenizer"],
                    "type": tokenizer_type(RUNS[run]["tokenizer"]),
                    "variant_of": VARIANT_OF["runs"].get(run),
                    "ablation": SWEEP_OF["runs"].get(run, []),
                }
                for run in runs
            },
            "tokenizers": {
                name: {
                    "type": tokenizer_type(name),
                    "variant_of": VARIANT_OF["tokenizers"].get(name),
                    "ablation": SWEEP_OF["tokenizers"].get(name, []),
                }
                for name in sorted(TOKENIZERS)
            },
        }
    )


TABLE_FILES = [f"table{n}" for n in range(1, 8)] + ["summary"]


def tokenized_tokenizers():
    """Every genome is tokenized by the tokenizers runs pretrain on (all of them when no run is configured).

    Baselines that only serve Table 1's probe, and sweep variants, tokenize datasets, not genomes.
    """
    used = {run["tokenizer"] for run in RUNS.values()}
    return sorted(used or set(TOKENIZERS) - set(VARIANT_OF["tokenizers"]))


def get_final_outputs(wildcards):
    """Everything `snakemake` builds by default: tokens of every genome, tokenizer metrics, tables."""
    outputs = expand(
        "results/tokens/{tokenizer}/{genome}.parquet",
        tokenizer=tokenized_tokenizers(),
        genome=sorted(GENOMES),
    )
    outputs += expand(
        "results/tokenizers/{tokenizer}/metrics.json", tokenizer=trained_tokenizers()
    )
    outputs += expand("results/pretrain/{run}/model.safetensors", run=pretrained_runs())
    outputs += expand(
        "results/tables/{table}.{suffix}", table=TABLE_FILES, suffix=["csv", "md"]
    )
    return outputs
