"""The ``autolr`` command line.

Each command lives in a module with ``add_parser(subparsers)``; the parser's
``func`` default runs it and returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

# Modules that add commands; optional ones are skipped when their module is absent.
COMMAND_MODULES = ["autolr.cli", "autolr.offline_cli"]


def _fmt(value: Any, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from autolr.demo import run_demo

    with tqdm(total=2 * args.steps, desc="autolr run + default run", unit="step") as bar:
        res = run_demo(
            steps=args.steps,
            seed=args.seed,
            out_dir=args.out,
            plot=not args.no_plot,
            progress=bar.update,
        )
    tuner = res.tuner
    records = tuner.log.records
    stages = {r["stage"]: r for r in records if r["type"] == "stage_start"}
    rollbacks: dict[int, int] = {}
    for r in records:
        if r["type"] == "rollback":
            rollbacks[r["stage"]] = rollbacks.get(r["stage"], 0) + 1
    rows = []
    for r in records:
        if r["type"] != "exploit_end":
            continue
        st = stages.get(r["stage"], {})
        probes = [p for p in records if p["type"] == "probe" and p["stage"] == r["stage"]]
        diverged = sum(1 for p in probes if p["diverged"])
        rows.append(
            [
                str(r["stage"]),
                str(st.get("tau", "-")),
                f"{len(probes)} ({diverged} div.)",
                _fmt(r["lr"]),
                _fmt(r["forecast"]),
                _fmt(r["actual"]),
                str(rollbacks.get(r["stage"], 0)),
            ]
        )
    print("\nStages (forecast: loss predicted at t=tau from the probes; actual: loss reached)")
    print_table(["stage", "tau", "probes", "LR chosen", "forecast", "actual", "rollbacks"], rows)
    total = tuner.global_step
    print(
        f"\nsteps: {total} in all, {tuner.search_steps} on probes "
        f"({100 * tuner.search_steps / max(total, 1):.0f}%), the rest exploit and anneal"
    )
    print("\nFinal results (same model, same budget, same data order)")
    print_table(
        ["run", "val loss", "val acc", "test loss", "test acc"],
        [
            [
                "autolr",
                _fmt(res.autolr_val[0]),
                _fmt(res.autolr_val[1], ".3f"),
                _fmt(res.autolr_test[0]),
                _fmt(res.autolr_test[1], ".3f"),
            ],
            [
                "SGD cosine from lr=0.1",
                _fmt(res.baseline_val[0]),
                _fmt(res.baseline_val[1], ".3f"),
                _fmt(res.baseline_test[0]),
                _fmt(res.baseline_test[1], ".3f"),
            ],
        ],
    )
    print(f"\nrun log: {res.log_path}")
    if res.plot_path is not None:
        print(f"plot:    {res.plot_path}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="train an MLP on scikit-learn's digits with autolr")
    p.add_argument("--steps", type=int, default=3000, help="training steps per run (3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="autolr_runs/demo", help="output folder")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autolr", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log autolr's decisions")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = sys.modules[__name__] if name == __name__ else importlib.import_module(name)
        except ImportError:
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
