"""Study autolr's options at no cost on the noisy quadratic model, then replay a run.

1. Drive AutoLRS on the noisy quadratic model (autolr.offline.nqm) with a couple of
   option settings; each run writes a run log, and its schedule is scored exactly
   against the optimal schedule for the same step budget.
2. Replay one run log through the controller: it must take the logged decisions.
3. Re-decide that run's stages with another forecaster, from the logged probes.

    python examples/offline_study.py --steps 400 --out autolr_runs/offline_study
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from autolr.offline import replay_run, simulate_nqm, what_if

SETTINGS = {
    "exponential, 4 probes": {"forecaster": "exponential", "probes": 4},
    "power law, 4 probes": {"forecaster": "power_law", "probes": 4},
    "exponential, 8 probes": {"forecaster": "exponential", "probes": 8},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="step budget per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="autolr_runs/offline_study", help="folder for run logs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("autolr").setLevel(logging.ERROR)  # rollbacks are in the logs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    print(f"noisy quadratic model, {args.steps} SGD steps (probes included), seed {args.seed}\n")
    print(f"{'setting':24} {'expected loss':>13} {'regret':>9} {'probe steps':>11}  run log")
    runs = {}
    for k, (name, options) in enumerate(SETTINGS.items()):
        log = out / f"run{k}.jsonl"
        # Same problem, same budget: the optimal schedule is computed once.
        res = simulate_nqm(args.steps, seed=args.seed, log_path=log, compare=k == 0, **options)
        runs[name] = res
        first = next(iter(runs.values()))
        regret = res.expected_loss - first.optimal_loss
        print(f"{name:24} {res.expected_loss:13.4g} {regret:9.4g} {res.search_steps:11d}  {log}")
    print(
        f"{'optimal schedule':24} {first.optimal_loss:13.4g} {0:9.4g} {0:11d}\n"
        f"{'best constant LR':24} {first.optimal_constant_loss:13.4g} "
        f"{first.optimal_constant_loss - first.optimal_loss:9.4g} {0:11d}  "
        f"(lr={first.optimal_constant_lr:.3g})"
    )

    name, res = next(iter(runs.items()))
    assert res.log_path is not None
    check = replay_run(res.log_path)
    verdict = "reproduces every decision" if check.matches else "DIFFERS"
    print(f"\nreplay of '{name}' through the controller: {verdict}")
    for m in check.mismatches[:3]:
        print(f"  {m.describe()}")

    other = what_if(res.log_path, "power_law")
    print("\nthe same run's stages re-decided with the power law, from the logged probes:")
    print(f"{'stage':>5} {'logged LR':>10} {'power-law LR':>13}  note")
    for s in other.stages:
        logged = "-" if s.logged_lr is None else f"{s.logged_lr:.4g}"
        new = "-" if s.new_lr is None else f"{s.new_lr:.4g}"
        print(f"{s.stage:5d} {logged:>10} {new:>13}  {s.note}")
    for stage, why in other.skipped.items():
        print(f"{stage:5d} not re-decided: {why}")
    print(f"\n{len(other.changed)} of {len(other.stages)} stage(s) would have chosen another LR")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
