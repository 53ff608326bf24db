"""The whole pipeline under Snakemake on real genomes: every artifact checked against its contract.

One Snakemake run (the session fixture ``workflow_run``) serves every test here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import subprocess
from collections import Counter

import duckdb
import pandas as pd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest
import yaml
from conftest import REPO, WORKFLOW_GENOMES, snakemake_command, snakemake_env
from helpers import expected_windows
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForMaskedLM

import vqdna
import vqdna.lm.modeling  # noqa: F401  (registers model_type "vqdna" with the Auto classes)
from vqdna.dataset_tokens import read_split_tokens
from vqdna.datasets.spec import read_split
from vqdna.finetune.train import weights_fingerprint
from vqdna.genome import base_ids
from vqdna.tokenizer import metrics
from vqdna.tokenizer.api import load_tokenizer, tokenizer_hash
from vqdna.windows import WindowSettings

pytestmark = pytest.mark.workflow


def _meta(path) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}


def _windows(run, genome) -> pa.Table:
    return pq.read_table(run.path(f"results/windows/{genome}.parquet"))


@pytest.mark.parametrize("genome", WORKFLOW_GENOMES)
def test_genomes_came_through_the_mirror_verified_and_indexed(workflow_run, test_data, genome):
    source = json.loads(workflow_run.path(f"resources/genomes/{genome}.source.json").read_text())
    assert source["fetched_from"].startswith(str(test_data / "genomes"))
    assert source["sha256_checked"] is True
    fasta = workflow_run.path(f"resources/genomes/{genome}.fa.gz")
    assert fasta.with_name(fasta.name + ".fai").is_file() and fasta.with_name(fasta.name + ".gzi").is_file()
    with pysam.FastaFile(str(fasta)) as handle:
        assert sum(handle.lengths) == source["length"]


@pytest.mark.parametrize("genome", WORKFLOW_GENOMES)
def test_window_counts_equal_what_genome_lengths_and_settings_imply(workflow_run, genome):
    settings = WindowSettings(**workflow_run.config["windows"])
    with pysam.FastaFile(str(workflow_run.path(f"resources/genomes/{genome}.fa.gz"))) as fasta:
        sequences = {name: fasta.fetch(name) for name in fasta.references}
    expected = expected_windows(sequences, settings)
    table = _windows(workflow_run, genome)
    assert table.num_rows == len(expected)
    got = list(zip(table.column("contig").to_pylist(), table.column("start").to_pylist(), table.column("split").to_pylist()))
    assert got == expected


@pytest.mark.parametrize("genome", WORKFLOW_GENOMES)
def test_windows_follow_the_artifact_contract(workflow_run, genome):
    path = workflow_run.path(f"results/windows/{genome}.parquet")
    schema = pq.read_schema(path)
    assert schema.field("genome").type == pa.dictionary(pa.int32(), pa.string())
    assert schema.field("contig").type == pa.dictionary(pa.int32(), pa.string())
    assert schema.field("split").type == pa.dictionary(pa.int32(), pa.string())
    assert (schema.field("start").type, schema.field("end").type, schema.field("strand").type) == (pa.int64(), pa.int64(), pa.int8())
    assert schema.field("sequence").type == pa.string()
    meta = _meta(path)
    assert meta["vqdna.schema_version"] == "1"
    assert meta["vqdna.producer"] == f"vqdna {vqdna.__version__}"
    assert meta["vqdna.genome"] == genome
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


@pytest.mark.parametrize("genome", WORKFLOW_GENOMES)
def test_token_files_match_their_windows_and_tokenizer(workflow_run, genome):
    tokenizer_dir = workflow_run.path("results/tokenizers/vq512")
    path = workflow_run.path(f"results/tokens/vq512/{genome}.parquet")
    tokens, windows = pq.read_table(path), _windows(workflow_run, genome)
    meta = _meta(path)
    assert meta["vqdna.tokenizer"] == "vq512"
    assert meta["vqdna.tokenizer_hash"] == tokenizer_hash(tokenizer_dir)
    assert meta["vqdna.genome"] == genome
    assert tokens.schema.field("codes_l1").type == pa.list_(pa.uint16())
    for key in ["genome", "contig", "start", "end", "strand", "split"]:
        assert tokens.column(key).to_pylist() == windows.column(key).to_pylist()
    codes = tokens.column("codes_l1").to_pylist()
    assert all(len(c) == 512 for c in codes)
    assert max(max(c) for c in codes) < 512


def test_the_tokenizer_learns_context_not_just_bases(workflow_run):
    """K=512 on real windows, measured after a restart-free final stretch: reconstruction, usage and the probe."""
    tokenizer_dir = workflow_run.path("results/tokenizers/vq512")
    result = json.loads((tokenizer_dir / "metrics.json").read_text())
    level = result["levels"][0]
    assert result["reconstruction_accuracy"] >= 0.99
    assert level["usage"] >= 0.25
    assert level["neighbour_probe"]["mean"] >= 0.40
    assert level["perplexity"] > 1
    assert result["tokenizer_hash"] == tokenizer_hash(tokenizer_dir)
    settings = workflow_run.config["tokenizers"]["vq512"]
    assert settings["restart_free_steps"] >= 200
    with open(tokenizer_dir / "curves.csv") as handle:
        curves = list(csv.DictReader(handle))
    final_stretch = [int(r["restarts"]) for r in curves if int(r["step"]) > settings["steps"] - settings["restart_free_steps"]]
    assert len(set(final_stretch)) == 1, "a dead-code restart happened in the final stretch"


def test_a_stride_4_tokenizer_runs_through_every_stage_with_a_quarter_of_the_tokens(workflow_run):
    """Beyond the paper: one code per 4 nt from training to the tables; what depends on the stride is checked at each stage."""
    tokenizer_dir = workflow_run.path("results/tokenizers/vq_s4")
    assert json.loads((tokenizer_dir / "config.json").read_text())["stride"] == 4
    measured = json.loads((tokenizer_dir / "metrics.json").read_text())
    assert measured["stride"] == 4 and measured["tokens_per_nt"] == 0.25
    # 4 bases per code from 256 codes, 200 steps at width 32: well above chance (25%), short of lossless
    assert measured["reconstruction_accuracy"] > 0.4
    path = workflow_run.path("results/tokens/vq_s4/lambda_phage.parquet")
    assert _meta(path)["vqdna.stride"] == "4" and "vqdna.stride" not in _meta(workflow_run.path("results/tokens/vq512/lambda_phage.parquet"))
    tokens, windows = pq.read_table(path), _windows(workflow_run, "lambda_phage")
    assert tokens.column("start").to_pylist() == windows.column("start").to_pylist()
    assert {len(c) for c in tokens.column("codes_l1").to_pylist()} == {512 // 4}
    tokenizer = load_tokenizer(tokenizer_dir, device="cpu")
    sequences = windows.column("sequence").to_pylist()[:8]
    assert np.array_equal(np.array(tokens.column("codes_l1").to_pylist()[:8]), np.stack([c[0] for c in tokenizer.encode(sequences)]))
    pretrained = json.loads(workflow_run.path("results/pretrain/tiny_s4/metrics.json").read_text())
    assert pretrained["budget"]["mean_tokens_per_window"] == 128
    for dataset in workflow_run.datasets:
        metrics_json = json.loads(workflow_run.path(f"results/finetune/tiny_s4/{dataset['dataset']}/seed0/metrics.json").read_text())
        assert metrics_json["mean_test_tokens"] <= -(-dataset["max_length"] // 4)
        assert (metrics_json["head"], metrics_json["head_norm"]) == ("linear", "batch")  # the run's own finetune: keys
    codes = read_split_tokens(workflow_run.path("results/dataset_tokens/vq_s4/prom_core_notata/test.parquet"), tokenizer.hash, 70)[1]
    assert {c.shape for c in codes} == {(1, 18)}  # 70 nt -> ceil(70 / 4)
    with open(workflow_run.path("results/tables/comparison.csv"), newline="") as handle:
        per_nt = [float(r["value"]) for r in csv.DictReader(handle)
                  if r["section"] == "tokens" and r["tokenizer"] == "vq_s4" and r["dataset"] == "prom_core_notata"]
    assert per_nt == [pytest.approx(18 / 70, abs=0.01)]


def test_held_out_figures_hold_when_measured_again_from_the_saved_tokenizer(workflow_run):
    """Independent of the training code: encode and decode test-split windows through the public API."""
    tokenizer = load_tokenizer(workflow_run.path("results/tokenizers/vq512"), device="cpu")
    sequences = []
    for genome in workflow_run.config["tokenizers"]["vq512"]["train_genomes"]:
        table = _windows(workflow_run, genome)
        sequences += [s for s, split in zip(table.column("sequence").to_pylist(), table.column("split").to_pylist()) if split == "test"]
    sequences = sequences[:256]
    codes = tokenizer.encode(sequences)
    decoded = tokenizer.decode(codes)
    truth = np.stack([base_ids(s) for s in sequences])
    assert metrics.reconstruction_accuracy(np.stack([base_ids(s) for s in decoded]), truth) >= 0.99
    assert metrics.usage(np.stack([c[0] for c in codes]), 512) >= 0.25


def test_pretrained_model_loads_through_auto_classes_and_names_its_tokenizer(workflow_run):
    folder = workflow_run.path("results/pretrain/tiny")
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "vqdna"
    assert config.tokenizer_hash == tokenizer_hash(workflow_run.path("results/tokenizers/vq512"))
    model = AutoModelForMaskedLM.from_pretrained(folder)
    tokenizer = load_tokenizer(workflow_run.path("results/tokenizers/vq512"), device="cpu")
    # The frozen input embedding is the tokenizer's codebook, unchanged by pretraining.
    assert np.array_equal(model.vqdna.embeddings.code_embeddings[0].weight.detach().numpy(), tokenizer.model.codebooks[0].embed.numpy())
    result = json.loads((folder / "metrics.json").read_text())
    assert 0 < result["heldout_masked_accuracy"][0] <= 1


def test_fine_tuning_on_real_core_promoters_beats_mcc_0_3_on_the_full_test_split(workflow_run, test_data):
    folder = workflow_run.path("results/finetune/tiny/prom_core_notata/seed0")
    result = json.loads((folder / "metrics.json").read_text())
    assert result["test"]["mcc"] >= 0.3, result["test"]
    with open(test_data / "gue/prom/prom_core_notata/test.csv") as handle:
        test_rows = sum(1 for _ in handle) - 1
    assert pq.read_metadata(folder / "predictions.parquet").num_rows == test_rows
    assert pq.read_metadata(workflow_run.path("results/datasets/prom_core_notata/test.parquet")).num_rows == test_rows
    assert (folder / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize("run,tokenizer", [("tiny", "vq512"), ("tiny_kmer", "kmer6")])
@pytest.mark.parametrize("dataset", ["prom_core_notata", "six_genomes"])
def test_fine_tuned_models_froze_the_base_weights_saved_by_pretraining(workflow_run, run, tokenizer, dataset):
    pretrained = load_file(workflow_run.path(f"results/pretrain/{run}/model.safetensors"))
    result = json.loads(workflow_run.path(f"results/finetune/{run}/{dataset}/seed0/metrics.json").read_text())
    assert result["base_weights_sha256"] == weights_fingerprint(pretrained)
    assert result["tokenizer_hash"] == tokenizer_hash(workflow_run.path(f"results/tokenizers/{tokenizer}"))


def test_genome_classification_splits_come_from_disjoint_regions(workflow_run):
    splits = {s: set(pq.read_table(workflow_run.path(f"results/datasets/six_genomes/{s}.parquet")).column("sequence").to_pylist()) for s in ["train", "dev", "test"]}
    # The regions are disjoint (test_datasets.py's test_genome_classification_splits_come_from_disjoint_coordinate_ranges
    # checks the coordinates); an identical tile can still recur in another region (the chr22 slice is 22q11's
    # segmental duplications): rare, never systematic.
    for held in ("dev", "test"):
        assert len(splits["train"] & splits[held]) <= 0.01 * len(splits[held]), held
    labels = set(pq.read_table(workflow_run.path("results/datasets/six_genomes/test.parquet")).column("label").to_pylist())
    assert labels == set(range(6))


def test_every_job_records_its_wall_time_and_peak_memory_beside_its_log(workflow_run):
    logs = sorted(workflow_run.path("logs").rglob("*.log"))
    benchmarks = sorted(workflow_run.path("logs/benchmarks").rglob("*.tsv"))
    assert {p.relative_to(workflow_run.path("logs")).with_suffix("") for p in logs} == {
        p.relative_to(workflow_run.path("logs/benchmarks")).with_suffix("") for p in benchmarks
    }
    finetune = pd.read_csv(workflow_run.path("logs/benchmarks/finetune/tiny/prom_core_notata/seed0.tsv"), sep="\t")
    assert len(finetune) == 1 and finetune.s.iloc[0] > 1 and finetune.max_rss.iloc[0] > 100  # seconds, MB


def test_the_codebook_analysis_places_each_classs_top_codes_on_its_own_genome(workflow_run):
    """Figure 4 on the six-genome task: top codes per genome, found where the genome has them, the map of profiles."""
    folder = workflow_run.path("results/codebook_analysis/vq512/six_genomes")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["classes"] == WORKFLOW_GENOMES and summary["located"]
    level = summary["levels"][0]
    assert level["codebook_size"] == 512 and level["silhouette_2d"] is not None and level["significant_codes"] > 0
    assert any(level["top_codes"].values())  # six genomes of different composition: some class has codes of its own
    offsets = pd.read_parquet(folder / "code_offsets.parquet")
    datasets = {split: pd.read_parquet(workflow_run.path(f"results/datasets/six_genomes/{split}.parquet")) for split in ("train", "dev", "test")}
    genomes = {}
    for genome in WORKFLOW_GENOMES:
        with pysam.FastaFile(str(workflow_run.path(f"resources/genomes/{genome}.fa.gz"))) as fasta:
            genomes[genome] = {name: fasta.fetch(name).upper() for name in fasta.references}
    for row in offsets.sample(min(len(offsets), 200), random_state=0).itertuples():
        source = datasets[row.split].iloc[row.index]
        assert source.label == row.label and row.contig == source.contig
        genome = genomes[WORKFLOW_GENOMES[row.label]][row.contig]  # the position on the genome is the sequence's
        assert genome[row.genome_position] == source.sequence[row.offset]
    for plot in ("embedding", "codebook_map", "enrichment", "offsets"):
        assert (folder / f"{plot}.png").stat().st_size > 10_000


@pytest.mark.parametrize("genome", WORKFLOW_GENOMES)
def test_baseline_token_files_carry_token_starts_and_round_trip(workflow_run, genome):
    path = workflow_run.path(f"results/tokens/kmer6/{genome}.parquet")
    meta = _meta(path)
    assert meta["vqdna.tokenizer_type"] == "kmer"
    assert meta["vqdna.tokenizer_hash"] == tokenizer_hash(workflow_run.path("results/tokenizers/kmer6"))
    tokens = pq.read_table(path)
    assert tokens.schema.field("token_starts").type == pa.list_(pa.int32())
    tokenizer = load_tokenizer(workflow_run.path("results/tokenizers/kmer6"))
    windows = _windows(workflow_run, genome).column("sequence").to_pylist()
    codes = tokens.column("codes_l1").to_pylist()
    assert all(starts == list(range(len(w) - 5)) for starts, w in zip(tokens.column("token_starts").to_pylist(), windows))
    assert tokenizer.decode([np.asarray([c]) for c in codes[:50]]) == windows[:50]


def test_each_dataset_is_encoded_once_per_tokenizer_and_read_by_all_its_runs(workflow_run):
    """tiny and tiny_random share vq512: one tokenize_dataset job per (tokenizer, dataset), whatever the runs and seeds."""
    jobs = Counter(re.findall(r"rule tokenize_dataset:\n(?:    .*\n)*?    wildcards: tokenizer=(\S+), dataset=(\S+)", workflow_run.output))
    datasets = [d["dataset"] for d in workflow_run.datasets]
    used = {(tokenizer, dataset) for tokenizer in ("vq512", "kmer6", "vq_s4") for dataset in datasets}
    probed = {(tokenizer, "prom_core_notata") for tokenizer in ("vq512", "kmer6", "vq512_code_size256")}
    assert set(jobs) == used | probed and set(jobs.values()) == {1}

    tokenizer = load_tokenizer(workflow_run.path("results/tokenizers/vq512"), device="cpu")
    max_length = next(int(d["max_length"]) for d in workflow_run.datasets if d["dataset"] == "mouse_tf_0")
    sequences, labels = read_split(workflow_run.path("results/datasets/mouse_tf_0/test.parquet"))
    read_labels, codes = read_split_tokens(
        workflow_run.path("results/dataset_tokens/vq512/mouse_tf_0/test.parquet"), tokenizer.hash, max_length
    )
    expected = tokenizer.encode([s[:max_length] for s in sequences])
    assert read_labels.tolist() == labels.tolist() and all(np.array_equal(c, e) for c, e in zip(codes, expected))
    for run in ("tiny", "tiny_random"):
        metrics = json.loads(workflow_run.path(f"results/finetune/{run}/mouse_tf_0/seed0/metrics.json").read_text())
        assert metrics["tokenizer_hash"] == tokenizer.hash


def test_results_table_has_a_row_per_run_and_dataset(workflow_run):
    with open(workflow_run.path("results/tables/summary.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["run"], r["dataset"]) for r in rows) == sorted(
        (run, dataset)
        for run in ("tiny", "tiny_kmer", "tiny_random", "tiny_s4")
        for dataset in ("emp_h3", "mouse_tf_0", "prom_core_notata", "six_genomes")
    )
    assert "prom_core_notata" in workflow_run.path("results/tables/summary.md").read_text()


def test_the_random_init_control_is_the_untrained_encoder_fine_tuned_in_full(workflow_run):
    control = json.loads(workflow_run.path("results/pretrain/tiny_random/metrics.json").read_text())
    pretrained = json.loads(workflow_run.path("results/pretrain/tiny/metrics.json").read_text())
    assert control["steps"] == 0 and control["final_loss"] is None and [p["step"] for p in control["heldout_curve"]] == [0]
    assert [p["step"] for p in pretrained["heldout_curve"]] == [50, 100]  # eval_every 50 of 100 steps
    assert pretrained["heldout_masked_accuracy"][0] > control["heldout_masked_accuracy"][0]
    for dataset in ("mouse_tf_0", "six_genomes"):
        run = workflow_run.path(f"results/finetune/tiny_random/{dataset}/seed0")
        assert json.loads((run / "metrics.json").read_text())["mode"] == "full"
        assert (run / "model" / "model.safetensors").is_file() and not (run / "adapter").exists()
        lora = json.loads(workflow_run.path(f"results/finetune/tiny/{dataset}/seed0/metrics.json").read_text())
        assert lora["mode"] == "lora"


def test_the_comparison_tables_pair_every_run_with_the_floor_and_the_control(workflow_run):
    with open(workflow_run.path("results/tables/paired.csv"), newline="") as handle:
        paired = list(csv.DictReader(handle))
    pairs = {(r["method_a"], r["method_b"]) for r in paired}
    assert {("tiny", "kmer_lr"), ("tiny_random", "kmer_lr"), ("tiny", "tiny_random")} <= pairs
    average = next(r for r in paired if (r["method_a"], r["method_b"], r["dataset"]) == ("tiny", "tiny_random", "average"))
    assert float(average["low"]) <= float(average["difference"]) <= float(average["high"])
    assert int(average["datasets"]) == 4
    with open(workflow_run.path("results/tables/comparison.csv"), newline="") as handle:
        comparison = list(csv.DictReader(handle))
    scores = {(r["dataset"], r["method"]) for r in comparison if r["section"] == "score"}
    assert ("mouse_tf_0", "tiny_random") in scores and ("mouse_tf_0", "kmer_lr") in scores
    masked = {r["run"]: float(r["value"]) for r in comparison if r["section"] == "pretrain" and r["quantity"] == "masked_accuracy"}
    assert masked["tiny"] > masked["tiny_random"]
    assert "tiny_random" in workflow_run.path("results/tables/comparison.md").read_text()


def _table_cells(path) -> dict[tuple[str, str, str], dict]:
    with open(path, newline="") as handle:
        return {(r["part"], r["row"], r["column"]): r for r in csv.DictReader(handle)}


def test_all_seven_paper_tables_come_out_with_our_real_cells_and_the_rest_missing(workflow_run):
    for number in range(1, 8):
        assert workflow_run.path(f"results/tables/table{number}.md").read_text().startswith(f"### Table {number}")
    table3 = _table_cells(workflow_run.path("results/tables/table3.csv"))
    fine_tuned = json.loads(workflow_run.path("results/finetune/tiny/prom_core_notata/seed0/metrics.json").read_text())
    assert float(table3[("", "tiny", "prom_core_notata")]["value"]) == pytest.approx(100 * fine_tuned["test"]["mcc"], abs=1e-3)
    assert table3[("", "tiny", "prom_300_all")]["value"] == ""  # not run here: missing, never zero
    floor = json.loads(workflow_run.path("results/kmer_baseline/prom_core_notata/seed0/metrics.json").read_text())
    assert floor["method"] == "kmer_lr" and floor["test"]["mcc"] > 0.3
    assert float(table3[("", "kmer_lr", "prom_core_notata")]["value"]) == pytest.approx(100 * floor["test"]["mcc"], abs=1e-3)
    table4 = _table_cells(workflow_run.path("results/tables/table4.csv"))
    assert table4[("", "tiny_kmer", "mouse_tf_0")]["value"] != "" and table4[("", "tiny", "covid")]["value"] == ""
    table5 = _table_cells(workflow_run.path("results/tables/table5.csv"))
    assert table5[("", "tiny", "emp_h3")]["note"] == "nonstandard"  # trained on GUE's dev split: marked
    assert "*" in next(line for line in workflow_run.path("results/tables/table5.md").read_text().splitlines() if line.startswith("| tiny "))
    table7 = _table_cells(workflow_run.path("results/tables/table7.csv"))
    swept = json.loads(workflow_run.path("results/tokenizers/vq512_code_size256/metrics.json").read_text())
    cell = table7[("code_size", "256 vq512_code_size256", "vqdna_rec")]
    assert float(cell["value"]) == pytest.approx(100 * swept["reconstruction_accuracy"], abs=1e-3)
    assert float(cell["delta"]) == pytest.approx(100 * swept["reconstruction_accuracy"] - 98.8, abs=1e-3)
    assert ("code_size", "512 vq512", "vqdna_rec") in table7  # the base stands in its own row
    probe = json.loads(workflow_run.path("results/probe/vq512/prom_core_notata/metrics.json").read_text())
    assert probe["method"] == "linear_probe_tokenizer" and 0 < probe["token_usage"] <= 1
    assert not workflow_run.path("results/tokens/vq512_code_size256").exists()  # sweep variants tokenize no genome


def test_every_artifact_opens_with_duckdb_without_project_code(workflow_run):
    tokens = workflow_run.path("results/tokens/vq512")
    total = duckdb.sql(f"SELECT count(*) FROM '{tokens}/*.parquet'").fetchall()[0][0]
    assert total == sum(_windows(workflow_run, g).num_rows for g in WORKFLOW_GENOMES)
    hashes = duckdb.sql(
        f"SELECT DISTINCT decode(value) FROM parquet_kv_metadata('{tokens}/*.parquet') WHERE decode(key) = 'vqdna.tokenizer_hash'"
    ).fetchall()
    assert hashes == [(tokenizer_hash(workflow_run.path("results/tokenizers/vq512")),)]


def test_inspect_shows_schema_rows_and_tokenizer_hash(workflow_run):
    path = workflow_run.path("results/tokens/vq512/lambda_phage.parquet")
    result = subprocess.run(["python", "-m", "vqdna", "inspect", str(path)], capture_output=True, text=True, env=snakemake_env(), check=True)
    assert "codes_l1: list<element: uint16>" in result.stdout
    assert f"rows: {pq.read_metadata(path).num_rows}" in result.stdout
    assert tokenizer_hash(workflow_run.path("results/tokenizers/vq512")) in result.stdout


def test_a_second_run_is_a_no_op(workflow_run):
    result = subprocess.run(
        snakemake_command(workflow_run.workdir, "--dry-run"), cwd=workflow_run.workdir, env=snakemake_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


def test_more_gpus_and_nodes_for_a_finished_pretraining_run_rerun_nothing(workflow_run):
    """GPUs and nodes are resources, not params: a finished run is not redone because a cluster has more of them."""
    config = yaml.safe_load(workflow_run.path("config/config.yaml").read_text())
    for run in config["runs"].values():
        if "pretrained" not in run:
            run["gpus"], run["nodes"] = 2, 2
    more_gpus = workflow_run.path("config/more_gpus.yaml")
    more_gpus.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [*snakemake_command(workflow_run.workdir, "--dry-run")]
    command[command.index("--configfile") + 1] = str(more_gpus)
    result = subprocess.run(command, cwd=workflow_run.workdir, env=snakemake_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


def _in_repo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["python", "-m", "snakemake", *args], cwd=REPO, env=snakemake_env(), capture_output=True, text=True)


def test_default_config_dry_run_works():
    result = _in_repo("--dry-run", "--cores", "1", "--directory", str(REPO))
    assert result.returncode == 0, result.stderr[-3000:]


def test_lint_is_clean():
    result = _in_repo("--lint", "--cores", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_rule_files_are_snakefmt_formatted():
    result = subprocess.run(
        ["snakefmt", "--check", "Snakefile", "workflow/rules"], cwd=REPO, env=snakemake_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_pretraining_state_is_cleared_once_the_model_is_saved(workflow_run):
    assert workflow_run.path("results/pretrain/tiny/model.safetensors").is_file()
    assert not workflow_run.path("results/pretrain_state/tiny").exists()


def test_a_tokenizer_and_an_encoder_from_elsewhere_are_fine_tuned_as_they_are(workflow_run, test_data, tmp_path):
    """`tokenizers: {NAME: {path}}` and `runs: {NAME: {pretrained}}`: nothing is trained or pretrained again.

    Their folders sit under a name with a space, a quote and a command substitution: every rule quotes what
    reaches its shell, so the paths arrive whole and nothing runs.
    """
    elsewhere = tmp_path / "their models" / "it's $(touch pwned)"
    tokenizer = elsewhere / "tokenizer"
    encoder = elsewhere / "encoder"
    shutil.copytree(workflow_run.path("results/tokenizers/vq512"), tokenizer)
    shutil.copytree(workflow_run.path("results/pretrain/tiny"), encoder)
    (tmp_path / "config").mkdir()
    config = {
        "genomes": "config/genomes.tsv",
        "datasets": "config/datasets.tsv",
        "mirror": str(test_data / "genomes"),
        "tokenizers": {"theirs": {"path": str(tokenizer)}},
        "runs": {"theirs": {"tokenizer": "theirs", "pretrained": str(encoder)}},
        "finetune": {"runs": ["theirs"], "seeds": [0]},
    }
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    genomes = (REPO / "config" / "genomes.tsv").read_text().splitlines()
    (tmp_path / "config" / "genomes.tsv").write_text("\n".join([genomes[0], *[g for g in genomes if g.startswith("lambda_phage\t")]]) + "\n")
    prom = workflow_run.datasets[0]
    sheet = {**prom, "max_train_samples": 200, "epochs": 1}
    (tmp_path / "config" / "datasets.tsv").write_text(
        "\t".join(sheet) + "\n" + "\t".join(str(v) for v in sheet.values()) + "\n"
    )
    result = subprocess.run(snakemake_command(tmp_path), cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    ran = result.stderr
    assert "rule train_tokenizer" not in ran and "rule pretrain_mlm" not in ran and "rule evaluate_tokenizer" not in ran
    assert "rule tokenize_genome" in ran and "rule finetune" in ran
    metrics = json.loads((tmp_path / "results/finetune/theirs/prom_core_notata/seed0/metrics.json").read_text())
    assert metrics["base_weights_sha256"] == weights_fingerprint(load_file(encoder / "model.safetensors"))
    assert metrics["tokenizer_hash"] == tokenizer_hash(tokenizer)
    assert _meta(tmp_path / "results/tokens/theirs/lambda_phage.parquet")["vqdna.tokenizer_hash"] == tokenizer_hash(tokenizer)
    assert not list(tmp_path.rglob("pwned")) and not (REPO / "pwned").exists()


def test_a_gue_dataset_inside_an_archive_is_fetched_unpacked_once_and_prepared(workflow_run, test_data, tmp_path):
    """`archives: {gue: ...}` + source `archive:gue/GUE/prom/prom_core_notata`: the same Parquet as from the folder."""
    import zipfile

    prom = test_data / "gue" / "prom" / "prom_core_notata"
    archive = tmp_path / "GUE.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for split in ("train", "dev", "test"):
            handle.write(prom / f"{split}.csv", f"GUE/prom/prom_core_notata/{split}.csv")
    (tmp_path / "config").mkdir()
    config = yaml.safe_load(workflow_run.path("config/config.yaml").read_text())
    config["archives"] = {"gue": {"source": str(archive)}}
    config.pop("analysis", None)  # its dataset is not in this one-row sheet
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "config" / "genomes.tsv").write_text(workflow_run.path("config/genomes.tsv").read_text())
    sheet = {**workflow_run.datasets[0], "source": "archive:gue/GUE/prom/prom_core_notata"}
    (tmp_path / "config" / "datasets.tsv").write_text("\t".join(sheet) + "\n" + "\t".join(str(v) for v in sheet.values()) + "\n")
    target = [f"results/datasets/prom_core_notata/{split}.parquet" for split in ("train", "dev", "test")]
    result = subprocess.run(snakemake_command(tmp_path, *target), cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "rule download_archive" in result.stderr and "rule unpack_archive" in result.stderr
    recorded = json.loads((tmp_path / "resources/archives/gue.zip.source.json").read_text())["sha256"]
    assert recorded == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (tmp_path / "resources/archives/gue/UNPACKED.json").is_file()
    for split in ("train", "dev", "test"):
        ours = pq.read_table(tmp_path / f"results/datasets/prom_core_notata/{split}.parquet")
        from_folder = pq.read_table(workflow_run.path(f"results/datasets/prom_core_notata/{split}.parquet"))
        assert ours.select(["sequence", "label"]).equals(from_folder.select(["sequence", "label"]))


def _job_counts(output: str) -> dict[str, int]:
    """The `Job stats` table of a dry run: rule -> job count."""
    lines = output[output.index("Job stats:") :].splitlines()[3:]
    counts = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.mark.parametrize("named_profile", [False, True], ids=["plain", "with-a-named-profile"])
def test_a_failed_jobs_one_line_error_reaches_the_terminal(test_data, tmp_path, named_profile):
    """Not only "check log file(s)": profiles/default shows the failed log, also beside a --profile of the user's."""
    (tmp_path / "config").mkdir()
    (tmp_path / "bad").mkdir()
    for split in ("train", "dev", "test"):
        (tmp_path / "bad" / f"{split}.csv").write_text("sequence,label\nACGT,0\n,1\n")
    (tmp_path / "config" / "genomes.tsv").write_text(f"genome\tsource\nlambda_phage\t{test_data / 'genomes' / 'lambda_virus.fa'}\n")
    (tmp_path / "config" / "datasets.tsv").write_text(
        f"dataset\tgroup\ttask\tnum_labels\tmetric\tsource\tmax_length\nbad\tEMP\tclassification\t2\tmcc\t{tmp_path / 'bad'}\t64\n"
    )
    config = {
        "genomes": "config/genomes.tsv", "datasets": "config/datasets.tsv",
        "tokenizers": {"k3": {"type": "kmer", "train_genomes": ["lambda_phage"], "k": 3}}, "runs": {}, "finetune": {"runs": []},
    }
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    extra = []
    if named_profile:
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "profile.yaml").write_text("printshellcmds: true\n")
        extra = ["--profile", str(tmp_path / "mine")]
    result = subprocess.run(
        snakemake_command(tmp_path, "results/datasets/bad/train.parquet", *extra), cwd=tmp_path, env=snakemake_env(),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert re.search(r"^error: \S*bad/train\.csv line 3: empty sequence$", result.stderr, re.MULTILINE), result.stderr[-3000:]


def test_small_dry_run_plans_the_paper_in_miniature(tmp_path):
    """config/small.yaml: four tokenizers, their four runs, the control and the pretrained encoder fine-tuned in full,
    three draws of all of it (draws 1 and 2 train VQ-VAE, HRQ and BPE again and pretrain every encoder again)."""
    shutil.copytree(REPO / "config", tmp_path / "config")  # a fresh folder: nothing built yet, every job planned
    result = _in_repo("--dry-run", "--cores", "1", "--directory", str(tmp_path), "--configfile", "config/small.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = _job_counts(result.stdout + result.stderr)
    config = yaml.safe_load((REPO / "config" / "small.yaml").read_text())
    assert len(config["finetune"]["runs"]) == 6 and config["finetune"]["seeds"] == [0] and config["draws"] == 3
    tokenizers = 4 + 3 * 2  # the 6-mer tokenizer has no seed: one for every draw
    assert counts["train_tokenizer"] == counts["evaluate_tokenizer"] == tokenizers
    assert counts["tokenize_genome"] == tokenizers * 6
    assert counts["pretrain_mlm"] == 5 * 3  # vq_bert_full fine-tunes vq_bert's encoder (each draw's): not pretrained again
    assert counts["finetune"] == 6 * 3 * 3  # runs x datasets x draws, one fine-tuning seed each
    assert counts["linear_probe"] == tokenizers * 3 and counts["kmer_baseline"] == counts["prepare_dataset"] == 3
    assert counts["tokenize_dataset"] == tokenizers * 3  # each dataset encoded once per tokenizer, for all its runs and seeds


def test_stride_dry_run_plans_the_stride_ablation(tmp_path):
    """config/stride.yaml: VQ-VAE and HRQ at s = 1, 2, 4, 8, 16 measured; s = 1, 4, 8 fine-tuned beside s-mers and BPE."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    result = _in_repo("--dry-run", "--cores", "1", "--directory", str(tmp_path), "--configfile", "config/stride.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = _job_counts(result.stdout + result.stderr)
    config = yaml.safe_load((REPO / "config" / "stride.yaml").read_text())
    assert config["ablations"]["stride"]["values"] == [1, 2, 4, 8, 16]
    # 2 learned tokenizers x 5 strides (1 is the base itself) + 4-mer, 8-mer and BPE
    assert counts["train_tokenizer"] == counts["evaluate_tokenizer"] == 2 * 5 + 3
    assert counts["linear_probe"] == 13 * 3  # every tokenizer probed on the three datasets
    runs = config["finetune"]["runs"]
    assert {config["runs"][r]["tokenizer"] for r in runs} == {"vq", "vq_stride4", "vq_stride8", "hrq_stride8", "kmer4", "kmer8", "bpe"}
    assert counts["pretrain_mlm"] == len(runs) == 7 and counts["finetune"] == 7 * 3 * 3
    assert counts["tokenize_genome"] == 7 * 6


def test_reproduce_dry_run_plans_every_table_job():
    """config/reproduce.yaml: datasets x seeds x runs, sweep variants, probes and baselines, counted from the sheets.

    Beyond the paper: species at 250k and 450k nt, fine-tuned only by the stride-8 HRQ run (their `runs` cell).
    """
    result = _in_repo("--dry-run", "--cores", "1", "--directory", str(REPO), "--configfile", "config/reproduce.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = _job_counts(result.stdout + result.stderr)
    config = yaml.safe_load((REPO / "config" / "reproduce.yaml").read_text())
    with open(REPO / "config" / "reproduce" / "datasets.tsv") as handle:
        datasets = list(csv.DictReader(handle, delimiter="\t"))
    with open(REPO / "config" / "reproduce" / "genomes.tsv") as handle:
        genomes = list(csv.DictReader(handle, delimiter="\t"))
    usable = [d for d in datasets if not d["source"].startswith("resources/eep/")]  # EEP data is the user's to place
    assert len(datasets) == 36 and len(usable) == 33
    long_species = {d["dataset"]: d["runs"] for d in usable if d["runs"]}
    assert long_species == {"species_250k": "hrq_s8_bert", "species_450k": "hrq_s8_bert"}
    assert config["tokenizers"]["hrq_s8"]["stride"] == 8 and config["runs"]["hrq_s8_bert"]["tokenizer"] == "hrq_s8"
    seeds = len(config["finetune"]["seeds"])
    runs = config["finetune"]["runs"]
    sweeps = config["ablations"]
    # A sweep value equal to the base's own setting is the base itself, not a new tokenizer or run.
    new_tokenizers = sum(
        v != config["tokenizers"][t].get(s["key"]) for s in sweeps.values() for t in s.get("tokenizers", []) for v in s["values"]
    )
    new_runs = sum(v != config["runs"][r].get(s["key"]) for s in sweeps.values() for r in s.get("runs", []) for v in s["values"])
    tokenizers = len(config["tokenizers"]) + new_tokenizers
    assert counts["prepare_dataset"] == len(usable) == counts["kmer_baseline"]
    finetuned = len(runs) * (len(usable) - len(long_species)) + len(long_species)  # (run, dataset) pairs
    assert counts["finetune"] == finetuned * seeds + new_runs * len(sweeps["mask_ratio"]["datasets"]) * seeds == 321
    assert counts["pretrain_mlm"] == len(config["runs"]) + new_runs == 9
    assert counts["train_tokenizer"] == counts["evaluate_tokenizer"] == counts["linear_probe"] == tokenizers == 20
    assert counts["tokenize_genome"] == 3 * len(genomes)  # the three tokenizers the runs pretrain on
    # Datasets encoded once per tokenizer: every dataset a run fine-tunes by its tokenizer, the probed ones by the rest.
    run_tokenizers = {config["runs"][r]["tokenizer"] for r in runs}
    probed = config["probe"]["datasets"]
    assert counts["tokenize_dataset"] == finetuned + (tokenizers - len(run_tokenizers)) * len(probed) == 112
    assert counts["download_genome"] == counts["make_windows"] == len(genomes)
    assert counts["download_assembly_report"] == sum(bool(g["assembly_report"]) for g in genomes) == 5
    assert counts["download_archive"] == counts["unpack_archive"] == counts["make_tables"] == 1
    assert counts["analyse_codebook"] == len(config["analysis"]["tokenizers"]) * len(config["analysis"]["datasets"]) == 2


def _copy_of_the_run(workflow_run, tmp_path):
    """The finished run in a folder of its own (mtimes and Snakemake's records kept), so a test may change its config."""
    workdir = tmp_path / "run"
    shutil.copytree(workflow_run.workdir, workdir, symlinks=True)
    return workdir


def _planned(workdir, *extra: str) -> dict[str, int]:
    result = subprocess.run(
        snakemake_command(workdir, "--dry-run", *extra), cwd=workdir, env=snakemake_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    return _job_counts(text) if "Job stats:" in text else {}


def test_a_datasets_epochs_or_learning_rate_reruns_its_fine_tunings_only(workflow_run, tmp_path):
    """The floor and the probes read no optimiser cell of the sheet: they are not redone."""
    rows = list(csv.DictReader((workflow_run.workdir / "config" / "datasets.tsv").open(), delimiter="\t"))
    for row in rows:
        if row["dataset"] == "prom_core_notata":
            row["epochs"], row["learning_rate"] = str(int(row["epochs"]) + 1), "3e-4"
    sheet = tmp_path / "datasets.tsv"
    with sheet.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    runs = workflow_run.config["finetune"]["runs"]
    # and the figures that read them: the dataset's fine-tuning plot, the rendered tables, the runtime table
    assert _planned(workflow_run.workdir, "--config", f"datasets={sheet}") == {
        "finetune": len(runs), "make_tables": 1, "plot_finetuning": 1, "render_tables": 1, "runtime_table": 1,
        "all": 1, "total": len(runs) + 5,
    }


def test_a_genome_added_to_the_sheet_is_the_only_one_downloaded_windowed_and_tokenized(workflow_run, test_data, tmp_path):
    workdir = _copy_of_the_run(workflow_run, tmp_path)
    tokens = sorted((workdir / "results" / "tokens").rglob("*.parquet"))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tokens}
    sheet = workdir / "config" / "genomes.tsv"
    sheet.write_text(sheet.read_text() + f"lambda_again\t{test_data / 'genomes' / 'lambda_virus.fa'}\t\tthe lambda genome again, as a new row\n")
    tokenizers = sorted(p.name for p in (workdir / "results" / "tokens").iterdir())
    assert _planned(workdir) == {"download_genome": 1, "make_windows": 1, "tokenize_genome": len(tokenizers), "all": 1, "total": 3 + len(tokenizers)}

    result = subprocess.run(snakemake_command(workdir), cwd=workdir, env=snakemake_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for tokenizer in tokenizers:
        assert (workdir / "results" / "tokens" / tokenizer / "lambda_again.parquet").is_file()
    for path, (data, mtime) in before.items():
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    assert _planned(workdir) == {}  # and nothing is left to do


@pytest.mark.parametrize(
    "source,expected",
    [
        ("/nowhere/lambda.fa", r"genome lambda_phage: source /nowhere/lambda\.fa not found; resources/genomes/lambda_phage\.fa\.gz was built from https://"),
        ("file:///nowhere/lambda.fa", r"genome lambda_phage: source file:///nowhere/lambda\.fa: unsupported scheme 'file://'"),
    ],
    ids=["missing-path", "file-url"],
)
def test_a_genome_source_changed_to_one_that_cannot_be_read_is_one_line_not_the_old_genome(workflow_run, tmp_path, source, expected):
    workdir = _copy_of_the_run(workflow_run, tmp_path)
    sheet = workdir / "config" / "genomes.tsv"
    rows = [line.split("\t") for line in sheet.read_text().splitlines()]
    sheet.write_text("\n".join("\t".join([r[0], source, "", *r[3:]] if r[0] == "lambda_phage" else r) for r in rows) + "\n")
    result = subprocess.run(snakemake_command(workdir, "--dry-run"), cwd=workdir, env=snakemake_env(), capture_output=True, text=True)
    printed = result.stdout + result.stderr  # Snakemake prints a WorkflowError on stdout
    assert result.returncode == 1 and "Nothing to be done" not in printed
    assert re.search(expected, printed), printed[-2000:]


def test_a_killed_jobs_temporaries_are_removed_by_its_next_run(workflow_run, tmp_path):
    """What a kill -9 leaves beside a genome, a windows file and a token file goes when the same job runs again."""
    workdir = _copy_of_the_run(workflow_run, tmp_path)
    debris = [
        workdir / "resources/genomes/.lambda_phage.download-killed/lambda_phage.fa.gz",
        workdir / "results/windows/.lambda_phage.parquet.tmp-killed",
        workdir / "results/tokens/vq512/.lambda_phage.parquet.tmp-killed",
        workdir / "results/dataset_tokens/vq512/.prom_core_notata.tmp-killed/train.parquet",
    ]
    for path in debris:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    targets = [
        "resources/genomes/lambda_phage.fa.gz", "results/windows/lambda_phage.parquet",
        "results/tokens/vq512/lambda_phage.parquet", "results/dataset_tokens/vq512/prom_core_notata/train.parquet",
    ]
    result = subprocess.run(
        snakemake_command(workdir, "--force", *targets), cwd=workdir, env=snakemake_env(), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p for p in debris if p.exists()] == []
    assert not (workdir / "resources/genomes/.lambda_phage.download-killed").exists()
    assert not (workdir / "results/dataset_tokens/vq512/.prom_core_notata.tmp-killed").exists()
    assert all((workdir / target).is_file() for target in targets)


def test_a_changed_tokenizer_retokenizes_its_files_only_and_old_files_are_refused(workflow_run, tmp_path):
    workdir = _copy_of_the_run(workflow_run, tmp_path)
    config_path = workdir / "config" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["tokenizers"]["vq512"]["steps"] = 401
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    planned = _planned(workdir)
    genomes = len((workdir / "config" / "genomes.tsv").read_text().splitlines()) - 1
    assert planned["train_tokenizer"] == 2  # vq512 and its Table 7a sweep variant, which inherits the change
    assert planned["tokenize_genome"] == genomes  # vq512's token files, not kmer6's (variants tokenize no genome)
    assert planned["pretrain_mlm"] == 2  # the runs on vq512 (tiny and the control tiny_random); tiny_kmer is untouched
    # A consumer never mixes tokenizers: an old token file under a new tokenizer is a clear error.
    retrained = tmp_path / "retrained"
    shutil.copytree(workdir / "results" / "tokenizers" / "vq512", retrained)
    weights = load_file(retrained / "model.safetensors")
    first = next(iter(weights))
    weights[first] = weights[first] + 1
    from safetensors.torch import save_file

    save_file(weights, retrained / "model.safetensors")
    result = subprocess.run(
        ["python", "-m", "vqdna", "inspect", str(workdir / "results/tokens/vq512/lambda_phage.parquet"), "--decode", "0", "--tokenizer", str(retrained)],
        capture_output=True, text=True, env=snakemake_env(), cwd=workdir,
    )
    assert result.returncode == 1 and "hash" in result.stderr.strip().splitlines()[-1]


def test_the_dev_grid_fine_tunes_a_variant_of_the_configs_own_settings_and_keeps_dev_scores_only(workflow_run, tmp_path):
    output = tmp_path / "dev_grid.json"
    command = [
        "python", str(REPO / "benchmarks" / "small_dev.py"), "--config", "config/config.yaml", "--results", "results",
        "--run", "tiny", "--datasets", "six_genomes", "--variant", "full_one_epoch", '{"mode": "full", "epochs": 1}',
        "--threads", "1", "--output", str(output),
    ]
    result = subprocess.run(command, cwd=workflow_run.workdir, env=snakemake_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    grid = json.loads(output.read_text())
    assert grid["config"] == "config.yaml"  # which config's settings the rows vary
    (row,) = grid["rows"]
    assert (row["run"], row["dataset"], row["variant"], row["seed"], row["mode"]) == ("tiny", "six_genomes", "full_one_epoch", 0, "full")
    assert len(row["dev_curve"]) == 1 and row["best_dev"] == row["dev_curve"][0]
    assert "test" not in json.dumps(row)  # chosen on dev: test scores are never kept
    again = subprocess.run(command, cwd=workflow_run.workdir, env=snakemake_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout == ""  # done rows are not run again


def test_a_dev_variants_learning_rate_overrides_the_runs_own(monkeypatch):
    """The control of config/small.yaml sets its own learning rate: a variant's must still be the one trained at."""
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks.small_dev import variant_inputs
    from vqdna.datasets.spec import DatasetSpec
    from vqdna.finetune.train import FinetuneSettings
    from vqdna.plan import build_plan

    plan = build_plan(yaml.safe_load((REPO / "config" / "small.yaml").read_text()), REPO / "workflow" / "schemas")
    own = FinetuneSettings.from_settings(plan.finetune_settings_of("vq_random"))
    sheet = DatasetSpec(**plan.datasets["mouse_tf_0"].finetune_spec)
    spec, settings = variant_inputs(plan, "vq_random", "mouse_tf_0", {"learning_rate": 1e-3, "epochs": 1})
    assert own.learning_rate_of(sheet) != 1e-3
    assert FinetuneSettings.from_settings(settings).learning_rate_of(spec) == 1e-3
    assert spec.epochs == 1 and settings["mode"] == "full"
