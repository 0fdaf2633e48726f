"""Run the benchmark: every method on every workload, several seeds, same step budget.

Usage::

    python -m benchmarks.run --quick                      # small budgets, all workloads
    python -m benchmarks.run --workloads W1,S0 --seeds 3  # full budgets
    python -m benchmarks.run --quick --methods autolr,autolr-paper   # add to saved results
    python -m benchmarks.run --workloads W4 --range-decades 1,2,3,4,wide --seeds 5

With ``--range-decades``, runs the search-range sweep of :mod:`benchmarks.ranges`
instead (autolr only; ``--methods`` picks the autolr variants, default ``autolr``).

Writes ``benchmarks/results/<workload>_<mode>.json`` (merged with the runs already
there for the same budget and grid) and regenerates ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmarks import autolr_hook, pb2
from benchmarks.common import QUICK_EVAL_POINTS
from benchmarks.methods import LR_FREE, METHODS, RunSpec, plan_runs, run_guarded
from benchmarks.provenance import _git_commit, _rounded, autolr_source_hash
from benchmarks.report import REPORT_PATH, RESULTS_DIR, build_report, summarize
from benchmarks.schedules import COOLDOWN_FRACTION, SCHEDULES, WARMUP_FRACTION
from benchmarks.workloads import WORKLOADS


def _meta(workload: Any, mode: str, total: int, seeds: list[int], eval_points: int) -> dict:
    ok, err = autolr_hook.availability()
    return {
        "workload": workload.id,
        "title": workload.title,
        "mode": mode,
        "total_steps": total,
        "seeds": seeds,
        "optimizer": workload.optimizer,
        "default_lr": workload.default_lr,
        "lr_grid": workload.lr_grid(),
        "momentum": workload.momentum,
        "weight_decay": workload.weight_decay,
        "eval_points": eval_points,
        "confirmation": workload.confirmation,
        "chance_loss": workload.chance_loss,
        "warmup_fraction": WARMUP_FRACTION,
        "wsd_cooldown_fraction": COOLDOWN_FRACTION,
        "autolr_available": ok,
        "autolr_error": err or None,
        "autolr_variants": {
            v.name: {"label": v.label, "settings": v.settings}
            for v in autolr_hook.VARIANTS.values()
        },
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": f"{platform.system()} {platform.machine()}",
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "git_commit": _git_commit(),
        "autolr_source_sha256_16": autolr_source_hash(),
    }


def _compatible(old: dict, new: dict) -> bool:
    """Whether saved runs can sit beside new ones: same budget and training setup.

    The LR grid may have grown (points added at either end); see :func:`_still_valid`.
    """
    keys = ("total_steps", "eval_points", "optimizer", "default_lr", "weight_decay")
    return all(old.get(k) == new.get(k) for k in keys) and set(old.get("lr_grid", [])) <= set(
        new.get("lr_grid", [])
    )


def _still_valid(run: dict[str, Any], old: dict, new: dict) -> bool:
    """A saved run stays unless it depended on the grid's range and the range changed.

    Grid runs keep their own peak LR. autolr and PB2 search the grid's range, so
    their runs are dropped when a widened grid moves its ends.
    """
    if run["method"] in SCHEDULES or run["method"] in LR_FREE:
        return True
    same_range = (old["lr_grid"][0], old["lr_grid"][-1]) == (new["lr_grid"][0], new["lr_grid"][-1])
    return same_range


def run_workload(
    wid: str,
    *,
    quick: bool,
    seeds: list[int],
    methods: list[str],
    results_dir: Path,
    steps: int | None = None,
    eval_points: int | None = None,
    missing_only: bool = False,
) -> Path:
    """Run the planned runs of one workload and save (merge) its results file.

    With ``missing_only``, planned runs already saved (and still valid) are not rerun.
    """
    workload = WORKLOADS[wid]
    total = steps or workload.steps(quick)
    mode = f"T{total}" if steps else ("quick" if quick else "full")
    points = min(eval_points or (QUICK_EVAL_POINTS if quick else workload.eval_points), total)
    meta = _meta(workload, mode, total, seeds, points)
    path = results_dir / f"{wid}_{mode}.json"

    ok = meta["autolr_available"]
    wanted = [m for m in methods if ok or m not in autolr_hook.VARIANTS]
    if len(wanted) < len(methods):
        tqdm.write(f"{wid}: skipping autolr methods ({meta['autolr_error']})")
    if "pb2" in wanted:
        pb2_ok, pb2_err = pb2.availability()
        meta["pb2_available"], meta["pb2_error"] = pb2_ok, pb2_err or None
        if not pb2_ok:
            wanted.remove("pb2")
            tqdm.write(f"{wid}: skipping pb2 ({pb2_err})")
    plan = plan_runs(workload, wanted, seeds)

    kept: list[dict[str, Any]] = []
    old_wall = 0.0
    if path.exists():
        old = json.loads(path.read_text())
        if _compatible(old["meta"], meta):
            new_keys = {s.key for s in plan}
            valid = [r for r in old["runs"] if _still_valid(r, old["meta"], meta)]
            if missing_only:
                valid = [r for r in valid if not r.get("error")]  # failed runs are redone
                done = {RunSpec(r["method"], r["seed"], r["peak_lr"]).key for r in valid}
                plan = [spec for spec in plan if spec.key not in done]
                new_keys = set()
            kept = [
                r
                for r in valid
                if RunSpec(r["method"], r["seed"], r["peak_lr"]).key not in new_keys
            ]
            old_wall = old["meta"].get("wall_time_s", 0.0) if kept else 0.0
            meta["seeds"] = sorted(set(seeds) | {r["seed"] for r in kept})

    if workload.reference is not None:
        meta["reference"] = workload.reference(total)
    meta["data"] = workload.make(seeds[0]).info

    runs: list[dict[str, Any]] = []
    start = time.perf_counter()

    def save() -> None:
        meta["wall_time_s"] = old_wall + time.perf_counter() - start
        results = {"meta": meta, "runs": kept + runs}
        results["summary"] = summarize(results)
        path.write_text(json.dumps(_rounded(results), separators=(",", ":")))

    bar = tqdm(total=len(plan) * total, desc=f"{wid} {mode}", unit="step", smoothing=0.05)
    for spec in plan:
        bar.set_postfix_str(spec.key)
        variant = autolr_hook.VARIANTS.get(spec.method)
        result = run_guarded(
            bar,
            f"{wid} {spec.key}",
            {
                "method": spec.method,
                "seed": spec.seed,
                "peak_lr": spec.peak_lr,
                "diverged": False,
                "final_val": None,
                "final_test": None,
                "train_time_s": 0.0,
                "eval_time_s": 0.0,
                "val_curve": [],
                "train_curve": {"steps": [], "values": []},
                "lr_curve": {"steps": [], "values": []},
            },
            workload,
            spec,
            total,
            points,
            autolr_variant=variant,
        )
        runs.append(result)
        save()
    bar.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small budgets (smoke scale)")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma list of {list(WORKLOADS)}"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--methods", default=None, help=f"comma list of {METHODS} (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="override the budget T")
    parser.add_argument("--eval-points", type=int, default=None, help="evaluations per run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--report", type=Path, default=REPORT_PATH, help="markdown report path")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite the report")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any run failed (for CI)"
    )
    parser.add_argument(
        "--missing-only", action="store_true", help="skip planned runs already in the results"
    )
    from benchmarks import ranges  # imports this module: not at the top

    ranges.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.range_decades is not None:
        return ranges.sweep_main(parser, args, args.methods or "autolr")
    args.methods = args.methods or ",".join(METHODS)

    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad_w = sorted(set(workloads) - set(WORKLOADS))
    bad_m = sorted(set(methods) - set(METHODS))
    if bad_w or bad_m:
        parser.error(f"unknown workloads {bad_w} / methods {bad_m}")
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    torch.set_num_threads(args.threads)
    args.results.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING)
    autolr_hook.availability()  # import autolr now, and hash the sources it was imported from
    autolr_source_hash()

    failed = 0
    for wid in workloads:
        path = run_workload(
            wid,
            quick=args.quick,
            seeds=list(range(args.seeds)),
            methods=methods,
            results_dir=args.results,
            steps=args.steps,
            eval_points=args.eval_points,
            missing_only=args.missing_only,
        )
        print(f"wrote {path}")
        errors = [r for r in json.loads(path.read_text())["runs"] if r.get("error")]
        for r in errors:
            print(f"{wid} {r['method']} seed {r['seed']} failed: {r['error']}", file=sys.stderr)
        failed += len(errors)
    if not args.no_report:
        build_report(args.results, args.report)
        print(f"wrote {args.report}")
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
