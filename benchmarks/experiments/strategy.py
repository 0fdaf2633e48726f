"""A standalone driver of the "decide on the loss after the anneal" strategy.

Not the controller: a plain loop over a benchmark workload that owns the LR, with
every range-test, probe and branch step counted in the budget ``T``. Phases:

1. **Range test** from a snapshot: the LR ramps geometrically from ``RANGE_LO`` to
   ``RANGE_HI`` over at most ``range_frac * T`` steps, stopped at a non-finite loss,
   at a blow-up (smoothed loss above 1.5x the start) and at "no progress" (the
   smoothed loss has given back ``range_giveback`` of its gain). ``lr_star`` is the
   ramp LR at the minimum of the centred moving average; restored after.
2. **Race** of ``k`` candidates ``lr_star * 2**-j`` (``j = j0 .. j0+k-1``): each
   trains ``p`` steps from the snapshot, then a linear cooldown of ``c`` steps to 0
   (a branch, restored), scored by the validation loss after it. Candidates whose
   score is not below the start level are out. Successive halving: the best two
   train ``p`` more steps from their pre-cooldown states and cool down again; the
   winner's pre-cooldown state is kept.
3. **Hold** the winner; evaluate every ``T / evals`` steps. Optional mid-run move
   (``move_at``): branches at ``lr * {1/2, 1, 2}``, each ``b`` steps then a ``c2``
   cooldown; the best annealed score sets the hold LR (its pre-cooldown state kept).
4. **Decay**, decided: ``decay="law"`` fits the LR-annealing law on the run's own
   history (main trajectory evaluations and every branch end, each with its full LR
   history) at decision points, forecasts the final loss of every plan (decay
   fraction x shape) and starts the decay when the best plan says "now";
   ``decay="fixed:<shape>:<fraction>"`` uses a fixed plan.
5. **No-progress guard**: on the main trajectory a validation loss at or above the
   start level (no gain kept) or non-finite rolls back to the best state seen and
   divides the LR by 4.

Run ``python -m benchmarks.experiments.run_strategy --help`` for the comparison.
"""

from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch

from autolr.kernels.schedule_law import (
    annealing_areas,
    decay_factors,
    fit_schedule_law,
    forecast_final,
)
from benchmarks.common import Workload
from benchmarks.methods import build_optimizer

RANGE_LO, RANGE_HI = 1e-6, 10.0
SHAPES = ("linear", "1-sqrt", "cosine")
FRACTIONS = tuple(round(0.05 * i, 2) for i in range(2, 17))  # 0.10 .. 0.80
DECAYS = (0.99, 0.995, 0.999)


@dataclass
class Config:
    range_frac: float = 0.02
    range_min_steps: int = 20
    range_giveback: float = 0.75
    k: int = 4
    j0: int = 0
    probe_frac: float = 0.01
    cool_frac: float = 0.005
    halving: bool = True
    tie: float = 0.0  # > 0: finalists within this relative score gap: hold at their geometric mean
    annealed: bool = True  # False: score a probe by its last val loss (no cooldown)
    move_at: tuple[float, ...] = ()
    move_frac: float = 0.03
    move_cool_frac: float = 0.015
    decay: str = "law"
    law_points: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    law_max_err: float = 0.05
    fallback: str = "fixed:1-sqrt:0.4"
    evals: int = 40
    check_frac: float = 0.02
    rise_guard: float = (
        0.0  # > 0: relative rise of the hold's val loss over its best that rolls back
    )


@dataclass
class Series:
    lrs: list[float]
    obs: list[tuple[int, float]]  # (number of steps taken, val loss after them)


@dataclass
class Log:
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, **kw: Any) -> None:
        self.events.append({"event": kind} | kw)


