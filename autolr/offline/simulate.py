"""Simulated runs: the controller driven on the noisy quadratic model.

:func:`simulate_nqm` drives the controller on the noisy quadratic model
(:mod:`autolr.offline.nqm`) and compares the schedule it really applied with the
optimal schedule for the same step budget.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autolr.controller import AutoLRS
from autolr.forecast import make_forecaster
from autolr.offline.nqm import NoisyQuadratic, optimal_schedule, sgd_expected_loss

__all__ = ["NQMRun", "simulate_nqm"]

logger = logging.getLogger(__name__)


class _TrackedQuadratic(nn.Module):
    """A :class:`~autolr.offline.nqm.NoisyQuadratic` that remembers the LR of every step it kept.

    The history is a buffer, so the controller's snapshots save and restore it
    with ``theta``: after the run it holds the schedule the final ``theta``
    really went through (probes that were rolled back are not in it).
    """

    history: torch.Tensor
    count: torch.Tensor

    def __init__(self, nqm: nn.Module, capacity: int) -> None:
        super().__init__()
        self.nqm = nqm
        self.register_buffer("history", torch.zeros(capacity, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def record(self, lr: float) -> None:
        i = int(self.count)
        if i < self.history.numel():
            self.history[i] = lr
        self.count += 1

    def schedule(self) -> torch.Tensor:
        return self.history[: int(self.count)].clone()


@dataclass
class NQMRun:
    """A controller run on the noisy quadratic model and its exact scores.

    Attributes:
        log_path: the run log written (None: in memory only).
        records: the run log's records.
        total_steps: steps taken, probes included (the compute spent).
        search_steps: steps spent probing.
        schedule: `(n,)` float64 LRs of the steps the final parameters went
            through, in order (n <= total_steps; rolled-back probes are not in it).
        expected_loss: exact expected loss of ``schedule`` (over the gradient noise).
        final_loss: noise-free loss at the final parameters of this run (one draw).
        optimal_loss: exact expected loss of the best schedule of ``total_steps`` steps.
        optimal_constant_lr: best constant LR for ``total_steps`` steps.
        optimal_constant_loss: its exact expected loss.
        settings: the controller options used.
    """

    log_path: str | None
    records: list[dict[str, Any]]
    total_steps: int
    search_steps: int
    schedule: torch.Tensor
    expected_loss: float
    final_loss: float
    optimal_loss: float
    optimal_constant_lr: float
    optimal_constant_loss: float
    settings: dict[str, Any]

    @property
    def regret(self) -> float:
        """Expected loss above the optimal schedule's for the same number of steps."""
        return self.expected_loss - self.optimal_loss

    def to_dict(self) -> dict[str, Any]:
        return {
            "log_path": self.log_path,
            "total_steps": self.total_steps,
            "search_steps": self.search_steps,
            "kept_steps": int(self.schedule.numel()),
            "expected_loss": self.expected_loss,
            "final_loss": self.final_loss,
            "optimal_loss": self.optimal_loss,
            "regret": self.regret,
            "optimal_constant_lr": self.optimal_constant_lr,
            "optimal_constant_loss": self.optimal_constant_loss,
            "settings": {k: v for k, v in self.settings.items() if _jsonable(v)},
        }


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def simulate_nqm(
    total_steps: int = 400,
    *,
    dim: int = 50,
    batch_size: int = 8,
    seed: int = 0,
    min_lr: float | None = None,
    max_lr: float | None = None,
    log_path: str | Path | None = None,
    optimal_chunks: int = 32,
    compare: bool = True,
    **options: Any,
) -> NQMRun:
    """Drive :class:`autolr.AutoLRS` on the noisy quadratic model with plain SGD.

    The controller sees the minibatch loss of every step, as with a real network.
    Its schedule (the LRs of the steps the final parameters kept) is scored
    exactly with :func:`autolr.offline.nqm.sgd_expected_loss` and compared with
    :func:`autolr.offline.nqm.optimal_schedule` for the same ``total_steps``: probe
    steps cost compute, so the comparison is at equal compute.

    Args:
        total_steps: the budget, probes included.
        dim: coordinates of the problem (curvature ``1 / i``).
        batch_size: minibatch size (noise variance ``c / B``).
        seed: seeds the gradient noise and the controller.
        min_lr: lower bound of the search (default ``1e-3 * max_stable_lr``).
        max_lr: upper bound of the search (default ``0.95 * max_stable_lr``).
        log_path: where to write the run log (None: in memory).
        optimal_chunks: pieces of the optimal schedule.
        compare: compute the optimal schedule (False: the ``optimal_*`` fields are NaN).
        options: other :class:`autolr.AutoLRS` options (``forecaster``, ``probes``, ...);
            ``loss_floor`` defaults to None here, so forecasts are not floored at 0:
            the minibatch loss can be negative (its noise term ``xi . theta`` takes
            either sign).

    Raises:
        ConfigError: bad settings.
    """
    nqm = NoisyQuadratic(dim=dim, batch_size=batch_size, seed=seed, dtype=torch.float64)
    spec = nqm.spec
    top = spec.max_stable_lr
    lo = 1e-3 * top if min_lr is None else min_lr
    hi = 0.95 * top if max_lr is None else max_lr
    model = _TrackedQuadratic(nqm, total_steps)
    optimizer = torch.optim.SGD(nqm.parameters(), lr=math.sqrt(lo * hi))
    if log_path is not None:
        Path(log_path).unlink(missing_ok=True)
    options.setdefault("seed", seed)
    options.setdefault("gp_device", "cpu")
    options.setdefault("loss_floor", None)  # a minibatch loss can be below 0
    if isinstance(options.get("forecaster"), str):  # a name, as the command line gives it
        named = {"name": options["forecaster"], "min_value": options["loss_floor"]}
        options["forecaster"] = make_forecaster(named)
    tuner = AutoLRS(
        model,
        optimizer,
        min_lr=lo,
        max_lr=hi,
        total_steps=total_steps,
        log_path=log_path,
        **options,
    )
    while not tuner.finished:
        lr = float(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad(set_to_none=True)
        loss = nqm()
        loss.backward()
        optimizer.step()
        model.record(lr)
        tuner.step(loss.detach())
    schedule = model.schedule()
    with torch.no_grad():
        expected = float(sgd_expected_loss(schedule, spec)[-1]) if schedule.numel() else math.nan
    opt_loss = const_lr = const_loss = math.nan
    if compare:
        best = optimal_schedule(total_steps, spec, num_chunks=min(optimal_chunks, total_steps))
        opt_loss, const_lr = best.expected_loss, best.constant_lr
        const_loss = best.constant_expected_loss
    logger.info(
        "NQM: %d steps (%d probing), expected loss %.4g, optimal %.4g",
        tuner.global_step,
        tuner.search_steps,
        expected,
        opt_loss,
    )
    return NQMRun(
        log_path=str(log_path) if log_path is not None else None,
        records=tuner.log.records,
        total_steps=tuner.global_step,
        search_steps=tuner.search_steps,
        schedule=schedule,
        expected_loss=expected,
        final_loss=float(nqm.expected_loss()),
        optimal_loss=opt_loss,
        optimal_constant_lr=const_lr,
        optimal_constant_loss=const_loss,
        settings={"dim": dim, "batch_size": batch_size, "min_lr": lo, "max_lr": hi, **options},
    )
