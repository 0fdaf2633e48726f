"""Each method's optimizer (shared by the method runner and the PB2 trainable)."""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.common import Workload
from benchmarks.schedules import warmup_steps


def _base_optimizer(workload: Workload, params: Any, lr: float) -> torch.optim.Optimizer:
    if workload.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=workload.weight_decay)
    return torch.optim.SGD(
        params, lr=lr, momentum=workload.momentum, weight_decay=workload.weight_decay
    )


def build_optimizer(
    workload: Workload, method: str, params: Any, total_steps: int
) -> torch.optim.Optimizer:
    """The optimizer of a method; grid methods get their LR per step from the schedule.

    - schedules and autolr: the workload's SGD (+ momentum) or AdamW, at the default LR.
    - ``schedulefree``: ``SGDScheduleFree`` / ``AdamWScheduleFree`` at the package's
      default LR (SGD 1.0, AdamW 0.0025), 5% warmup, the workload's weight decay
      (and momentum for SGD, 0.9 when the workload has none).
    - ``prodigy``: ``prodigyopt.Prodigy`` with ``lr=1``, the workload's weight decay,
      ``safeguard_warmup`` and bias correction, under a cosine schedule with 5%
      warmup (as its authors recommend).
    """
    if method == "schedulefree":
        import schedulefree

        sf_warmup = warmup_steps(total_steps)
        if workload.optimizer == "adamw":
            return schedulefree.AdamWScheduleFree(
                params, weight_decay=workload.weight_decay, warmup_steps=sf_warmup
            )
        return schedulefree.SGDScheduleFree(
            params,
            momentum=workload.momentum or 0.9,
            weight_decay=workload.weight_decay,
            warmup_steps=sf_warmup,
        )
    if method == "prodigy":
        from prodigyopt import Prodigy

        return Prodigy(
            params,
            lr=1.0,
            weight_decay=workload.weight_decay,
            safeguard_warmup=True,
            use_bias_correction=True,
        )
    return _base_optimizer(workload, params, workload.default_lr)
