"""Run the controller itself with extra settings on a workload, several seeds, and print them.

For trying a change to the controller (or its settings) on a workload before it
goes into the benchmark: every run goes through :func:`benchmarks.methods.run_one`
as the benchmark's autolr runs do, probes and range test counted.

Usage::

    python -m benchmarks.experiments.controller_variant --workloads W4 \
        --settings '{"strategy": "anneal"}' --ranges 2,4,none --seeds 0,1,2,3,4

Prints one line a run (final validation loss, search steps, the stage LRs) and the
median and worst seed per workload. ``--logdir`` keeps each run's log; ``--val``
hands the workload's validation loss in as ``val_fn`` (the validation objective).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from benchmarks.ranges import resolve_range, tuned_lr
from benchmarks.report import RESULTS_DIR


def _patch(patches: list[str]) -> None:
    """Set module constants, ``"autolr.rangetest.BELOW=10"``: a rule's number, tried unbuilt."""
    for patch in patches:
        target, _, value = patch.partition("=")
        module, _, name = target.rpartition(".")
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            raise SystemExit(f"--patch {patch!r}: {module} has no {name}")
        setattr(mod, name, type(getattr(mod, name))(value))


def _one(job: tuple[Any, ...]) -> tuple[Any, ...]:
    from benchmarks import autolr_hook
    from benchmarks.methods import RunSpec, run_one
    from benchmarks.workloads import WORKLOADS

    name, seed, settings, steps, label, logdir, patches, val = job
    _patch(patches)
    torch.set_num_threads(1)
    workload = WORKLOADS[name]
    lr_range: tuple[float | None, float | None] | None = None  # "grid": the grid's ends
    if label != "grid":
        grid = json.loads((RESULTS_DIR / f"{name}_full.json").read_text())
        bounds = resolve_range(label, tuned_lr(grid)[0])
        lr_range = (None, None) if bounds is None else bounds
    variant = autolr_hook.AutoLRVariant(
        "variant", "autolr variant", settings=settings, val_objective=val
    )
    log = f"{logdir}/{name}_{label}_{seed}.jsonl" if logdir else None
    result = run_one(
        workload,
        RunSpec("autolr", seed),
        steps or workload.full_steps,
        10,
        autolr_variant=variant,
        log_path=log,
        lr_range=lr_range,
    )
    stages = [round(s["lr"], 5) for s in result["autolr"]["diagnostics"]["stages"]]
    return f"{name}/{label}", seed, result["final_val"], result["autolr"]["search_steps"], stages


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="W1", help="comma list of workload ids")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma list of seeds")
    parser.add_argument("--settings", default="{}", help="AutoLRS keyword arguments, as JSON")
    parser.add_argument("--steps", type=int, default=None, help="budget T (default: full)")
    parser.add_argument(
        "--ranges",
        default="grid",
        help="comma list: 'grid' (its ends), decades around the tuned LR (as the range "
        "sweep), 'wide' or 'none'",
    )
    parser.add_argument("--logdir", default=None, help="folder for the run logs")
    parser.add_argument(
        "--patch",
        action="append",
        default=[],
        help="module.CONSTANT=value set in each run (repeatable), e.g. autolr.rangetest.BELOW=10",
    )
    parser.add_argument(
        "--val", action="store_true", help="the validation objective (val_fn handed in)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="processes")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    jobs = [
        (w, int(s), settings, args.steps, r, args.logdir, args.patch, args.val)
        for w in args.workloads.split(",")
        for r in args.ranges.split(",")
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
