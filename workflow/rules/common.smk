# Sheets, validation, wildcard constraints and the input functions of every rule.
import csv
import json
import re
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

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
    "set -euo pipefail;",
    # (a prefix is formatted like a shell command: doubled braces stay literal)
    f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}};",
]
if config["mirror"]:
    _shell_prefix.append(f"export VQDNA_MIRROR={shlex.quote(config['mirror'])};")
shell.prefix(f"{' '.join(_shell_prefix)} ")

_INTEGER_COLUMNS = {
    "num_labels",
    "max_length",
    "epochs",
    "batch_size",
    "warmup_steps",
    "samples_per_genome",
    "max_train_samples",
}
_FLOAT_COLUMNS = {"learning_rate"}


def read_sheet(path, schema, key):
    """Rows of a TSV sheet as dicts keyed by `key`, typed and validated against `schema`."""
    if not Path(path).is_file():
        raise WorkflowError(f"sheet {path} not found (named in the config)")
    rows = {}
    with open(path, newline="") as handle:
        lines = (line for line in handle if line.strip() and not line.startswith("#"))
        for number, row in enumerate(csv.DictReader(lines, delimiter="\t"), start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            try:
                for column in _INTEGER_COLUMNS & row.keys():
                    row[column] = int(row[column]) if row[column] else None
                for column in _FLOAT_COLUMNS & row.keys():
                    row[column] = float(row[column])
                validate(row, schema)
            except (ValueError, WorkflowError) as err:
                raise WorkflowError(f"{path} row {number}: {err}") from None
            if row[key] in rows:
                raise WorkflowError(
                    f"{path} row {number}: duplicate {key} {row[key]!r}"
                )
            rows[row[key]] = row
    if not rows:
        raise WorkflowError(f"sheet {path} has no rows")
    return rows


GENOMES = read_sheet(config["genomes"], "../schemas/genomes.schema.yaml", "genome")
DATASETS = read_sheet(config["datasets"], "../schemas/datasets.schema.yaml", "dataset")
TOKENIZERS = config["tokenizers"]
RUNS = config["runs"]
FINETUNE = config["finetune"]


def _check_genomes(where, genomes):
    unknown = [g for g in genomes if g not in GENOMES]
    if unknown:
        raise WorkflowError(
            f"{where}: genome(s) {', '.join(unknown)} are not in {config['genomes']}"
        )


for _name, _tokenizer in TOKENIZERS.items():
    _check_genomes(f"tokenizers.{_name}.train_genomes", _tokenizer["train_genomes"])
for _name, _run in RUNS.items():
    if _run["tokenizer"] not in TOKENIZERS:
        raise WorkflowError(
            f"runs.{_name}.tokenizer: no tokenizer named {_run['tokenizer']!r}"
        )
    _check_genomes(f"runs.{_name}.pretrain_genomes", _run["pretrain_genomes"])
for _run in FINETUNE["runs"]:
    if _run not in RUNS:
        raise WorkflowError(f"finetune.runs: no run named {_run!r}")
for _name, _dataset in DATASETS.items():
    _genomes = [g for g in _dataset.get("genomes", "").split(",") if g.strip()]
    _check_genomes(
        f"{config['datasets']} dataset {_name}", [g.strip() for g in _genomes]
    )
    if not _genomes and not _dataset.get("source"):
        raise WorkflowError(
            f"{config['datasets']} dataset {_name}: give a source or genomes"
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


# ---- input functions and params, one per rule that needs them ---------------------------------


def get_genome_source(wildcards):
    return GENOMES[wildcards.genome]["source"]


def get_genome_sha256(wildcards):
    return GENOMES[wildcards.genome].get("sha256", "")


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


def _json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def get_tokenizer_windows(wildcards):
    genomes = TOKENIZERS[wildcards.tokenizer]["train_genomes"]
    return expand("results/windows/{genome}.parquet", genome=genomes)


def get_tokenizer_settings(wildcards):
    return _json(TOKENIZERS[wildcards.tokenizer])


def tokenizer_files(tokenizer):
    folder = f"results/tokenizers/{tokenizer}"
    return {
        "tokenizer_config": f"{folder}/config.json",
        "tokenizer_model": f"{folder}/model.safetensors",
    }


def get_tokenizer_of_rule(wildcards):
    return tokenizer_files(wildcards.tokenizer)


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


def get_run_settings(wildcards):
    return _json(RUNS[wildcards.run])


def get_dataset_genomes(wildcards):
    return [
        g.strip()
        for g in DATASETS[wildcards.dataset].get("genomes", "").split(",")
        if g.strip()
    ]


def get_dataset_windows(wildcards):
    return expand(
        "results/windows/{genome}.parquet", genome=get_dataset_genomes(wildcards)
    )


def get_dataset_windows_args(wildcards):
    return " ".join(
        shlex.quote(f"{g}=results/windows/{g}.parquet")
        for g in get_dataset_genomes(wildcards)
    )


def get_dataset_spec(wildcards):
    spec = {k: v for k, v in DATASETS[wildcards.dataset].items() if v not in ("", None)}
    spec.pop("description", None)
    return _json(spec)


def get_finetune_inputs(wildcards):
    run = RUNS[wildcards.run]
    return {
        **tokenizer_files(run["tokenizer"]),
        "pretrained": f"results/pretrain/{wildcards.run}/model.safetensors",
        "dataset": expand(
            "results/datasets/{dataset}/{split}.parquet",
            dataset=wildcards.dataset,
            split=SPLITS,
        ),
    }


def get_finetune_settings(wildcards):
    return _json(FINETUNE)


def folder_of(path):
    return str(Path(path).parent)


def output_folder(wildcards, output):
    """The folder a stage writes as a whole (atomically): the parent of its first output."""
    return folder_of(output[0])


def tokenizer_folder(wildcards, input):
    return folder_of(input.tokenizer_model)


def pretrained_folder(wildcards, input):
    return folder_of(input.pretrained)


def dataset_folder(wildcards, input):
    return folder_of(input.dataset[0])


def get_finetune_metrics(wildcards):
    return expand(
        "results/finetune/{run}/{dataset}/seed{seed}/metrics.json",
        run=FINETUNE["runs"],
        dataset=sorted(DATASETS),
        seed=FINETUNE["seeds"],
    )


def get_final_outputs(wildcards):
    """Everything `snakemake` builds by default: tokens of every genome, tokenizer metrics, tables."""
    outputs = expand(
        "results/tokens/{tokenizer}/{genome}.parquet",
        tokenizer=sorted(TOKENIZERS),
        genome=sorted(GENOMES),
    )
    outputs += expand(
        "results/tokenizers/{tokenizer}/metrics.json", tokenizer=sorted(TOKENIZERS)
    )
    outputs += expand("results/pretrain/{run}/model.safetensors", run=sorted(RUNS))
    if FINETUNE["runs"]:
        outputs += ["results/tables/summary.csv", "results/tables/summary.md"]
    return outputs
