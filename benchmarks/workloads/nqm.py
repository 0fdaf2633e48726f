"""S0: the noisy quadratic model from :mod:`autolr.offline.nqm`, plain SGD.

Validation and test "loss" are both the exact noise-free loss at the current
parameters. For a plain-SGD LR sequence the expected final loss is exact, and so
is the best possible schedule for the budget: the report gives the regret.
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


def _problem(seed: int = 0) -> NoisyQuadratic:
    return NoisyQuadratic(dim=DIM, batch_size=BATCH_SIZE, seed=seed)


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


def make(seed: int) -> Instance:
    """The problem is fixed; the seed picks the gradient-noise stream."""
    model = _problem(seed)
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
        info={"dim": DIM, "batch_size": BATCH_SIZE, "curvature": "1/i", "noise": "C = H"},
    )


@functools.lru_cache(maxsize=4)
def reference(total_steps: int) -> dict[str, Any]:
    """Exact reference numbers for a budget: optimal schedule and best constant LR."""
    spec = _problem().spec
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
