"""Optional ``torch.compile`` of the two hot loops: the tokenizer's encoder and the MLM's training step.

Off by default. A compile costs seconds to minutes before the first batch
(inductor generates and builds kernels), which a short job never earns back;
``benchmarks/gpu_check.py`` measures, on the GPU a run will use, whether it
pays. The setting changes no result the workflow records (codes are identical,
losses allclose), so, like the mirror folder, it is read at run time from the
environment (``VQDNA_COMPILE_TOKENIZER``, ``VQDNA_COMPILE_PRETRAIN``, exported
by the workflow from the config's ``compile:`` block) and never reruns a job.

Modes (``torch.compile``'s own):

- ``none``: eager, exactly as without this module;
- ``default``: inductor kernels;
- ``reduce-overhead``: inductor kernels replayed as CUDA graphs on a GPU (on
  the CPU the same as ``default``). CUDA graphs need static shapes, so callers
  keep shapes static: the tokenizer pads a smaller batch to the largest batch
  seen (:class:`vqdna.tokenizer.compiled.CompiledCall`; its rows are
  independent), and pretraining pads every batch to the corpus's longest
  sequence.

This module never imports torch: the workflow's plan reads :class:`CompileSettings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from vqdna import VqdnaError

COMPILE_MODES = ("none", "default", "reduce-overhead")
# Where each stage reads its mode at run time (the workflow exports these only when not "none").
ENVIRONMENT = {"tokenizer": "VQDNA_COMPILE_TOKENIZER", "pretrain": "VQDNA_COMPILE_PRETRAIN"}


@dataclass(frozen=True)
class CompileSettings:
    """The config's ``compile:`` block: the torch.compile mode of each stage ("none": eager)."""

    tokenizer: str = "none"  # the tokenizer's encoder, wherever it encodes (tokenize_genome, tokenize_dataset, evaluation)
    pretrain: str = "none"  # the MLM's forward and backward in pretraining

    @classmethod
    def from_config(cls, entry: Mapping[str, Any] | None) -> CompileSettings:
        entry = dict(entry or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(entry) - set(known))
        if unknown:
            raise VqdnaError(f"compile: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
        for stage, mode in entry.items():
            check_mode(mode, f"compile.{stage}")
        return cls(**entry)

    def environment(self) -> dict[str, str]:
        """The variables a job reads its modes from; none at the defaults (the jobs' environment stays as it was)."""
        return {ENVIRONMENT[stage]: getattr(self, stage) for stage in ENVIRONMENT if getattr(self, stage) != "none"}


def check_mode(mode: object, where: str) -> str:
    if mode not in COMPILE_MODES:
        raise VqdnaError(f"{where}: compile mode {mode!r} is not one of {', '.join(COMPILE_MODES)}")
    return mode  # type: ignore[return-value]


def compile_mode(stage: str, mode: str | None = None) -> str:
    """``mode`` when given, else the stage's environment variable, else "none"."""
    if mode is not None:
        return check_mode(mode, f"{stage} compile")
    variable = ENVIRONMENT[stage]
    return check_mode(os.environ.get(variable, "none") or "none", f"${variable}")


def torch_mode(mode: str, device_type: str) -> str:
    """The ``torch.compile`` mode: CUDA graphs exist on CUDA only, so reduce-overhead elsewhere is default."""
    return "reduce-overhead" if mode == "reduce-overhead" and device_type == "cuda" else "default"
