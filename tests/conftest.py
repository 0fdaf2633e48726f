"""Shared fixtures: tiny models and data so tests exercise real code paths quickly."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from autolr import AutoLRS, Phase

torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Regression:
    """A noisy linear-regression task with a fixed batch for every step index."""

    def __init__(self, dim: int = 8, batch: int = 16, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.w = torch.randn(dim, 1, generator=gen)
        self.dim, self.batch, self.seed = dim, batch, seed

    def batch_at(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        x = torch.randn(self.batch, self.dim, generator=gen)
        y = x @ self.w + 0.1 * torch.randn(self.batch, 1, generator=gen)
        return x, y

    def stream(self, start: int = 0):
        i = start
        while True:
            yield self.batch_at(i)
            i += 1


def make_model(seed: int = 0, dim: int = 8, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(dim, 16), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(16, 1))
    return nn.Sequential(*layers)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch) -> torch.Tensor:
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def blow_up_the_hold(
    task: Regression,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tuner: AutoLRS,
    after: int,
    finish: bool = False,
) -> None:
    """Train on ``task`` and, from the exploit's ``after``-th step on, feed the tuner a
    loss of 100 (finite, far above any stage's start) until its guard rolls back; then
    stop, or with ``finish`` train on to the end of the run."""
    held = 0
    for batch in task.stream():
        if tuner.finished:
            break
        loss = train_step(model, optimizer, batch)
        if tuner.phase is Phase.EXPLOIT and not tuner.log.of_type("rollback"):
            held += 1
            if held > after:
                loss = loss * 0 + 100.0
        tuner.step(loss)
        if tuner.log.of_type("rollback") and not finish:
            break


@pytest.fixture
def task() -> Regression:
    return Regression()
