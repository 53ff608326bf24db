"""A callable compiled with ``torch.compile``, its compile time logged, its batch kept static (see :mod:`vqdna.compiling`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from vqdna.compiling import torch_mode

log = logging.getLogger(__name__)


class CompiledCall:
    """``fn`` compiled with ``torch.compile``; the first call at each new input shape is timed and logged.

    That first call compiles (or, for CUDA graphs, records) and runs once:
    ``compile_seconds`` sums those calls, the compile time a job pays. With
    ``pad_batch``, a batch smaller than the largest seen is padded with zero
    rows to its size and the outputs cut back, so the last, short batch of a
    file reuses the compiled graph (and its CUDA graph) instead of compiling
    another; ``fn`` must treat rows independently (no batch statistics).
    Outputs are cloned: a CUDA graph's outputs are overwritten by its next replay.
    """

    def __init__(self, fn: Callable, mode: str, device_type: str, name: str, *, pad_batch: bool = False, dynamic: bool | None = None):
        self.fn, self.mode, self.name, self.pad_batch = fn, mode, name, pad_batch
        self.compiled = torch.compile(fn, mode=torch_mode(mode, device_type), dynamic=dynamic)
        self.shapes: list[tuple] = []
        self.compile_seconds = 0.0
        self._batch = 0

    def __call__(self, x, *args, **kwargs):
        rows = x.shape[0]
        if self.pad_batch:
            self._batch = max(self._batch, rows)
            if rows < self._batch:
                x = torch.cat([x, x.new_zeros((self._batch - rows, *x.shape[1:]))])
        shape = _signature(x, args, kwargs)
        if shape in self.shapes:
            return _cut(self.compiled(x, *args, **kwargs), rows if self.pad_batch else None)
        started = time.perf_counter()
        out = self.compiled(x, *args, **kwargs)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        seconds = time.perf_counter() - started
        self.shapes.append(shape)
        self.compile_seconds += seconds
        log.info(
            "%s: torch.compile (%s) first call at input shape %s: %.1f s (compile and one run); %.1f s compiling so far",
            self.name, self.mode, shape[0], seconds, self.compile_seconds,
        )
        return _cut(out, rows if self.pad_batch else None)


def _signature(x, args: tuple, kwargs: dict) -> tuple:
    """The input shapes (None for an argument that is None): a new signature is a new compile or CUDA graph."""
    values = [x, *args, *kwargs.values()]
    return tuple(tuple(v.shape) if hasattr(v, "shape") else (None if v is None else type(v).__name__) for v in values)


def _cut(out, rows: int | None):
    """Outputs (a tensor or a list/tuple of them) cloned, and cut to ``rows`` rows when the batch was padded."""
    if isinstance(out, (list, tuple)):
        return type(out)(_cut(o, rows) for o in out)
    if hasattr(out, "clone"):
        return (out if rows is None else out[:rows]).clone()
    return out
