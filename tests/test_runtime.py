"""What the three training loops share (vqdna.runtime): one optimizer step, one loss log, one NaN guard."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from vqdna import VqdnaError
from vqdna.runtime import MAX_GRAD_NORM, RunningLoss, check_finite_loss, optimizer_step

# Tensor methods that copy a value to the host, making it wait for the device.
HOST_READS = {"item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__"}


class HostReads(TorchFunctionMode):
    """Records every host read of a tensor made inside the ``with`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _sgd_step(gradients: list[torch.Tensor], **kwargs: float) -> tuple[list[torch.Tensor], list[torch.nn.Parameter], torch.optim.lr_scheduler.LambdaLR]:
    """One optimizer_step of plain SGD (lr 1) from ``gradients``; returns the updates, the parameters and the schedule."""
    parameters = [torch.nn.Parameter(torch.zeros_like(g)) for g in gradients]
    for parameter, gradient in zip(parameters, gradients):
        parameter.grad = gradient.clone()
    optimizer = torch.optim.SGD(parameters, lr=1.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    optimizer_step(optimizer, schedule, parameters, **kwargs)
    return [-p.detach() for p in parameters], parameters, schedule


def _global_norm(tensors: list[torch.Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.cat([t.flatten() for t in tensors])))


def test_the_optimizer_step_clips_the_global_norm_steps_advances_the_schedule_and_frees_the_gradients():
    gradients = [torch.tensor([6.0, 0.0, 0.0]), torch.tensor([0.0, 8.0])]  # global norm 10
    updates, parameters, schedule = _sgd_step(gradients)
    assert MAX_GRAD_NORM == 1.0
    assert _global_norm(updates) == pytest.approx(MAX_GRAD_NORM)
    for update, gradient in zip(updates, gradients):  # scaled down together: the direction is kept
        assert torch.allclose(update, gradient / 10, atol=1e-6)
    assert schedule.last_epoch == 1
    assert all(p.grad is None for p in parameters)


def test_gradients_within_the_max_norm_are_applied_as_they_are():
    gradients = [torch.tensor([0.3, 0.0, 0.0]), torch.tensor([0.0, 0.4])]  # global norm 0.5
    updates, _, _ = _sgd_step(gradients)
    for update, gradient in zip(updates, gradients):
        assert torch.allclose(update, gradient, atol=1e-7)


def test_the_max_norm_is_a_parameter():
    updates, _, _ = _sgd_step([torch.tensor([3.0, 4.0])], max_norm=0.1)
    assert _global_norm(updates) == pytest.approx(0.1)


def test_the_running_loss_is_the_mean_of_the_step_losses_since_the_last_read():
    losses = RunningLoss()
    for value in (0.5, 1.25, 2.1):
        losses.add(torch.tensor(value))
    assert losses.mean() == float(np.mean(np.array([0.5, 1.25, 2.1], dtype=np.float32).tolist()))
    losses.add(torch.tensor(4.0))
    assert losses.mean() == 4.0


def test_the_running_loss_reads_the_device_once_per_interval_not_once_per_step():
    model = torch.nn.Linear(3, 1)
    losses = RunningLoss()
    with HostReads() as steps:
        for _ in range(50):
            loss = model(torch.randn(4, 3)).pow(2).mean()
            loss.backward()
            losses.add(loss)
    assert steps.reads == []
    with HostReads() as log:
        losses.mean()
    assert log.reads == ["tolist"]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_anywhere_in_the_interval_fails_the_guard(bad):
    losses = RunningLoss()
    for value in (1.0, bad, 2.0):
        losses.add(torch.tensor(value))
    with pytest.raises(VqdnaError):
        check_finite_loss(losses.mean(), 300, "runs.demo")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_the_guard_is_one_line_naming_the_stage_the_step_and_what_to_do(bad):
    with pytest.raises(VqdnaError) as caught:
        check_finite_loss(bad, 300, "runs.demo")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("runs.demo: ") and "by step 300" in message and "lower learning_rate" in message
    with pytest.raises(VqdnaError, match="datasets sheet"):
        check_finite_loss(bad, 7, "finetune of ggg (seed 0)", remedy="lower its learning_rate in the datasets sheet")


def test_the_guard_lets_finite_losses_pass():
    for loss in (0.0, 2.5, 1e30):
        check_finite_loss(loss, 1, "runs.demo")
