"""The AutoLRS controller: an explicit state machine driven by ``step(loss)``.

Phases and transitions (one method each)::

    WARMUP --_begin_stage--> PROBE --_finish_probe--> PROBE (next candidate)
                                                  \\--_decide--> EXPLOIT
    EXPLOIT --_rollback (guard fired)--> EXPLOIT at the next-best candidate
    EXPLOIT --_end_exploit--> PROBE (next stage) | ANNEAL (budget's tail) | DONE

The controller sees only training steps and losses; it owns the LR, takes and
restores snapshots, and writes every probe and decision to the run log.
"""

from __future__ import annotations

import logging
import math
import statistics
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autolr.config import AutoLRSConfig
from autolr.errors import ConfigError, FitError, InputError, StateError
from autolr.forecast import make_forecaster
from autolr.plan import StagePlan, StageSpec
from autolr.probing import (
    ProbeBackend,
    ProbeRecord,
    ProbeRequest,
    finite_or_none,
    set_group_lrs,
    stop_reason,
)
from autolr.proposer import GPProposer
from autolr.runlog import RunLog
from autolr.snapshot import Snapshot, Stateful, capture, resolve_snapshot_device, restore

logger = logging.getLogger(__name__)

STATE_SCHEMA_VERSION = 1


class Phase(str, Enum):
    """What the current training step is for."""

    WARMUP = "warmup"
    PROBE = "probe"
    EXPLOIT = "exploit"
    ANNEAL = "anneal"
    DONE = "done"


PHASE_CODES = {p: i for i, p in enumerate(Phase)}


@dataclass
class StageState:
    """The current stage's progress (plain data, saved in ``state_dict``)."""

    spec: StageSpec
    start_step: int
    progress: float
    ref_loss: float | None = None
    noise: float = 0.0
    recent_max: float | None = None
    val0: float | None = None
    probes: list[ProbeRecord] = field(default_factory=list)
    chosen_lr: float | None = None
    chosen_forecast: float | None = None
    rejected: list[float] = field(default_factory=list)
    exploit_losses: list[float | None] = field(default_factory=list)
    exploit_target: int = 0
    exploit_best: float | None = None
    from_probe: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageState:
        data = dict(data)
        data["spec"] = StageSpec(**data["spec"])
        data["probes"] = [ProbeRecord(**p) for p in data["probes"]]
        return cls(**data)


