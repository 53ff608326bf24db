"""torch.distributed plumbing shared by tokenizer training and pretraining.

Every function is a no-op in a single process, so the same training code runs
under ``python -m vqdna`` and under ``torchrun``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist

from vqdna import VqdnaError

RDZV_PORT = 29400


def torchrun_command(processes: int, nodes: int = 1, rdzv_endpoint: str | None = None, run_id: str | None = None) -> list[str]:
    """``python -m torch.distributed.run`` arguments that start ``processes`` ranks on each of ``nodes`` nodes.

    One node: ``--standalone``. Several: the command runs once per node (``srun
    --ntasks-per-node 1`` in a SLURM job) and the nodes meet at a c10d
    rendezvous on ``rdzv_endpoint``: given, else ``$VQDNA_RDZV_ENDPOINT``, else
    the job's first node (``$SLURM_JOB_NODELIST`` through ``scontrol``) on port
    29400. ``run_id`` (default ``$SLURM_JOB_ID``) keeps two jobs apart.
    """
    launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}"]
    if nodes <= 1:
        return [*launch, "--standalone"]
    endpoint = rdzv_endpoint or os.environ.get("VQDNA_RDZV_ENDPOINT") or f"{_first_slurm_node()}:{RDZV_PORT}"
    run_id = run_id or os.environ.get("SLURM_JOB_ID") or "vqdna"
    return [*launch, f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}"]


def srun_per_node_command(nodes: int, threads: int | None) -> list[str] | None:
    """``srun`` arguments that run a command once on each of ``nodes`` nodes of this SLURM job.

    None outside a SLURM job, or already inside a step that spans ``nodes``
    nodes (the command was started by ``srun`` once per node). The workflow's
    pretraining job runs in the job's batch step (the executor plugin's ``mpi``
    jobs are not wrapped in ``srun``), so it is there that ``vqdna pretrain
    --nodes M`` starts its step across the nodes. A step gets one CPU per task
    unless told otherwise, hence ``--cpus-per-task``; it gets the job's GPUs on
    each node by default.
    """
    if "SLURM_JOB_ID" not in os.environ or os.environ.get("SLURM_STEP_NUM_NODES") == str(nodes):
        return None
    cpus = [f"--cpus-per-task={threads}"] if threads else []
    return ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", *cpus, "--kill-on-bad-exit=1"]


def _first_slurm_node() -> str:
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise VqdnaError("pretraining on several nodes needs a rendezvous: run it in a SLURM job or set VQDNA_RDZV_ENDPOINT=HOST:PORT")
    try:
        hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as err:
        raise VqdnaError(f"could not expand SLURM_JOB_NODELIST={nodelist} with scontrol ({err}); set VQDNA_RDZV_ENDPOINT=HOST:PORT") from None
    return hosts[0]


def join_process_group() -> tuple[int, int]:
    """(rank, world size); joins the torchrun process group when there is one (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def rank_device(device: str | None, rank: int, world: int) -> str | None:
    """Under torchrun on GPUs each process takes the GPU of its local rank unless a device was named."""
    if device is None and world > 1 and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    return device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_gather_objects(value: object) -> list:
    """Every rank's ``value``, in rank order (a one-element list in a single process)."""
    if not is_distributed():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: object) -> object:
    """Rank 0's ``value`` on every rank."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()
