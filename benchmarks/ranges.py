"""Search-range sweeps: autolr with ranges of 1-4 decades around the tuned LR, and none.

Usage::

    python -m benchmarks.run --workloads W4 --range-decades 1,2,3,4,wide --seeds 5
    python -m benchmarks.ranges --workloads W4,W5 --range-decades 1,2,3,4,wide,none

A range of ``d`` decades is ``[c * 10**(-d/2), c * 10**(d/2)]``, centred in log
space on the workload's tuned LR ``c``: the peak LR of the grid run (schedule and
peak) with the lowest median final validation loss over seeds, read from the
workload's results file for the same budget (``benchmarks.run`` writes it), or
given with ``--center-lr``. ``wide`` is ``WIDE_RANGE``, the widest range a user
might give without knowing the LR; it stands in for "no range" while ``AutoLRS``
requires ``min_lr``/``max_lr``. ``none`` runs autolr without a range when the
installed ``AutoLRS`` allows it, and is recorded as unsupported otherwise.
Writes ``benchmarks/results/ranges/<workload>_<mode>.json`` (merged with the runs
already there for the same budget, centre and controller sources).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmarks import autolr_hook
from benchmarks.common import QUICK_EVAL_POINTS
from benchmarks.methods import RunSpec, run_guarded
from benchmarks.provenance import _git_commit, _rounded, autolr_source_hash
from benchmarks.report import RANGES_DIR, REPORT_PATH, RESULTS_DIR, build_report
from benchmarks.schedules import SCHEDULES
from benchmarks.workloads import WORKLOADS

WIDE_RANGE = (1e-6, 10.0)
NO_RANGE = "none"
WIDE = "wide"
DEFAULT_RANGES = ("1", "2", "3", "4", WIDE, NO_RANGE)


def range_around(center: float, decades: float) -> tuple[float, float]:
    """``(lo, hi)`` spanning ``decades`` decades, centred on ``center`` in log space.

    Args:
        center: the LR in the middle (linear scale), > 0.
        decades: width, ``log10(hi / lo)``, > 0.
    """
    if not (center > 0 and math.isfinite(center)):
        raise ValueError(f"center must be a positive finite LR, got {center}")
    if not (decades > 0 and math.isfinite(decades)):
        raise ValueError(f"decades must be positive and finite, got {decades}")
    half = 10.0 ** (decades / 2)
    return center / half, center * half


def parse_ranges(text: str) -> list[str]:
    """Comma list of range labels: decade counts (``"1"``, ``"2.5"``), ``wide``, ``none``."""
    labels = [t.strip() for t in text.split(",") if t.strip()]
    if not labels:
        raise ValueError(f"no range given in {text!r}")
    for label in labels:
        if label in (WIDE, NO_RANGE):
            continue
        try:
            value = float(label)
        except ValueError:
            raise ValueError(
                f"range must be a number of decades, {WIDE!r} or {NO_RANGE!r}, got {label!r}"
            ) from None
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"a range's decades must be positive, got {label!r}")
    return labels


def resolve_range(label: str, center: float) -> tuple[float, float] | None:
    """The ``(min_lr, max_lr)`` of a range label; ``None`` for no range."""
    if label == NO_RANGE:
        return None
    if label == WIDE:
        return WIDE_RANGE
    return range_around(center, float(label))


def range_title(label: str, bounds: tuple[float, float] | None) -> str:
    """Row label of the report for a range."""
    if label == NO_RANGE:
        return "no range given"
    lo, hi = bounds  # type: ignore[misc]
    if label == WIDE:
        return f"wide [{lo:.3g}, {hi:.3g}] (stand-in for no range)"
    unit = "decade" if float(label) == 1 else "decades"
    return f"{label} {unit} [{lo:.3g}, {hi:.3g}]"


def tuned_lr(results: dict[str, Any]) -> tuple[float, str]:
    """The grid's best peak LR in a workload results file, and which grid run it is.

    The peak LR of the (schedule, peak LR) whose median final validation loss over
    seeds is lowest; a non-finite run counts as infinitely bad.
    """
    cells: dict[tuple[str, float], list[float]] = {}
    for r in results["runs"]:
        if r["method"] in SCHEDULES and r.get("peak_lr") is not None:
            val = r.get("final_val")
            cells.setdefault((r["method"], r["peak_lr"]), []).append(
                math.inf if val is None else float(val)
            )
    if not cells:
        raise ValueError(
            f"no grid runs in the {results['meta']['workload']} results: run "
            "`python -m benchmarks.run` with the schedules first, or give --center-lr"
        )
    (method, lr), _ = min(cells.items(), key=lambda kv: statistics.median(kv[1]))
    return lr, f"{method} @ {lr:.6g}"


def no_range_supported() -> bool:
    """Whether the installed ``AutoLRS`` runs without ``min_lr``/``max_lr``."""
    from autolr import AutoLRS

    params = inspect.signature(AutoLRS).parameters
    return all(params[k].default is not inspect.Parameter.empty for k in ("min_lr", "max_lr"))


def _median_lr(lr_curve: dict[str, list[Any]]) -> float | None:
    values = [v for v in lr_curve.get("values", []) if v is not None and v > 0]
    return statistics.median(values) if values else None


def _compatible(old: dict[str, Any], new: dict[str, Any]) -> bool:
    keys = ("total_steps", "eval_points", "center_lr", "autolr_source_sha256_16")
    return all(old.get(k) == new.get(k) for k in keys)


def run_sweep(
    wid: str,
    *,
    quick: bool,
    seeds: list[int],
    ranges: list[str],
    methods: list[str],
    results_dir: Path,
    steps: int | None = None,
    eval_points: int | None = None,
    center_lr: float | None = None,
) -> Path:
    """Run every (autolr method, range, seed) of one workload; save (merge) the results.

    Args:
        wid: workload id.
        quick: the workload's quick budget instead of its full one.
        seeds: run seeds.
        ranges: range labels (see :func:`parse_ranges`).
        methods: autolr variants (``benchmarks.autolr_hook.VARIANTS``) to sweep.
        results_dir: results folder; the workload's grid results are read from it
            when ``center_lr`` is not given.
        steps: override of the budget ``T``.
        eval_points: evaluations per run (default: the workload's, 10 in quick mode).
        center_lr: the LR the ranges are centred on (default: the grid's best peak).
    """
    workload = WORKLOADS[wid]
    total = steps or workload.steps(quick)
    mode = f"T{total}" if steps else ("quick" if quick else "full")
    points = min(eval_points or (QUICK_EVAL_POINTS if quick else workload.eval_points), total)
    source = "given (--center-lr)"
    if center_lr is None:
        grid_file = results_dir / f"{wid}_{mode}.json"
        if not grid_file.is_file():
            raise FileNotFoundError(
                f"{grid_file} not found: run the grid first "
                f"(`python -m benchmarks.run --workloads {wid}`) or give --center-lr"
            )
        center_lr, best = tuned_lr(json.loads(grid_file.read_text()))
        source = f"grid's best median final val loss in {grid_file.name}: {best}"
    supported = no_range_supported()
    bounds = {label: resolve_range(label, center_lr) for label in ranges}
    meta: dict[str, Any] = {
        "workload": wid,
        "title": workload.title,
        "mode": mode,
        "total_steps": total,
        "seeds": seeds,
        "eval_points": points,
        "center_lr": center_lr,
        "center_source": source,
        "chance_loss": workload.chance_loss,
        "confirmation": workload.confirmation,
        "ranges": {label: list(b) if b else None for label, b in bounds.items()},
        "range_titles": {label: range_title(label, b) for label, b in bounds.items()},
        "unsupported": [NO_RANGE] if NO_RANGE in ranges and not supported else [],
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "git_commit": _git_commit(),
        "autolr_source_sha256_16": autolr_source_hash(),
    }
    out_dir = results_dir / RANGES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{wid}_{mode}.json"
    plan = [
        (m, label, s)
        for s in seeds
        for m in methods
        for label in ranges
        if label != NO_RANGE or supported
    ]
    kept: list[dict[str, Any]] = []
    if path.exists():
        old = json.loads(path.read_text())
        if _compatible(old["meta"], meta):
            redo = set(plan)
            kept = [r for r in old["runs"] if (r["method"], r["range"], r["seed"]) not in redo]
            meta["seeds"] = sorted(set(seeds) | {r["seed"] for r in kept})
            for key in ("ranges", "range_titles"):
                meta[key] = old["meta"].get(key, {}) | meta[key]
    runs: list[dict[str, Any]] = []
    start = time.perf_counter()

    def save() -> None:
        meta["wall_time_s"] = time.perf_counter() - start
        path.write_text(
            json.dumps(_rounded({"meta": meta, "runs": kept + runs}), separators=(",", ":"))
        )

    save()
    bar = tqdm(total=len(plan) * total, desc=f"ranges {wid} {mode}", unit="step", smoothing=0.05)
    for method, label, seed in plan:
        bar.set_postfix_str(f"{method}[{label}]#seed{seed}")
        lr_range = bounds[label] or (None, None)
        failed = {"method": method, "seed": seed, "final_val": None, "final_test": None}
        result = run_guarded(
            bar,
            f"{wid} {method} [{label}] seed {seed}",
            {**failed, "val_curve": []},
            workload,
            RunSpec(method, seed),
            total,
            points,
            autolr_variant=autolr_hook.VARIANTS[method],
            lr_range=lr_range,
        )
        result["range"] = label
        result["median_lr"] = _median_lr(result.pop("lr_curve", {}))
        result.pop("train_curve", None)  # the sweep table needs end points only
        runs.append(result)
        save()
    bar.close()
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep's own options (shared with ``benchmarks.run``)."""
    parser.add_argument(
        "--range-decades",
        default=None,
        help=f"comma list of search ranges: decades around the tuned LR, {WIDE!r} "
        f"({WIDE_RANGE[0]:g}-{WIDE_RANGE[1]:g}) or {NO_RANGE!r}, e.g. "
        f"{','.join(DEFAULT_RANGES)}",
    )
    parser.add_argument(
        "--center-lr",
        type=float,
        default=None,
        help="centre of the ranges (default: the grid's best peak LR in the results)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ranges", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small budgets (smoke scale)")
    parser.add_argument("--workloads", default="W4,W5", help=f"comma list of {list(WORKLOADS)}")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument(
        "--methods", default="autolr", help=f"comma list of {list(autolr_hook.VARIANTS)}"
    )
    parser.add_argument("--steps", type=int, default=None, help="override the budget T")
    parser.add_argument("--eval-points", type=int, default=None, help="evaluations per run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--report", type=Path, default=REPORT_PATH, help="markdown report path")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite the report")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return sweep_main(parser, args, args.methods)


def sweep_main(parser: argparse.ArgumentParser, args: argparse.Namespace, methods: str) -> int:
    """Validate the sweep's arguments, run it on each workload, rebuild the report."""
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    bad_w = sorted(set(workloads) - set(WORKLOADS))
    bad_m = sorted(set(chosen) - set(autolr_hook.VARIANTS))
    if bad_w or bad_m:
        parser.error(
            f"unknown workloads {bad_w} / methods {bad_m} (a range sweep runs "
            f"{list(autolr_hook.VARIANTS)})"
        )
    try:
        ranges = parse_ranges(args.range_decades or ",".join(DEFAULT_RANGES))
    except ValueError as exc:
        parser.error(str(exc))
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    ok, err = autolr_hook.availability()
    if not ok:
        print(f"autolr is not importable: {err}", file=sys.stderr)
        return 1
    autolr_source_hash()  # of the sources just imported, before they can change
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    args.results.mkdir(parents=True, exist_ok=True)
    if NO_RANGE in ranges and not no_range_supported():
        print(
            f"range {NO_RANGE!r} skipped: the installed AutoLRS requires min_lr/max_lr "
            f"(use {WIDE!r} as a stand-in)",
            file=sys.stderr,
        )
    for wid in workloads:
        path = run_sweep(
            wid,
            quick=args.quick,
            seeds=list(range(args.seeds)),
            ranges=ranges,
            methods=chosen,
            results_dir=args.results,
            steps=args.steps,
            eval_points=args.eval_points,
            center_lr=args.center_lr,
        )
        print(f"wrote {path}")
    if not args.no_report:
        build_report(args.results, args.report)
        print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
