"""How well does the LR-annealing law, fit mid-run, forecast final losses of real runs?

One seeded run holds ``--lr`` (no warmup) and is evaluated every ``T / 40`` steps.
At ``--at * T`` it is snapshotted; cooldown branches (linear to 0 over ``--branches``
steps) give the law its annealing points; the law is fit on the main evaluations
and the branch ends. Then every plan (hold to the decay start, then a 1-sqrt or
linear decay over a fraction of ``T``) is run to the end from the snapshot, and its
real final validation loss is compared with the law's forecast.

Usage::

    python -m benchmarks.experiments.law_check --workload W1 --steps 3000 --lr 0.1 \
        --at 0.3 --seeds 0,1
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch

from autolr.kernels.schedule_law import (
    annealing_areas,
    decay_factors,
    fit_schedule_law,
    forecast_final,
)
from benchmarks.common import Workload
from benchmarks.methods import build_optimizer
from benchmarks.workloads import WORKLOADS

DECAYS = (0.99, 0.995, 0.999)
PLANS = (("linear", 0.2), ("1-sqrt", 0.2), ("1-sqrt", 0.4), ("1-sqrt", 0.6))


def check_seed(w: Workload, T: int, a: argparse.Namespace, seed: int) -> list[float]:
    """One seed: fit at ``a.at * T``, run every plan to the end; the relative errors."""
    errs: list[float] = []
    inst = w.make(seed)
    model = inst.model
    opt = build_optimizer(w, "wsd", model.parameters(), T)
    every = T // 40

    def train(lrs: list[float]) -> None:
        for lr in lrs:
            for g in opt.param_groups:
                g["lr"] = lr
            inst.train_step(model, opt, next(inst.train_batches))

    t0 = round(a.at * T)
    obs_lrs, obs_y = [], []
    hist: list[float] = []
    while len(hist) < t0:
        n = min(every, t0 - len(hist))
        train([a.lr] * n)
        hist += [a.lr] * n
        obs_lrs.append(list(hist))
        obs_y.append(inst.eval_val())
    snap = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))

    def restore() -> None:
        model.load_state_dict(snap[0])
        opt.load_state_dict(snap[1])

    for frac in [float(f) for f in a.branches.split(",")]:
        b = (a.lr * decay_factors("linear", round(frac * T))).tolist()
        train(b)
        obs_lrs.append(hist + b)
        obs_y.append(inst.eval_val())
        restore()
    s1 = torch.tensor([float(annealing_areas(torch.tensor(x), 0.99)[0][-1]) for x in obs_lrs])
    s2 = [
        torch.tensor([float(annealing_areas(torch.tensor(x), d)[1][-1]) for x in obs_lrs])
        for d in DECAYS
    ]
    y = torch.tensor(obs_y, dtype=torch.float64)
    fit = fit_schedule_law(s1.double(), s2, y, decays=DECAYS)
    rows, real = [], []
    for shape, f in PLANS:
        d = round(f * T)
        rem = [a.lr] * (T - d - t0) + (a.lr * decay_factors(shape, d)).tolist()
        rows.append(torch.tensor(rem, dtype=torch.float64))
        restore()
        train(rem)
        real.append(inst.eval_val())
    pred = forecast_final(fit, 0, torch.tensor(hist, dtype=torch.float64), torch.stack(rows))
    for (shape, f), pr, re in zip(PLANS, pred.tolist(), real):
        errs.append(abs(pr / re - 1))
        print(
            f"{a.workload} seed {seed} {shape} {f}: forecast {pr:.4f} real {re:.4f} "
            f"err {pr / re - 1:+.1%}",
            flush=True,
        )
    order_f = sorted(range(len(PLANS)), key=lambda i: float(pred[i]))
    order_r = sorted(range(len(PLANS)), key=lambda i: real[i])
    print(
        f"  law ranks {[PLANS[i] for i in order_f]}\n  real ranks {[PLANS[i] for i in order_r]}"
        f"\n  fit alpha {float(fit.alpha[0]):.3f} C {float(fit.c[0]):.3g} "
        f"lam {float(fit.decay[0])}",
        flush=True,
    )
    return errs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--at", type=float, default=0.3)
    p.add_argument("--branches", default="0.02,0.05")
    p.add_argument("--seeds", default="0")
    a = p.parse_args()
    w, T = WORKLOADS[a.workload], a.steps
    errs = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        errs += check_seed(w, T, a, seed)
    print(f"median |err| {statistics.median(errs):.1%} over {len(errs)} forecasts")


if __name__ == "__main__":
    main()
