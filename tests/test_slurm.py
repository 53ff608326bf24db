"""The workflow through a REAL SLURM (`.ci/slurm-up`, two nodes): jobs go through sbatch, a cancelled job leaves
nothing that looks complete, a rerun finishes the work, and the artifacts equal the local run's; a pretraining
run on two nodes starts one torchrun per node and ends with the weights of one process.

Runs when ``VQDNA_TEST_SLURM=1`` (set by ``.ci/run`` once the daemons are up); with it set, a SLURM
that does not answer is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, snakemake_env
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(os.environ.get("VQDNA_TEST_SLURM") != "1", reason="VQDNA_TEST_SLURM not set")

# Rules keep their GPU requests (two fake GPUs on the test node); threads match the local run's (conftest.TORCH_RULES).
TEST_PROFILE = {
    "executor": "slurm",
    "jobs": 4,
    "latency-wait": 10,
    "slurm-init-seconds-before-status-checks": 2,
    # as slurm/profile.yaml: sacct reports a cancelled job as "CANCELLED by UID", which the plugin never counts as failed
    "slurm-status-command": "squeue",
    "default-resources": {"slurm_partition": "cpu", "slurm_account": "vqdna", "mem_mb": 2000, "runtime": 30},
    "set-resources": {rule: {"slurm_partition": "gpu", "mem_mb": 4000} for rule in ("train_tokenizer", "tokenize_genome", "pretrain_mlm")},
    "set-threads": {"train_tokenizer": 1, "tokenize_genome": 1, "make_windows": 1, "pretrain_mlm": 1},
}
TARGETS = [
    "results/windows/lambda_phage.parquet",
    "results/windows/sars_cov_2.parquet",
    "results/tokenizers/vq512/config.json",
    "results/tokens/kmer6/lambda_phage.parquet",
]


@pytest.fixture(scope="module")
def slurm() -> None:
    result = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True)
    if result.returncode != 0 or not any(state in result.stdout for state in ("idle", "mixed", "allocated")):
        pytest.fail(f"VQDNA_TEST_SLURM=1 but SLURM does not answer: {result.stderr.strip() or result.stdout.strip()}")


def _workdir(workflow_run, tmp_path: Path) -> Path:
    """The tiny workflow's own config and sheets, in a fresh folder."""
    (tmp_path / "config").mkdir()
    for name in ("config.yaml", "genomes.tsv", "datasets.tsv"):
        shutil.copy(workflow_run.path(f"config/{name}"), tmp_path / "config" / name)
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "profile.yaml").write_text(yaml.safe_dump(TEST_PROFILE))
    return tmp_path


def _snakemake(workdir: Path, *extra: str) -> list[str]:
    return [
        "timeout", "-k", "30", "900", sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(workdir / "config" / "config.yaml"),
        "--profile", str(workdir / "profile"), *extra,
    ]


def _sacct(since: str) -> list[tuple[str, str]]:
    """(comment, state) of every job since ``since``; the plugin comments each job with its rule."""
    result = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-S", since, "-o", "Comment,State"], capture_output=True, text=True, check=True
    )
    return [tuple(line.split("|")[:2]) for line in result.stdout.splitlines() if line.strip()]


