"""DDP with 2 CPU processes (gloo): a 2-rank run of the EMA codebook / VQ-VAE equals a 1-process run on the same global batch.

DESIGN: "Randomness under DDP is reproducible by construction: dead-code restart
candidates are drawn from encoder outputs gathered across ranks with a generator
shared by all ranks ... so a 2-rank run and a 1-process run on the same global
batch agree." The codebooks' EMA statistics are all-reduced (eq. 5) and DDP
averages the gradients; with equal halves the mean over ranks of the per-rank
mean losses is the full-batch mean loss.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from vqdna.tokenizer.api import onehot
from vqdna.tokenizer.vq import VQVAE, VQConfig
from vqdna.windows import WindowSettings, write_windows

WORLD = 2
STEPS = 5
GLOBAL_BATCH, LENGTH = 8, 32
# ema_decay 0.5 and a high dead-code threshold: unused codes die within a step, so restarts happen in 5 steps.
VQ = {"width": 16, "depth": 1, "codebook_size": 16, "ema_decay": 0.5, "dead_code_threshold": 0.3, "restart_fraction": 0.25, "seed": 3}
CODEBOOK_BUFFERS = ("embed", "cluster_size", "embed_avg")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_batch(step: int) -> torch.Tensor:
    """The step's global batch of base ids (B, L), N included; the same on every process."""
    rng = np.random.default_rng([17, step])
    ids = rng.integers(0, 4, (GLOBAL_BATCH, LENGTH))
    ids[rng.random(ids.shape) < 0.03] = 4
    return torch.as_tensor(ids)


def _train_vqvae(rank: int, world: int) -> tuple[dict, list[int]]:
    """STEPS optimiser steps of the tiny VQ-VAE on this process's rows of each global batch."""
    torch.manual_seed(0)
    model = VQVAE(VQConfig(**VQ)).train()
    step_model = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    per_rank = GLOBAL_BATCH // world
    restarts = []
    for step in range(STEPS):
        targets = _global_batch(step)[rank * per_rank : (rank + 1) * per_rank]
        loss = step_model(onehot(targets), targets).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        restarts.append(model.codebooks[0].last_restarts)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, restarts


