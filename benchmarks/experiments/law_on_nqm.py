"""Does the LR-annealing law pick the decay on S0? Exact expected losses, no noise.

For a hold LR ``eta`` (the tuned peaks): the "observed" history is the exact expected
loss of a constant-LR run up to 30% of ``T`` (every ``T/40`` steps) plus cooldown
branches from there (linear to 0 over ``branch`` steps, end point only). The law is
fit on that, then forecasts the final loss of every plan (hold, then a decay of a
fraction x shape); the plan it picks is scored with the exact expected loss and
compared with the best plan and with the optimal schedule.

Usage::

    python -m benchmarks.experiments.law_on_nqm
"""

from __future__ import annotations

import torch

from autolr.kernels.schedule_law import (
    annealing_areas,
    decay_factors,
    fit_schedule_law,
    forecast_final,
)
from autolr.offline.nqm import sgd_expected_loss
from benchmarks.workloads.nqm import _problem, reference

T = 5000
SHAPES = ("linear", "1-sqrt", "cosine")
FRACS = [round(0.05 * i, 2) for i in range(2, 19)]
DECAYS = (0.99, 0.995, 0.999)


def plan(eta: float, shape: str, f: float) -> torch.Tensor:
    d = round(f * T)
    return torch.cat(
        [torch.full((T - d,), eta, dtype=torch.float64), eta * decay_factors(shape, d)]
    )


def main() -> None:
    spec = _problem().spec
    opt = reference(T)["optimal_expected_loss"]
    print(f"optimum {opt:.5f}")
    for eta in (0.4, 0.8, 1.6):
        plans = [(s, f) for s in SHAPES for f in FRACS]
        exact = torch.stack([sgd_expected_loss(plan(eta, s, f), spec)[-1] for s, f in plans])
        best = int(exact.argmin())
        for at, branches in (
            (0.3, (150,)),
            (0.3, (75, 150, 300)),
            (0.5, (150,)),
            (0.5, (75, 150, 300)),
        ):
            t0 = round(at * T)
            hist = torch.full((t0,), eta, dtype=torch.float64)
            curve = sgd_expected_loss(hist, spec)[1:]
            idx = list(range(T // 40 - 1, t0, T // 40))
            lrs_list = [hist] * len(idx)
            ends = [i + 1 for i in idx]
            ys = [float(curve[i]) for i in idx]
            for b in branches:
                br = torch.cat([hist, eta * decay_factors("linear", b)])
                lrs_list.append(br)
                ends.append(br.numel())
                ys.append(float(sgd_expected_loss(br, spec)[-1]))
            s1 = torch.tensor(
                [float(annealing_areas(lr[:n], 0.99)[0][-1]) for lr, n in zip(lrs_list, ends)]
            )
            s2s = [
                torch.tensor(
                    [float(annealing_areas(lr[:n], d)[1][-1]) for lr, n in zip(lrs_list, ends)]
                )
                for d in DECAYS
            ]
            fit = fit_schedule_law(
                s1.double(), [t.double() for t in s2s], torch.tensor(ys).double(), decays=DECAYS
            )
            rows = torch.stack([plan(eta, s, f)[t0:] for s, f in plans])
            pred = forecast_final(fit, 0, hist, rows)
            pick = int(pred.argmin())
            err = (pred / exact - 1).abs()
            print(
                f"eta {eta} fit at {at:.1f}T branches {branches}: law picks {plans[pick]} "
                f"-> {float(exact[pick]):.5f} ({float(exact[pick]) / opt:.2f}x opt); best plan "
                f"{plans[best]} {float(exact[best]):.5f} ({float(exact[best]) / opt:.2f}x); "
                f"forecast err median {float(err.median()):.2f} at pick {float(err[pick]):.2f}"
            )


if __name__ == "__main__":
    main()
