"""Ablations of the forecast strategy's options: one setting changed at a time.

Usage::

    python -m benchmarks.ablate --workloads W1,S0 --seeds 3     # full budgets
    python -m benchmarks.ablate --quick --workloads W1 --seeds 1 --only probes
    python -m benchmarks.ablate --logs /tmp/ablation_logs        # keep every run log

Each variant is an ``autolr`` run with ``strategy="forecast"`` (the default before
``anneal``; its ablations are the ones measured) and one option changed (the
``CHANGES`` table); every variant runs on the same seeds, budget and LR range as
the main comparison. Writes ``benchmarks/results/ablations/<workload>_<mode>.json``
(merged with the runs already there when the budget and the controller's
sources are the same) and regenerates ``BENCHMARKS.md``. Options the installed
``AutoLRS`` does not accept are skipped and listed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmarks import autolr_hook
from benchmarks.autolr_hook import AutoLRVariant
from benchmarks.methods import RunSpec, run_guarded
from benchmarks.provenance import _git_commit, _rounded, autolr_source_hash
from benchmarks.report import ABLATION_DIR, REPORT_PATH, RESULTS_DIR, build_report
from benchmarks.workloads import WORKLOADS

DEFAULT = "default"
BASE = {"strategy": "forecast"}  # every variant: the forecast strategy, whose options these are

# (option, value, AutoLRS keyword arguments, AutoLRVariant flags). Options that
# ablated to nothing and were removed (acquisition, decide_by, prefer_larger, the
# power-law forecaster, cap_after_rollback) keep their rows in the findings.
CHANGES: list[tuple[str, Any, dict[str, Any], dict[str, Any]]] = [
    ("probes", 5, {"probes": 5}, {}),
    ("probes", 10, {"probes": 10}, {}),
    ("probe_fraction", 0.2, {"probe_fraction": 0.2}, {}),
    ("keep_winner", False, {"keep_winner": False}, {}),
    ("early_abort", False, {"early_abort": False}, {}),
    ("warm_start", True, {"warm_start": True}, {}),
    ("anneal_fraction", 0.0, {"anneal_fraction": 0.0}, {}),
    ("anneal_fraction", 0.2, {"anneal_fraction": 0.2}, {}),
    ("objective", "val_loss", {}, {"val_objective": True}),
    ("common_batches", True, {}, {"common_batches": True}),
    ("forecast_pessimism", 1.0, {"forecast_pessimism": 1.0}, {}),
    ("forecast_pessimism", 2.0, {"forecast_pessimism": 2.0}, {}),
    ("lr_trust", None, {"lr_trust": None}, {}),
    ("lr_trust", 4.0, {"lr_trust": 4.0}, {}),
    ("lr_trust+probes", "None, 5", {"lr_trust": None, "probes": 5}, {}),
]


def variant_name(option: str, value: Any) -> str:
    return f"{option}={value}"


def variants() -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The variants the installed ``AutoLRS`` accepts, and the names it does not.

    Returns:
        ``name -> {"option", "value", "variant": AutoLRVariant}`` (the default
        first), and the skipped variant names.
    """
    from autolr.config import option_names

    params = option_names()
    out: dict[str, dict[str, Any]] = {
        DEFAULT: {
            "option": DEFAULT,
            "value": None,
            "variant": AutoLRVariant(
                DEFAULT, "autolr (strategy='forecast', its defaults)", settings=dict(BASE)
            ),
        }
    }
    skipped = []
    for option, value, settings, flags in CHANGES:
        name = variant_name(option, value)
        if any(k not in params for k in settings):
            skipped.append(name)
            continue
        out[name] = {
            "option": option,
            "value": value,
            "variant": AutoLRVariant(
                name, f"autolr, {name}", settings={**BASE, **settings}, **flags
            ),
        }
    return out, skipped


def _compatible(old: dict[str, Any], new: dict[str, Any]) -> bool:
    keys = ("total_steps", "lr_range", "eval_points", "autolr_source_sha256_16")
    return all(old.get(k) == new.get(k) for k in keys)


