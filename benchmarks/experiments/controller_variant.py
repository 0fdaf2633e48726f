"""Run the controller itself with extra settings on a workload, several seeds, and print them.

For trying a change to the controller (or its settings) on a workload before it
goes into the benchmark: every run goes through :func:`benchmarks.methods.run_one`
as the benchmark's autolr runs do, probes and range test counted.

Usage::

    python -m benchmarks.experiments.controller_variant --workloads W4 \
        --settings '{"strategy": "anneal"}' --range none --seeds 0,1,2,3,4

Prints one line a run (final validation loss, search steps, the stage LRs) and the
median and worst seed per workload. ``--logdir`` keeps each run's log.
"""

from __future__ import annotations

import argparse
import json
import math
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch


def _one(job: tuple[str, int, dict[str, Any], int | None, str, str | None]) -> tuple[Any, ...]:
    from benchmarks import autolr_hook
    from benchmarks.methods import RunSpec, run_one
    from benchmarks.workloads import WORKLOADS

    name, seed, settings, steps, lr_range, logdir = job
    torch.set_num_threads(1)
    workload = WORKLOADS[name]
    variant = autolr_hook.AutoLRVariant("variant", "autolr variant", settings=settings)
    log = f"{logdir}/{name}_{seed}.jsonl" if logdir else None
    result = run_one(
        workload,
        RunSpec("autolr", seed),
        steps or workload.full_steps,
        10,
        autolr_variant=variant,
        log_path=log,
        lr_range=(None, None) if lr_range == "none" else None,
    )
    stages = [round(s["lr"], 5) for s in result["autolr"]["diagnostics"]["stages"]]
    return name, seed, result["final_val"], result["autolr"]["search_steps"], stages


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="W1", help="comma list of workload ids")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma list of seeds")
    parser.add_argument("--settings", default="{}", help="AutoLRS keyword arguments, as JSON")
    parser.add_argument("--steps", type=int, default=None, help="budget T (default: full)")
    parser.add_argument(
        "--range", default="grid", choices=("grid", "none"), help="the grid's ends or no range"
    )
    parser.add_argument("--logdir", default=None, help="folder for the run logs")
    parser.add_argument("--jobs", type=int, default=2, help="processes")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    jobs = [
        (w, int(s), settings, args.steps, args.range, args.logdir)
        for w in args.workloads.split(",")
        for s in args.seeds.split(",")
    ]
    finals: dict[str, list[float]] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for name, seed, final, search, stages in pool.map(_one, jobs):
            print(f"{name} seed {seed}: final val {final}, search {search} steps, LRs {stages}")
            finals.setdefault(name, []).append(final if final is not None else math.inf)
    for name, values in finals.items():
        values.sort()
        print(f"{name}: median {values[len(values) // 2]:.4f}, worst {values[-1]:.4f}")


if __name__ == "__main__":
    main()
