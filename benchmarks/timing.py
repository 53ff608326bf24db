"""Timing primitives shared by the benchmarks: a synchronised clock, one timed training step, a matmul peak."""

from __future__ import annotations

import math
import time


def synchronize(device: str) -> None:
    """Wait for the device's queued work, so a wall-clock reading covers it (a no-op on CPU)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(run, device: str, repeats: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``run()``, synchronised with the device before and after."""
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        run()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return seconds


def training_step(model, optimizer, inputs: dict, device: str) -> tuple[float, float]:
    """(seconds, loss) of the step ``vqdna pretrain`` and ``vqdna finetune`` take.

    Forward with ``inputs`` (labels included) under bf16 autocast on CUDA,
    ``zero_grad``, backward, gradient clipping to norm 1, the optimizer's step;
    timed between device synchronisations. A non-finite loss is an error.
    """
    import torch

    cuda = str(device).startswith("cuda")
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    synchronize(device)
    started = time.perf_counter()
    with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
        loss = model(**inputs).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    synchronize(device)
    seconds = time.perf_counter() - started
    value = loss.item()
    if not math.isfinite(value):
        raise RuntimeError(f"{type(model).__name__}: loss became {value}")
    return seconds, value


def matmul_tflops(device: str, size: int, dtype: str = "bfloat16", repeats: int = 5, warmup: int = 1) -> dict:
    """The best rate of a ``size``^3 ``torch.matmul`` in ``dtype`` on random data: the peak a device reaches here."""
    import torch

    torch_dtype = getattr(torch, dtype)
    a = torch.randn(size, size, device=device, dtype=torch_dtype)
    b = torch.randn(size, size, device=device, dtype=torch_dtype)
    for _ in range(warmup):
        torch.matmul(a, b)
    best = min(timed(lambda: torch.matmul(a, b), device, repeats))
    return {"size": size, "dtype": dtype, "repeats": repeats, "best_seconds": round(best, 6), "tflops": round(2 * size**3 / best / 1e12, 4)}