class AutoLRS:
    """Tunes the LR of a training run while it trains (AutoLRS, ICLR 2021).

    Call :meth:`step` with the loss after every optimizer step. Training is cut
    into stages; each stage snapshots the training state, probes candidate LRs
    for ``tau_probe`` steps each (restoring the snapshot before each), forecasts
    every probe's loss ``tau`` steps ahead with a fitted ``a*exp(-b*t) + c``,
    picks candidates by Gaussian-process Bayesian optimization over log(lr),
    then trains ``tau`` steps at the best one. Probe steps are training steps:
    they count in ``total_steps``.

    Args:
        model: the model being trained; its parameters and buffers are snapshotted.
        optimizer: its optimizer; autolr owns the LR of every param group. The
            controlled LR is a scale: each group keeps its ratio to the first
            group's LR at construction.
        min_lr: lower bound of the LR search (first param group's LR, linear scale).
        max_lr: upper bound of the LR search.
        total_steps: the step budget, probes included. When given, stages are
            sized to fit it and the last ``anneal_fraction`` decays linearly;
            ``finished`` turns True when it is spent. None: AutoLRS stage sizes,
            no anneal, never finished.
        tau: first stage's exploit horizon in steps (AutoLRS: 1000; sized from
            the budget when ``total_steps`` is given).
        tau_max: largest ``tau`` (AutoLRS: 8000; budget: ``8 * tau``).
        tau_probe: probe length in steps (default ``probe_fraction * tau``).
        probe_fraction: ``tau_probe / tau`` when ``tau_probe`` is not given (0.1).
        growth: factor by which ``tau`` grows each stage (2).
        probes: candidate LRs probed per stage (AutoLRS: 10; 3 with a budget).
        parallel_probes: candidates proposed at once (batch acquisition); used by
            a parallel ``prober``.
        min_probe_steps: shortest probe worth running; a stage whose probes
            would be shorter skips its search (5).
        val_fn: optional ``() -> float`` validation loss. When given, the
            objective is the validation loss: evaluated once at the stage
            snapshot (``t = 0`` of every probe), every ``val_every`` probe steps
            and at each probe's end; else the training loss of every step.
            It must leave the model in training mode.
        val_every: probe steps between validation evaluations (5; at most a
            quarter of ``tau_probe`` so every probe gets at least 5 points).
        warmup_steps: steps of linear warmup from 0 to ``warmup_lr`` before the
            first stage (0).
        warmup_lr: LR reached at the end of warmup (default: the geometric mean
            of ``min_lr`` and ``max_lr``).
        anneal_fraction: fraction of ``total_steps`` decayed linearly at the end
            (default 0.1 with a budget; 0 disables).
        anneal_to: LR at the end of the anneal, as a fraction of the LR it starts from (0).
        keep_winner: continue the exploit from the best probe's end state rather
            than re-training its steps (True).
        early_abort: stop a probe whose loss blows up (``blowup_factor`` times
            the loss at the snapshot); non-finite losses always stop a probe (True).
        blowup_factor: see ``early_abort`` (2.0).
        guard_factor: during the exploit, a loss whose recent median exceeds
            ``guard_factor`` times the stage's start loss rolls back to the
            snapshot and takes the next-best candidate (1.5).
        acquisition: ``"ei"`` (log expected improvement), ``"ucb"`` (confidence
            bound with ``ucb_beta``) or ``"lcb-autolrs"`` (the paper's kappa = 1e6).
        ucb_beta: exploration weight of ``"ucb"`` (2.0).
        initial_probes: space-filling probes per stage before the GP is used (3).
        warm_start: share what earlier stages learned through a GP over
            ``(log lr, training progress)`` (False).
        forecaster: ``"exponential"``, ``"power_law"`` or a forecaster object.
        loss_floor: lowest loss possible (0.0; None for losses that can be
            negative). The exponential fit keeps its asymptote at or above it and
            forecasts are clamped to it, so a short, steeply falling probe does
            not extrapolate to an impossible loss.
        forecast_pessimism: forecast the highest value among the curve rates
            the probe's data cannot rule out (profile likelihood, in ``z``
            units; 0: the point forecast). Counters the short-horizon bias of
            extrapolating a still-straight loss curve (exponential forecaster).
        decide_by: ``"forecast"`` (the lowest forecast, as in AutoLRS) or
            ``"posterior"`` (the lowest GP posterior mean among the probed LRs,
            which smooths noisy forecasts across neighbouring LRs).
        prefer_larger: counter the short-horizon bias towards small LRs: among
            candidates whose forecast improvement is at least ``1 -
            prefer_larger`` times the best one's, take the largest LR (0: off).
        lr_trust: after the first stage, each stage probes only LRs within
            this factor of the previous stage's LR, ``[lr / lr_trust, lr *
            lr_trust]`` clipped to ``[min_lr, max_lr]`` (2.0; None: the whole
            range every stage, as in AutoLRS). The first stage searches the
            whole range. Short probes favour small LRs (short-horizon bias), so
            an unrestricted search tends to collapse the LR after the first
            stage; the trust region makes the schedule move by at most this
            factor a stage and lets fewer probes cover the narrower range.
        cap_after_rollback: after the guard rolls an exploit back at some LR,
            the stage's next candidates must be below it (True): every
            rollback reason is a sign of a too-large LR, so a larger candidate
            would most likely fail too and waste its exploit.
        seed: seeds every choice the controller makes; the same seed gives the
            same LR sequence for the same losses.
        gp_device: device of the GP: ``"auto"`` (CUDA when available) or a device name.
        snapshot_device: where snapshots live: ``"cpu"`` (default), ``"same"``
            (the model's device) or a device name.
        extra_state: other objects with ``state_dict``/``load_state_dict`` to
            snapshot and restore with the model (a ``GradScaler``, say).
        log_path: JSON-lines run log to append to (None: in memory only, see ``log``).
        prober: a :class:`autolr.probing.ProbeBackend` that runs probes itself
            (in this process or on Ray workers). Without one, the probes run
            inline in the caller's loop.
        trace: keep the LR, loss and phase of every step in memory (17 bytes a step).

    Raises:
        ConfigError: a setting is out of range, names the value given.
        InputError: ``model`` or ``optimizer`` is not what is expected.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        min_lr: float,
        max_lr: float,
        total_steps: int | None = None,
        *,
        tau: int | None = None,
        tau_max: int | None = None,
        tau_probe: int | None = None,
        probe_fraction: float = 0.1,
        growth: float = 2.0,
        probes: int | None = None,
        parallel_probes: int = 1,
        min_probe_steps: int = 5,
        val_fn: Callable[[], float] | None = None,
        val_every: int = 5,
        warmup_steps: int = 0,
        warmup_lr: float | None = None,
        anneal_fraction: float | None = None,
        anneal_to: float = 0.0,
        keep_winner: bool = True,
        early_abort: bool = True,
        blowup_factor: float = 2.0,
        guard_factor: float = 1.5,
        acquisition: str = "ei",
        ucb_beta: float = 2.0,
        initial_probes: int = 3,
        warm_start: bool = False,
        forecaster: Any = "exponential",
        loss_floor: float | None = 0.0,
        forecast_pessimism: float = 0.0,
        decide_by: str = "forecast",
        prefer_larger: float = 0.0,
        lr_trust: float | None = 2.0,
        cap_after_rollback: bool = True,
        seed: int = 0,
        gp_device: str = "auto",
        snapshot_device: str = "cpu",
        extra_state: Mapping[str, Stateful] | None = None,
        log_path: str | Path | None = None,
        prober: ProbeBackend | None = None,
        trace: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        groups = getattr(optimizer, "param_groups", None)
        if groups is None:
            raise InputError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if len(groups) == 0:
            raise ConfigError("optimizer has no param groups: nothing to set the LR of")
        self.config = AutoLRSConfig(
            min_lr=min_lr,
            max_lr=max_lr,
            total_steps=total_steps,
            tau=tau,
            tau_max=tau_max,
            tau_probe=tau_probe,
            probe_fraction=probe_fraction,
            growth=growth,
            probes=probes,
            parallel_probes=parallel_probes,
            min_probe_steps=min_probe_steps,
            objective="val_loss" if val_fn is not None else "train_loss",
            val_every=val_every,
            warmup_steps=warmup_steps,
            warmup_lr=warmup_lr,
            anneal_fraction=anneal_fraction,
            anneal_to=anneal_to,
            keep_winner=keep_winner,
            early_abort=early_abort,
            blowup_factor=blowup_factor,
            guard_factor=guard_factor,
            acquisition=acquisition,
            ucb_beta=ucb_beta,
            initial_probes=initial_probes,
            warm_start=warm_start,
            forecaster=forecaster if isinstance(forecaster, str) else type(forecaster).__name__,
            loss_floor=loss_floor,
            forecast_pessimism=forecast_pessimism,
            decide_by=decide_by,
            prefer_larger=prefer_larger,
            lr_trust=lr_trust,
            cap_after_rollback=cap_after_rollback,
            seed=seed,
            gp_device=gp_device,
            snapshot_device=snapshot_device,
        )
        self.model = model
        self.optimizer = optimizer
        self.val_fn = val_fn
        self.extra_state = dict(extra_state or {})
        self.prober = prober
        self.plan = StagePlan(self.config)
        if isinstance(forecaster, str):
            spec: dict[str, Any] = {"name": forecaster, "min_value": loss_floor}
            if self.config.forecast_pessimism > 0:
                spec["pessimism"] = self.config.forecast_pessimism
            self.forecaster = make_forecaster(spec)
        else:
            self.forecaster = make_forecaster(forecaster)
        self.proposer = GPProposer(
            min_lr,
            max_lr,
            acquisition=self.config.acquisition,
            beta=self.config.ucb_beta,
            initial=self.config.initial_probes,
            warm_start=self.config.warm_start,
            seed=seed,
            device=gp_device,
        )
        self.log = RunLog(log_path)
        self._snapshot_device = resolve_snapshot_device(model, self.config.snapshot_device)
        base = float(groups[0]["lr"])
        self.initial_lrs = [float(g["lr"]) for g in groups]
        if base > 0 and math.isfinite(base):
            self.ratios = [lr / base for lr in self.initial_lrs]
        else:
            self.ratios = [1.0] * len(groups)
        self.phase = Phase.WARMUP
        self.global_step = 0
        self.search_steps = 0
        self.exploit_steps = 0
        self.stage_index = 0
        self.stage: StageState | None = None
        self.probe: ProbeRecord | None = None
        self.lr = self._default_lr()
        self._snapshot: Snapshot | None = None
        self._winner: Snapshot | None = None
        self._winner_index: int | None = None
        self._dirty = False
        self._recent: deque[float] = deque(maxlen=16)
        self._anneal: dict[str, float] = {}
        self._batch_cache: tuple[int, list[Any]] = (-1, [])
        self._warned_done = False
        self._val_at_end: float | None = None
        self._trace = trace
        self.trace_lr: array[float] = array("d")
        self.trace_loss: array[float] = array("d")
        self.trace_phase: array[int] = array("b")
        self.log.write(
            "run_start",
            0,
            config=self.config.to_dict(),
            initial_lrs=self.initial_lrs,
            forecaster=self.forecaster.config(),
            prober=type(prober).__name__ if prober is not None else None,
        )
        if self.config.warmup_steps > 0:
            self._log_phase(Phase.WARMUP)
            self._apply_lr(self._warmup_lr(0))
        else:
            self._begin_stage()

    # ------------------------------------------------------------------ API
    @property
    def finished(self) -> bool:
        """True once ``total_steps`` steps (probes included) have been taken."""
        return self.phase is Phase.DONE

    @property
    def in_probe(self) -> bool:
        return self.phase is Phase.PROBE

    def step(self, loss: Any) -> float:
        """Record the loss of the training step just taken and set the next step's LR.

        Args:
            loss: the step's training loss: a Python number or a one-element
                tensor (averaged over ranks under data parallelism). A
                non-finite loss is not an error: in a probe it marks the probe
                diverged; in the exploit it rolls back to the stage snapshot.

        Returns:
            The base LR set for the next step. The model and optimizer may have
            been restored to the stage snapshot (check :attr:`restored`).

        Raises:
            InputError: ``loss`` is not a number or one-element tensor.
        """
        value = self._to_float(loss)
        self.restored = False
        if self.phase is Phase.DONE:
            if not self._warned_done:
                logger.warning("step() called after the budget was spent; the LR stays %g", self.lr)
                self._warned_done = True
            return self.lr
        if self._trace:
            self.trace_lr.append(self.current_lr)
            self.trace_loss.append(value)
            self.trace_phase.append(PHASE_CODES[self.phase])
        self.global_step += 1
        if self.phase is Phase.WARMUP:
            self._on_warmup(value)
        elif self.phase is Phase.PROBE:
            self._on_probe(value)
        elif self.phase is Phase.EXPLOIT:
            self._on_exploit(value)
        elif self.phase is Phase.ANNEAL:
            self._on_anneal(value)
        total = self.config.total_steps
        if total is not None and self.global_step >= total and self.phase is not Phase.DONE:
            self._finish()
        return self.lr

    restored: bool = False

    def restore_snapshot(self) -> bool:
        """Put the stage snapshot back into the model and optimizer.

        Used after an exception in the middle of a probe, so the model never
        goes on from a probe's state. Returns False when there is no snapshot.
        """
        if self._snapshot is None:
            return False
        self._restore(self._snapshot)
        return True

    def __enter__(self) -> AutoLRS:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self.phase is Phase.PROBE and self._dirty:
            logger.warning("exception during a probe: restoring the stage snapshot")
            self.restore_snapshot()
            self._set_lr(self.lr)

    def batches(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """Yield batches so that every probe of a stage sees the same batches.

        Wrap the training data: ``for batch in tuner.batches(loader): ...``.
        During a stage's search the first probe's batches are cached and replayed
        for the others, so probes differ by their LR and not by their data. The
        cache lives on the tuner (it survives a new epoch's iterator) and is not
        saved in ``state_dict``. Stops when the budget is spent.
        """
        it = iter(iterable)
        while not self.finished:
            if self.phase is Phase.PROBE and self.probe is not None:
                stage, cache = self._batch_cache
                if stage != self.stage_index:
                    cache = []
                    self._batch_cache = (self.stage_index, cache)
                i = self.probe.steps
                if i < len(cache):
                    yield cache[i]
                    continue
                try:
                    batch = next(it)
                except StopIteration:
                    return
                cache.append(batch)
                yield batch
            else:
                try:
                    yield next(it)
                except StopIteration:
                    return

    # --------------------------------------------------------- transitions
    def _on_warmup(self, value: float) -> None:
        if math.isfinite(value):
            self._recent.append(value)
        if self.global_step >= self.config.warmup_steps:
            self._begin_stage()
        else:
            self._apply_lr(self._warmup_lr(self.global_step))

    def _begin_stage(self) -> None:
        remaining = None
        if self.config.total_steps is not None:
            remaining = self._anneal_start - self.global_step
        spec = self.plan.stage(self.stage_index, remaining)
        if spec.cost <= 0:
            self._enter_tail()
            return
        bounds = self._stage_bounds()
        ref = statistics.median(self._recent) if self._recent else None
        # The objective at the snapshot (t = 0 of every probe), before the capture so
        # that whatever RNG the validation draws is the same for every probe.
        val0, self._val_at_end = self._val_at_end, None
        if self.val_fn is not None and spec.probes > 0 and val0 is None:
            val0 = finite_or_none(float(self.val_fn()))
        self.stage = StageState(
            spec=spec,
            start_step=self.global_step,
            progress=self._progress(),
            ref_loss=ref,
            noise=_robust_sd(list(self._recent)),
            recent_max=max(self._recent) if self._recent else None,
            val0=val0,
        )
        self._snapshot = capture(
            self.model,
            self.optimizer,
            self.extra_state,
            device=self._snapshot_device,
            step=self.global_step,
        )
        self._winner, self._winner_index = None, None
        self._dirty = False
        self.proposer.reset(self.stage_index, self.stage.progress, bounds)
        self.log.write(
            "stage_start",
            self.global_step,
            stage=self.stage_index,
            tau=spec.tau,
            tau_probe=spec.tau_probe,
            probes=spec.probes,
            exploit_steps=spec.exploit_steps,
            recent=list(self._recent),
            lr_bounds=list(bounds) if bounds is not None else None,
        )
        logger.info(
            "stage %d: tau=%d tau_probe=%d probes=%d",
            self.stage_index,
            spec.tau,
            spec.tau_probe,
            spec.probes,
        )
        if spec.probes == 0:
            self.stage.chosen_lr = self.lr
            self._start_exploit(spec.exploit_steps, from_probe=False)
            return
        if self.prober is not None:
            self._search_with_backend()
            return
        self._start_probe(self.proposer.propose(1)[0])

    def _start_probe(self, lr: float) -> None:
        assert self.stage is not None and self._snapshot is not None
        if self._dirty:
            self._restore(self._snapshot)
        self.probe = ProbeRecord(lr=lr)
        if self.val_fn is not None:
            self.probe.t, self.probe.losses = [0.0], [self.stage.val0]
        self.phase = Phase.PROBE
        self._set_lr(lr)

    def _on_probe(self, value: float) -> None:
        assert self.stage is not None and self.probe is not None
        probe, stage = self.probe, self.stage
        self._dirty = True
        self.search_steps += 1
        probe.train_losses.append(finite_or_none(value))
        k = probe.steps
        if self.val_fn is None:
            probe.t.append(float(k - 1))
            probe.losses.append(finite_or_none(value))
        elif k % self._val_every() == 0 or k == stage.spec.tau_probe:
            probe.t.append(float(k))
            probe.losses.append(finite_or_none(float(self.val_fn())))
        reason = stop_reason(
            probe.train_losses,
            self._abort_ref(),
            self.config.blowup_factor,
            self.config.early_abort,
            stage.noise,
        )
        if reason is None and probe.losses and probe.losses[-1] is None:
            reason = "non-finite validation loss"
        if reason is not None:
            probe.diverged, probe.reason = True, reason
            self._finish_probe()
        elif k >= stage.spec.tau_probe:
            self._finish_probe()

    def _finish_probe(self, advance: bool = True) -> None:
        assert self.stage is not None and self.probe is not None
        stage, probe = self.stage, self.probe
        stage.probes.append(probe)
        if stage.ref_loss is None:
            firsts = [
                p.train_losses[0]
                for p in stage.probes
                if p.train_losses and p.train_losses[0] is not None
            ]
            stage.ref_loss = statistics.median(firsts) if firsts else None
        if not probe.diverged:
            self._forecast(probe, stage.spec.tau)
        self.proposer.observe(probe.lr, probe.forecast)
        self.log.write(
            "probe",
            self.global_step,
            stage=self.stage_index,
            index=len(stage.probes) - 1,
            **_probe_fields(probe),
        )
        logger.info(
            "probe %d.%d lr=%.3g forecast=%s%s",
            self.stage_index,
            len(stage.probes) - 1,
            probe.lr,
            probe.forecast,
            f" ({probe.reason})" if probe.reason else "",
        )
        if self.config.keep_winner and probe.forecast is not None and self.prober is None:
            best = min((p.forecast for p in stage.probes if p.forecast is not None), default=None)
            if probe.forecast == best:
                self._winner = capture(
                    self.model,
                    self.optimizer,
                    self.extra_state,
                    device=self._snapshot_device,
                    step=self.global_step,
                )
                self._winner_index = len(stage.probes) - 1
        self.probe = None
        if not advance:
            return
        if len(stage.probes) < stage.spec.probes:
            if self.prober is None:
                self._start_probe(self.proposer.propose(1)[0])
        else:
            self._decide("best_forecast")

    def _stage_bounds(self) -> tuple[float, float] | None:
        """LRs the next stage may probe: within ``lr_trust`` of the last stage's LR.

        None (the whole range) for the first stage, without ``lr_trust``, and
        after a stage that fell back to ``min_lr`` because every candidate failed.
        Called before the new stage replaces ``self.stage``.
        """
        trust, cfg = self.config.lr_trust, self.config
        last = self.stage
        if trust is None or last is None or last.chosen_forecast is None:
            return None
        lo = max(cfg.min_lr, self.lr / trust)
        hi = min(cfg.max_lr, self.lr * trust)
        return (lo, hi) if lo < hi else None

    def _forecast(self, probe: ProbeRecord, tau: int) -> None:
        t = torch.tensor(probe.t, dtype=torch.float64)
        y = torch.tensor(
            [math.nan if v is None else v for v in probe.losses], dtype=torch.float64
        ).unsqueeze(0)
        try:
            fc = self.forecaster.forecast(t, y, float(tau))
        except FitError as exc:
            probe.diverged, probe.reason = True, f"forecast failed: {exc}"
            return
        value = float(fc.values[0])
        if not math.isfinite(value):
            probe.diverged, probe.reason = True, "forecast not finite"
            return
        probe.forecast = value
        probe.fit = {k: float(v[0]) for k, v in fc.params.items()}
        probe.fit["sse"] = float(fc.sse[0])
        probe.fit["n_used"] = float(fc.n_used[0])

    def _search_with_backend(self) -> None:
        """Run the whole search through ``self.prober``, ``parallel_probes`` at a time."""
        assert self.stage is not None and self._snapshot is not None and self.prober is not None
        stage, cfg = self.stage, self.config
        while len(stage.probes) < stage.spec.probes:
            q = min(cfg.parallel_probes, stage.spec.probes - len(stage.probes))
            lrs = self.proposer.propose(q)
            requests = [
                ProbeRequest(
                    lr=lr,
                    steps=stage.spec.tau_probe,
                    stage=self.stage_index,
                    index=len(stage.probes) + i,
                    ref_loss=self._abort_ref(),
                    blowup_factor=cfg.blowup_factor,
                    early_abort=cfg.early_abort,
                    noise=stage.noise,
                    val_every=self._val_every() if self.val_fn is not None else 0,
                    keep_state=cfg.keep_winner,
                )
                for i, lr in enumerate(lrs)
            ]
            outcomes = self.prober.run(self._snapshot, requests)
            for req, out in zip(requests, outcomes):
                probe = ProbeRecord(lr=req.lr, train_losses=list(out.train_losses))
                self.global_step += probe.steps
                self.search_steps += probe.steps
                if out.val is not None:
                    probe.t = [0.0] + [t for t, _ in out.val]
                    probe.losses = [stage.val0] + [v for _, v in out.val]
                else:
                    probe.t = [float(i) for i in range(probe.steps)]
                    probe.losses = list(probe.train_losses)
                if out.error is not None:
                    probe.diverged, probe.reason = True, f"probe failed: {out.error}"
                else:
                    reason = (
                        stop_reason(
                            probe.train_losses,
                            self._abort_ref(),
                            cfg.blowup_factor,
                            cfg.early_abort,
                            stage.noise,
                        )
                        if probe.train_losses
                        else "no steps"
                    )
                    if reason is None and any(v is None for v in probe.losses[1:]):
                        reason = "non-finite validation loss"
                    if reason is not None:
                        probe.diverged, probe.reason = True, reason
                self.probe = probe
                self._finish_probe(advance=False)
                if (
                    out.end_state is not None
                    and probe.forecast is not None
                    and probe.forecast
                    == min(p.forecast for p in stage.probes if p.forecast is not None)
                ):
                    self._winner, self._winner_index = out.end_state, len(stage.probes) - 1
        self._decide("best_forecast")

    def _decide(self, reason: str) -> None:
        assert self.stage is not None and self._snapshot is not None
        stage = self.stage
        ranked = self._rank(self._candidates())
        if ranked and reason == "best_forecast" and self.config.decide_by == "posterior":
            reason = "best_posterior"
        from_probe = False
        if ranked:
            best = ranked[0]
            lr, forecast = best.lr, best.forecast
            index = stage.probes.index(best)
            from_probe = (
                reason in ("best_forecast", "best_posterior")
                and self._winner is not None
                and self._winner_index == index
            )
        else:
            lr, forecast, reason = self.config.min_lr, None, "fallback"
            logger.warning(
                "stage %d: no candidate left; falling back to min_lr=%g", self.stage_index, lr
            )
        if from_probe:
            assert self._winner is not None
            self._restore(self._winner)
            self._dirty = True
        elif self._dirty:
            self._restore(self._snapshot)
        self._winner = None
        stage.chosen_lr, stage.chosen_forecast = lr, forecast
        self.log.write(
            "decision",
            self.global_step,
            stage=self.stage_index,
            lr=lr,
            forecast=forecast,
            reason=reason,
            from_probe=from_probe,
            candidates=[
                {"lr": p.lr, "forecast": p.forecast, "diverged": p.diverged} for p in stage.probes
            ],
        )
        target = stage.spec.exploit_steps
        if not from_probe and self.config.keep_winner and stage.spec.probes > 0:
            target += stage.spec.tau_probe
        self._start_exploit(target, from_probe)

    def _candidates(self) -> list[ProbeRecord]:
        """The stage's probes still eligible: forecast, not rejected, below any rolled-back LR."""
        stage = self.stage
        assert stage is not None
        out = [p for p in stage.probes if p.forecast is not None and p.lr not in stage.rejected]
        if self.config.cap_after_rollback and stage.rejected:
            cap = min(stage.rejected)
            out = [p for p in out if p.lr < cap]
        return out

    def _rank(self, candidates: list[ProbeRecord]) -> list[ProbeRecord]:
        """Candidates best first: by forecast, or by the GP's posterior mean at their LRs."""
        by_forecast = sorted(
            candidates, key=lambda p: p.forecast if p.forecast is not None else math.inf
        )
        if self.config.decide_by != "posterior" or len(candidates) < 3:
            return self._prefer_larger(by_forecast)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed)
                mean, _ = self.proposer.posterior(
                    torch.tensor([p.lr for p in candidates], dtype=torch.float64)
                )
        except FitError as exc:
            logger.warning("posterior ranking failed (%s); ranking by forecast", exc)
            return by_forecast
        order = sorted(range(len(candidates)), key=lambda i: float(mean[i]))
        return self._prefer_larger([candidates[i] for i in order])

    def _prefer_larger(self, ranked: list[ProbeRecord]) -> list[ProbeRecord]:
        """Move to the front the largest LR whose forecast gain is near the best one's.

        Short probes are biased towards small LRs (they cut the noise at once,
        while a large LR's gain shows over a longer horizon). With
        ``prefer_larger = d``, any candidate whose forecast improvement over the
        stage start loss is at least ``1 - d`` times the best candidate's counts
        as a tie, and the tie goes to the largest LR.
        """
        d = self.config.prefer_larger
        stage = self.stage
        if d <= 0 or len(ranked) < 2 or stage is None or stage.ref_loss is None:
            return ranked
        ref = stage.val0 if self.val_fn is not None and stage.val0 is not None else stage.ref_loss
        best = ranked[0].forecast
        assert best is not None
        gain = ref - best
        if gain <= 0:
            return ranked
        near = [p for p in ranked if p.forecast is not None and ref - p.forecast >= (1 - d) * gain]
        pick = max(near, key=lambda p: p.lr)
        return [pick] + [p for p in ranked if p is not pick]

    def _start_exploit(self, target: int, from_probe: bool) -> None:
        assert self.stage is not None
        self.stage.exploit_target = target
        self.stage.exploit_losses = []
        self.stage.exploit_best = None
        self.stage.from_probe = from_probe
        self.phase = Phase.EXPLOIT
        self._set_lr(self.stage.chosen_lr if self.stage.chosen_lr is not None else self.lr)

    def _on_exploit(self, value: float) -> None:
        assert self.stage is not None
        stage = self.stage
        self._dirty = True
        self.exploit_steps += 1
        stage.exploit_losses.append(finite_or_none(value))
        if math.isfinite(value):
            self._recent.append(value)
        window = self._guard_window()
        if not math.isfinite(value):
            self._rollback("non-finite loss")
            return
        # The median over a long window costs tens of microseconds: check it every
        # tenth of a window (a blow-up is caught at most that many steps later).
        stride = max(1, window // 10)
        if len(stage.exploit_losses) % stride == 0:
            reason = self._guard_reason(stage.exploit_losses[-window:], window)
            if reason is not None:
                self._rollback(reason)
                return
        done = len(stage.exploit_losses) >= stage.exploit_target and not stage.spec.final
        if done or self._at_anneal():
            reason = self._end_guard()
            if reason is not None:
                self._rollback(reason)
                return
            self._end_exploit()

    def _guard_reason(self, recent: list[float | None], window: int) -> str | None:
        """Why the exploit must roll back, or None.

        Fires when the median of the last ``window`` losses exceeds
        ``guard_factor`` times the stage's start loss, or when the exploit had
        clearly improved (below start / ``guard_factor``) and then gave back
        nine tenths of that gain: the signature of a network the LR killed.
        """
        stage = self.stage
        assert stage is not None
        ref = self._guard_ref(len(recent), window)
        if ref is None:
            return None
        med = statistics.median(v for v in recent if v is not None)
        gf = self.config.guard_factor
        # "Clearly" above: beyond the factor and beyond the per-step noise.
        margin = 4.0 * self._noise()
        stage.exploit_best = med if stage.exploit_best is None else min(stage.exploit_best, med)
        if med > max(gf * ref, ref + margin):
            return f"loss rose above {gf:g}x the stage start loss"
        best = stage.exploit_best
        if best < min(ref / gf, ref - margin) and med - best > 0.9 * (ref - best):
            return "loss fell, then rose back to the stage start loss"
        return None

    def _guard_ref(self, n_recent: int, window: int) -> float | None:
        """The stage's start loss when the guard judges this exploit, else None.

        The guard needs a known start loss, a searched stage, a full window, and
        an LR not already rejected (the fallback).
        """
        stage = self.stage
        assert stage is not None
        if stage.spec.probes == 0 or n_recent < window or stage.chosen_lr in stage.rejected:
            return None
        return stage.ref_loss

    def _end_guard(self) -> str | None:
        """At the end of an exploit: did the stage leave the loss clearly above its start?

        A too-large LR can degrade training slowly, stage after stage, without
        ever crossing the in-exploit thresholds. A stage whose last losses sit
        above the loss at its snapshot by more than the per-step noise allows
        is rolled back like any other failed exploit.
        """
        stage = self.stage
        assert stage is not None
        window = self._guard_window()
        recent = [v for v in stage.exploit_losses[-window:] if v is not None]
        ref = self._guard_ref(len(recent), window)
        if ref is None:
            return None
        margin = 4.0 * self._noise() / math.sqrt(window) + 0.02 * abs(ref)
        if statistics.median(recent) > ref + margin:
            return "the stage ended above its start loss"
        return None

    def _noise(self) -> float:
        """Per-step loss noise (robust sd): from the losses before the snapshot, else the fits."""
        assert self.stage is not None
        rmse = [
            math.sqrt(p.fit["sse"] / max(p.fit["n_used"], 1.0))
            for p in self.stage.probes
            if p.fit is not None and "sse" in p.fit
        ]
        return max(self.stage.noise, statistics.median(rmse) if rmse else 0.0)

    def _abort_ref(self) -> float | None:
        """Loss level the blow-up rule compares with: the highest of the last
        losses before the snapshot (per-batch losses near zero are heavy-tailed,
        so their median would make ordinary batches look like a blow-up)."""
        assert self.stage is not None
        if self.stage.recent_max is not None:
            return self.stage.recent_max
        return self.stage.ref_loss

    def _val_every(self) -> int:
        """Probe steps between validation evaluations: ``val_every``, at most a quarter probe."""
        assert self.stage is not None
        return max(1, min(self.config.val_every, self.stage.spec.tau_probe // 4))

    def _guard_window(self) -> int:
        assert self.stage is not None
        return max(3, self.stage.spec.tau_probe // 2)

    def _rollback(self, reason: str) -> None:
        assert self.stage is not None and self._snapshot is not None
        stage = self.stage
        lr = stage.chosen_lr if stage.chosen_lr is not None else self.lr
        logger.warning("stage %d: exploit at lr=%g rolled back (%s)", self.stage_index, lr, reason)
        self.log.write(
            "rollback",
            self.global_step,
            stage=self.stage_index,
            lr=lr,
            reason=reason,
            losses=stage.exploit_losses,
        )
        stage.rejected.append(lr)
        for p in stage.probes:
            if p.lr == lr:
                p.rolled_back = True
        self.proposer.mark_diverged(lr)
        self._restore(self._snapshot)
        self.restored = True
        self._dirty = False
        if self._at_anneal():
            # No budget to exploit again: anneal from the snapshot at the next-best LR.
            ranked = self._rank(self._candidates())
            self._set_lr(ranked[0].lr if ranked else self.config.min_lr)
            self.stage_index += 1
            self._enter_tail()
        else:
            self._decide("rollback")

    def _end_exploit(self) -> None:
        assert self.stage is not None
        stage = self.stage
        finite = [v for v in stage.exploit_losses[-self._guard_window() :] if v is not None]
        actual_train = statistics.median(finite) if finite else None
        actual = actual_train
        if self.val_fn is not None:
            # The objective reached, on the forecast's scale; it is also the next
            # stage's value at its snapshot, taken at this same state.
            actual = finite_or_none(float(self.val_fn()))
            self._val_at_end = actual
        self.log.write(
            "exploit_end",
            self.global_step,
            stage=self.stage_index,
            lr=stage.chosen_lr,
            forecast=stage.chosen_forecast,
            actual=actual,
            actual_train=actual_train,
            steps=len(stage.exploit_losses),
            losses=stage.exploit_losses,
        )
        self.stage_index += 1
        if self._at_anneal():
            self._enter_tail()
        else:
            self._begin_stage()

    def _enter_tail(self) -> None:
        """After the last stage: the final anneal, or done."""
        if self.config.total_steps is None:
            return
        steps = self.config.total_steps - self.global_step
        if steps <= 0:
            self._finish()
            return
        self._anneal = {"start": float(self.global_step), "steps": float(steps), "lr": self.lr}
        self.phase = Phase.ANNEAL
        self._log_phase(Phase.ANNEAL)
        self._apply_lr(self._anneal_lr())

    def _on_anneal(self, value: float) -> None:
        if math.isfinite(value):
            self._recent.append(value)
        self._apply_lr(self._anneal_lr())

    def _finish(self) -> None:
        if self.phase is Phase.PROBE and self._dirty and self._snapshot is not None:
            self._restore(self._snapshot)
        self.phase = Phase.DONE
        self._log_phase(Phase.DONE)
        self.log.write(
            "run_end",
            self.global_step,
            search_steps=self.search_steps,
            exploit_steps=self.exploit_steps,
            total=self.global_step,
        )

    # -------------------------------------------------------------- helpers
    @property
    def _anneal_start(self) -> int:
        total = self.config.total_steps
        return math.inf if total is None else total - self.config.anneal_steps  # type: ignore[return-value]

    def _at_anneal(self) -> bool:
        return self.config.total_steps is not None and self.global_step >= self._anneal_start

    def _progress(self) -> float:
        total = self.config.total_steps
        return 0.0 if total is None else self.global_step / total

    def _default_lr(self) -> float:
        return math.sqrt(self.config.min_lr * self.config.max_lr)

    def _warmup_lr(self, done: int) -> float:
        target = self.config.warmup_lr or self._default_lr()
        return target * (done + 1) / self.config.warmup_steps

    def _anneal_lr(self) -> float:
        a = self._anneal
        j = self.global_step - a["start"]
        frac = max(0.0, (a["steps"] - j) / (a["steps"] + 1))
        to = self.config.anneal_to
        return a["lr"] * (to + (1 - to) * frac)

    def _apply_lr(self, lr: float) -> None:
        """Set the optimizer's LR without changing the tuned LR (warmup and anneal)."""
        set_group_lrs(self.optimizer, lr, self.ratios)
        self.current_lr = lr

    def _set_lr(self, lr: float) -> None:
        self.lr = lr
        self._apply_lr(lr)

    current_lr: float = 0.0

    def _restore(self, snap: Snapshot) -> None:
        restore(snap, self.model, self.optimizer, self.extra_state)
        self.restored = True
        set_group_lrs(self.optimizer, self.current_lr, self.ratios)

    def _log_phase(self, phase: Phase) -> None:
        self.log.write("phase", self.global_step, phase=phase.value, lr=self.lr)

    @staticmethod
    def _to_float(loss: Any) -> float:
        if isinstance(loss, bool):
            raise InputError(f"loss must be a number or a one-element tensor, got {loss!r}")
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise InputError(
                    f"loss must be a number or a one-element tensor, got a tensor of shape "
                    f"{tuple(loss.shape)}"
                )
            return float(loss.detach().float().item())
        if isinstance(loss, (int, float)):
            return float(loss)
        try:
            import numpy as np

            if isinstance(loss, np.generic) or (isinstance(loss, np.ndarray) and loss.size == 1):
                return float(loss)
        except ImportError:  # pragma: no cover
            pass
        raise InputError(
            f"loss must be a number or a one-element tensor, got {type(loss).__name__}: {loss!r}"
        )

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The controller's state: plain data, plus the snapshots' tensors.

        Everything but ``"snapshot"`` and ``"winner"`` is JSON-friendly. Save it
        with ``torch.save`` beside the model and optimizer; a run restored from
        it continues the current stage's search where it stopped.
        """
        return {
            "schema_version": STATE_SCHEMA_VERSION,
            "config": self.config.to_dict(),
            "phase": self.phase.value,
            "global_step": self.global_step,
            "search_steps": self.search_steps,
            "exploit_steps": self.exploit_steps,
            "stage_index": self.stage_index,
            "stage": self.stage.to_dict() if self.stage is not None else None,
            "probe": asdict(self.probe) if self.probe is not None else None,
            "lr": self.lr,
            "current_lr": self.current_lr,
            "ratios": list(self.ratios),
            "recent": list(self._recent),
            "anneal": dict(self._anneal),
            "dirty": self._dirty,
            "winner_index": self._winner_index,
            "proposer": self.proposer.state_dict(),
            "snapshot": self._snapshot.to_state() if self._snapshot is not None else None,
            "winner": self._winner.to_state() if self._winner is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`; the model and optimizer must be loaded separately.

        Raises:
            StateError: unknown schema version or missing keys.
        """
        version = state.get("schema_version")
        if version != STATE_SCHEMA_VERSION:
            raise StateError(
                f"cannot load AutoLRS state of schema_version={version!r}; "
                f"this version reads {STATE_SCHEMA_VERSION}"
            )
        try:
            saved = AutoLRSConfig.from_dict(dict(state["config"]))
            if saved.to_dict() != self.config.to_dict():
                logger.warning(
                    "loading AutoLRS state saved with other settings; using the saved ones"
                )
                self.config = saved
                self.plan = StagePlan(saved)
            self.phase = Phase(state["phase"])
            self.global_step = int(state["global_step"])
            self.search_steps = int(state["search_steps"])
            self.exploit_steps = int(state["exploit_steps"])
            self.stage_index = int(state["stage_index"])
            self.stage = StageState.from_dict(state["stage"]) if state["stage"] else None
            self.probe = ProbeRecord(**state["probe"]) if state["probe"] else None
            self.lr = float(state["lr"])
            self.current_lr = float(state["current_lr"])
            self.ratios = [float(r) for r in state["ratios"]]
            self._recent = deque((float(v) for v in state["recent"]), maxlen=16)
            self._anneal = {k: float(v) for k, v in state["anneal"].items()}
            self._dirty = bool(state["dirty"])
            self._winner_index = state["winner_index"]
            self.proposer.load_state_dict(state["proposer"])
            snap, win = state["snapshot"], state["winner"]
        except KeyError as exc:
            raise StateError(f"AutoLRS state is missing the key {exc}") from exc
        self._snapshot = Snapshot.from_state(snap) if snap is not None else None
        self._winner = Snapshot.from_state(win) if win is not None else None
        self._batch_cache = (-1, [])
        set_group_lrs(self.optimizer, self.current_lr, self.ratios)
        self.log.write("phase", self.global_step, phase="resume", lr=self.lr)

    # ------------------------------------------------------------- reports
    def summary(self) -> list[dict[str, Any]]:
        """One row per finished stage: LR chosen, forecast and the loss actually reached."""
        rows = []
        for rec in self.log.of_type("exploit_end"):
            rows.append({k: rec.get(k) for k in ("stage", "lr", "forecast", "actual", "steps")})
        return rows


def _robust_sd(values: list[float]) -> float:
    """1.4826 times the median absolute deviation (0 for fewer than 3 values)."""
    if len(values) < 3:
        return 0.0
    med = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - med) for v in values)


def _probe_fields(probe: ProbeRecord) -> dict[str, Any]:
    out = asdict(probe)
    out["steps"] = probe.steps
    return out
