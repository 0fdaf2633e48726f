"""What a workload is, and helpers the workloads share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TrainStep = Callable[[nn.Module, torch.optim.Optimizer, Any], float]


@dataclass
class Instance:
    """One seeded instance of a workload, ready to train.

    Attributes:
        model: the model, freshly initialized from the seed.
        train_batches: infinite iterator of training batches (seeded order).
        train_step: ``train_step(model, optimizer, batch) -> loss``: forward,
            backward, ``optimizer.step()``; returns the minibatch training loss.
        eval_val: mean validation loss of the current model (no side effects).
        eval_test: mean test loss of the current model (no side effects).
        expected_final_loss: for workloads with an exact model of SGD (S0), the
            expected final loss of a per-step LR sequence; else ``None``.
        info: facts about the data (sizes, hashes) recorded in the results.
    """

    model: nn.Module
    train_batches: Iterator[Any]
    train_step: TrainStep
    eval_val: Callable[[], float]
    eval_test: Callable[[], float]
    expected_final_loss: Callable[[list[float]], float] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Workload:
    """A benchmark workload: how to build it and how to train it.

    Attributes:
        id: short id, e.g. ``"W1"``.
        title: one line for the report.
        optimizer: ``"sgd"`` or ``"adamw"``; decides the default LR and the
            schedule-free / Prodigy variants.
        default_lr: the LR a user gets without tuning (SGD 0.1, AdamW 1e-3).
        grid_exponents: the peak-LR grid is ``default_lr * 2**k`` for these ``k``.
        full_steps: the budget ``T`` in full mode.
        quick_steps: the budget ``T`` in quick mode.
        make: ``make(seed) -> Instance``.
        momentum: SGD momentum (ignored for AdamW).
        weight_decay: weight decay of every optimizer.
        eval_points: number of evaluations spread over a run (plus step 0).
        reference: optional ``reference(total_steps) -> dict`` of exact reference
            numbers (S0: the optimal schedule's expected loss).
        grid_schedules: the schedules swept over the LR grid (all four by default;
            fewer where a run is expensive); others asked for are skipped.
        confirmation: a confirmation workload (W4, W5): reported in its own table,
            never used to choose a default.
        chance_loss: the loss of a model that has learnt nothing (ln of the class
            count for a classifier), used to tell a dead network; ``None`` if none.
    """

    id: str
    title: str
    optimizer: Literal["sgd", "adamw"]
    default_lr: float
    grid_exponents: tuple[int, ...]
    full_steps: int
    quick_steps: int
    make: Callable[[int], Instance]
    momentum: float = 0.0
    weight_decay: float = 0.0
    eval_points: int = 25
    reference: Callable[[int], dict[str, Any]] | None = None
    grid_schedules: tuple[str, ...] = ("cosine", "linear", "wsd", "constant")
    confirmation: bool = False
    chance_loss: float | None = None

    def lr_grid(self) -> list[float]:
        """Peak LRs of the grid search, ascending, spaced x2."""
        return [self.default_lr * 2.0**k for k in sorted(self.grid_exponents)]

    def lr_range(self) -> tuple[float, float]:
        """``(min, max)`` of the grid: the same prior knowledge every tuner gets."""
        grid = self.lr_grid()
        return grid[0], grid[-1]

    def steps(self, quick: bool) -> int:
        """The budget ``T`` for the mode."""
        return self.quick_steps if quick else self.full_steps


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def epoch_batches(
    tensors: tuple[Tensor, ...], batch_size: int, generator: torch.Generator
) -> Iterator[tuple[Tensor, ...]]:
    """Infinite minibatches: reshuffled every epoch, the last partial batch dropped."""
    n = tensors[0].shape[0]
    if batch_size > n:
        raise ValueError(f"batch_size must be <= dataset size {n}, got {batch_size}")
    while True:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            yield tuple(t[idx] for t in tensors)


def split_indices(n: int, fractions: tuple[float, float], seed: int) -> tuple[Tensor, ...]:
    """A fixed random split of ``range(n)`` into train / val / test.

    ``fractions`` are (val, test); the rest is train.
    """
    order = torch.randperm(n, generator=seeded_generator(seed))
    n_val, n_test = round(fractions[0] * n), round(fractions[1] * n)
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


def supervised_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> float:
    """One training step on ``batch = (x, y)`` with ``loss_fn(model(x), y)``; the minibatch loss."""
    x, y = batch
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def classification_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any) -> float:
    """One cross-entropy training step; returns the minibatch loss."""
    return supervised_step(model, optimizer, batch, F.cross_entropy)


def mean_cross_entropy(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 2048) -> float:
    """Mean cross-entropy of ``model`` over ``(x, y)``, in eval mode, mode restored after."""
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            logits = model(x[i : i + chunk])
            total += float(F.cross_entropy(logits, y[i : i + chunk], reduction="sum"))
    model.train(was_training)
    return total / x.shape[0]


def dataset_instance(
    model: nn.Module,
    splits: dict[str, tuple[Tensor, Tensor]],
    batch_size: int,
    seed: int,
    train_step: TrainStep,
    mean_loss: Callable[[nn.Module, Tensor, Tensor], float],
    **info: Any,
) -> Instance:
    """An instance over in-memory ``splits`` (``train``/``val``/``test`` as ``(x, y)``):
    ``train_step`` on seeded epochs of the training split, validation and test scored
    by ``mean_loss(model, x, y)``; ``info`` joins the split sizes and batch size."""
    xv, yv = splits["val"]
    xt, yt = splits["test"]
    return Instance(
        model=model,
        train_batches=epoch_batches(splits["train"], batch_size, seeded_generator(seed)),
        train_step=train_step,
        eval_val=lambda: mean_loss(model, xv, yv),
        eval_test=lambda: mean_loss(model, xt, yt),
        info={k: len(v[1]) for k, v in splits.items()} | {"batch_size": batch_size} | info,
    )


def classifier_instance(
    model: nn.Module,
    splits: dict[str, tuple[Tensor, Tensor]],
    batch_size: int,
    seed: int,
    **info: Any,
) -> Instance:
    """A classifier's :func:`dataset_instance`: trained by :func:`classification_step`,
    scored by :func:`mean_cross_entropy`."""
    return dataset_instance(
        model, splits, batch_size, seed, classification_step, mean_cross_entropy, **info
    )


QUICK_EVAL_POINTS = 10
"""Evaluations per run in quick mode."""
