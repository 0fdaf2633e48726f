"""What-if: each stage of a logged run re-decided with other forecaster settings.

:func:`what_if` re-decides each stage from its logged probe series, stage by
stage, through the controller: a fresh controller per stage is given the
stage's pre-snapshot losses and the logged probes in their logged order. When
Bayesian optimization with the new forecasts would have proposed an LR that was
never probed, the result says so; those losses do not exist, and none are made up.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autolr.controller import AutoLRS, Phase
from autolr.errors import AutoLRError, ConfigError
from autolr.forecast import Forecaster, make_forecaster
from autolr.offline.harness import (
    REL_TOL,
    LoggedProber,
    LoggedValidation,
    OutOfLog,
    build_forecaster,
    build_proposer,
    controller_kwargs,
    dummy_training,
    nan_if_none,
    quiet,
)
from autolr.offline.logs import LoggedRun, LoggedStage, load_run
from autolr.proposer import GPProposer
from autolr.runlog import DECISION, PROBE

__all__ = ["StageWhatIf", "WhatIfResult", "what_if"]


class _ForcedProposer:
    """Wraps the controller's GP proposer: BO still proposes, the logged LRs are probed.

    What BO would have proposed is recorded, so a replay can say where the new
    forecasts would have sent the search to an LR the log has no losses for.
    """

    def __init__(
        self,
        lrs: list[float],
        stage: int,
        progress: float,
        inner: GPProposer | None = None,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        self.lrs = lrs
        self.bounds = bounds
        self.stage = stage
        self.progress = progress
        self.inner = inner
        self.next = 0
        self.proposed: list[float] = []

    def reset(self, stage: int, progress: float, bounds: tuple[float, float] | None = None) -> None:
        assert self.inner is not None
        # The logged stage's trust region: the one-stage controller of a what-if
        # has no earlier stage to derive it from.
        self.inner.reset(self.stage, self.progress, self.bounds or bounds)

    def propose(self, q: int = 1) -> list[float]:
        assert self.inner is not None
        self.proposed.extend(self.inner.propose(q))
        out = self.lrs[self.next : self.next + q]
        self.next += q
        if len(out) < q:
            raise OutOfLog(f"the log has only {len(self.lrs)} probes in stage {self.stage}")
        return out

    def observe(self, lr: float, value: float | None) -> None:
        assert self.inner is not None
        self.inner.observe(lr, value)

    def mark_diverged(self, lr: float) -> None:
        assert self.inner is not None
        self.inner.mark_diverged(lr)

    def state_dict(self) -> dict[str, Any]:
        assert self.inner is not None
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.inner is not None
        self.inner.load_state_dict(state)

    def config(self) -> dict[str, Any]:
        assert self.inner is not None
        return self.inner.config()


@dataclass
class StageWhatIf:
    """One stage re-decided from its logged probes.

    Attributes:
        stage: stage number.
        lrs: `(k,)` probed LRs (linear scale), logged order.
        logged_forecasts: what the run's forecaster said (None: diverged).
        new_forecasts: what the new forecaster says (None: diverged or fit failed).
        logged_lr: the LR the run chose first.
        new_lr: the LR the new forecasts choose among the logged probes (``min_lr``
            when none is usable, as the controller falls back).
        new_forecast: its forecast.
        bo_lrs: what BO would have proposed with the new forecasts, probe by probe.
        bo_departs: first probe index where BO would have proposed an unlogged LR (None: never).
        actual: loss reached at the end of the stage's exploit (at the logged final LR).
        final_lr: LR of the stage's last exploit (after rollbacks).
        rolled_back: LRs whose exploit the guard rolled back.
        note: what can and cannot be said about the new choice.
    """

    stage: int
    lrs: list[float]
    logged_forecasts: list[float | None]
    new_forecasts: list[float | None]
    logged_lr: float | None
    new_lr: float | None
    new_forecast: float | None
    bo_lrs: list[float]
    bo_departs: int | None
    actual: float | None
    final_lr: float | None
    rolled_back: list[float]
    note: str

    @property
    def differs(self) -> bool:
        if self.logged_lr is None or self.new_lr is None:
            return self.logged_lr != self.new_lr
        return not math.isclose(self.logged_lr, self.new_lr, rel_tol=REL_TOL)


@dataclass
class WhatIfResult:
    """:func:`what_if` output: per-stage decisions under other forecaster settings.

    Attributes:
        run: the logged run.
        forecaster: settings of the forecaster used (``config()``).
        stages: one entry per stage with a full logged search.
        skipped: stages that could not be re-decided, with the reason.
    """

    run: LoggedRun
    forecaster: dict[str, Any]
    stages: list[StageWhatIf]
    skipped: dict[int, str]

    @property
    def changed(self) -> list[int]:
        """Stages that would have chosen another LR."""
        return [s.stage for s in self.stages if s.differs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.run.path,
            "forecaster": self.forecaster,
            "logged_forecaster": self.run.forecaster_config,
            "changed": self.changed,
            "stages": [{**s.__dict__, "differs": s.differs} for s in self.stages],
            "skipped": {str(k): v for k, v in self.skipped.items()},
            "warnings": list(self.run.warnings),
        }


def what_if(
    run: LoggedRun | str | Path,
    forecaster: str | Mapping[str, Any] | Forecaster | None = None,
    **forecaster_options: Any,
) -> WhatIfResult:
    """Re-decide every stage of a logged run with other forecaster settings.

    Each stage runs through a fresh controller (same code, same settings) that is
    given the stage's pre-snapshot losses, then the logged probes in their logged
    order; its decision is the choice among the logged candidates. BO still
    proposes with the new forecasts, and where it would have probed an LR the log
    has no losses for, the result records it (``bo_departs``) instead of inventing
    a series. Exploits are not replayed: a new choice that the run never
    exploited has no known outcome.

    Args:
        run: a :class:`LoggedRun` or the path of a run log.
        forecaster: a name (``"power_law"``), a config dict, a forecaster object,
            or None for the run's own.
        forecaster_options: settings to override (``trim_outliers=False``, ...).

    Raises:
        LogFormatError: the log cannot be read.
        ConfigError: bad forecaster settings, or a run of the annealed strategy
            (its probes are scored by the loss after a cooldown, not forecast).
    """
    if not isinstance(run, LoggedRun):
        run = load_run(run)
    if run.config.get("strategy") == "anneal":
        raise ConfigError(
            f"{run.path}: the run used strategy='anneal', which scores each probe by its "
            "loss after a cooldown and forecasts nothing: a what-if with another "
            "forecaster applies to runs of strategy='forecast' (replay it to check it)"
        )
    if forecaster is None or isinstance(forecaster, str):
        fc = build_forecaster(run, forecaster, **forecaster_options)
    elif isinstance(forecaster, Mapping):
        fc = build_forecaster(None, None, **{**dict(forecaster), **forecaster_options})
    else:
        fc = make_forecaster(forecaster)
    stages: list[StageWhatIf] = []
    skipped: dict[int, str] = {}
    total = run.config.get("total_steps")
    warmup = int(run.config.get("warmup_steps") or 0)
    shared: GPProposer | None = None
    for st in run.stages:
        if st.n_probes == 0:
            skipped[st.index] = "no search (exploit only)"
            continue
        if not st.searched:
            skipped[st.index] = f"the log holds {len(st.probes)} of {st.n_probes} probes"
            continue
        if st.recent is None and (st.index > 0 or warmup > 0):
            skipped[st.index] = "the log has no pre-snapshot losses (written by an older autolr)"
            continue
        progress = st.start["step"] / total if total else 0.0
        try:
            with quiet():
                result, shared = _decide_stage(run, st, fc, progress, shared)
        except (OutOfLog, AutoLRError) as exc:
            skipped[st.index] = f"{type(exc).__name__}: {exc}"
            continue
        stages.append(result)
    return WhatIfResult(run, fc.config(), stages, skipped)


def _decide_stage(
    run: LoggedRun,
    st: LoggedStage,
    fc: Forecaster,
    progress: float,
    shared: GPProposer | None,
) -> tuple[StageWhatIf, GPProposer]:
    lrs = [float(p["lr"]) for p in st.probes]
    logged_bounds = st.start.get("lr_bounds")
    forced = _ForcedProposer(
        lrs, st.index, progress, shared, tuple(logged_bounds) if logged_bounds else None
    )
    recent = st.recent or []
    model, optimizer = dummy_training(run.initial_lrs)
    backend = run.prober is not None
    overrides: dict[str, Any] = {
        "total_steps": None,
        "tau": st.tau,
        "tau_max": st.tau,
        "tau_probe": st.tau_probe,
        "probes": st.n_probes,
        "warmup_steps": len(recent),
        "warmup_lr": None,
        "anneal_fraction": None,
        "forecaster": fc,
        "trace": False,
    }
    kwargs = controller_kwargs(run, overrides)
    val = LoggedValidation(run, lambda s: st.index) if run.objective == "val_loss" else None
    kwargs["val_fn"] = val
    if backend:
        kwargs["prober"] = LoggedProber(
            run, model, optimizer, int(kwargs.get("parallel_probes", 1)), lambda s: st.index
        )
    fc.reset()
    # A proposer carried over from earlier stages (warm start) wins over a fresh one.
    if forced.inner is None:
        forced.inner = build_proposer(run, kwargs)
    tuner = AutoLRS(model, optimizer, proposer=forced, **kwargs)
    if val is not None:
        val.tuner = tuner
    feed = deque(recent)
    while tuner.phase in (Phase.WARMUP, Phase.PROBE):
        if tuner.phase is Phase.WARMUP:
            tuner.step(feed.popleft())
            continue
        assert tuner.stage is not None and tuner.probe is not None
        rec = st.probes[len(tuner.stage.probes)]
        k = tuner.probe.steps
        if k >= len(rec["train_losses"]):
            raise OutOfLog(f"probe {st.index}.{len(tuner.stage.probes)} runs past its log")
        tuner.step(nan_if_none(rec["train_losses"][k]))
    decision = tuner.log.of_type(DECISION)
    if not decision:
        raise OutOfLog(f"stage {st.index} reached no decision")
    dec = decision[0]
    probes = tuner.log.of_type(PROBE)
    logged_dec = st.first_decision()
    departs = next(
        (i for i, (a, b) in enumerate(zip(forced.proposed, lrs)) if not math.isclose(a, b)),
        None,
    )
    new_lr = dec["lr"]
    fallback = dec["reason"] == "fallback"
    rolled = [float(r["lr"]) for r in st.rollbacks]
    end = st.exploit_end
    note = _note(new_lr, logged_dec["lr"] if logged_dec else None, rolled, departs, fallback)
    result = StageWhatIf(
        stage=st.index,
        lrs=lrs,
        logged_forecasts=[p["forecast"] for p in st.probes],
        new_forecasts=[p["forecast"] for p in probes],
        logged_lr=logged_dec["lr"] if logged_dec else None,
        new_lr=new_lr,
        new_forecast=dec["forecast"],
        bo_lrs=list(forced.proposed),
        bo_departs=departs,
        actual=end.get("actual") if end else None,
        final_lr=end["lr"] if end else None,
        rolled_back=rolled,
        note=note,
    )
    assert forced.inner is not None
    # What the run learned after the decision: the rolled-back LRs (used with warm_start).
    for lr in rolled:
        forced.inner.mark_diverged(lr)
    return result, forced.inner


def _note(
    new: float | None,
    old: float | None,
    rolled: list[float],
    departs: int | None,
    fallback: bool = False,
) -> str:
    parts = []
    if new is None:
        parts.append("no decision")
    elif old is not None and math.isclose(new, old, rel_tol=REL_TOL):
        parts.append("same choice" + (" (no usable forecast: min_lr)" if fallback else ""))
    elif fallback:
        parts.append("no usable forecast: the controller would fall back to min_lr")
    elif any(math.isclose(new, r, rel_tol=REL_TOL) for r in rolled):
        parts.append(f"lr={new:.4g} was exploited in the run and rolled back by the guard")
    else:
        parts.append(f"lr={new:.4g} was never exploited: its outcome is unknown")
    if departs is not None:
        parts.append(
            f"from probe {departs} on, BO would have probed LRs the log has no losses for; "
            "the logged probes were used"
        )
    return "; ".join(parts)