def run_ablation(
    wid: str,
    *,
    quick: bool,
    seeds: list[int],
    only: list[str] | None,
    results_dir: Path,
    logs_dir: Path,
    steps: int | None = None,
) -> Path:
    """Run every selected variant on every seed of one workload; save (merge) the results."""
    workload = WORKLOADS[wid]
    total = steps or workload.steps(quick)
    mode = f"T{total}" if steps else ("quick" if quick else "full")
    points = min(10 if quick else workload.eval_points, total)
    table, skipped = variants()
    chosen = {
        name: v
        for name, v in table.items()
        if only is None or name == DEFAULT or v["option"] in only
    }
    meta: dict[str, Any] = {
        "workload": wid,
        "title": workload.title,
        "mode": mode,
        "total_steps": total,
        "seeds": seeds,
        "lr_range": list(workload.lr_range()),
        "eval_points": points,
        "variants": {
            name: {
                "option": v["option"],
                "value": v["value"],
                "settings": v["variant"].settings,
                "val_objective": v["variant"].val_objective,
                "common_batches": v["variant"].common_batches,
            }
            for name, v in table.items()
        },
        "skipped": skipped,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "git_commit": _git_commit(),
        "autolr_source_sha256_16": autolr_source_hash(),
        "logs_dir": str(logs_dir),
    }
    out_dir = results_dir / ABLATION_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{wid}_{mode}.json"
    kept: list[dict[str, Any]] = []
    if path.exists():
        old = json.loads(path.read_text())
        if _compatible(old["meta"], meta):
            redo = {(name, s) for name in chosen for s in seeds}
            kept = [r for r in old["runs"] if (r["method"], r["seed"]) not in redo]
            meta["seeds"] = sorted(set(seeds) | {r["seed"] for r in kept})
    runs: list[dict[str, Any]] = []
    start = time.perf_counter()

    def save() -> None:
        meta["wall_time_s"] = time.perf_counter() - start
        path.write_text(
            json.dumps(_rounded({"meta": meta, "runs": kept + runs}), separators=(",", ":"))
        )

    plan = [(name, s) for s in seeds for name in chosen]
    bar = tqdm(total=len(plan) * total, desc=f"ablate {wid} {mode}", unit="step", smoothing=0.05)
    for name, seed in plan:
        bar.set_postfix_str(f"{name}#seed{seed}")
        variant = chosen[name]["variant"]
        log_path = logs_dir / f"{wid}_{mode}_{name}_seed{seed}.jsonl"
        log_path.unlink(missing_ok=True)
        result = run_guarded(
            bar,
            f"{wid} {name} seed {seed}",
            {"method": name, "seed": seed, "final_val": None, "final_test": None},
            workload,
            RunSpec(name, seed),
            total,
            points,
            autolr_variant=variant,
            log_path=log_path,
        )
        result.pop("train_curve", None)  # the ablation tables need the end points only
        result.pop("lr_curve", None)
        runs.append(result)
        save()
    bar.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ablate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small budgets (smoke scale)")
    parser.add_argument("--workloads", default="W1,S0", help=f"comma list of {list(WORKLOADS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument(
        "--only",
        default=None,
        help="comma list of options to vary (default: all): "
        + ", ".join(sorted({c[0] for c in CHANGES})),
    )
    parser.add_argument("--steps", type=int, default=None, help="override the budget T")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--report", type=Path, default=REPORT_PATH, help="markdown report path")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite the report")
    parser.add_argument(
        "--logs", type=Path, default=None, help="folder for the run logs (default: a temp folder)"
    )
    args = parser.parse_args(argv)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    bad = sorted(set(workloads) - set(WORKLOADS))
    if bad:
        parser.error(f"unknown workloads {bad}")
    only = None
    if args.only:
        only = [o.strip() for o in args.only.split(",") if o.strip()]
        unknown = sorted(set(only) - {c[0] for c in CHANGES})
        if unknown:
            parser.error(f"unknown options {unknown}")
    ok, err = autolr_hook.availability()
    if not ok:
        print(f"autolr is not importable: {err}", file=sys.stderr)
        return 1
    autolr_source_hash()  # of the sources just imported, before they can change
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="autolr_ablation_logs_"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"run logs in {logs}")
    for wid in workloads:
        path = run_ablation(
            wid,
            quick=args.quick,
            seeds=list(range(args.seeds)),
            only=only,
            results_dir=args.results,
            logs_dir=logs,
            steps=args.steps,
        )
        print(f"wrote {path}")
    if not args.no_report:
        build_report(args.results, args.report)
        print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
