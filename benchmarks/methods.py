"""The methods compared, and one training run of a method on a workload."""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmarks import autolr_hook
from benchmarks.common import Workload
from benchmarks.optimizers import build_optimizer
from benchmarks.schedules import SCHEDULES, lr_factor

LR_FREE = ("schedulefree", "prodigy")
POPULATION_METHODS = ("pb2",)
METHODS = SCHEDULES + LR_FREE + POPULATION_METHODS + tuple(autolr_hook.VARIANTS)

CURVE_POINTS = 200


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method, its peak LR (grid methods only) and a seed."""

    method: str
    seed: int
    peak_lr: float | None = None

    @property
    def key(self) -> str:
        lr = "" if self.peak_lr is None else f"@{self.peak_lr:.6g}"
        return f"{self.method}{lr}#seed{self.seed}"


def plan_runs(workload: Workload, methods: list[str], seeds: list[int]) -> list[RunSpec]:
    """Every run the comparison needs: the grid for each schedule, one run for the others.

    Schedules the workload does not sweep (``workload.grid_schedules``) are skipped.
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    runs: list[RunSpec] = []
    for seed in seeds:
        for m in methods:
            if m in SCHEDULES:
                if m in workload.grid_schedules:
                    runs.extend(RunSpec(m, seed, lr) for lr in workload.lr_grid())
            else:
                runs.append(RunSpec(m, seed))
    return runs


def effective_lr(group: dict[str, Any]) -> float:
    """The step size a param group applied: Prodigy's ``d * lr``, schedule-free's warmed LR."""
    if "d" in group:
        return float(group["d"] * group["lr"])
    return float(group.get("scheduled_lr", group["lr"]))


