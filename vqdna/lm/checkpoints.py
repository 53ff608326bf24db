"""Resumable pretraining state: ``{state_dir}/checkpoint-{step}/``, complete only once its marker exists.

Snakemake deletes a rule's declared outputs before it reruns the rule, so the
state lives beside them (``results/pretrain_state/{run}/``), where Snakemake
cannot invalidate it. Two guards replace that invalidation:

- a checkpoint is complete only when ``COMPLETE``, written last, fsynced and
  renamed into place (never seen half-written), exists: a job killed while
  writing (SIGKILL, node failure) leaves a folder without it, which is ignored
  and removed;
- each checkpoint carries a fingerprint of everything its numbers depend on
  (run settings, tokenizer hash, the token files' bytes, package and stage
  version); one that does not match the run being started is never resumed.

HF ``Trainer`` writes ``checkpoint-N/`` in place and calls the newest folder
the last checkpoint, half-written or not; this module is the small part of it
we need, with the marker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vqdna import STAGE_VERSIONS, __version__
from vqdna.artifacts import atomic_path

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer_state.pt"
PREFIX = "checkpoint-"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(run_settings: dict, tokenizer_hash: str, token_files: list[str | Path]) -> str:
    """sha256 of what a checkpoint's numbers depend on; token files by content, not by name or mtime."""
    payload = {
        "run": run_settings,
        "tokenizer_hash": tokenizer_hash,
        "corpus": sorted(file_sha256(p) for p in token_files),
        "vqdna": __version__,
        "stage_version": STAGE_VERSIONS["pretrain_mlm"],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _fsync_write(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a kill mid-write leaves no file, never an empty one."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _step(folder: Path) -> int:
    suffix = folder.name.removeprefix(PREFIX)
    return int(suffix) if suffix.isdigit() else -1


def _checkpoints(state_dir: Path) -> list[Path]:
    """Checkpoint folders, newest first."""
    folders = [p for p in state_dir.glob(f"{PREFIX}*") if p.is_dir() and _step(p) >= 0]
    return sorted(folders, key=_step, reverse=True)


def _marker(folder: Path) -> dict:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _is_complete(folder: Path) -> bool:
    return "step" in _marker(folder)


def latest_checkpoint(state_dir: str | Path, expected_fingerprint: str) -> Path | None:
    """The newest complete checkpoint with this fingerprint; anything else in ``state_dir`` is removed.

    The folder belongs to the pipeline (never to the user): incomplete
    checkpoints and those of another configuration cannot be resumed, and
    would only fill the disk.
    """
    state_dir = Path(state_dir)
    found = None
    for folder in _checkpoints(state_dir):
        if found is None and _is_complete(folder) and _marker(folder).get("fingerprint") == expected_fingerprint:
            found = folder
            continue
        if found is None:
            reason = "incomplete (no completion marker)" if not _is_complete(folder) else "made by another configuration"
            log.warning("%s: %s, not resumed; removing it", folder, reason)
            shutil.rmtree(folder, ignore_errors=True)
    return found


def save_checkpoint(
    state_dir: str | Path,
    step: int,
    expected_fingerprint: str,
    model: torch.nn.Module,
    trainer_state: dict,
    keep: int = 2,
) -> Path:
    """Write ``checkpoint-{step}/`` (weights, optimizer/schedule/RNG/curves, marker last); keep the newest ``keep``."""
    state_dir = Path(state_dir)
    folder = state_dir / f"{PREFIX}{step}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, folder / WEIGHTS)
    torch.save(trainer_state, folder / TRAINER_STATE)
    for name in (WEIGHTS, TRAINER_STATE):
        with open(folder / name, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_write(folder / MARKER, json.dumps({"step": step, "fingerprint": expected_fingerprint}) + "\n")
    for old in [f for f in _checkpoints(state_dir) if _is_complete(f)][keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(folder: str | Path, model: torch.nn.Module) -> dict:
    """Load the weights into ``model``; returns the trainer state (optimizer, schedule, RNG, step, curves)."""
    folder = Path(folder)
    model.load_state_dict(load_file(folder / WEIGHTS))
    return torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=True)


def clear_state(state_dir: str | Path) -> None:
    """After the final model is saved: the run is done, its checkpoints are not needed."""
    shutil.rmtree(state_dir, ignore_errors=True)
