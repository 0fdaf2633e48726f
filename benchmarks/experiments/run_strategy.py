"""Run strategy variants on a workload (paired seeds) and compare with the grid.

Usage::

    python -m benchmarks.experiments.run_strategy --workload W1 --steps 3000 \
        --variants law,fixed --seeds 0,1,2,3,4
    python -m benchmarks.experiments.run_strategy --summary

Results go to ``benchmarks/experiments/results/strategy_<workload>_<steps>.json``
(runs already there are skipped; ``--part b`` writes ``..._b.json`` so that two
processes can share a workload); ``--summary`` prints, per workload and variant,
the median and worst seed of final validation loss against the grid-tuned best
schedule (``grid_<workload>_<steps>.json``, see :mod:`benchmarks.experiments.grid`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.experiments.strategy import Config, Driver
from benchmarks.workloads import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"

VARIANTS: dict[str, Config] = {
    # range test, annealed race with halving (finalists within 10%: their geometric
    # mean), then a fixed decay: 1-sqrt over the last 40% / 60% / 80%
    "fixed40": Config(decay="fixed:1-sqrt:0.4", tie=0.1),
    "fixed60": Config(decay="fixed:1-sqrt:0.6", tie=0.1),
    "fixed80": Config(decay="fixed:1-sqrt:0.8", tie=0.1),
    # the same with the tuned WSD baseline's decay (linear, last 20%)
    "wsd20": Config(decay="fixed:linear:0.2", tie=0.1),
    # decay decided by the LR-annealing law (trusted when its error on a cooldown
    # branch it was not fit on is <= 5%, else 1-sqrt over the last 60%)
    "law": Config(decay="law", tie=0.1, fallback="fixed:1-sqrt:0.6"),
    # fixed60, race scored by each probe's last val loss, no cooldown (short-horizon score)
    "noanneal60": Config(decay="fixed:1-sqrt:0.6", tie=0.1, annealed=False),
    # fixed60 without the geometric-mean tie rule
    "notie60": Config(decay="fixed:1-sqrt:0.6"),
    # fixed60 plus a mid-run move of the hold LR (x1/2, x1, x2 branches) at 30%
    "move60": Config(decay="fixed:1-sqrt:0.6", tie=0.1, move_at=(0.3,)),
}


def _load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.exists() else []


def run(workload: str, steps: int, variants: list[str], seeds: list[int], part: str = "") -> None:
    w = WORKLOADS[workload]
    out = RESULTS / f"strategy_{workload}_{steps}{'_' + part if part else ''}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = _load(out)
    done = {(r["variant"], r["seed"]) for r in rows}
    for seed in seeds:
        for v in variants:
            if (v, seed) in done:
                continue
            t0 = time.perf_counter()
            r = Driver(w, seed, steps, VARIANTS[v]).run()
            r |= {"variant": v, "seed": seed, "config": dataclasses.asdict(VARIANTS[v])}
            r["wall_s"] = round(time.perf_counter() - t0, 1)
            rows.append(r)
            out.write_text(json.dumps(rows))
            print(
                workload,
                v,
                seed,
                r["final_val"],
                f"search {r['search_share']:.3f}",
                r["wall_s"],
                flush=True,
            )


def summary() -> None:
    """Print the comparison; write ``summary.json`` (one small row per run) next to the results."""
    compact: list[dict[str, Any]] = []
    groups: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(RESULTS.glob("strategy_*.json")):
        _, wid, steps = path.stem.split("_")[:3]
        groups.setdefault((wid, steps), []).append(path)
    for (wid, steps), paths in groups.items():
        grid = _load(RESULTS / f"grid_{wid}_{steps}.json")
        key = "expected_final_loss" if wid == "S0" else "final_val"
        seeds = sorted({g["seed"] for g in grid})
        by: dict[tuple[str, float], dict[int, float]] = {}
        for g in grid:
            val = g[key] if g[key] is not None else float("inf")
            by.setdefault((g["method"], g["peak_lr"]), {})[g["seed"]] = val
        full = {k: v for k, v in by.items() if len(v) == len(seeds)}
        tuned_key = min(full, key=lambda k: statistics.median(full[k].values()))
        tuned = full[tuned_key]
        tmed = statistics.median(tuned.values())
        ref = ""
        if wid == "S0":
            from benchmarks.workloads.nqm import reference

            opt = reference(int(steps))["optimal_expected_loss"]
            ref = f" optimum {opt:.5f} (tuned/opt {tmed / opt:.2f}x)"
        print(
            f"\n{wid} T={steps}: tuned {tuned_key[0]}@{tuned_key[1]:.4g} median {tmed:.4f} "
            f"worst {max(tuned.values()):.4f}{ref}"
        )
        rows = [r for path in paths for r in _load(path)]
        for r in rows:
            ev = {e["event"]: e for e in r["events"]}
            compact.append(
                {
                    "workload": wid,
                    "steps": int(steps),
                    "variant": r["variant"],
                    "seed": r["seed"],
                    "final": r.get(key),
                    "final_test": r.get("final_test"),
                    "search_share": round(r["search_share"], 4),
                    "lr_star": ev.get("range", {}).get("lr_star"),
                    "hold_lr": ev.get("hold", {}).get("lr"),
                    "rollbacks": sum(e["event"] == "rollback" for e in r["events"]),
                    "law_errors": [
                        e.get("err") for e in r["events"] if e["event"] in ("law", "law_untrusted")
                    ],
                }
            )
        for v in dict.fromkeys(r["variant"] for r in rows):
            rs = {r["seed"]: r for r in rows if r["variant"] == v}
            vals = {
                s: (r.get(key) if r.get(key) is not None else float("inf")) for s, r in rs.items()
            }
            med = statistics.median(vals.values())
            ratios = [vals[s] / tuned[s] for s in vals if s in tuned]
            share = max(r["search_share"] for r in rs.values())
            extra = f" /opt {med / opt:.2f}x" if wid == "S0" else ""
            print(
                f"  {v:10s} n={len(vals)} median {med:.4f} ({med / tmed:.3f}x tuned){extra} "
                f"worst {max(vals.values()):.4f} paired ratio med {statistics.median(ratios):.3f} "
                f"max {max(ratios):.3f}  wins {sum(x < 1 for x in ratios)}/{len(ratios)} "
                f"search<= {share:.3f}"
            )
    _write_compact(compact)


def _write_compact(compact: list[dict[str, Any]]) -> None:
    (RESULTS / "summary.json").write_text(json.dumps(compact, indent=0))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workload")
    p.add_argument("--steps", type=int)
    p.add_argument("--variants", default="law")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--part", default="", help="suffix of the results file (parallel runs)")
    p.add_argument("--summary", action="store_true")
    a = p.parse_args()
    if a.summary:
        summary()
        return
    run(a.workload, a.steps, a.variants.split(","), [int(s) for s in a.seeds.split(",")], a.part)


if __name__ == "__main__":
    main()
