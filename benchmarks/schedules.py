"""Hand-written LR schedules used as baselines: multipliers of a peak LR per step."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "wsd", "constant")
WARMUP_FRACTION = 0.05
COOLDOWN_FRACTION = 0.2


def warmup_steps(total_steps: int, fraction: float = WARMUP_FRACTION) -> int:
    """Length of the linear warmup: ``fraction`` of the budget, at least 1 step."""
    return max(1, round(fraction * total_steps))


def lr_factor(name: str, step: int, total_steps: int) -> float:
    """Multiplier of the peak LR at ``step`` (0-based) of a ``total_steps`` run.

    - ``cosine``: 5% linear warmup, then cosine decay toward 0.
    - ``linear``: 5% linear warmup, then linear decay toward 0.
    - ``wsd``: 5% linear warmup, constant, then linear decay over the last 20%.
    - ``constant``: the peak LR throughout, no warmup.

    Linear decays end one step short of 0, so the last step still trains.
    """
    if name == "constant":
        return 1.0
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
    w = warmup_steps(total_steps)
    if step < w:
        return (step + 1) / w
    if name == "cosine":
        progress = (step - w) / max(1, total_steps - w)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "linear":
        return (total_steps - step) / (total_steps - w + 1)
    cooldown = max(1, round(COOLDOWN_FRACTION * total_steps))
    start = total_steps - cooldown
    return 1.0 if step < start else (total_steps - step) / (cooldown + 1)