def _vqvae_worker(rank: int, world: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120)
    )
    try:
        state, restarts = _train_vqvae(rank, world)
        torch.save({"state": state, "restarts": restarts}, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def vqvae_runs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("ddp_vqvae")
    mp.start_processes(_vqvae_worker, args=(WORLD, _free_port(), str(folder)), nprocs=WORLD, join=True, start_method="spawn")
    ranks = [torch.load(folder / f"rank{r}.pt") for r in range(WORLD)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single_state, single_restarts = _train_vqvae(0, 1)
    finally:
        torch.set_num_threads(threads)
    return {"ranks": ranks, "single": {"state": single_state, "restarts": single_restarts}}


def test_ddp_run_restarts_dead_codes_and_initialises_from_data(vqvae_runs):
    for run in [*vqvae_runs["ranks"], vqvae_runs["single"]]:
        assert sum(run["restarts"]) > 0, run["restarts"]  # the comparison covers restart draws
        assert bool(run["state"]["codebooks.0.initialized"])  # and the data-dependent first-step init
        assert int(run["state"]["codebooks.0.step"]) == STEPS
    assert vqvae_runs["ranks"][0]["restarts"] == vqvae_runs["ranks"][1]["restarts"] == vqvae_runs["single"]["restarts"]


def test_both_ranks_hold_the_same_codebook_and_weights(vqvae_runs):
    rank0, rank1 = (run["state"] for run in vqvae_runs["ranks"])
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key


@pytest.mark.parametrize("buffer", CODEBOOK_BUFFERS)
def test_two_rank_codebook_equals_the_single_process_codebook(vqvae_runs, buffer):
    single = vqvae_runs["single"]["state"][f"codebooks.0.{buffer}"]
    for run in vqvae_runs["ranks"]:
        ours = run["state"][f"codebooks.0.{buffer}"]
        assert torch.allclose(ours, single, rtol=0, atol=1e-5), (buffer, (ours - single).abs().max())


def test_two_rank_weights_equal_the_single_process_weights(vqvae_runs):
    single = vqvae_runs["single"]["state"]
    ranked = vqvae_runs["ranks"][0]["state"]
    weights = [key for key in single if not key.startswith("codebooks.")]
    assert weights
    for key in weights:
        assert torch.allclose(ranked[key], single[key], rtol=0, atol=1e-5), (key, (ranked[key] - single[key]).abs().max())


# -- train_tokenizer under torchrun-style environment variables -----------------------------------------------

TRAIN_SETTINGS = {
    "type": "hrq",
    "width": 16,
    "depth": 2,
    "taps": [1, 2],
    "codebook_size": 8,  # levels of 16 and 32 codes
    "ema_decay": 0.5,
    "dead_code_threshold": 0.3,
    "restart_fraction": 0.25,
    "steps": 6,
    "batch_size": 8,
    "crop_length": 24,
    "learning_rate": 1e-3,
    "warmup_steps": 1,
    "restart_free_steps": 2,
    "log_every": 2,
}


def _synthetic_windows(folder: Path, length: int = 4000, window: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sequence = "".join(np.random.default_rng(7).choice(list("ACGT"), length))
    fasta = folder / "toy.fa"
    fasta.write_text(">chr1\n" + "\n".join(sequence[i : i + 60] for i in range(0, length, 60)) + "\n")
    pysam.faidx(str(fasta))
    windows = folder / "toy.windows.parquet"
    write_windows(fasta, windows, "toy", WindowSettings(length=window, step=window))
    return windows


def _train_tokenizer_worker(rank: int, world: int, port: int, windows: str, folder: str) -> None:
    from vqdna.tokenizer.train import train_tokenizer

    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    try:
        # Every rank is given its own output folder: only rank 0's may appear.
        summary = train_tokenizer("ddp", TRAIN_SETTINGS, [windows], Path(folder) / f"out_rank{rank}", threads=1, device="cpu")
        (Path(folder) / f"summary{rank}.json").write_text(json.dumps(summary))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory) -> dict:
    from vqdna.tokenizer.train import train_tokenizer

    folder = tmp_path_factory.mktemp("ddp_train")
    windows = _synthetic_windows(folder / "genome")
    mp.start_processes(
        _train_tokenizer_worker, args=(WORLD, _free_port(), str(windows), str(folder)), nprocs=WORLD, join=True, start_method="spawn"
    )
    threads = torch.get_num_threads()
    try:
        single = train_tokenizer("ddp", TRAIN_SETTINGS, [windows], folder / "single", threads=1, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return {"folder": folder, "single": single, "summaries": [json.loads((folder / f"summary{r}.json").read_text()) for r in range(WORLD)]}


def test_distributed_train_tokenizer_writes_only_from_rank_0(train_runs):
    folder = train_runs["folder"]
    assert (folder / "out_rank0" / "model.safetensors").is_file()
    assert not (folder / "out_rank1").exists()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    training = json.loads((folder / "out_rank0" / "training.json").read_text())
    assert training["processes"] == 2
    assert [s["processes"] for s in train_runs["summaries"]] == [2, 2]
    assert train_runs["single"]["processes"] == 1
    restarts = [s["restarts"] for s in train_runs["summaries"]]
    assert restarts[0] == restarts[1] == train_runs["single"]["restarts"] > 0


def test_distributed_train_tokenizer_equals_the_single_process_run(train_runs):
    folder = train_runs["folder"]
    ddp = load_file(folder / "out_rank0" / "model.safetensors")
    single = load_file(folder / "single" / "model.safetensors")
    assert ddp.keys() == single.keys()
    assert {"codebooks.0.embed", "codebooks.1.embed"} <= set(ddp)
    for key in ddp:
        if ddp[key].is_floating_point():
            assert torch.allclose(ddp[key], single[key], rtol=0, atol=1e-5), (key, (ddp[key] - single[key]).abs().max())
        else:
            assert torch.equal(ddp[key], single[key]), key
    assert json.loads((folder / "out_rank0" / "config.json").read_text()) == json.loads((folder / "single" / "config.json").read_text())


def test_distributed_training_curves_equal_the_single_process_curves(train_runs):
    import csv

    def rows(path: Path) -> list[dict]:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))

    folder = train_runs["folder"]
    ddp, single = rows(folder / "out_rank0" / "curves.csv"), rows(folder / "single" / "curves.csv")
    assert [r["step"] for r in ddp] == [r["step"] for r in single]
    for ours, theirs in zip(ddp, single, strict=True):
        for key in ours:
            if key != "seconds":
                assert float(ours[key]) == pytest.approx(float(theirs[key]), rel=1e-4, abs=1e-6), (ours["step"], key)
