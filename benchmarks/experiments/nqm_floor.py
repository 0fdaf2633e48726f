"""How close to S0's optimum can a hold-then-decay plan get after a search? Exact.

A run that spends ``lost`` of its ``T`` steps on search it does not keep (probes that
lose, cooldown branches, the range test) trains the rest from the start state. For
each ``lost`` this scores every plan "hold LR ``H``, then decay to 0 over a fraction
``f`` of ``T``" by S0's exact expected final loss (no sampling noise) and prints the
best plan against the optimal schedule: the floor no choice of LR, decay length or
shape can go below at that search cost. Then the hold LRs of the default plan (1-sqrt
over half of ``T``) at S0's search cost today.

Usage::

    python -m benchmarks.experiments.nqm_floor
"""

from __future__ import annotations

import torch

from autolr.kernels.schedule_law import decay_factors
from autolr.offline.nqm import sgd_expected_loss
from benchmarks.workloads.nqm import _problem, reference

T = 5000
HOLDS = (0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 1.95)
FRACS = (0.5, 0.65, 0.8, 0.9, 1.0)
SHAPES = ("1-sqrt", "linear", "cosine", "quadratic")
LOST = (0, 100, 200, 300, 450, 600, 900)


def factors(shape: str, steps: int) -> torch.Tensor:
    """The decay's LR factors; ``quadratic`` is ``(1 - t)^2``, closest to the optimum's."""
    if shape == "quadratic":
        t = torch.arange(steps, dtype=torch.float64) / steps
        return (1 - t) ** 2
    return decay_factors(shape, steps).to(torch.float64)


def plan(hold: float, frac: float, shape: str, lost: int) -> torch.Tensor:
    """LRs of the steps a run with ``lost`` search steps trains on."""
    left = T - lost
    decay = min(round(frac * T), left)
    return torch.cat(
        [torch.full((left - decay,), hold, dtype=torch.float64), hold * factors(shape, decay)]
    )


def main() -> None:
    spec = _problem().spec
    optimum = reference(T)["optimal_expected_loss"]

    def ratio(lrs: torch.Tensor) -> float:
        return float(sgd_expected_loss(lrs, spec)[-1]) / optimum

    print(f"S0, T = {T}: optimal schedule E[loss] = {optimum:.5f}")
    print("search steps lost | best plan (x optimum) | default plan 1-sqrt 0.5, best hold")
    for lost in LOST:
        best = min(
            (ratio(plan(h, f, s, lost)), s, h, f) for s in SHAPES for h in HOLDS for f in FRACS
        )
        default = min((ratio(plan(h, 0.5, "1-sqrt", lost)), h) for h in HOLDS)
        print(
            f"{lost:5d} ({100 * lost / T:4.1f}%) | {best[0]:.2f}x: {best[1]} over {best[3]:.2f} "
            f"of T from {best[2]} | {default[0]:.2f}x at {default[1]}"
        )
    print("default plan after 600 lost steps, by hold LR:")
    print(", ".join(f"{h}: {ratio(plan(h, 0.5, '1-sqrt', 600)):.2f}x" for h in HOLDS))


if __name__ == "__main__":
    main()