def _wait_for_running(rule: str, process: subprocess.Popen, since: str, timeout: float = 300) -> str:
    """The id of this run's job of ``rule`` once it runs: submitted at or after ``since``, so never a job left by an earlier run."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = subprocess.run(["squeue", "-h", "-o", "%i|%k|%T|%V"], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            job_id, comment, state, submitted = line.split("|")
            if comment.startswith(f"rule_{rule}") and state == "RUNNING" and submitted >= since:
                return job_id
        if process.poll() is not None:
            pytest.fail(f"snakemake ended before {rule} ran: {process.stderr.read()[-3000:]}")
        time.sleep(1)
    pytest.fail(f"no {rule} job ran within {timeout}s")


def test_cancelled_then_rerun_through_sbatch_equals_the_local_run(slurm, workflow_run, tmp_path):
    workdir = _workdir(workflow_run, tmp_path)
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    env = snakemake_env()

    # 1. Cancel the tokenizer's training job while it runs: the run fails, nothing looks complete.
    process = subprocess.Popen(_snakemake(workdir, *TARGETS), cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job_id = _wait_for_running("train_tokenizer_wildcards_vq512", process, since)
    time.sleep(5)  # well into training
    subprocess.run(["scancel", job_id], check=True)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode != 0 and "CANCELLED" in stderr, f"the run should fail on its cancelled job: {stderr[-2000:]}"
    tokenizer = workdir / "results" / "tokenizers" / "vq512"
    assert not (tokenizer / "model.safetensors").exists() and not (tokenizer / "config.json").exists(), stderr[-2000:]

    # 2. Rerun: the work finishes, through sbatch again.
    result = subprocess.run(_snakemake(workdir, *TARGETS), cwd=workdir, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = _sacct(since)
    ran = {comment.split("_wildcards_")[0].removeprefix("rule_") for comment, _ in jobs}
    assert {"make_windows", "train_tokenizer", "tokenize_genome"} <= ran, jobs
    assert ("CANCELLED" in {state.split()[0] for _, state in jobs}) and any(state == "COMPLETED" for _, state in jobs)
    assert "download_genome" not in ran  # downloads are local rules: compute nodes often have no internet

    # 3. The artifacts equal the local run's: windows and tokens byte for byte, the model allclose.
    for relative in ("results/windows/lambda_phage.parquet", "results/windows/sars_cov_2.parquet", "results/tokens/kmer6/lambda_phage.parquet"):
        assert (workdir / relative).read_bytes() == workflow_run.path(relative).read_bytes(), relative
    ours, local = load_file(tokenizer / "model.safetensors"), load_file(workflow_run.path("results/tokenizers/vq512/model.safetensors"))
    assert ours.keys() == local.keys()
    for name in ours:
        assert torch.allclose(ours[name], local[name], atol=1e-5), name


# The tiny workflow's k-mer run, without dropout so that 2 ranks equal 1 process; a resource more: two nodes.
TWO_NODE_RUN = "tiny_kmer"


def test_pretraining_on_two_nodes_runs_one_torchrun_per_node_and_equals_one_process(slurm, workflow_run, tmp_path):
    workdir = _workdir(workflow_run, tmp_path)
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    run = config["runs"][TWO_NODE_RUN]
    run["encoder"] = {**run["encoder"], "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config["runs"], config["finetune"]["runs"] = {TWO_NODE_RUN: {**run, "nodes": 2}}, [TWO_NODE_RUN]
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    # The local run's windows, tokenizer and tokens (mtimes kept): only the pretraining job is new here.
    for relative in ("resources", "results/windows", f"results/tokenizers/{run['tokenizer']}", f"results/tokens/{run['tokenizer']}"):
        shutil.copytree(workflow_run.path(relative), workdir / relative)
    since = time.strftime("%Y-%m-%dT%H:%M:%S")

    target = f"results/pretrain/{TWO_NODE_RUN}/model.safetensors"
    result = subprocess.run(
        _snakemake(workdir, target, "--allowed-rules", "pretrain_mlm"), cwd=workdir, env=snakemake_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]

    # One job on two nodes; in it, one srun step of two tasks, one per node (each a torchrun of one process).
    job_id = next(
        job_id for job_id, comment in _jobs(since) if comment.startswith(f"rule_pretrain_mlm_wildcards_{TWO_NODE_RUN}")
    )
    steps = subprocess.run(
        ["sacct", "-n", "-P", "-j", job_id, "-o", "JobID,NNodes,NTasks,NodeList,State"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    fields = [line.split("|") for line in steps]
    assert fields[0][1] == "2" and fields[0][4] == "COMPLETED", steps
    assert any(step[0].split(".")[-1].isdigit() and step[1:3] == ["2", "2"] for step in fields), steps
    metrics = json.loads((workdir / "results" / "pretrain" / TWO_NODE_RUN / "metrics.json").read_text())
    assert metrics["processes"] == 2

    # The same run in one process, outside SLURM: the same weights.
    settings = {key: value for key, value in run.items() if key not in ("gpus", "nodes")}
    tokens = [str(workdir / "results" / "tokens" / run["tokenizer"] / f"{genome}.parquet") for genome in run["pretrain_genomes"]]
    env = {key: value for key, value in snakemake_env().items() if not key.startswith("SLURM_")}
    single = subprocess.run(
        [
            sys.executable, "-m", "vqdna", "pretrain", "--name", TWO_NODE_RUN, "--settings", json.dumps(settings),
            "--tokenizer", str(workdir / "results" / "tokenizers" / run["tokenizer"]), "--tokens", *tokens,
            "--output", str(tmp_path / "single"), "--threads", "1", "--device", "cpu",
        ],
        env=env, capture_output=True, text=True,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    ours, reference = load_file(workdir / target), load_file(tmp_path / "single" / "model.safetensors")
    assert ours.keys() == reference.keys()
    for name in ours:
        assert torch.allclose(ours[name], reference[name], atol=1e-5), name


def _jobs(since: str) -> list[tuple[str, str]]:
    """(job id, comment) of every job since ``since``."""
    result = subprocess.run(["sacct", "-n", "-X", "-P", "-S", since, "-o", "JobID,Comment"], capture_output=True, text=True, check=True)
    return [tuple(line.split("|")[:2]) for line in result.stdout.splitlines() if line.strip()]
