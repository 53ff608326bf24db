"""What a benchmark ran on: recorded in every results JSON, since CPU rates change with the machine and its load."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str, threads: int) -> dict:
    """Platform, versions, CPU, torch threads, the load average at the start; on CUDA the GPU and its TF32 flags."""
    import torch
    import transformers

    info = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
        "cpu_name": cpu_name(),
        "load_average_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    if device == "cuda":
        info.update(
            device_name=torch.cuda.get_device_name(),
            cuda=torch.version.cuda,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        )
    else:
        info["device_name"] = info["cpu_name"]
    return info


def git_commit(folder: Path) -> str:
    """HEAD of the git checkout holding ``folder``, "+uncommitted changes" when tracked files differ from it;
    ``VQDNA_COMMIT`` (else "unknown") where the folder is in no checkout, e.g. a tree copied without ``.git``."""
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return os.environ.get("VQDNA_COMMIT", "unknown")
    if out.returncode != 0:
        return os.environ.get("VQDNA_COMMIT", "unknown")
    return out.stdout.strip() + ("+uncommitted changes" if dirty.stdout.strip() else "")
