"""Stage-2 pretraining at scale: DDP over 2 CPU processes, gradient accumulation, kill-and-resume, MLM baselines.

DESIGN: masks are keyed by (seed, step, global sample index), so a 2-rank run
equals a 1-process run on the same global batch (dropout off); checkpoints in
``results/pretrain_state/{run}/`` are complete only with their marker and
resumed only when their fingerprint matches.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import TINY_ENCODER, codes_of_token_files, tiny_tokenizer
from safetensors.torch import load_file

import vqdna.lm.checkpoints as checkpoints
import vqdna.lm.pretrain as pretrain_module
from vqdna.lm.corpus import Codes
from vqdna.lm.pretrain import (
    _mapped_corpus,
    masked_baselines,
    micro_batches,
    most_frequent_codes,
    nearest_unmasked,
    pretrain,
)
from vqdna.tokenizer.api import tokenizer_hash
from vqdna.tokenizer.tokens import tokenize_windows
from vqdna.windows import WindowSettings, write_windows

NO_DROPOUT = {**TINY_ENCODER, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
RUN = {"tokenizer": "tiny", "encoder": NO_DROPOUT, "steps": 6, "batch_size": 8, "warmup_steps": 1, "log_every": 1, "heldout_windows": 8}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """A tiny tokenizer and the token file of a random 6 kb genome (windows of 24 nt, uneven last ones)."""
    folder = tmp_path_factory.mktemp("corpus")
    sequence = "".join(np.random.default_rng(5).choice(list("ACGT"), 6000))
    (folder / "toy.fa").write_text(">chr1\n" + sequence[:3990] + "\n>chr2\n" + sequence[3990:] + "\n")
    pysam.faidx(str(folder / "toy.fa"))
    write_windows(folder / "toy.fa", folder / "windows.parquet", "toy", WindowSettings(length=24, step=24))
    tiny_tokenizer(folder / "tokenizer", seed=0)
    tokenize_windows(folder / "tokenizer", "tiny", folder / "windows.parquet", folder / "tokens.parquet", device="cpu")
    return {"tokenizer": folder / "tokenizer", "tokens": folder / "tokens.parquet"}


def _run(corpus: dict, output: Path, settings: dict | None = None, state: Path | None = None) -> dict:
    torch.set_num_threads(1)
    return pretrain("tiny_run", settings or RUN, corpus["tokenizer"], [corpus["tokens"]], output, state_dir=state, device="cpu")


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _assert_weights_close(a: Path, b: Path, atol: float = 1e-6) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=atol), f"{name} differs by {(wa[name] - wb[name]).abs().max()}"


# -- shards, accumulation, DDP ----------------------------------------------------------------------


def test_ranks_read_disjoint_contiguous_shards_that_cover_the_global_batch():
    positions = []
    for rank in range(2):
        for part in micro_batches(16, rank, 2, accum=2):
            positions.append(list(range(16))[part])
    assert [len(p) for p in positions] == [4, 4, 4, 4]
    assert sorted(sum(positions, [])) == list(range(16))


def test_gradient_accumulation_equals_one_big_batch(corpus, tmp_path):
    _run(corpus, tmp_path / "one", RUN)
    _run(corpus, tmp_path / "accum", {**RUN, "grad_accum_steps": 4})
    _assert_weights_close(tmp_path / "one", tmp_path / "accum", atol=1e-5)


def test_batch_size_must_split_over_processes_and_micro_batches(corpus, tmp_path):
    from vqdna import VqdnaError

    with pytest.raises(VqdnaError, match="not divisible"):
        _run(corpus, tmp_path / "out", {**RUN, "grad_accum_steps": 3})
    assert not (tmp_path / "out").exists()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, world: int, port: int, corpus: dict, output: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    try:
        _run(corpus, Path(output))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_ddp_processes_equal_one_process_on_the_global_batch(corpus, tmp_path):
    mp.spawn(_ddp_rank, args=(2, _free_port(), corpus, str(tmp_path / "ddp")), nprocs=2, join=True)
    single = _run(corpus, tmp_path / "single")
    _assert_weights_close(tmp_path / "single", tmp_path / "ddp", atol=1e-5)
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["processes"] == 2 and single["processes"] == 1
    assert ddp["final_loss"] == pytest.approx(single["final_loss"], rel=1e-5)


def test_the_cli_with_two_processes_restarts_itself_under_torchrun(corpus, tmp_path):
    """The workflow's pretraining command: `--processes N` (the rule's gpu resource), not a launcher in params."""
    command = [
        sys.executable, "-m", "vqdna", "pretrain", "--name", "tiny_run", "--settings", json.dumps(RUN),
        "--tokenizer", str(corpus["tokenizer"]), "--tokens", str(corpus["tokens"]), "--output", str(tmp_path / "ddp"),
        "--state", str(tmp_path / "state"), "--processes", "2", "--threads", "1", "--device", "cpu",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["processes"] == 2
    _run(corpus, tmp_path / "single")
    _assert_weights_close(tmp_path / "single", tmp_path / "ddp", atol=1e-5)
    assert not (tmp_path / "state").exists()


def test_two_nodes_meet_at_a_rendezvous_and_equal_one_process(corpus, tmp_path):
    """Multi-node launch as srun runs it: the same command once per "node" (here two on this host), c10d rendezvous."""
    port = _free_port()
    command = [
        sys.executable, "-m", "vqdna", "pretrain", "--name", "tiny_run", "--settings", json.dumps(RUN),
        "--tokenizer", str(corpus["tokenizer"]), "--tokens", str(corpus["tokens"]), "--output", str(tmp_path / "ddp"),
        "--state", str(tmp_path / "state"), "--nodes", "2", "--processes", "1",
        "--rdzv-endpoint", f"127.0.0.1:{port}", "--threads", "1", "--device", "cpu",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "SLURM_JOB_ID")}
    nodes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outcomes = [node.communicate(timeout=300) for node in nodes]
    for node, (_, stderr) in zip(nodes, outcomes):
        assert node.returncode == 0, stderr[-2000:]
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["processes"] == 2
    _run(corpus, tmp_path / "single")
    _assert_weights_close(tmp_path / "single", tmp_path / "ddp", atol=1e-5)


def test_several_nodes_outside_slurm_without_an_endpoint_is_a_one_line_error(corpus, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_NODELIST", "VQDNA_RDZV_ENDPOINT", "LOCAL_RANK")}
    command = [
        sys.executable, "-m", "vqdna", "pretrain", "--name", "tiny_run", "--settings", json.dumps(RUN),
        "--tokenizer", str(corpus["tokenizer"]), "--tokens", str(corpus["tokens"]), "--output", str(tmp_path / "out"), "--nodes", "2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1 and "VQDNA_RDZV_ENDPOINT" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_in_a_slurm_batch_step_several_nodes_start_one_srun_task_per_node(monkeypatch):
    from vqdna.distributed import srun_per_node_command

    monkeypatch.delenv("SLURM_STEP_NUM_NODES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert srun_per_node_command(2, 8) is None  # not in SLURM: the user starts it once per node
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    command = srun_per_node_command(2, 8)
    assert command[0] == "srun" and "--ntasks-per-node=1" in command and "--nodes=2" in command
    assert "--cpus-per-task=8" in command  # a step gets one CPU per task unless told
    assert "--cpus-per-task" not in " ".join(srun_per_node_command(2, None))
    monkeypatch.setenv("SLURM_STEP_NUM_NODES", "2")  # already one task per node: go on to torchrun
    assert srun_per_node_command(2, 8) is None
    monkeypatch.setenv("SLURM_STEP_NUM_NODES", "1")  # a one-node step (srun -n1) of a two-node job
    assert srun_per_node_command(2, 8) is not None


# -- checkpoints and resume -------------------------------------------------------------------------

LONG = {**RUN, "encoder": TINY_ENCODER, "steps": 12, "checkpoint_every": 3}  # dropout on: the RNG must resume too


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("uninterrupted") / "model"
    _run(corpus, output, LONG)
    return output


def test_an_uninterrupted_run_with_checkpoints_equals_one_without_and_clears_its_state(corpus, uninterrupted, tmp_path):
    result = _run(corpus, tmp_path / "model", LONG, state=tmp_path / "state")
    assert result["resumed_from"] is None
    assert not (tmp_path / "state").exists()
    _assert_weights_close(uninterrupted, tmp_path / "model", atol=0)


def test_a_crash_while_writing_a_checkpoint_resumes_from_the_previous_complete_one(corpus, uninterrupted, tmp_path, monkeypatch):
    real_write = checkpoints._fsync_write
    markers = []

    def crash_on_second_marker(path: Path, text: str) -> None:
        markers.append(path)
        if len(markers) == 2:
            raise KeyboardInterrupt("killed while writing checkpoint-6")
        real_write(path, text)

    monkeypatch.setattr(checkpoints, "_fsync_write", crash_on_second_marker)
    with pytest.raises(KeyboardInterrupt):
        _run(corpus, tmp_path / "model", LONG, state=tmp_path / "state")
    assert (tmp_path / "state" / "checkpoint-6" / "model.safetensors").is_file()
    assert not (tmp_path / "state" / "checkpoint-6" / checkpoints.MARKER).exists()
    assert not (tmp_path / "model").exists()
    assert len(list((tmp_path / "state").glob("corpus-*/train/layout.json"))) == 1
    monkeypatch.setattr(checkpoints, "_fsync_write", real_write)
    monkeypatch.setattr(pretrain_module, "build_corpus", _must_not_rebuild)  # a resumed run maps the corpus it built

    result = _run(corpus, tmp_path / "model", LONG, state=tmp_path / "state")
    assert result["resumed_from"].endswith("checkpoint-3")
    assert [row["step"] for row in _curve_steps(tmp_path / "model")] == list(range(1, 13))
    _assert_weights_close(uninterrupted, tmp_path / "model", atol=1e-6)
    assert not (tmp_path / "state").exists()


def _must_not_rebuild(*args, **kwargs):
    raise AssertionError("the corpus was built again")


def test_the_corpus_is_built_once_per_fingerprint_and_stale_ones_are_removed(corpus, tmp_path, monkeypatch):
    state = tmp_path / "state"
    (state / "corpus-0ld").mkdir(parents=True)
    (state / ".corpus-0ld.tmp-killed").mkdir()  # a build killed before its rename
    digest = tokenizer_hash(corpus["tokenizer"])
    with _mapped_corpus([corpus["tokens"]], digest, state / "corpus-new", rank=0) as (train, test):
        assert np.array_equal(train.take(np.arange(len(train))).values, codes_of_token_files([corpus["tokens"]], "train").values)
        assert len(test) == len(codes_of_token_files([corpus["tokens"]], "test"))
    assert sorted(p.name for p in state.iterdir()) == ["corpus-new"]
    monkeypatch.setattr(pretrain_module, "build_corpus", _must_not_rebuild)
    with _mapped_corpus([corpus["tokens"]], digest, state / "corpus-new", rank=0) as (again, _):
        assert np.array_equal(again.lengths, train.lengths)


def _curve_steps(folder: Path) -> list[dict]:
    import csv

    with open(folder / "curves.csv") as handle:
        return [{"step": int(row["step"])} for row in csv.DictReader(handle)]


def test_a_checkpoint_of_another_configuration_is_not_resumed(corpus, tmp_path):
    state = tmp_path / "state"
    checkpoints.save_checkpoint(state, 3, "another-fingerprint", torch.nn.Linear(1, 1), {"step": 3})
    assert (state / "checkpoint-3" / checkpoints.MARKER).is_file()
    result = _run(corpus, tmp_path / "model", {**LONG, "mask_ratio": 0.15}, state=state)
    assert result["resumed_from"] is None
    assert result["run_config"]["mask_ratio"] == 0.15


def test_a_marker_cut_short_by_a_kill_marks_its_checkpoint_incomplete(tmp_path):
    # The marker is written to a temporary file and renamed; an empty or torn marker
    # (a kill between open and write) must still never count as complete.
    state = tmp_path / "state"
    for step in (3, 6):
        checkpoints.save_checkpoint(state, step, "fp", torch.nn.Linear(1, 1), {"step": step})
    assert not list(state.rglob(f".{checkpoints.MARKER}.tmp-*"))
    (state / "checkpoint-6" / checkpoints.MARKER).write_text('{"step": 6, "finger')
    assert checkpoints.latest_checkpoint(state, "fp") == state / "checkpoint-3"
    assert not (state / "checkpoint-6").exists()


def test_the_fingerprint_follows_settings_tokenizer_and_corpus_bytes(corpus, tmp_path):
    base = checkpoints.fingerprint({"mask_ratio": 0.25}, "abc", [corpus["tokens"]])
    assert checkpoints.fingerprint({"mask_ratio": 0.25}, "abc", [corpus["tokens"]]) == base
    assert checkpoints.fingerprint({"mask_ratio": 0.15}, "abc", [corpus["tokens"]]) != base
    assert checkpoints.fingerprint({"mask_ratio": 0.25}, "abd", [corpus["tokens"]]) != base
    changed = tmp_path / "tokens.parquet"
    changed.write_bytes(corpus["tokens"].read_bytes() + b"\0")
    assert checkpoints.fingerprint({"mask_ratio": 0.25}, "abc", [changed]) != base


def _cli_pretrain(corpus: dict, output: Path, state: Path, settings: dict) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "vqdna", "pretrain", "--name", "tiny_run", "--settings", json.dumps(settings),
        "--tokenizer", str(corpus["tokenizer"]), "--tokens", str(corpus["tokens"]), "--output", str(output),
        "--state", str(state), "--threads", "1", "--device", "cpu",
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(process: subprocess.Popen, state: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(state.glob(f"checkpoint-*/{checkpoints.MARKER}")):
            return
        if process.poll() is not None:
            pytest.fail(f"pretraining ended before its first checkpoint: {process.stderr.read()[-2000:]}")
        time.sleep(0.01)
    process.kill()
    pytest.fail("no checkpoint appeared")


MANY = {**LONG, "steps": 400, "checkpoint_every": 5, "eval_every": 4}  # long enough to be killed mid-way


@pytest.fixture(scope="module")
def uninterrupted_many(corpus, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("uninterrupted_many") / "model"
    _run(corpus, output, MANY)
    return output


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_killed_run_continues_on_rerun_and_ends_as_an_uninterrupted_one(corpus, uninterrupted_many, tmp_path, how):
    state, output = tmp_path / "state", tmp_path / "model"
    process = _cli_pretrain(corpus, output, state, MANY)
    _wait_for_checkpoint(process, state)
    process.send_signal(how)
    _, stderr = process.communicate(timeout=120)
    assert not output.exists(), "the run finished before it was killed: raise MANY's steps"
    if how == signal.SIGTERM:  # SLURM's preemption: a checkpoint at the end of the step, then a one-line error
        assert process.returncode == 1
        assert "stopped by SIGTERM" in stderr.strip().splitlines()[-1]
    else:
        assert process.returncode == -signal.SIGKILL

    result = _run(corpus, output, MANY, state=state)
    assert result["resumed_from"] is not None
    assert [row["step"] for row in _curve_steps(output)] == list(range(1, MANY["steps"] + 1))
    _assert_weights_close(uninterrupted_many, output, atol=1e-6)
    expected = json.loads((uninterrupted_many / "metrics.json").read_text())["heldout_curve"]
    assert [row["step"] for row in result["heldout_curve"]] == [row["step"] for row in expected] == list(range(4, 401, 4))
    assert not state.exists()


# -- masked-code baselines --------------------------------------------------------------------------


def test_nearest_unmasked_position_by_hand():
    masked = np.array([[True, False, True, True, False, True], [False, True, True, True, True, False]])
    lengths = np.array([6, 5])  # row 2: position 5 is padding
    nearest = nearest_unmasked(masked, lengths)
    assert nearest[0].tolist() == [1, 1, 1, 4, 4, 4]
    assert nearest[1].tolist()[:5] == [0, 0, 0, 0, 0]  # position 5 is padding, not a neighbour


def test_masked_baselines_by_hand():
    values = np.array([[3, 3, 3, 3, 3, 3, 3, 3], [4, 5, 6, 7, 8, 9, 10, 11]], dtype=np.uint16)[..., None]
    codes = Codes(values, np.array([8, 8]))
    frequent = most_frequent_codes(codes)
    assert frequent.tolist() == [3]
    result = masked_baselines(codes, frequent, seed=0, ratio=0.25)
    # 2 masked positions per row: row 1 (all 3s) is right for both, row 2 (all distinct, no 3) for neither.
    assert result["most_frequent"] == [0.5]
    assert result["copy_neighbour"] == [0.5]


# -- held-out curve and the random-init control -----------------------------------------------------


def test_held_out_accuracy_is_a_curve_every_eval_every_steps_and_measuring_changes_no_weight(corpus, uninterrupted, tmp_path):
    settings = {**LONG, "eval_every": 4}
    result = _run(corpus, tmp_path / "model", settings, state=tmp_path / "state")
    assert [row["step"] for row in result["heldout_curve"]] == [4, 8, 12]
    assert result["heldout_masked_accuracy"] == result["heldout_curve"][-1]["masked_accuracy"]
    with open(tmp_path / "model" / "heldout_curve.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["4", "8", "12"] and list(rows[0]) == ["step", "masked_accuracy_l1"]
    _assert_weights_close(uninterrupted, tmp_path / "model", atol=0)  # measuring changes no weight


def test_zero_steps_saves_the_seeded_initial_weights_the_random_init_control(corpus, tmp_path):
    result = _run(corpus, tmp_path / "random", {**RUN, "steps": 0})
    again = _run(corpus, tmp_path / "again", {**RUN, "steps": 0})
    _assert_weights_close(tmp_path / "random", tmp_path / "again", atol=0)
    trained = _run(corpus, tmp_path / "trained", RUN)
    assert any(not torch.equal(a, b) for a, b in zip(_weights(tmp_path / "random").values(), _weights(tmp_path / "trained").values()))
    assert result["final_loss"] is None and [row["step"] for row in result["heldout_curve"]] == [0]
    assert not (tmp_path / "random" / "curves.csv").exists()
    assert trained["heldout_masked_accuracy"][0] > result["heldout_masked_accuracy"][0]