class Driver:
    """Runs the strategy on one seeded instance of a workload."""

    def __init__(self, workload: Workload, seed: int, total: int, cfg: Config) -> None:
        self.w, self.T, self.cfg = workload, total, cfg
        inst = workload.make(seed)
        self.inst = inst
        self.model = inst.model
        self.opt = build_optimizer(workload, "wsd", self.model.parameters(), total)
        self.batches = inst.train_batches
        self.used = 0
        self.kept: list[float] = []
        self.series: list[Series] = []
        self.main_obs: list[tuple[int, float]] = []
        self.log = Log()
        self.val0 = inst.eval_val()
        self.lr = 0.0
        self.checked = False
        self.rises = 0

    # -- primitives --------------------------------------------------------------
    def left(self) -> int:
        return self.T - self.used

    def snap(self) -> dict[str, Any]:
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "opt": copy.deepcopy(self.opt.state_dict()),
            "kept": list(self.kept),
        }

    def restore(self, s: dict[str, Any]) -> None:
        self.model.load_state_dict(s["model"])
        self.opt.load_state_dict(s["opt"])
        self.kept = list(s["kept"])

    def train(self, lrs: list[float]) -> list[float]:
        """Train one step per LR (while budget is left); losses; stops at a non-finite one."""
        out = []
        for lr in lrs:
            if self.used >= self.T:
                break
            for g in self.opt.param_groups:
                g["lr"] = lr
            loss = self.inst.train_step(self.model, self.opt, next(self.batches))
            self.used += 1
            self.kept.append(lr)
            out.append(loss)
            if not math.isfinite(loss):
                break
        return out

    def val(self) -> float:
        v = self.inst.eval_val()
        return v if math.isfinite(v) else math.inf

    def finite_params(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def branch_score(self, cool: int) -> tuple[float, list[float]]:
        """Linear cooldown to 0 from the current LR over ``cool`` steps; val after; restored."""
        s = self.snap()
        lr = self.kept[-1] if self.kept else 0.0
        lrs = (lr * decay_factors("linear", cool)).tolist()
        self.train(lrs)
        v = self.val() if self.finite_params() else math.inf
        self.series.append(Series(list(self.kept), [(len(self.kept), v)]))
        full = list(self.kept)
        self.restore(s)
        return v, full

    # -- phases ------------------------------------------------------------------
    def range_test(self) -> float:
        cfg = self.cfg
        n = max(cfg.range_min_steps, round(cfg.range_frac * self.T))
        s = self.snap()
        ratio = (RANGE_HI / RANGE_LO) ** (1.0 / (n - 1))
        losses: list[float] = []
        lrs: list[float] = []
        ema = start = best = None
        noise = 0.0
        over = 0
        lr_best = RANGE_LO
        reason = "end"
        for i in range(n):
            lr = RANGE_LO * ratio**i
            loss = self.train([lr])
            if not loss:
                reason = "budget"
                break
            lrs.append(lr)
            losses.append(loss[0])
            if not math.isfinite(loss[0]):
                reason = "nonfinite"
                break
            warm = 8  # the first steps (LR still tiny) give the start level and the noise
            if i < warm:
                continue
            if i == warm:
                start = sum(losses[:warm]) / warm
                ema = best = start
            # per-step noise from successive differences (robust to the trend), of the EMA below
            diffs = [abs(b - a) for a, b in zip(losses[:-1], losses[1:])]
            noise = 1.4826 * statistics.median(diffs) / math.sqrt(2) * math.sqrt(0.2 / 1.8)
            assert start is not None and best is not None and ema is not None
            ema = 0.8 * ema + 0.2 * loss[0]
            best = min(best, ema)
            if ema > max(1.5 * start, start + 6 * noise):
                reason = "blowup"
                break
            if ema <= best:
                lr_best = lr
            gain = start - best
            given_back = ema > best + (1 - cfg.range_giveback) * gain
            # "no progress": most of a clear gain given back, for a few steps in a row,
            # at an LR well past the one of the best loss (noise alone does not stop it)
            over = over + 1 if gain > max(0.05 * abs(start), 6 * noise) and given_back else 0
            if over >= 4 and lr >= 8 * lr_best:
                reason = "giveback"
                break
        self.restore(s)
        fin = [x if math.isfinite(x) else math.inf for x in losses]
        width = 5
        smooth = [
            sum(fin[max(0, i - width // 2) : i + width // 2 + 1])
            / len(fin[max(0, i - width // 2) : i + width // 2 + 1])
            for i in range(len(fin))
        ]
        i_min = min(range(len(smooth)), key=lambda i: smooth[i]) if smooth else 0
        lr_star = lrs[i_min] if lrs else 1e-3
        self.log.add(
            "range",
            steps=len(lrs),
            reason=reason,
            lr_star=lr_star,
            lr_stop=lrs[-1] if lrs else None,
        )
        return lr_star

    def race(self, lr_star: float) -> float:
        cfg = self.cfg
        p = max(5, round(cfg.probe_frac * self.T))
        c = max(3, round(cfg.cool_frac * self.T))
        base = self.snap()
        cands = [lr_star * 2.0 ** -(cfg.j0 + j) for j in range(cfg.k)]
        states: dict[float, dict[str, Any]] = {}
        scores: dict[float, float] = {}
        for lr in cands:
            self.restore(base)
            self.train([lr] * p)
            states[lr] = self.snap()
            if cfg.annealed:
                scores[lr], _ = self.branch_score(c)
            else:
                scores[lr] = self.val() if self.finite_params() else math.inf
        alive = [lr for lr in cands if scores[lr] < self.val0]
        self.log.add("race", round=1, scores={f"{k:.4g}": v for k, v in scores.items()})
        if not alive:
            # nothing made progress: fall back below the smallest candidate
            self.restore(base)
            self.log.add("race_none_alive")
            return cands[-1] / 4
        if cfg.halving and len(alive) > 1:
            top = sorted(alive, key=lambda lr: scores[lr])[:2]
            for lr in top:
                self.restore(states[lr])
                self.train([lr] * p)
                states[lr] = self.snap()
                if cfg.annealed:
                    scores[lr], _ = self.branch_score(c)
                else:
                    scores[lr] = self.val() if self.finite_params() else math.inf
            self.log.add("race", round=2, scores={f"{k:.4g}": scores[k] for k in top})
            alive = [lr for lr in top if math.isfinite(scores[lr])] or top
        ranked = sorted(alive, key=lambda lr: scores[lr])
        win = ranked[0]
        self.restore(states[win])
        if cfg.tie > 0 and len(ranked) > 1 and scores[ranked[1]] <= scores[win] * (1 + cfg.tie):
            # the finalists are within noise: hold at their geometric mean (no side preferred)
            mid = math.sqrt(win * ranked[1])
            self.log.add("race_tie", lrs=[win, ranked[1]], mid=mid)
            return mid
        return win

    def move(self, lr: float) -> float:
        cfg = self.cfg
        b = max(5, round(cfg.move_frac * self.T))
        c = max(3, round(cfg.move_cool_frac * self.T))
        base = self.snap()
        res = {}
        for g in (0.5, 1.0, 2.0):
            self.restore(base)
            self.train([lr * g] * b)
            st = self.snap()
            v, _ = self.branch_score(c)
            res[g] = (v, st)
        g = min(res, key=lambda k: res[k][0])
        self.log.add("move", lr=lr, scores={str(k): v[0] for k, v in res.items()}, chose=g)
        self.restore(res[g][1])
        return lr * g

    # -- the law -------------------------------------------------------------------
    def _points(self, extra: list[Series]) -> list[Series]:
        main = Series(list(self.kept), [o for o in self.main_obs if o[0] <= len(self.kept)])
        return [main] + self.series + extra

    def fit_law(self, series: list[Series]) -> Any:
        s1s, s2s, ys = [], [[] for _ in DECAYS], []
        for se in series:
            if not se.obs:
                continue
            lrs = torch.tensor(se.lrs, dtype=torch.float64)
            idx = torch.tensor([o[0] - 1 for o in se.obs])
            for k, d in enumerate(DECAYS):
                s1, s2 = annealing_areas(lrs, d)
                s2s[k].append(s2[idx])
            s1s.append(s1[idx])
            ys.append(torch.tensor([o[1] for o in se.obs], dtype=torch.float64))
        return fit_schedule_law(
            torch.cat(s1s), [torch.cat(t) for t in s2s], torch.cat(ys), decays=DECAYS
        )

    def plans(self) -> tuple[list[tuple[str, float, int]], torch.Tensor]:
        """Every (shape, fraction) plan still possible, as rows of the remaining LRs."""
        lr, rem = self.lr, self.left()
        out, rows = [], []
        for shape in SHAPES:
            for f in FRACTIONS:
                d = round(f * self.T)
                if d > rem or d < 1:
                    continue
                hold = rem - d
                rows.append(
                    torch.cat(
                        [torch.full((hold,), lr, dtype=torch.float64), lr * decay_factors(shape, d)]
                    )
                )
                out.append((shape, f, hold))
        return out, torch.stack(rows) if rows else torch.zeros(0, rem)

    def fixed_plan(self, spec: str) -> tuple[str, int]:
        _, shape, frac = spec.split(":")
        return shape, self.T - round(float(frac) * self.T)

    def decide_decay(self) -> tuple[str, int]:
        """The plan ``(shape, step at which the decay starts)`` from the law (or the fallback)."""
        cfg = self.cfg
        # a cooldown branch from here: the law, fit without it, must forecast its end
        if self.cfg.check_frac > 0 and not self.checked:
            self.checked = True
            self.branch_score(max(3, round(self.cfg.check_frac * self.T)))
        pts = self._points([])
        branches = [se for se in pts[1:] if se.obs]
        err = None
        if branches:
            held = branches[-1]
            fit = self.fit_law([pts[0]] + [se for se in pts[1:] if se is not held])
            lrs_h = torch.tensor(held.lrs, dtype=torch.float64)
            n = held.obs[-1][0]
            pred = float(forecast_final(fit, 0, lrs_h[: n - 1], lrs_h[n - 1 : n].unsqueeze(0))[0])
            err = abs(pred / held.obs[-1][1] - 1.0)
        if err is None or err > cfg.law_max_err:
            self.log.add("law_untrusted", step=self.used, err=err)
            return self.fixed_plan(cfg.fallback)
        fit = self.fit_law(pts)
        plans, rows = self.plans()
        if not plans:
            return "linear", self.used
        pred = forecast_final(fit, 0, torch.tensor(self.kept, dtype=torch.float64), rows)
        i = int(torch.argmin(pred))
        shape, f, hold = plans[i]
        self.log.add(
            "law",
            step=self.used,
            err=err,
            shape=shape,
            frac=f,
            hold=hold,
            pred=float(pred[i]),
            alpha=float(fit.alpha[0]),
            c=float(fit.c[0]),
            lam=float(fit.decay[0]),
        )
        return shape, self.used + hold

    # -- main loop -----------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        lr_star = self.range_test()
        self.lr = self.race(lr_star)
        self.log.add("hold", lr=self.lr, step=self.used)
        every = max(1, round(self.T / cfg.evals))
        best_val, best_state = math.inf, self.snap()
        moves = sorted(cfg.move_at)
        law_pts = sorted(cfg.law_points) if cfg.decay == "law" else []
        plan = None if cfg.decay == "law" else self.fixed_plan(cfg.decay)
        decaying: list[float] | None = None
        while self.left() > 0:
            if decaying is None:
                if moves and self.used >= moves[0] * self.T:
                    moves.pop(0)
                    self.lr = self.move(self.lr)
                if law_pts and self.used >= law_pts[0] * self.T:
                    while law_pts and self.used >= law_pts[0] * self.T:
                        law_pts.pop(0)
                    plan = self.decide_decay()
                if plan is not None and self.used >= plan[1]:
                    decaying = (self.lr * decay_factors(plan[0], self.left())).tolist()
                    self.log.add("decay", step=self.used, shape=plan[0], steps=self.left())
            n = min(every, self.left())
            if decaying is None and plan is not None and plan[1] > self.used:
                n = min(n, plan[1] - self.used)
            if decaying is not None:
                seg, decaying = decaying[:n], decaying[n:]
                self.train(seg)
            else:
                self.train([self.lr] * n)
            v = self.val() if self.finite_params() else math.inf
            self.main_obs.append((len(self.kept), v))
            if not math.isfinite(v) or v >= self.val0:
                # no progress kept (or non-finite): roll back and lower the LR
                self.restore(best_state)
                self.main_obs = [o for o in self.main_obs if o[0] <= len(self.kept)]
                self.lr /= 4
                if decaying is not None:
                    decaying = (self.lr * decay_factors("linear", self.left())).tolist()
                self.log.add("rollback", step=self.used, val=v, new_lr=self.lr)
                continue
            rise = cfg.rise_guard and decaying is None and v > best_val * (1 + cfg.rise_guard)
            self.rises = self.rises + 1 if rise else 0
            if self.rises >= 2:
                # the loss has risen on the hold: the LR is too large now; back to the best state
                self.restore(best_state)
                self.main_obs = [o for o in self.main_obs if o[0] <= len(self.kept)]
                self.lr /= 2
                self.rises = 0
                self.log.add("rise_rollback", step=self.used, val=v, best=best_val, new_lr=self.lr)
                continue
            if v < best_val:
                best_val, best_state = v, self.snap()
        final_val = self.val() if self.finite_params() else None
        result = {
            "final_val": final_val if final_val is not None and math.isfinite(final_val) else None,
            "final_test": self.inst.eval_test() if final_val is not None else None,
            "used": self.used,
            "kept": len(self.kept),
            "search_share": (self.used - len(self.kept)) / self.T,
            "events": self.log.events,
            "main_obs": [(n, round(v, 5) if math.isfinite(v) else None) for n, v in self.main_obs],
        }
        if self.inst.expected_final_loss is not None:
            result["expected_final_loss"] = self.inst.expected_final_loss(self.kept)
        return result
