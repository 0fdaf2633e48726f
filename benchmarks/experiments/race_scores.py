"""Which race score picks the LR that ends best: a cooldown branch, or the averaged iterate?

For a workload and seed, from the start, each LR of a ladder ``top / 2**j`` (``top``
twice the grid's tuned peak LR, or ``--top`` times it; four rungs) is probed for 2%
of T; then it is scored three ways, every extra step a training step of the run's
own kind:

- ``cool``: the race's score today: a linear cooldown to 0 over another 2% of T,
  the median of its last third's training losses;
- ``avg``: the average of the probe's iterates over its second half (tail averaging,
  which anneals without a branch), scored by the median training loss of ``n = 0.5%``
  of T steps taken at LR 0 from it (the run's own step, no update);
- ``raw``: the median training loss of the probe's last third, at its LR.

Then each rung is held to T with a 1-sqrt decay over the last half (the default's
plan), from its probe's end: the final validation loss is the truth the scores are
judged by. Writes one JSON file a run (``--out``); ``--summary`` prints, per
workload and score, the median and worst ratio of the picked rung's final loss to
the best rung's, and each score's cost in steps.

Usage::

    python -m benchmarks.experiments.race_scores --workloads S0,W1,W2 --seeds 0,1,2,3,4
    python -m benchmarks.experiments.race_scores --summary
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks.experiments.decay_truth import Branching, linear, one_minus_sqrt

OUT = Path(__file__).resolve().parent / "results" / "race_scores"
PROBE = 0.02
EVAL = 0.005
RUNGS = 4


def run(name: str, seed: int, out: Path, top_mult: float = 2.0) -> dict[str, Any]:
    b = Branching(name, seed, mult=top_mult)
    total, top, inst = b.workload.full_steps, b.lr, b.inst
    snap, restore = b.snap, b.restore
    params = list(b.model.parameters())

    def train(lr: float, n: int, average_from: int | None = None) -> tuple[list[float], Any]:
        """``n`` steps at ``lr``; the mean of the iterates from step ``average_from`` on."""
        avg: list[torch.Tensor] = []

        def accumulate(i: int) -> None:
            if average_from is None or i < average_from:
                return
            with torch.no_grad():
                if not avg:
                    avg.extend(q.detach().clone() for q in params)
                for a, q in zip(avg, params):
                    a.add_(q.detach() - a, alpha=1.0 / (i - average_from + 1))

        return b.train([lr] * n, accumulate), avg

    p = max(5, round(PROBE * total))
    n_eval = max(3, round(EVAL * total))
    d = total // 2
    start = snap()
    rungs = []
    for j in range(RUNGS):
        lr = top / 2**j
        restore(start)
        losses, avg = train(lr, p, average_from=p // 2)
        raw = statistics.median(losses[-max(3, p // 3) :])
        end = snap()
        cool = b.train([lr * f for f in linear(p)])
        restore(end)
        with torch.no_grad():
            for a, q in zip(avg, params):
                q.copy_(a)
        ev, _ = train(0.0, n_eval)
        restore(end)
        # The truth: hold from the probe's end, then 1-sqrt over the last half.
        b.train([lr] * (total - d - p) + [lr * f for f in one_minus_sqrt(d)])
        row = {
            "lr": lr,
            "raw": raw,
            "cool": statistics.median(cool[-max(3, p // 3) :]),
            "avg": statistics.median(ev),
            "final_val": inst.eval_val(),
        }
        # A blown-up rung scores and ends infinitely bad (JSON writes Infinity).
        rungs.append({k: v if math.isfinite(v) else math.inf for k, v in row.items()})
    res = {"workload": name, "seed": seed, "T": total, "probe": p, "eval": n_eval, "rungs": rungs}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}_{seed}.json").write_text(json.dumps(res))
    return res


def summary(out: Path) -> None:
    by: dict[str, dict[str, list[float]]] = {}
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text())
        best = min(x["final_val"] for x in r["rungs"])
        for score in ("cool", "avg", "raw"):
            pick = min(r["rungs"], key=lambda x, s=score: x[s])
            by.setdefault(r["workload"], {}).setdefault(score, []).append(pick["final_val"] / best)
    print("| workload | score | picked rung's final val / best rung's: median (worst) | seeds |")
    print("|---|---|---|---|")
    for w, scores in by.items():
        for score, ratios in scores.items():
            print(
                f"| {w} | {score} | {statistics.median(ratios):.3f} ({max(ratios):.3f}) | "
                f"{len(ratios)} |"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="S0,W1,W2")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--top", type=float, default=2.0, help="top rung / tuned peak LR")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args(argv)
    if args.summary:
        summary(args.out)
        return
    for name in args.workloads.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            r = run(name, seed, args.out, args.top)
            cells = [
                f"{x['lr']:.3g}: cool {x['cool']:.4g} avg {x['avg']:.4g} raw {x['raw']:.4g} "
                f"-> {x['final_val']:.4g}"
                for x in r["rungs"]
            ]
            print(f"{name} seed {seed}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
