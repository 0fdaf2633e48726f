"""Ray Tune PB2 (Population Based Bandits) as a benchmark method.

PB2 trains a population of members at once; at every perturbation point the
worst quarter copies the weights of the best quarter and gets a new LR from a
GP bandit over (time, reward, LR). It needs Ray Tune and scikit-learn (Ray >= 2.x
fits its GP with scikit-learn; older Ray releases needed GPy).

How it is run here, so that it gets the same budget as every other method:

- The population has ``population`` members (4 by default); each trains
  ``T // population`` steps, so the whole population spends the run's budget ``T``.
- The only hyperparameter is the LR, searched as ``log_lr`` in the log of the
  workload's grid range (PB2's bounds are linear; an LR range over decades needs
  the log). Initial LRs are stratified over that range (seeded).
- Members report the validation loss every ``T // population // perturbations``
  steps with a checkpoint; PB2 (``synch=True``) perturbs at every report. A
  non-finite or exploding validation loss is reported as a bad but finite
  value (``3 x`` the loss at step 0) so PB2's GP sees no inf.
- Every member starts from the run seed's model and data order; a member that
  copies another continues that member's data stream from the same step.
- The result is the member with the lowest final validation loss; its LR
  history (inherited through copies) is the LR curve. The validation curve is
  the population's best at each report, placed at population steps
  (``population x`` member steps), so "steps to target" counts the whole
  population's compute. ``train_time_s`` sums every member's training time.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Instance, Workload

REPO_ROOT = Path(__file__).resolve().parents[1]
POPULATION = 4
PERTURBATIONS = 10
CAP_FACTOR = 3.0

logger = logging.getLogger(__name__)


def availability() -> tuple[bool, str]:
    """Whether PB2 can run here (Ray Tune and scikit-learn import); the error text if not."""
    try:
        import sklearn  # noqa: F401
        from ray.tune.schedulers.pb2 import PB2  # noqa: F401
    except Exception as exc:  # any import-time failure means: skip, and say why
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def _generators(model: torch.nn.Module) -> list[torch.Generator]:
    """Random generators a module owns outside its state dict (S0's gradient noise)."""
    return [g for m in model.modules() for g in vars(m).values() if isinstance(g, torch.Generator)]


def _set_lr(optimizer: torch.optim.Optimizer, base: list[float], lr: float) -> None:
    for group, b in zip(optimizer.param_groups, base):
        group["lr"] = lr * b / base[0]


def member(config: dict[str, Any]) -> None:
    """One PB2 member: trains ``config["interval"]`` steps per report until its share is spent.

    Runs inside a Ray Tune trial. ``config`` holds ``log_lr`` (natural log of the
    LR, set by PB2) and the run's fixed facts: ``workload``, ``seed``, ``steps``
    (the member's share of the budget), ``interval``.
    """
    from ray import tune

    from benchmarks.optimizers import build_optimizer
    from benchmarks.workloads import WORKLOADS

    torch.set_num_threads(1)
    workload = WORKLOADS[config["workload"]]
    inst: Instance = workload.make(config["seed"])
    model = inst.model
    opt = build_optimizer(workload, "constant", model.parameters(), config["steps"])
    base = [float(g["lr"]) for g in opt.param_groups]
    state: dict[str, Any] = {"step": 0, "lrs": [], "losses": [], "cap": None}
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            saved = torch.load(Path(d) / "member.pt", weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        for g, s in zip(_generators(model), saved["generators"]):
            g.set_state(s)
        state = saved["state"]
        for _ in range(state["step"]):  # resume the data stream where the copied member was
            next(inst.train_batches)
    if state["cap"] is None:
        state["cap"] = CAP_FACTOR * inst.eval_val()
    lr = math.exp(config["log_lr"])
    while state["step"] < config["steps"]:
        n = min(config["interval"], config["steps"] - state["step"])
        t0 = time.perf_counter()
        _set_lr(opt, base, lr)
        losses = []
        for _ in range(n):
            losses.append(inst.train_step(model, opt, next(inst.train_batches)))
        chunk_time = time.perf_counter() - t0
        state["step"] += n
        finite = [x for x in losses if math.isfinite(x)]
        state["lrs"].append([state["step"], lr])
        state["losses"].append([state["step"], sum(finite) / len(finite) if finite else None])
        val = inst.eval_val()
        ok = math.isfinite(val) and all(bool(torch.isfinite(p).all()) for p in model.parameters())
        reported = min(val, state["cap"]) if ok else state["cap"]
        metrics: dict[str, Any] = {
            "val_loss": reported,
            "val_raw": val if ok else None,
            "member_step": state["step"],
            "chunk_steps": n,
            "chunk_train_s": chunk_time,
            "lr": lr,
            "diverged": not ok,
        }
        if state["step"] >= config["steps"]:
            metrics["test_loss"] = inst.eval_test() if ok else None
            metrics["lr_history"] = state["lrs"]
            metrics["loss_history"] = state["losses"]
        with tempfile.TemporaryDirectory() as d:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "generators": [g.get_state() for g in _generators(model)],
                    "state": state,
                },
                Path(d) / "member.pt",
            )
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _collector() -> Any:
    from ray import tune

    class Collect(tune.Callback):
        """Keeps every result every member reports (restarted members included)."""

        def __init__(self) -> None:
            self.results: list[dict[str, Any]] = []

        def on_trial_result(self, iteration: int, trials: Any, trial: Any, result: dict, **info):
            keep = ("val_loss", "val_raw", "member_step", "chunk_steps", "chunk_train_s", "lr")
            row = {k: result.get(k) for k in keep}
            row["trial"] = trial.trial_id
            for k in ("test_loss", "lr_history", "loss_history"):
                if k in result:
                    row[k] = result[k]
            self.results.append(row)

    return Collect()


