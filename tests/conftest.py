"""Shared fixtures: the real public test data, found through ``$VQDNA_TEST_DATA``."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml


@pytest.fixture(autouse=True)
def _no_mirror_from_environment(monkeypatch):
    """A mirror in the developer's shell must not change what a test exercises."""
    monkeypatch.delenv("VQDNA_MIRROR", raising=False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one torch thread is as fast, and far faster when the cores are shared with other work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The read-only data folder; skip when the variable is unset, fail when it names a missing folder."""
    value = os.environ.get("VQDNA_TEST_DATA")
    if not value:
        pytest.skip("VQDNA_TEST_DATA not set")
    folder = Path(value).resolve()
    if not folder.is_dir():
        pytest.fail(f"VQDNA_TEST_DATA={value} is not a folder; missing test data is an error, not a skip")
    return folder


REPO = Path(__file__).resolve().parents[1]
WORKFLOW_GENOMES = ["ecoli_k12", "lambda_phage", "sars_cov_2", "human_mt", "orangutan_mt", "human_chr22_slice"]  # all six


def workflow_config(test_data: Path) -> dict:
    """The tiny real-data config the workflow test runs: the six genomes through the mirror, K=512, four datasets."""
    return {
        "genomes": "config/genomes.tsv",
        "datasets": "config/datasets.tsv",
        "mirror": str(test_data / "genomes"),
        "windows": {"length": 512, "step": 512, "max_n_fraction": 0.1, "dev_fraction": 0.1, "test_fraction": 0.1},
        "tokenizers": {
            "vq512": {
                "type": "vq",
                "train_genomes": ["ecoli_k12", "lambda_phage"],
                "codebook_size": 512,
                "width": 64,
                "steps": 400,
                "batch_size": 64,
                "crop_length": 128,
                "learning_rate": 2.0e-3,
                "warmup_steps": 50,
                "restart_free_steps": 200,
                "heldout_windows": 512,
                "probe_windows": 2048,
            },
            # A baseline through every stage: overlapping 6-mers (DNABERT).
            "kmer6": {"type": "kmer", "train_genomes": ["lambda_phage"], "k": 6, "overlapping": True},
            # Beyond the paper: one code per 4 nt, through every stage (run tiny_s4). Small and short: its job here
            # is the plumbing of codes that are not one per nucleotide, not a good codebook.
            "vq_s4": {
                "type": "vq",
                "stride": 4,
                "train_genomes": ["lambda_phage"],
                "codebook_size": 256,
                "width": 32,
                "depth": 4,
                "steps": 200,
                "batch_size": 32,
                "crop_length": 128,
                "learning_rate": 2.0e-3,
                "warmup_steps": 20,
                "restart_free_steps": 50,
                "heldout_windows": 64,
                "probe_windows": 256,
            },
        },
        "runs": {
            "tiny": {
                "tokenizer": "vq512",
                "pretrain_genomes": WORKFLOW_GENOMES,
                "encoder": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256},
                "steps": 100,
                "batch_size": 32,
                "max_length": 128,
                "learning_rate": 1.0e-3,
                "warmup_steps": 10,
                "log_every": 20,
                "eval_every": 50,
                "heldout_windows": 128,
            },
            # The paper in miniature's control (config/small.yaml), shrunk: tiny's encoder never
            # pretrained (steps 0), fine-tuned in full.
            "tiny_random": {
                "tokenizer": "vq512",
                "pretrain_genomes": WORKFLOW_GENOMES,
                "encoder": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256},
                "steps": 0,
                "max_length": 128,
                "heldout_windows": 128,
                "finetune": {"mode": "full", "learning_rate": 3e-4, "hidden_dropout": 0.0},
            },
            "tiny_kmer": {
                "tokenizer": "kmer6",
                "pretrain_genomes": WORKFLOW_GENOMES,
                "encoder": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256},
                "steps": 50,
                "batch_size": 16,
                "max_length": 128,
                "learning_rate": 1.0e-3,
                "warmup_steps": 5,
                "log_every": 10,
                "heldout_windows": 64,
            },
            # The stride-4 tokenizer's encoder: windows of 512 nt are 128 tokens. Fine-tuned with the head of
            # config/small.yaml's LoRA runs: the pooled vector standardised over the batch, one dense layer.
            "tiny_s4": {
                "tokenizer": "vq_s4",
                "pretrain_genomes": ["lambda_phage"],
                "encoder": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256},
                "steps": 30,
                "batch_size": 16,
                "learning_rate": 1.0e-3,
                "warmup_steps": 5,
                "log_every": 10,
                "heldout_windows": 16,
                "finetune": {"head": "linear", "head_norm": "batch"},
            },
        },
        "finetune": {"runs": ["tiny", "tiny_kmer", "tiny_random", "tiny_s4"], "seeds": [0], "lora": {"r": 8, "alpha": 16, "dropout": 0.05}},
        # Every table path on CPU: the k-mer floor on each dataset (default), a probe of every tokenizer,
        # and a Table 7a sweep (one more tokenizer: K = 256; the base's 512 is itself).
        "probe": {"datasets": ["prom_core_notata"]},
        # The codebook analysis (Figure 4) on the genome-classification task, as in the demo.
        "analysis": {"datasets": ["six_genomes"], "tokenizers": ["vq512"]},
        "ablations": {"code_size": {"key": "codebook_size", "tokenizers": ["vq512"], "values": [256, 512]}},
    }


DATASET_COLUMNS = [
    "dataset", "group", "task", "num_labels", "metric", "source", "genomes",
    "max_train_samples", "max_length", "epochs", "batch_size", "learning_rate", "warmup_steps", "train_from",
]


def workflow_datasets(test_data: Path) -> list[dict]:
    prom = test_data / "gue" / "prom" / "prom_core_notata"
    return [
        # GUE core promoters: a 3000-row training subset, the full real dev and test splits.
        dict(dataset="prom_core_notata", group="CPD", task="classification", num_labels=2, metric="mcc",
             source=str(prom), genomes="", max_train_samples=3000, max_length=70, epochs=2, batch_size=32,
             learning_rate=1e-3, warmup_steps=20),
        # GUE mouse TF 0 (Table 4): a 1500-row training subset, the full real test split.
        dict(dataset="mouse_tf_0", group="TFP-M", task="classification", num_labels=2, metric="mcc",
             source=str(test_data / "gue" / "mouse" / "0"), genomes="", max_train_samples=1500, max_length=101, epochs=1,
             batch_size=32, learning_rate=1e-3, warmup_steps=10),
        # GUE yeast H3 (Table 5): no train split here, so trained on 90% of dev and marked non-standard.
        dict(dataset="emp_h3", group="EMP", task="classification", num_labels=2, metric="mcc",
             source=str(test_data / "gue" / "EMP" / "H3"), genomes="", max_train_samples=600, max_length=500, epochs=1,
             batch_size=16, learning_rate=1e-3, warmup_steps=10, train_from="dev"),
        # Genome classification over the six genomes: which genome does a 64-nt tile come from.
        dict(dataset="six_genomes", group="SPECIES", task="classification", num_labels=6, metric="mcc",
             source="", genomes=",".join(WORKFLOW_GENOMES), max_train_samples="", max_length=64, epochs=3,
             batch_size=32, learning_rate=1e-3, warmup_steps=5),
    ]


@dataclass
class WorkflowRun:
    workdir: Path
    config: dict
    datasets: list[dict]
    output: str

    def path(self, relative: str) -> Path:
        return self.workdir / relative


# The torch rules ask for 2-8 threads; on the 2 cores of CI that runs one job at a time on 2 threads, and the
# tiny models gain little from the second. One thread each lets two jobs run side by side.
TORCH_RULES = ("train_tokenizer", "evaluate_tokenizer", "tokenize_genome", "tokenize_dataset", "analyse_codebook",
               "pretrain_mlm", "finetune", "linear_probe")


def snakemake_command(workdir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(workdir / "config" / "config.yaml"),
        "--set-threads", *(f"{rule}=1" for rule in TORCH_RULES),  # before --cores: targets in `extra` stay targets
        "--cores", "2", *extra,
    ]


def snakemake_env() -> dict:
    """Rules call `python -m vqdna`: put this interpreter's folder first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VQDNA_MIRROR", None)  # the config's mirror key is what the test exercises
    return env


@pytest.fixture(scope="session")
def workflow_run(test_data, tmp_path_factory) -> WorkflowRun:
    """One real Snakemake run of the tiny config, shared by every test that reads its outputs."""
    for relative in ["genomes", "gue/prom/prom_core_notata/test.csv"]:
        if not (test_data / relative).exists():
            pytest.fail(f"test data missing: {test_data / relative}")
    workdir = tmp_path_factory.mktemp("workflow")
    (workdir / "config").mkdir()
    config = workflow_config(test_data)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with open(REPO / "config" / "genomes.tsv") as handle:
        lines = handle.read().splitlines()
    rows = [lines[0]] + [line for line in lines[1:] if line.split("\t")[0] in WORKFLOW_GENOMES]
    (workdir / "config" / "genomes.tsv").write_text("\n".join(rows) + "\n")
    datasets = workflow_datasets(test_data)
    sheet = ["\t".join(DATASET_COLUMNS)] + ["\t".join(str(d.get(c, "")) for c in DATASET_COLUMNS) for d in datasets]
    (workdir / "config" / "datasets.tsv").write_text("\n".join(sheet) + "\n")

    result = subprocess.run(
        snakemake_command(workdir), cwd=workdir, env=snakemake_env(), capture_output=True, text=True, timeout=3600
    )
    if result.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"snakemake failed ({result.returncode}):\n{result.stderr[-4000:]}\n{logs}")
    return WorkflowRun(workdir, config, datasets, result.stderr)