def _set_lr(optimizer: torch.optim.Optimizer, base: list[float], factor: float) -> None:
    for group, lr in zip(optimizer.param_groups, base):
        group["lr"] = lr * factor


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _subsample_means(values: list[float], points: int) -> dict[str, list[Any]]:
    """Window means of a per-step series: at most ``points`` (step, mean) pairs."""
    n = len(values)
    width = max(1, math.ceil(n / points))
    steps, means = [], []
    for i in range(0, n, width):
        window = values[i : i + width]
        steps.append(i + len(window) // 2)
        means.append(_finite(sum(window) / len(window)))
    return {"steps": steps, "values": means}


def _subsample_points(values: list[float], points: int) -> dict[str, list[Any]]:
    """Every k-th value of a per-step series: at most ``points`` (step, value) pairs."""
    every = max(1, math.ceil(len(values) / points))
    idx = list(range(0, len(values), every))
    return {"steps": idx, "values": [_finite(values[i]) for i in idx]}


def run_one(
    workload: Workload,
    spec: RunSpec,
    total_steps: int,
    eval_points: int,
    *,
    autolr_variant: autolr_hook.AutoLRVariant | None = None,
    on_step: Callable[[int], None] | None = None,
    log_path: str | Path | None = None,
    lr_range: tuple[float | None, float | None] | None = None,
) -> dict[str, Any]:
    """Train one method for ``total_steps`` and measure it.

    Evaluates validation loss at ``eval_points`` evenly spaced steps (and step 0);
    evaluation time is excluded from ``train_time_s``. A grid or LR-free run stops
    early when its loss is non-finite (``diverged``); an autolr run hands every loss
    to the tuner, which may stop it before ``total_steps`` (``finished``). A
    ``pb2`` run trains a population with Ray Tune (see :mod:`benchmarks.pb2`).
    ``log_path``: where an autolr run writes its run log (None: in memory only).
    ``lr_range``: an autolr run's ``(min_lr, max_lr)`` (default: the ends of the
    workload's grid; ``(None, None)``: no range given).

    Returns:
        a JSON-ready dict: final val/test loss (``None`` if non-finite), the val curve
        ``[[step, val, train_time_s], ...]``, subsampled train-loss and LR curves,
        steps run, times, and for autolr its counters.
    """
    if spec.method == "pb2":
        from benchmarks.pb2 import run_pb2

        return run_pb2(workload, spec.seed, total_steps, on_step=on_step)
    inst = workload.make(spec.seed)
    model = inst.model
    opt = build_optimizer(workload, spec.method, model.parameters(), total_steps)
    base = [float(g["lr"]) for g in opt.param_groups]
    lr_at: Callable[[int], float] | None = None
    if spec.method in SCHEDULES:
        if spec.peak_lr is None:
            raise ValueError(f"{spec.method} runs need a peak_lr")
        base = [spec.peak_lr * lr / base[0] for lr in base]
        method = spec.method
        lr_at = lambda s: lr_factor(method, s, total_steps)  # noqa: E731
    elif spec.method == "prodigy":
        lr_at = lambda s: lr_factor("cosine", s, total_steps)  # noqa: E731
    schedule_free = spec.method == "schedulefree"
    if schedule_free:
        opt.train()  # type: ignore[attr-defined]

    driver = None
    batches = inst.train_batches
    if autolr_variant is not None:
        lo, hi = lr_range or workload.lr_range()
        driver = autolr_hook.TunerDriver(
            autolr_variant,
            model,
            opt,
            min_lr=lo,
            max_lr=hi,
            total_steps=total_steps,
            seed=spec.seed,
            val_fn=inst.eval_val,
            log_path=log_path,
        )
        batches = iter(driver.batches(batches))

    def evaluate(fn: Callable[[], float]) -> float:
        if schedule_free:
            opt.eval()  # type: ignore[attr-defined]
        try:
            return fn()
        finally:
            if schedule_free:
                opt.train()  # type: ignore[attr-defined]

    eval_at = {round(i * total_steps / eval_points) for i in range(1, eval_points + 1)}
    val_curve: list[list[Any]] = [[0, _finite(evaluate(inst.eval_val)), 0.0]]
    losses: list[float] = []
    lrs: list[float] = []
    train_time = eval_time = 0.0
    diverged = finished = False
    step = 0
    while step < total_steps:
        t0 = time.perf_counter()
        if lr_at is not None:
            _set_lr(opt, base, lr_at(step))
        loss = inst.train_step(model, opt, next(batches))
        lrs.append(effective_lr(opt.param_groups[0]))
        if driver is not None:
            driver.step(loss)
        train_time += time.perf_counter() - t0
        losses.append(loss)
        step += 1
        if on_step is not None:
            on_step(1)
        if driver is None and not math.isfinite(loss):
            diverged = True
            break
        if driver is not None and driver.finished:
            finished = True
        if step in eval_at or finished:
            t1 = time.perf_counter()
            val_curve.append([step, _finite(evaluate(inst.eval_val)), train_time])
            eval_time += time.perf_counter() - t1
        if finished:
            break

    params_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    final_val = final_test = None
    if not diverged and params_finite:
        final_val = val_curve[-1][1] if val_curve[-1][0] == step else evaluate(inst.eval_val)
        final_test = _finite(evaluate(inst.eval_test))
        final_val = _finite(final_val) if final_val is not None else None
    points = CURVE_POINTS // 2 if spec.method in SCHEDULES else CURVE_POINTS
    result: dict[str, Any] = {
        "method": spec.method,
        "seed": spec.seed,
        "peak_lr": spec.peak_lr,
        "steps": step,
        "diverged": diverged or not params_finite,
        "final_val": final_val,
        "final_test": final_test,
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "val_curve": val_curve,
        # grid runs follow a known schedule: coarser curves keep the results files small
        "train_curve": _subsample_means(losses, points),
        "lr_curve": _subsample_points(lrs, 2 * points),
    }
    if inst.expected_final_loss is not None and lr_at is not None and spec.method in SCHEDULES:
        # exact expectation of the intended schedule, independent of this run's noise
        planned = [base[0] * lr_at(s) for s in range(total_steps)]
        result["expected_final_loss"] = _finite(inst.expected_final_loss(planned))
    if driver is not None:
        result["autolr"] = driver.counters() | {"stopped_early": finished and step < total_steps}
    return result


def run_guarded(
    bar: Any,
    label: str,
    failed: dict[str, Any],
    workload: Workload,
    spec: RunSpec,
    total_steps: int,
    eval_points: int,
    **options: Any,
) -> dict[str, Any]:
    """:func:`run_one`'s result; when it raises, ``failed`` with the steps taken and the error.

    One broken run must not lose the others' results. The progress bar is filled
    to the run's share either way (runs that stop early too).

    Args:
        bar: the tqdm bar the run advances (``on_step`` is set to its ``update``).
        label: names the run in the failure line.
        failed: the record of a failed run, without ``steps`` and ``error``.
        workload, spec, total_steps, eval_points, options: as :func:`run_one` takes them.
    """
    t0 = bar.n
    try:
        result = run_one(workload, spec, total_steps, eval_points, on_step=bar.update, **options)
    except Exception as exc:  # noqa: BLE001 - a failed run is a result, not a crash
        tqdm.write(f"{label} failed: {type(exc).__name__}: {exc}")
        logging.getLogger(__name__).debug(traceback.format_exc())
        result = {**failed, "steps": bar.n - t0, "error": f"{type(exc).__name__}: {exc}"}
    bar.update(t0 + total_steps - bar.n)
    return result
