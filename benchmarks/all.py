"""Regenerate every benchmark result and ``BENCHMARKS.md`` with one command.

Usage::

    python -m benchmarks.all            # full budgets (hours on 2 CPU cores, see BENCHMARKS.md)
    python -m benchmarks.all --quick    # small budgets, one seed: about 13 min on 2 cores
    python -m benchmarks.all --skip micro,ablate --workloads W1,S0

Runs, in order: the micro-benchmarks (``benchmarks.micro``), the comparison
(``benchmarks.run``) on the chosen workloads with ``SEEDS`` seeds, the ablations
(``benchmarks.ablate``) on ``ABLATION_WORKLOADS``, the confirmation workloads
(``CONFIRMATION_WORKLOADS``: the grid of ``CONFIRMATION_METHODS`` and the
search-range sweep of ``benchmarks.ranges``, ``CONFIRMATION_SEEDS`` seeds), then
writes the report once.
Quick mode runs one seed (``QUICK_SEEDS``) and ablates W1 only
(``QUICK_ABLATION_WORKLOADS``) unless ``--ablation-workloads`` says otherwise.
Each step merges into the files already in ``benchmarks/results/``: seeds
already saved there are kept.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import ablate, micro, run
from benchmarks.report import REPORT_PATH, RESULTS_DIR, build_report

WORKLOADS = "W1,S0,W2,W3"
ABLATION_WORKLOADS = "W1,S0,W2"
SEEDS = 3
QUICK_SEEDS = 1
QUICK_ABLATION_WORKLOADS = "W1"
CONFIRMATION_WORKLOADS = "W4,W5,W6,S1"
CONFIRMATION_METHODS = "cosine,wsd,autolr,autolr-forecast,autolr-paper"
CONFIRMATION_SEEDS = 5
CONFIRMATION_RANGES = "1,2,3,4,wide,none"
STEPS = ("micro", "run", "ablate", "confirm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.all", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small budgets (smoke scale)")
    parser.add_argument("--workloads", default=WORKLOADS, help=f"comparison ({WORKLOADS})")
    parser.add_argument(
        "--ablation-workloads",
        default=None,
        help=f"({ABLATION_WORKLOADS}; quick: {QUICK_ABLATION_WORKLOADS})",
    )
    parser.add_argument("--skip", default="", help=f"comma list of steps to skip: {STEPS}")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(STEPS):
        parser.error(f"unknown steps {sorted(skip - set(STEPS))}; choose from {STEPS}")
    quick = ["--quick"] if args.quick else []
    common = [*quick, "--no-report"]
    seeds = str(QUICK_SEEDS if args.quick else SEEDS)
    ablation_workloads = args.ablation_workloads or (
        QUICK_ABLATION_WORKLOADS if args.quick else ABLATION_WORKLOADS
    )
    status = 0
    if "micro" not in skip:
        status |= micro.main(common)
    if "run" not in skip:
        status |= run.main(["--workloads", args.workloads, "--seeds", seeds, *common])
    if "ablate" not in skip:
        status |= ablate.main(["--workloads", ablation_workloads, "--seeds", seeds, *common])
    if "confirm" not in skip:
        confirm = ["--workloads", CONFIRMATION_WORKLOADS, *common]
        confirm += ["--seeds", str(QUICK_SEEDS if args.quick else CONFIRMATION_SEEDS)]
        status |= run.main([*confirm, "--methods", CONFIRMATION_METHODS])
        status |= run.main([*confirm, "--range-decades", CONFIRMATION_RANGES])
    build_report(RESULTS_DIR, REPORT_PATH)
    print(f"wrote {REPORT_PATH}")
    return status


if __name__ == "__main__":
    sys.exit(main())
