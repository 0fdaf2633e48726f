"""What each decay length really gives: one hold, decays branched from it, every final loss.

For a workload and seed, at one hold LR (the grid's tuned peak LR, times ``--mult``):

- four race-like branches from the start (``lr / 2**j``: 2% of T at the LR, then 2% of
  T linear to 0), each restored after: what a race shows a law;
- the constant hold at the LR to T, and from it, at 20/35/50/65/80% of T, a 1-sqrt
  decay to 0 over the rest of the run (restored after each): the final validation
  and training loss of a decay of 80/65/50/35/20% of T from the same hold.

Every step's training loss and LR is written (``--out``, one JSON file a run), so
:mod:`benchmarks.experiments.law_fits` can fit loss laws on what a run would have
seen by a time and check their forecasts against what each decay gave.

Usage::

    python -m benchmarks.experiments.decay_truth --workloads S0,W1,W2 --seeds 0,1,2,3,4
    python -m benchmarks.experiments.decay_truth --summary   # the final losses, a table
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.optimizers import _base_optimizer
from benchmarks.ranges import tuned_lr
from benchmarks.report import RESULTS_DIR
from benchmarks.workloads import WORKLOADS

OUT = Path(__file__).resolve().parent / "results" / "decay_truth"
DECAY_FRACTIONS = (0.8, 0.65, 0.5, 0.35, 0.2)
RACE_FRACTION = 0.02


def one_minus_sqrt(n: int) -> list[float]:
    """The factors of a 1-sqrt decay of ``n`` steps (neither end exactly 1 or 0)."""
    return [1.0 - ((i + 1) / (n + 1)) ** 0.5 for i in range(n)]


def linear(n: int) -> list[float]:
    """The factors of a linear decay of ``n`` steps to 0."""
    return [1.0 - (i + 1) / (n + 1) for i in range(n)]


class Branching:
    """A workload instance and its optimizer at the tuned LR times ``mult``: train at
    given LRs, snapshot the state, put it back (the batch stream runs on)."""

    def __init__(self, name: str, seed: int, mult: float = 1.0) -> None:
        torch.set_num_threads(1)
        self.workload = WORKLOADS[name]
        grid = json.loads((RESULTS_DIR / f"{name}_full.json").read_text())
        self.lr = tuned_lr(grid)[0] * mult
        self.inst = self.workload.make(seed)
        self.model = self.inst.model
        self.opt = _base_optimizer(self.workload, self.model.parameters(), self.lr)

    def snap(self) -> tuple[Any, ...]:
        return copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.opt.state_dict())

    def restore(self, state: tuple[Any, ...]) -> None:
        self.model.load_state_dict(state[0])
        self.opt.load_state_dict(state[1])

    def train(self, lrs: list[float], after_step: Any = None) -> list[float]:
        """One training step at each LR; their losses. ``after_step(i)`` after step ``i``."""
        losses = []
        for i, lr in enumerate(lrs):
            for g in self.opt.param_groups:
                g["lr"] = lr
            step = self.inst.train_step(self.model, self.opt, next(self.inst.train_batches))
            losses.append(float(step))
            if after_step is not None:
                after_step(i)
        return losses


def run(name: str, seed: int, mult: float, out: Path) -> dict[str, Any]:
    b = Branching(name, seed, mult)
    total, eta, inst = b.workload.full_steps, b.lr, b.inst
    snap, restore, train = b.snap, b.restore, b.train

    res: dict[str, Any] = {"workload": name, "seed": seed, "eta": eta, "T": total}
    start = time.time()
    s0 = snap()
    p = max(5, round(RACE_FRACTION * total))
    res["branches"] = []
    for j in range(4):
        lr = eta / 2**j
        lrs = [lr] * p + [lr * f for f in linear(p)]
        restore(s0)
        res["branches"].append({"lrs": lrs, "losses": train(lrs), "val": inst.eval_val()})
    restore(s0)
    starts = sorted(round((1 - f) * total) for f in DECAY_FRACTIONS)
    hold: list[float] = []
    res["decays"] = []
    for s in starts:
        hold += train([eta] * (s - len(hold)))
        here = snap()
        lrs = [eta * f for f in one_minus_sqrt(total - s)]
        losses = train(lrs)
        res["decays"].append({"start": s, "lrs": lrs, "losses": losses, "val": inst.eval_val()})
        restore(here)
    hold += train([eta] * (total - len(hold)))
    res["hold"] = {"lrs": [eta] * total, "losses": hold, "val": inst.eval_val()}
    res["wall_s"] = time.time() - start
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if mult == 1.0 else f"_x{mult:g}"
    (out / f"{name}_{seed}{suffix}.json").write_text(json.dumps(res))
    return res


def summary(out: Path) -> None:
    """Median (worst) final validation loss of each decay length, per workload."""
    by: dict[str, dict[float, list[float]]] = {}
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text())
        key = f"{r['workload']} at {r['eta']:.4g}"
        for d in r["decays"]:
            frac = round(1 - d["start"] / r["T"], 2)
            by.setdefault(key, {}).setdefault(frac, []).append(d["val"])
    fracs = sorted({f for v in by.values() for f in v}, reverse=True)
    print("| workload, hold LR | seeds | " + " | ".join(f"decay {f:.0%}" for f in fracs) + " |")
    print("|---|---|" + "---|" * len(fracs))
    for key, cells in by.items():
        n = max(len(v) for v in cells.values())
        row = [f"{statistics.median(cells[f]):.4g} ({max(cells[f]):.4g})" for f in fracs]
        print(f"| {key} | {n} | " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="S0,W1,W2")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--mult", type=float, default=1.0, help="hold LR / tuned peak LR")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summary", action="store_true", help="print the table and stop")
    args = parser.parse_args(argv)
    if args.summary:
        summary(args.out)
        return
    for name in args.workloads.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            r = run(name, seed, args.mult, args.out)
            vals = [round(d["val"], 4) for d in r["decays"]]
            print(f"{name} seed {seed} at {r['eta']:.4g}: {vals} ({r['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
