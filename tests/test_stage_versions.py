"""A stage whose outputs change shape must bump its STAGE_VERSIONS number, or Snakemake keeps the old results.

The shape of every output of the shared workflow run (JSON keys, Parquet columns and
metadata keys, CSV headers; never values) is pinned per stage, with the stage's version,
in tests/stage_outputs.json. A shape that changes under the same version fails here: it
is how fine-tuning once started writing encoder_parameters without a bump, and older
results silently showed "–" in Table 2. After a deliberate change: bump the version,
then rewrite the pins with

    VQDNA_PIN_STAGE_OUTPUTS=1 python -m pytest tests/test_stage_versions.py

and commit tests/stage_outputs.json with the change.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vqdna import STAGE_VERSIONS

pytestmark = pytest.mark.workflow

PINS = Path(__file__).with_name("stage_outputs.json")

# What each stage writes in the shared run (tests/conftest.py's workflow_config).
STAGE_FILES = {
    "download_genome": ["resources/genomes/lambda_phage.source.json"],
    "make_windows": ["results/windows/lambda_phage.parquet"],
    "train_tokenizer": [
        "results/tokenizers/vq512/config.json", "results/tokenizers/vq512/training.json",
        "results/tokenizers/vq512/curves.csv", "results/tokenizers/kmer6/config.json",
    ],
    "evaluate_tokenizer": ["results/tokenizers/vq512/metrics.json", "results/tokenizers/kmer6/metrics.json"],
    "tokenize_genome": ["results/tokens/vq512/lambda_phage.parquet", "results/tokens/kmer6/lambda_phage.parquet"],
    "pretrain_mlm": [
        "results/pretrain/tiny/metrics.json", "results/pretrain/tiny/config.json",
        "results/pretrain/tiny/curves.csv", "results/pretrain/tiny/heldout_curve.csv",
    ],
    "prepare_dataset": ["results/datasets/prom_core_notata/train.parquet"],
    "tokenize_dataset": [
        "results/dataset_tokens/vq512/prom_core_notata/train.parquet", "results/dataset_tokens/kmer6/prom_core_notata/train.parquet",
    ],
    "finetune": [
        "results/finetune/tiny/prom_core_notata/seed0/metrics.json", "results/finetune/tiny/prom_core_notata/seed0/predictions.parquet",
        "results/finetune/tiny_random/prom_core_notata/seed0/metrics.json",
    ],
    "kmer_baseline": [
        "results/kmer_baseline/prom_core_notata/seed0/metrics.json", "results/kmer_baseline/prom_core_notata/seed0/predictions.parquet",
    ],
    "linear_probe": [
        "results/probe/vq512/prom_core_notata/metrics.json", "results/probe/kmer6/prom_core_notata/metrics.json",
        "results/probe/vq512/prom_core_notata/predictions.parquet",
    ],
    "analyse_codebook": [
        f"results/codebook_analysis/vq512/six_genomes/{name}"
        for name in ("summary.json", "profiles.parquet", "embedding.parquet", "codebook_map.parquet", "enriched_codes.parquet", "code_offsets.parquet")
    ],
    "make_tables": [*(f"results/tables/table{n}.csv" for n in range(1, 8)), *(f"results/tables/{t}.csv" for t in ("comparison", "paired", "summary"))],
}
NOT_IN_THE_SHARED_RUN = {"download_archive", "unpack_archive"}  # tests/test_archive.py and the archive workflow test
FIGURES_ONLY = {"plots"}  # PNG and HTML for the report: nothing downstream reads their shape


def shape(value):
    """Keys and nesting of a JSON value, without its values: lists as the union of their items' shapes."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        merged: dict = {}
        for item in value:
            if isinstance(item, dict):
                merged.update(shape(item))
        return [merged] if merged else ["*"]
    return "*"


def shape_of(path: Path):
    if path.suffix == ".json":
        return shape(json.loads(path.read_text()))
    if path.suffix == ".parquet":
        schema = pq.read_schema(path)
        return {
            "columns": {field.name: str(field.type) for field in schema},
            "metadata": sorted(key.decode() for key in (schema.metadata or {}) if key.startswith(b"vqdna.")),
        }
    with path.open(newline="") as handle:
        return {"columns": next(csv.reader(handle))}


def _paths(value, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        return {p for key, item in value.items() for p in _paths(item, f"{prefix}.{key}" if prefix else str(key))} or {prefix}
    if isinstance(value, list):
        return _paths(value[0], f"{prefix}[]")
    return {prefix}


def test_every_stage_is_pinned_and_nothing_else():
    assert set(STAGE_FILES) == set(STAGE_VERSIONS) - NOT_IN_THE_SHARED_RUN - FIGURES_ONLY


def test_a_stage_whose_outputs_changed_shape_bumped_its_version(workflow_run):
    current = {
        stage: {"version": STAGE_VERSIONS[stage], "outputs": {name: shape_of(workflow_run.path(name)) for name in names}}
        for stage, names in STAGE_FILES.items()
    }
    if os.environ.get("VQDNA_PIN_STAGE_OUTPUTS") == "1":
        PINS.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    pinned = json.loads(PINS.read_text())
    problems = []
    for stage, now in current.items():
        before = pinned.get(stage)
        if before is None:
            problems.append(f"{stage}: not pinned in {PINS.name}")
            continue
        if before["outputs"] == now["outputs"]:
            if before["version"] != now["version"]:
                problems.append(f"{stage}: version {before['version']} -> {now['version']} with outputs of the same shape: re-pin")
            continue
        old, new = _paths(before["outputs"]), _paths(now["outputs"])
        change = f"added {sorted(new - old)}, removed {sorted(old - new)}"
        if before["version"] == now["version"]:
            problems.append(f"{stage}: outputs changed shape ({change}) but STAGE_VERSIONS[{stage!r}] is still {now['version']}: bump it")
        else:
            problems.append(f"{stage}: version bumped and outputs changed ({change}): re-pin {PINS.name}")
    assert problems == [], "\n".join(problems) + "\n(re-pin: VQDNA_PIN_STAGE_OUTPUTS=1 python -m pytest tests/test_stage_versions.py)"