def run_pb2(
    workload: Workload,
    seed: int,
    total_steps: int,
    *,
    population: int = POPULATION,
    perturbations: int = PERTURBATIONS,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run PB2 on one seed with ``total_steps`` steps over the whole population.

    Returns:
        a result dict shaped like :func:`benchmarks.methods.run_one`'s (final val
        and test loss of the best member, curves, steps, times) plus ``"pb2"``
        facts: population, interval, initial LRs, the final member's LR history.
    """
    import numpy as np
    import ray
    from ray import tune
    from ray.tune.schedulers.pb2 import PB2

    steps = total_steps // population
    if steps < 2:
        raise ValueError(f"total_steps={total_steps} is too small for a population of {population}")
    interval = max(1, steps // perturbations)
    lo, hi = (math.log(v) for v in workload.lr_range())
    gen = np.random.default_rng(seed)
    init = [lo + (i + gen.uniform()) / population * (hi - lo) for i in range(population)]
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            job_config=ray.job_config.JobConfig(code_search_path=[str(REPO_ROOT)]),
        )
    np.random.seed(seed)  # PB2's own draws (acquisition restarts) happen in this process
    scheduler = PB2(
        time_attr="training_iteration",
        perturbation_interval=1,
        hyperparam_bounds={"log_lr": [lo, hi]},
        quantile_fraction=0.25,
        synch=True,
        log_config=False,
    )
    collect = _collector()
    storage = tempfile.mkdtemp(prefix="autolr_pb2_")
    tuner = tune.Tuner(
        tune.with_resources(member, {"cpu": 1}),
        param_space={
            "log_lr": tune.grid_search(init),
            "workload": workload.id,
            "seed": seed,
            "steps": steps,
            "interval": interval,
        },
        tune_config=tune.TuneConfig(
            metric="val_loss", mode="min", scheduler=scheduler, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name=f"pb2_{workload.id}_{seed}",
            storage_path=storage,
            verbose=0,
            callbacks=[collect],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # PB2's scikit-learn GP warns about L-BFGS convergence at most perturbations
            warnings.simplefilter("ignore")
            grid = tuner.fit()
        errors = [str(grid[i].error) for i in range(len(grid)) if grid[i].error is not None]
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} PB2 member(s) failed: {errors[0]}")
    results = collect.results
    if on_step is not None:
        on_step(sum(r["chunk_steps"] or 0 for r in results))
    finals = [r for r in results if "lr_history" in r]
    if not finals:
        raise RuntimeError("no PB2 member reached the end of its budget")
    best = min(finals, key=lambda r: r["val_raw"] if r["val_raw"] is not None else math.inf)
    by_step: dict[int, list[float]] = {}
    for r in results:
        if r["val_raw"] is not None:
            by_step.setdefault(int(r["member_step"]), []).append(float(r["val_raw"]))
    train_time = sum(r["chunk_train_s"] or 0.0 for r in results)
    # time axis: the population's training time when every member had reached the step
    per_step_time = train_time / max(1, sum(r["chunk_steps"] or 0 for r in results))
    curve = [[s * population, min(by_step[s]), s * population * per_step_time] for s in by_step]
    curve.sort()
    final_val = best["val_raw"]
    return {
        "method": "pb2",
        "seed": seed,
        "peak_lr": None,
        "steps": sum(r["chunk_steps"] or 0 for r in results),
        "diverged": final_val is None,
        "final_val": final_val,
        "final_test": best.get("test_loss"),
        "train_time_s": train_time,
        "eval_time_s": 0.0,
        "val_curve": curve,
        "train_curve": {
            "steps": [s * population for s, _ in best["loss_history"]],
            "values": [v for _, v in best["loss_history"]],
        },
        "lr_curve": {
            "steps": [0] + [s * population for s, _ in best["lr_history"][:-1]],
            "values": [lr for _, lr in best["lr_history"]],
        },
        "pb2": {
            "population": population,
            "member_steps": steps,
            "interval": interval,
            "initial_lrs": [math.exp(x) for x in init],
            "final_lrs": sorted(r["lr"] for r in finals),
            "reports": len(results),
            "wall_time_s": wall,
            "median_final_val": statistics.median(
                r["val_raw"] for r in finals if r["val_raw"] is not None
            )
            if any(r["val_raw"] is not None for r in finals)
            else None,
        },
    }
