"""Regenerate every benchmark result and ``BENCHMARKS.md`` with one command.

Usage::

    python -m benchmarks.all            # full budgets (hours on 2 CPU cores, see BENCHMARKS.md)
    python -m benchmarks.all --quick    # small budgets, a few minutes
    python -m benchmarks.all --skip micro,ablate --workloads W1,S0

Runs, in order: the micro-benchmarks (``benchmarks.micro``), the comparison
(``benchmarks.run``) on the chosen workloads with 3 seeds (W3: the seeds of
``W3_SEEDS``), the ablations (``benchmarks.ablate``) on ``ABLATION_WORKLOADS``,
then writes the report once. Each step merges into the files already in
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import ablate, micro, run
from benchmarks.report import REPORT_PATH, RESULTS_DIR, build_report

WORKLOADS = "W1,S0,W2,W3"
ABLATION_WORKLOADS = "W1,S0,W2"
SEEDS = 3
W3_SEEDS = 1
STEPS = ("micro", "run", "ablate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.all", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small budgets (smoke scale)")
    parser.add_argument("--workloads", default=WORKLOADS, help=f"comparison ({WORKLOADS})")
    parser.add_argument(
        "--ablation-workloads", default=ABLATION_WORKLOADS, help=f"({ABLATION_WORKLOADS})"
    )
    parser.add_argument("--skip", default="", help=f"comma list of steps to skip: {STEPS}")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(STEPS):
        parser.error(f"unknown steps {sorted(skip - set(STEPS))}; choose from {STEPS}")
    quick = ["--quick"] if args.quick else []
    common = [*quick, "--no-report"]
    status = 0
    if "micro" not in skip:
        status |= micro.main(common)
    if "run" not in skip:
        wanted = [w for w in args.workloads.split(",") if w.strip()]
        many = [w for w in wanted if w != "W3"]
        if many:
            status |= run.main(["--workloads", ",".join(many), "--seeds", str(SEEDS), *common])
        if "W3" in wanted:
            status |= run.main(["--workloads", "W3", "--seeds", str(W3_SEEDS), *common])
    if "ablate" not in skip:
        status |= ablate.main(
            ["--workloads", args.ablation_workloads, "--seeds", str(SEEDS), *common]
        )
    build_report(RESULTS_DIR, REPORT_PATH)
    print(f"wrote {REPORT_PATH}")
    return status


if __name__ == "__main__":
    sys.exit(main())
