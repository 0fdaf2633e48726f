"""Grid-tuned baselines (WSD, cosine) at a given budget and seeds, for paired comparisons.

Usage::

    python -m benchmarks.experiments.grid --workload W1 --steps 3000 --seeds 0,1,2,3,4 \
        --exponents -2,-1,0,1,2 --out benchmarks/experiments/results/grid_W1_3000.json

Runs ``benchmarks.methods.run_one`` for each (schedule, peak LR, seed) and stores the
final validation / test losses (and for S0 the exact expected final loss) in a
small JSON file; runs already in the file are skipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.methods import RunSpec, run_one
from benchmarks.workloads import WORKLOADS


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument(
        "--exponents", default=None, help="k of default_lr * 2**k (default: the workload's)"
    )
    p.add_argument("--schedules", default="wsd,cosine")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    w = WORKLOADS[a.workload]
    exps = [int(k) for k in a.exponents.split(",")] if a.exponents else sorted(w.grid_exponents)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out.read_text()) if out.exists() else []
    done = {(r["method"], r["peak_lr"], r["seed"]) for r in rows}
    for seed in [int(s) for s in a.seeds.split(",")]:
        for sched in a.schedules.split(","):
            for k in exps:
                lr = w.default_lr * 2.0**k
                if (sched, lr, seed) in done:
                    continue
                r = run_one(w, RunSpec(sched, seed, lr), a.steps, eval_points=1)
                rows.append(
                    {
                        "method": sched,
                        "peak_lr": lr,
                        "seed": seed,
                        "final_val": r["final_val"],
                        "final_test": r["final_test"],
                        "expected_final_loss": r.get("expected_final_loss"),
                        "train_time_s": round(r["train_time_s"], 2),
                    }
                )
                out.write_text(json.dumps(rows, indent=0))
                print(
                    a.workload,
                    sched,
                    lr,
                    seed,
                    r["final_val"],
                    round(r["train_time_s"], 1),
                    flush=True,
                )


if __name__ == "__main__":
    main()
