"""S0 and S1: noisy quadratic models from :mod:`autolr.offline.nqm`, plain SGD.

Validation and test "loss" are both the exact noise-free loss at the current
parameters. For a plain-SGD LR sequence the expected final loss is exact, and so
is the best possible schedule for the budget: the report gives the regret.

S0 (defaults are chosen on it): ``h_i = 1/i``, noise ``c = h``; its best LRs sit
just below the stability limit ``2 / max(h) = 2``. S1 (confirmation: no default is
chosen on it) is unlike it on purpose: a steeper spectrum ``h_i = i^-2`` over 200
coordinates, noise ``c = sqrt(h)`` (relatively more in the flat directions) and
batch 16, so the best LRs (about 0.2-0.4) sit 5-10x below the stability limit.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from autolr.offline.nqm import NoisyQuadratic, optimal_schedule, sgd_expected_loss
from benchmarks.common import Instance, Workload

DIM = 1000
BATCH_SIZE = 32
S1_DIM = 200
S1_BATCH_SIZE = 16
S1_POWER = 2.0
S1_NOISE_POWER = 0.5


def _problem(seed: int = 0) -> NoisyQuadratic:
    return NoisyQuadratic(dim=DIM, batch_size=BATCH_SIZE, seed=seed)


def _steep_problem(seed: int = 0) -> NoisyQuadratic:
    h = torch.arange(1, S1_DIM + 1, dtype=torch.float64) ** -S1_POWER
    return NoisyQuadratic(
        dim=S1_DIM, batch_size=S1_BATCH_SIZE, curvature=h, noise=h**S1_NOISE_POWER, seed=seed
    )


def _nqm_batches() -> Any:
    while True:
        yield None


def nqm_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any) -> float:
    """One SGD step on a fresh noise draw; returns the noisy minibatch loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = model()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _instance(model: NoisyQuadratic, info: dict[str, Any]) -> Instance:
    spec = model.spec

    def expected(lrs: list[float]) -> float:
        return float(sgd_expected_loss(torch.tensor(lrs, dtype=torch.float64), spec)[-1])

    def exact() -> float:
        return float(model.expected_loss())

    return Instance(
        model=model,
        train_batches=_nqm_batches(),
        train_step=nqm_step,
        eval_val=exact,
        eval_test=exact,
        expected_final_loss=expected,
        info=info,
    )


def make(seed: int) -> Instance:
    """S0: the problem is fixed; the seed picks the gradient-noise stream."""
    info = {"dim": DIM, "batch_size": BATCH_SIZE, "curvature": "1/i", "noise": "C = H"}
    return _instance(_problem(seed), info)


def make_steep(seed: int) -> Instance:
    """S1: the problem is fixed; the seed picks the gradient-noise stream."""
    info = {
        "dim": S1_DIM,
        "batch_size": S1_BATCH_SIZE,
        "curvature": f"i^-{S1_POWER:g}",
        "noise": f"C = H^{S1_NOISE_POWER:g}",
    }
    return _instance(_steep_problem(seed), info)


def _reference(problem: NoisyQuadratic, total_steps: int) -> dict[str, Any]:
    """Exact reference numbers for a budget: optimal schedule and best constant LR."""
    spec = problem.spec
    opt = optimal_schedule(total_steps, spec, num_chunks=min(64, total_steps))
    every = max(1, total_steps // 200)
    return {
        "initial_loss": float(spec.loss_of_second_moment(spec.init_second_moment)),
        "optimal_expected_loss": opt.expected_loss,
        "best_constant_lr": opt.constant_lr,
        "best_constant_expected_loss": opt.constant_expected_loss,
        "max_stable_lr": spec.max_stable_lr,
        "optimal_lr_curve": {
            "steps": list(range(0, total_steps, every)),
            "lrs": opt.lrs[::every].tolist(),
        },
    }


@functools.lru_cache(maxsize=4)
def reference(total_steps: int) -> dict[str, Any]:
    """S0's exact reference numbers for a budget (:func:`_reference`)."""
    return _reference(_problem(), total_steps)


@functools.lru_cache(maxsize=4)
def steep_reference(total_steps: int) -> dict[str, Any]:
    """S1's exact reference numbers for a budget (:func:`_reference`)."""
    return _reference(_steep_problem(), total_steps)


WORKLOAD = Workload(
    id="S0",
    title=f"noisy quadratic (dim {DIM}, h_i = 1/i, C = H, batch {BATCH_SIZE}), plain SGD",
    optimizer="sgd",
    default_lr=0.1,
    # 3.2 is past the stability limit 2 / max(h) = 2: the grid brackets the best LR
    grid_exponents=(-3, -2, -1, 0, 1, 2, 3, 4, 5),
    full_steps=5000,
    quick_steps=500,
    make=make,
    momentum=0.0,
    reference=reference,
)

STEEP_WORKLOAD = Workload(
    id="S1",
    title=(
        f"noisy quadratic unlike S0 (dim {S1_DIM}, h_i = i^-{S1_POWER:g}, "
        f"C = H^{S1_NOISE_POWER:g}, batch {S1_BATCH_SIZE}), plain SGD"
    ),
    optimizer="sgd",
    default_lr=0.1,
    # 3.2 is past the stability limit 2 / max(h) = 2, far above the best LRs
    grid_exponents=(-3, -2, -1, 0, 1, 2, 3, 4, 5),
    full_steps=3000,
    quick_steps=300,
    make=make_steep,
    momentum=0.0,
    reference=steep_reference,
    grid_schedules=("cosine", "wsd"),
    confirmation=True,
)
