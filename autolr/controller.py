r"""The AutoLRS controller: an explicit state machine driven by ``step(loss)``.

Phases and transitions (one method each)::

    (start) --_begin_range--> RANGE       (no full range given, or strategy "anneal":
                                           the LR ramp from a snapshot of the start)
    RANGE --_on_range (ramp stopped, start restored)--> _begin_training
    (start) --_begin_training--> WARMUP (warmup_steps > 0) | _begin_stage
    WARMUP --_begin_stage--> PROBE        (stage snapshot taken; _search starts probe 0;
       |                                   a probe of the annealed race ends in a cooldown)
       |                     PROBE --_finish_probe + _search--> PROBE (next candidate,
       |                                                              snapshot restored)
       |                     PROBE --_finish_probe + _search--> _decide --> EXPLOIT
       |                                   (every probe done, or strategy.searched_enough)
       |  (with a prober, _search runs the probes, in batches, inside _begin_stage, then _decide)
       |  (a stage with no search: _begin_stage --> EXPLOIT at the current LR)
       \--(no stage fits)--> _enter_tail
    EXPLOIT --_rollback (guard fired)--> _decide --> EXPLOIT at the next-best candidate
                                          (annealed race: from the hold's best state)
    EXPLOIT --_climb (no candidate left a plateau)--> EXPLOIT at twice the LR
    EXPLOIT --_rollback at the anneal--> ANNEAL from the snapshot at the next-best LR
    EXPLOIT --_end_exploit--> _begin_stage (next stage) | _enter_tail
    _enter_tail --> ANNEAL (with a budget) | DONE (budget spent) | EXPLOIT on (no budget)
    any phase --budget spent--> _finish --> DONE

The controller sees only training steps and losses; it owns the LR, takes and
restores snapshots, guards exploits, and writes every probe and decision to the
run log. What to probe, how to score a probe, what to pick and how to decay are
asked of its strategy (:mod:`autolr.strategy`).
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import warnings
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autolr.config import STRATEGIES, AutoLRSConfig, check_option_names, options_doc
from autolr.errors import (
    AutoLRWarning,
    ConfigError,
    InputError,
    NonFiniteWarning,
    RangeWarning,
    SchedulerConflictWarning,
    StateError,
)
from autolr.forecast import Forecaster
from autolr.inputs import check_parts, finite_weights, loss_value
from autolr.plan import StagePlan, StageSpec
from autolr.probing import (
    ProbeBackend,
    ProbeOutcome,
    ProbeRecord,
    ProbeRequest,
    check_outcome,
    cooldown_lr,
    finite_or_none,
    group_ratios,
    set_group_lrs,
    stop_reason,
)
from autolr.proposer import Proposer
from autolr.rangetest import WARM, RangeTest
from autolr.runlog import (
    DECISION,
    EXPLOIT_END,
    PHASE,
    PHASE_RESUME,
    PROBE,
    RANGE_TEST,
    RECOVERY,
    ROLLBACK,
    RUN_END,
    RUN_START,
    STAGE_START,
    RunLog,
)
from autolr.snapshot import (
    Snapshot,
    Stateful,
    capture,
    incompatibility,
    resolve_snapshot_device,
    restore,
)
from autolr.stage import (
    AnnealState,
    StageRow,
    StageState,
    Summary,
    climb,
    end_guard,
    exploit_guard,
    kept_no_gain,
    robust_sd,
)
from autolr.strategy import ForecastStrategy, Strategy, make_strategy

logger = logging.getLogger(__name__)

STATE_SCHEMA_VERSION = 1

MAX_RECOVERIES = 8
"""Halvings of the LR after non-finite losses in warmup or anneal before it is 0."""

PARTS = frozenset(
    {
        "val_fn",
        "extra_state",
        "log_path",
        "prober",
        "strategy",
        "forecaster",
        "proposer",
        "trace",
        "watch_lr",
    }
)
"""Keyword arguments of :class:`AutoLRS` that are objects of the run, not options."""


def strategy_name(
    strategy: Strategy | str | None,
    forecaster: Forecaster | None,
    proposer: Proposer | None,
) -> str | None:
    """The ``strategy`` option for what the caller gave.

    A name wins; a strategy object gives its own name (``forecast`` for one the
    config does not know); a forecaster or proposer handed in are parts of the
    ``forecast`` strategy. None leaves the config's default (``anneal`` with a
    budget, else ``forecast``).
    """
    if isinstance(strategy, str):
        return strategy
    if strategy is not None:
        name = getattr(strategy, "name", None)
        return name if name in STRATEGIES else "forecast"
    if forecaster is not None or proposer is not None:
        return "forecast"
    return None


class Phase(str, Enum):
    """What the current training step is for."""

    WARMUP = "warmup"
    PROBE = "probe"
    EXPLOIT = "exploit"
    ANNEAL = "anneal"
    DONE = "done"
    RANGE = "range"  # last, so the older phases keep their codes


PHASE_CODES = {p: i for i, p in enumerate(Phase)}


class AutoLRS:
    """Tunes the LR of a training run while it trains (AutoLRS, ICLR 2021).

        Call :meth:`step` with the loss after every optimizer step. Training is cut
        into stages; each stage snapshots the training state, probes candidate LRs
        for ``tau_probe`` steps each (restoring the snapshot before each), lets the
        decision strategy score and rank them, then trains at the best one. Probe
        steps are training steps: they count in ``total_steps``.

        Args:
            model: the model being trained; its parameters and buffers are snapshotted.
            optimizer: its optimizer; autolr owns the LR of every param group. The
                controlled LR is a scale: each group keeps its ratio to the first
                group's LR at construction.
            min_lr, max_lr, total_steps: options (below), also taken by position.
            val_fn: optional ``() -> float`` validation loss. When given, the
                objective is the validation loss: evaluated once at the stage
                snapshot (``t = 0`` of every probe) and at each probe's end (the
                annealed race's: after its cooldown), and with the ``forecast``
                strategy every ``val_every`` probe steps; else the training loss of
                every step. It must leave the model in training mode.
            extra_state: other objects with ``state_dict``/``load_state_dict`` to
                snapshot and restore with the model (a ``GradScaler``, say).
            log_path: JSON-lines run log to append to (None: in memory only, see ``log``).
            prober: a :class:`autolr.probing.ProbeBackend` that runs probes itself
                (in this process or on Ray workers). Without one, the probes run
                inline in the caller's loop.
            strategy: the decision rule: a name (the ``strategy`` option below;
                default ``anneal`` with ``total_steps``, else ``forecast``) or a
                :class:`autolr.strategy.Strategy` object.
            forecaster: a :class:`autolr.forecast.Forecaster` for the ``forecast``
                strategy (default: exponential, with ``loss_floor``); giving one
                (or a proposer) without naming a strategy picks ``forecast``.
            proposer: a :class:`autolr.proposer.Proposer` for the ``forecast``
                strategy (default: the GP over ``[min_lr, max_lr]``).
            trace: keep the LR, loss and phase of every step in memory (17 bytes a step).
            watch_lr: warn when other code (an LR scheduler on the same optimizer)
                changes the LR autolr set. Adapters that manage the framework's
                scheduler themselves turn it off.
            **options: the settings of :class:`autolr.config.AutoLRSConfig`:

    {options}

        Raises:
            ConfigError: a setting is out of range or unknown, names the value given.
            InputError: ``model`` or ``optimizer`` is not what is expected.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        min_lr: float | None = None,
        max_lr: float | None = None,
        total_steps: int | None = None,
        *,
        val_fn: Callable[[], float] | None = None,
        extra_state: Mapping[str, Stateful] | None = None,
        log_path: str | Path | None = None,
        prober: ProbeBackend | None = None,
        strategy: Strategy | str | None = None,
        forecaster: Forecaster | None = None,
        proposer: Proposer | None = None,
        trace: bool = True,
        watch_lr: bool = True,
        **options: Any,
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
        check_parts(model, optimizer, val_fn, extra_state, log_path, prober, watch_lr)
        check_option_names(options)
        options["strategy"] = strategy_name(strategy, forecaster, proposer)
        if isinstance(strategy, str):  # a strategy by name is an option
            strategy = None
        self.config = AutoLRSConfig(
            min_lr=min_lr,  # type: ignore[arg-type]
            max_lr=max_lr,  # type: ignore[arg-type]
            total_steps=total_steps,
            objective="val_loss" if val_fn is not None else "train_loss",
            **options,
        )
        self.model = model
        self.optimizer = optimizer
        self.val_fn = val_fn
        self.extra_state = dict(extra_state or {})
        self.prober = prober
        self.plan = StagePlan(self.config)
        if self.config.total_steps is None:
            first = self.plan.stage(0, None)
            logger.warning(
                "no total_steps given: stages take the AutoLRS sizes, stage 0 alone is %d "
                "steps of which %d are probes, and nothing anneals; on a run shorter than about "
                "%d steps most steps go to probes: pass total_steps=<your run's steps>",
                first.cost,
                first.search_steps,
                20 * first.search_steps,
            )
        if strategy is not None and (forecaster is not None or proposer is not None):
            raise ConfigError(
                "give forecaster= and proposer= to the strategy itself, not beside strategy="
            )
        self.strategy: Strategy = (
            strategy
            if strategy is not None
            else make_strategy(self.config, forecaster=forecaster, proposer=proposer)
        )
        cfg = self.config
        self.search_range: tuple[float, float] | None = (
            (cfg.min_lr, cfg.max_lr) if cfg.min_lr is not None and cfg.max_lr is not None else None
        )
        # Held until construction succeeds: a failed one leaves no line in the file.
        self.log = RunLog(log_path, hold=True)
        self._snapshot_device = resolve_snapshot_device(model, self.config.snapshot_device)
        if self._snapshot_device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"snapshot_device={self.config.snapshot_device!r}, but CUDA is not available"
            )
        self.initial_lrs = [float(g["lr"]) for g in groups]
        self.ratios = group_ratios(optimizer)
        self.phase = Phase.WARMUP
        self.global_step = 0
        self.search_steps = 0
        # Of them, the winners' probe steps the exploit continued from (not lost).
        self.kept_steps = 0
        self.exploit_steps = 0
        self.stage_index = 0
        self.stage: StageState | None = None
        self.probe: ProbeRecord | None = None
        self.lr = self._default_lr()
        self.current_lr = 0.0
        self.restored = False
        self._snapshot: Snapshot | None = None
        # The best probe's end state, when keep_winner keeps it (index in stage.winner).
        self._winner: Snapshot | None = None
        # True while the model has moved away from the stage snapshot.
        self._dirty = False
        self._recent: deque[float] = deque(maxlen=16)
        self._anneal: AnnealState | None = None
        # Steps of the final decay: as planned, until a search decides it.
        self.decay_steps = self.config.anneal_steps
        self._batch_cache: tuple[int, dict[int, Any]] = (-1, {})
        self._warned_done = False
        # Each warning of outside changes is given once.
        self._unwarned = {"lr", "floor"} if watch_lr else {"floor"}
        self._unwarned_edges = {"min_lr", "max_lr"}
        self._last_edge: str | None = None
        # The objective measured at an exploit's end: the next stage's value at its snapshot.
        self._next_val0: float | None = None
        # The training loss when the first stage began: what "no gain kept" is judged against.
        self._start_level: float | None = None
        # Recovery from non-finite losses in warmup and anneal (see _recover).
        self._lr_scale = 1.0
        self._recoveries = 0
        self._warmup_from = 0
        self._warmup_end = self.config.warmup_steps  # the step the warmup ends at
        self._trace = trace
        self.trace_lr: array[float] = array("d")
        self.trace_loss: array[float] = array("d")
        self.trace_phase: array[int] = array("b")
        forecaster_config = getattr(self.strategy, "forecaster", None)
        self.log.write(
            RUN_START,
            0,
            config=self.config.to_dict(),
            initial_lrs=self.initial_lrs,
            forecaster=forecaster_config.config() if forecaster_config is not None else None,
            prober=type(prober).__name__ if prober is not None else None,
            strategy=self.strategy.config(),
        )
        self._range: RangeTest | None = None
        self._precool: Snapshot | None = None
        self._unrun: list[float] = []
        if self.config.needs_range_test:
            self._begin_range()
        else:
            self._begin_training()
        # A prober ran the first stage's search here: until the first step() it is
        # undone by load_state_dict (a rebuilt run resumes), its records held till then.
        self._searched_in_init = self.prober is not None and self.global_step > 0
        if not self._searched_in_init:
            self.log.release()

    # ------------------------------------------------------------------ API
    @staticmethod
    def check_options(
        min_lr: float | None,
        max_lr: float | None,
        total_steps: int | None,
        options: Mapping[str, Any],
        *,
        owner: str = "AutoLRS",
        without: frozenset[str] = frozenset(),
    ) -> AutoLRSConfig:
        """Check keyword arguments as the constructor will, before the model exists.

        For callbacks that build the controller later (at the start of
        training) but should refuse bad options at once.

        Args:
            options: option names (``AutoLRSConfig`` fields) and parts (:data:`PARTS`).
            owner: named in the error message.
            without: parts this caller does not accept.

        Returns:
            The config the options give.

        Raises:
            ConfigError: an unknown name or a bad value, named in the message.
        """
        parts = PARTS - without
        check_option_names(options, owner=owner, extra=parts)
        name = strategy_name(
            options.get("strategy"), options.get("forecaster"), options.get("proposer")
        )
        return AutoLRSConfig(
            min_lr=min_lr,
            max_lr=max_lr,
            total_steps=total_steps,
            strategy=name,
            **{k: v for k, v in options.items() if k not in parts},
        )

    @property
    def finished(self) -> bool:
        """True once ``total_steps`` steps (probes included) have been taken."""
        return self.phase is Phase.DONE

    @property
    def in_probe(self) -> bool:
        return self.phase is Phase.PROBE

    @property
    def in_search(self) -> bool:
        """In a probe or the range test: steps from a snapshot that will be put back."""
        return self.phase in (Phase.PROBE, Phase.RANGE)

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
        value = loss_value(loss)
        self.restored = False
        if self._searched_in_init:
            self._searched_in_init = False
            self.log.release()
        if self._unwarned:
            self._check_outside_changes(value)
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
        if self.phase is Phase.RANGE:
            self._on_range(value)
        elif self.phase is Phase.WARMUP:
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

    def _check_outside_changes(self, value: float) -> None:
        """Warn, once, of what silently spoils a run: the LR changed by other code
        (an LR scheduler on the same optimizer) and losses below ``loss_floor``."""
        i = None
        if "lr" in self._unwarned and self.current_lr > 0:
            i = next((j for j, r in enumerate(self.ratios) if r > 0), None)
        if i is not None:
            used = float(self.optimizer.param_groups[i]["lr"])
            expected = self.current_lr * self.ratios[i]
            if not math.isclose(used, expected, rel_tol=1e-6):
                warnings.warn(
                    f"the LR of param group {i} was changed outside autolr (to {used:g}; autolr "
                    f"set {expected:g}), most likely by an LR scheduler: autolr owns the LR; "
                    "stop calling scheduler.step()",
                    SchedulerConflictWarning,
                    stacklevel=3,
                )
                self._unwarned.discard("lr")
        floor = self.config.loss_floor
        if (
            "floor" in self._unwarned
            and floor is not None
            and math.isfinite(value)
            and value < floor
        ):
            warnings.warn(
                f"loss {value:g} is below loss_floor={floor:g}: forecasts are floored there and "
                "candidates tie; pass loss_floor=None for losses that can be negative",
                AutoLRWarning,
                stacklevel=3,
            )
            self._unwarned.discard("floor")

    def restore_snapshot(self) -> bool:
        """Put the stage snapshot back into the model and optimizer.

        Used after an exception in the middle of a probe or of the range test,
        so the model never goes on from a probe's state. A probe or a range test
        under way starts over (its steps so far stay counted); cut in between two
        probes, the search goes on with the next. Returns False when there is no
        snapshot.
        """
        if self._snapshot is None:
            return False
        self._restore(self._snapshot)
        self._dirty = False
        if self.phase is Phase.PROBE and self.probe is not None:
            self._start_probe(self.probe.lr)
        elif self.phase is Phase.PROBE and self.stage is not None:
            self._search()
        if self.phase is Phase.RANGE and self._range is not None:
            self._range = RangeTest(steps=self._range.steps)
            self._apply_lr(self._range.lr(0))
        return True

    def __enter__(self) -> AutoLRS:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # In a probe the model may have moved even before the probe's first
        # ``step()`` (an optimizer step at the probe's LR, then the exception).
        if exc_type is not None and self.in_search:
            logger.warning("exception during a %s: restoring the snapshot", self.phase.value)
            self.restore_snapshot()

    def batches(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """Yield batches so that every probe of a stage sees the same batches.

        Wrap the training data: ``for batch in tuner.batches(loader): ...``.
        During a stage's search the first probe's batches are cached and replayed
        for the others, so probes differ by their LR and not by their data. The
        cache lives on the tuner (it survives a new epoch's iterator) and is not
        saved in ``state_dict``: after a resume in the middle of a search, the
        probes take fresh batches for the steps the cache lost, each at its step.
        Stops when the budget is spent.
        """
        it = iter(iterable)
        while not self.finished:
            if self.phase is Phase.PROBE and self.probe is not None:
                stage, cache = self._batch_cache
                if stage != self.stage_index:
                    cache = {}
                    self._batch_cache = (self.stage_index, cache)
                i = self.probe.steps
                if i in cache:
                    yield cache[i]
                    continue
                try:
                    batch = next(it)
                except StopIteration:
                    return
                cache[i] = batch
                yield batch
            else:
                try:
                    yield next(it)
                except StopIteration:
                    return

    # --------------------------------------------------------- transitions
    def _begin_training(self, start: list[float] | None = None) -> None:
        """After the range test (if any): the warmup, or the first stage.

        ``start``: the range test's first losses, taken at the state the first
        stage starts from when no warmup runs between (its start level and noise).
        """
        if self.config.warmup_steps > 0:
            # The state training starts from: where a non-finite warmup step goes back to.
            self._snapshot = self._capture_live()
            self._warmup_from = self.global_step
            self._warmup_end = self.global_step + self.config.warmup_steps
            self.phase = Phase.WARMUP
            self._log_phase(Phase.WARMUP)
            self._apply_lr(self._warmup_lr(self.global_step))
        else:
            self._begin_stage(start=start)

    def _begin_range(self) -> None:
        """Start the LR range test from a snapshot of the state training starts from."""
        self._snapshot = self._capture_live()
        self._range = RangeTest(steps=self.config.n_range_steps)
        self.phase = Phase.RANGE
        self._log_phase(Phase.RANGE)
        self._apply_lr(self._range.lr(0))

    def _on_range(self, value: float) -> None:
        assert self._range is not None
        test = self._range
        self.search_steps += 1
        reason = test.add(self.current_lr, value)
        if reason is None:
            if not math.isfinite(value):
                self._back_to_finite("range test")
            self._apply_lr(test.lr(len(test.losses)))
            return
        read = sum(v is not None for v in test.losses)
        if read <= WARM:
            warnings.warn(
                f"the LR range test stopped after {len(test.losses)} steps ({reason}) with "
                f"{read} finite losses, too few to read a range from (its LR "
                f"{test.best_lr:.3g} is no reading): pass min_lr and max_lr",
                RangeWarning,
                stacklevel=4,
            )
        low, high = test.search_range(self.config)
        logger.info(
            "range test: %d steps (%s); best lr %.3g; search range [%.3g, %.3g]",
            len(test.losses),
            reason,
            test.best_lr,
            low,
            high,
        )
        self.log.write(
            RANGE_TEST,
            self.global_step,
            lrs=test.lrs,
            losses=test.losses,
            reason=reason,
            best_lr=test.best_lr,
            lr_range=[low, high],
        )
        edge = test.outside(self.config)
        if edge is not None:
            self._unwarned_edges.discard(edge)
            side, fix = (
                ("above", f"pass a larger max_lr (e.g. max_lr={test.best_lr:g})")
                if edge == "max_lr"
                else ("below", f"pass a smaller min_lr (e.g. min_lr={test.best_lr / 10:g})")
            )
            warnings.warn(
                f"the LR range test found its best lr={test.best_lr:.4g}, "
                f"{side} the search range given (min_lr={self.config.min_lr}, "
                f"max_lr={self.config.max_lr}): the range given is kept, but {fix}",
                RangeWarning,
                stacklevel=4,
            )
        elif self.config.max_lr is not None and test.best_lr > self.config.max_lr:
            self._unwarned_edges.discard("max_lr")
            warnings.warn(
                f"the LR range test found its best lr={test.best_lr:.4g}, above "
                f"max_lr={self.config.max_lr}: the search starts at max_lr, and a larger "
                f"LR may be better (e.g. max_lr={test.best_lr:g})",
                RangeWarning,
                stacklevel=4,
            )
        assert self._snapshot is not None
        self._restore(self._snapshot)
        self._snapshot = None
        self.search_range = (low, high)
        self.strategy.set_range(low, high, ceiling=test.lrs[-1])
        self.lr = self._default_lr()
        self._range = None
        self._begin_training(test.start_losses)

    def _on_warmup(self, value: float) -> None:
        if not math.isfinite(value):
            self._recover("warmup")
            return
        self._recent.append(value)
        if self.global_step >= self._warmup_end:
            self._begin_stage()
        else:
            self._apply_lr(self._warmup_lr(self.global_step))

    def _recover(self, where: str) -> None:
        """A non-finite loss where no stage decision can be undone (warmup, anneal).

        Restores the last finite state (the start of training or of the anneal),
        halves the LR scale of what follows and goes on from there; the steps
        spent stay counted. After ``MAX_RECOVERIES`` halvings the LR is 0: the
        weights stay at that finite state to the end of the budget.
        """
        assert self._snapshot is not None
        self._recoveries += 1
        self._lr_scale = 0.0 if self._recoveries > MAX_RECOVERIES else self._lr_scale / 2
        logger.warning(
            "non-finite loss in the %s at step %d: restored the state of step %d, LR scale %g",
            where,
            self.global_step,
            self._snapshot.step,
            self._lr_scale,
        )
        self.log.write(
            ROLLBACK,
            self.global_step,
            stage=self.stage_index,
            lr=self.current_lr,
            reason=f"{RECOVERY}{where}",
            losses=[],
            back_to=self._snapshot.step,
        )
        self._restore(self._snapshot)
        self._recent.clear()
        if self._anneal is not None:
            steps = max(1, (self.config.total_steps or 0) - self.global_step)
            self._anneal = AnnealState(
                self.global_step, steps, self._anneal.lr, self._anneal.losses
            )
            self._apply_lr(self._anneal_lr())
        else:
            self._warmup_from = self.global_step
            self._apply_lr(self._warmup_lr(self.global_step))

    def _begin_stage(self, stalled: bool = False, start: list[float] | None = None) -> None:
        remaining = None
        if self.config.total_steps is not None:
            remaining = self._anneal_start - self.global_step
        spec = self.plan.stage(self.stage_index, remaining)
        if spec.cost <= 0:
            self._enter_tail()
            return
        self._back_to_finite(f"stage {self.stage_index}")
        last = self.stage
        searched_before = last is not None and last.chosen_forecast is not None
        progress = self._progress()
        # The losses before the snapshot set the stage's start level and noise. An
        # annealed race judges from its snapshot alone, as the losses before it may be
        # a warmup's fall, neither a level nor noise: from the range test's first
        # steps when they were taken at this state (``start``), else from its probes'
        # first losses (one loss each: no noise level).
        recent = (start or []) if spec.cool else list(self._recent)
        ref = statistics.median(recent) if recent else None
        # The objective at the snapshot (t = 0 of every probe), before the capture so
        # that whatever RNG the validation draws is the same for every probe.
        val0, self._next_val0 = self._next_val0, None
        if self.val_fn is not None and spec.probes > 0 and val0 is None:
            val0 = finite_or_none(float(self.val_fn()))
        self.stage = StageState(
            spec=spec,
            start_step=self.global_step,
            progress=progress,
            ref_loss=ref,
            noise=robust_sd(recent),
            recent_max=max(recent) if recent else None,
            val0=val0,
        )
        self._snapshot = self._capture_live()
        self._winner = None
        self._dirty = False
        bounds = self.strategy.begin_stage(
            self.stage_index, progress, self.lr, searched_before, stalled
        )
        self.log.write(
            STAGE_START,
            self.global_step,
            stage=self.stage_index,
            tau=spec.tau,
            tau_probe=spec.tau_probe,
            probes=spec.probes,
            exploit_steps=spec.exploit_steps,
            recent=list(self._recent),
            lr_bounds=list(bounds) if bounds is not None else None,
            cool=spec.cool,
            level=[ref, self.stage.noise] if ref is not None else None,
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
        self._search()

    def _back_to_finite(self, where: str) -> None:
        """Before a new snapshot is taken: non-finite weights (a finite loss is taken
        before its update) go back to the last snapshot, never kept as the next one."""
        if self._snapshot is not None and not finite_weights(self.model):
            logger.warning(
                "%s: the weights are non-finite; going back to the state of step %d",
                where,
                self._snapshot.step,
            )
            self._restore(self._snapshot)

    def _search(self) -> None:
        """Run the stage's search on until it needs the caller's steps or is decided.

        Inline, each probe takes the caller's next ``tau_probe`` steps, so this
        starts one probe and returns. With a ``prober``, batches of
        ``parallel_probes`` run inside this call. Either way every probe ends in
        :meth:`_finish_probe`, and the stage is decided once all are done, or
        earlier when the strategy has searched enough (asked between probes, or
        between batches: a batch runs whole).
        """
        stage = self.stage
        assert stage is not None
        while len(stage.probes) < stage.spec.probes:
            if self.strategy.searched_enough(stage):
                logger.info(
                    "stage %d: the search ends after %d of %d candidates",
                    self.stage_index,
                    len(stage.probes),
                    stage.spec.probes,
                )
                break
            if self.prober is None:
                self._start_probe(self.strategy.propose(1)[0])
                return
            q = min(self.config.parallel_probes, stage.spec.probes - len(stage.probes))
            lrs, self._unrun = self._unrun or self.strategy.propose(q), []
            self.phase, before = Phase.PROBE, len(stage.probes)
            try:
                self._run_on_backend(lrs)
            except BaseException:
                # Cut short (a Ctrl-C, a backend that gave up): restore_snapshot, or
                # the with block, runs the search on from the candidates not finished.
                self._unrun = lrs[len(stage.probes) - before :]
                raise
        self._decide("best_forecast")

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
        k, spec = probe.steps, stage.spec
        if self.val_fn is None:
            probe.t.append(float(k - 1))
            probe.losses.append(finite_or_none(value))
        elif k == spec.probe_steps or (not spec.cool and k % self._val_every() == 0):
            val = finite_or_none(float(self.val_fn()))  # if it raises, t and losses stay paired
            probe.t.append(float(k))
            probe.losses.append(val)
        reason = self._stop_reason(probe)
        if reason is not None:
            probe.diverged, probe.reason = True, reason
        if reason is not None or k >= spec.probe_steps:
            self.probe = None
            if spec.cool:
                # Keep the state before the cooldown: the exploit goes on from there.
                kept, self._precool = self._precool, None
                self._finish_probe(probe, end_state=kept)
            else:
                self._finish_probe(probe, live=True)
            self._search()
        elif spec.cool and k >= spec.tau_probe:
            if k == spec.tau_probe and self.config.keep_winner:
                self._precool = self._capture_live()
            # The cooldown branch: linear to 0 over ``cool`` steps.
            self._apply_lr(cooldown_lr(probe.lr, k - spec.tau_probe, spec.cool))

    def _stop_reason(self, probe: ProbeRecord) -> str | None:
        """Why a probe must stop: the blow-up rule on its training losses, or a
        non-finite objective value (the same rule for inline and backend probes)."""
        assert self.stage is not None
        reason = stop_reason(
            probe.train_losses,
            self.stage.abort_ref,
            self.config.blowup_factor,
            self.config.early_abort,
            self.stage.noise,
        )
        if reason is None and probe.losses and probe.losses[-1] is None:
            reason = "non-finite validation loss"
        return reason

    def _capture_live(self) -> Snapshot:
        """A snapshot of the live training state, on the snapshot device, at this step."""
        return capture(
            self.model,
            self.optimizer,
            self.extra_state,
            device=self._snapshot_device,
            step=self.global_step,
        )

    def _run_on_backend(self, lrs: list[float]) -> None:
        """Run one batch of probes on ``self.prober`` and finish each."""
        assert self.stage is not None and self._snapshot is not None and self.prober is not None
        stage, cfg = self.stage, self.config
        requests = [
            ProbeRequest(
                lr=lr,
                steps=stage.spec.tau_probe,
                stage=self.stage_index,
                index=len(stage.probes) + i,
                ref_loss=self.stage.abort_ref,
                blowup_factor=cfg.blowup_factor,
                early_abort=cfg.early_abort,
                noise=stage.noise,
                val_every=self._val_every() if self.val_fn is not None else 0,
                keep_state=cfg.keep_winner,
                cool=stage.spec.cool,
            )
            for i, lr in enumerate(lrs)
        ]
        answers: list[Any] = list(self.prober.run(self._snapshot, requests))
        answers += [None] * (len(requests) - len(answers))  # a missing answer is a failed probe
        for req, answer in zip(requests, answers):
            try:
                out = check_outcome(answer, req, self._snapshot)
            except InputError as exc:
                out = ProbeOutcome(train_losses=[], error=str(exc))
            why = out.end_state and incompatibility(
                out.end_state, self.model, self.optimizer, self.extra_state
            )
            if why:  # scored, but never restored into the user's model and optimizer
                logger.warning("probe at lr=%g: its end state is not kept (%s)", req.lr, why)
                out.end_state = None
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
                reason: str | None = f"probe failed: {out.error}"
            elif not probe.train_losses:
                reason = "no steps"
            else:
                reason = self._stop_reason(probe)
                if reason is None and any(v is None for v in probe.losses[1:]):
                    reason = "non-finite validation loss"
            if reason is not None:
                probe.diverged, probe.reason = True, reason
            self._finish_probe(probe, end_state=out.end_state)

    def _finish_probe(
        self, probe: ProbeRecord, end_state: Snapshot | None = None, live: bool = False
    ) -> None:
        """Score a finished probe, log it, and keep its end state if it is the best so far.

        Args:
            end_state: the probe's end state from a backend (None: none returned).
            live: the probe ran inline: its end state is the live model's,
                captured only if it is kept.
        """
        assert self.stage is not None
        stage = self.stage
        stage.probes.append(probe)
        if stage.ref_loss is None:
            firsts = [
                p.train_losses[0]
                for p in stage.probes
                if p.train_losses and p.train_losses[0] is not None
            ]
            stage.ref_loss = statistics.median(firsts) if firsts else None
        self.strategy.score(probe, stage)
        self.log.write(
            PROBE,
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
        if self.config.keep_winner and probe.forecast is not None:
            best = min(p.forecast for p in stage.probes if p.forecast is not None)
            if probe.forecast == best and (live or end_state is not None):
                self._winner = self._capture_live() if live else end_state
                stage.winner = len(stage.probes) - 1

    def _decide(self, reason: str) -> None:
        assert self.stage is not None and self._snapshot is not None
        stage = self.stage
        ranked = self.strategy.rank(stage)
        from_probe = False
        if ranked:
            best = ranked[0]
            lr, forecast = best.lr, best.forecast
            from_probe = (
                reason == "best_forecast"
                and self._winner is not None
                and stage.winner == stage.probes.index(best)
            )
        else:
            lr, forecast, reason = self._fallback_lr(), None, "fallback"
            logger.warning(
                "stage %d: no candidate left; falling back to lr=%g", self.stage_index, lr
            )
        if from_probe:
            assert self._winner is not None
            self._restore(self._winner)
            self._dirty = True
            self.kept_steps += _held_steps(best, stage.spec)
        elif self._dirty:
            self._restore(self._snapshot)
        self._winner = None
        if reason != "rollback":
            self._decide_decay(stage, ranked[0] if reason == "best_forecast" else None)
        stage.chosen_lr, stage.chosen_forecast = lr, forecast
        stage.guarded = reason != "fallback" or self._fallback_floor() not in stage.rejected
        stage.climb_cap, stage.climbs = None, []
        if reason == "fallback":
            self._plan_climb(lr)
        self.log.write(
            DECISION,
            self.global_step,
            stage=self.stage_index,
            lr=lr,
            forecast=forecast,
            reason=reason,
            from_probe=from_probe,
            decay_steps=self.decay_steps,
            candidates=[
                {"lr": p.lr, "forecast": p.forecast, "diverged": p.diverged} for p in stage.probes
            ],
        )
        logger.info(
            "stage %d: lr=%.4g chosen (%s, forecast %s); %d of %d steps so far on search (%.0f%%)",
            self.stage_index,
            lr,
            reason,
            "none" if forecast is None else f"{forecast:.4g}",
            self.search_steps,
            self.global_step,
            100.0 * self.search_steps / max(self.global_step, 1),
        )
        if reason in ("best_forecast", "fallback") and stage.climb_cap is None:
            # (A climb off a plateau is no sign of a wrong range: it has its own warning.)
            self._check_range_edge(lr if reason == "best_forecast" else None, stage)
        target = stage.spec.exploit_steps
        if not from_probe and self.config.keep_winner and stage.spec.probes > 0:
            target += stage.spec.tau_probe
        self._start_exploit(target, from_probe)

    def _decide_decay(self, stage: StageState, winner: ProbeRecord | None) -> None:
        """With a stage's LR, the strategy may decide the final decay's length
        (never starting it before now)."""
        total = self.config.total_steps
        frac = self.strategy.decay_fraction(stage, winner)
        if total is None or frac is None:
            return
        steps = min(int(round(frac * total)), total - self.global_step)
        if steps != self.decay_steps:
            logger.info(
                "stage %d: the final decay takes the last %d steps (planned %d)",
                self.stage_index,
                steps,
                self.decay_steps,
            )
        self.decay_steps = steps

    def _plan_climb(self, lr: float) -> None:
        """A stage with no candidate left on a plateau: its exploit climbs from ``lr``."""
        assert self.stage is not None
        stage = self.stage
        cap = self.strategy.climb_ceiling(stage)
        if cap is None:
            return
        cap = min([cap, *(r / 2 for r in stage.rejected)])
        if 2.0 * lr > cap:
            return
        doublings = math.floor(math.log2(cap / lr))
        stage.climb_cap = cap
        # As slow as the exploit allows: the doublings spread over all of it (as
        # decided: a shorter final decay leaves a longer hold).
        hold = stage.spec.exploit_steps + self.config.anneal_steps - self.decay_steps
        stage.climb_every = max(stage.spec.tau_probe, hold // (doublings + 1))
        logger.warning(
            "stage %d: no candidate left the start level (a plateau): the exploit starts at "
            "lr=%g and doubles it every %d steps, up to %g, until the loss falls 2%% below "
            "its start",
            self.stage_index,
            lr,
            stage.climb_every,
            cap,
        )

    def _climb(self) -> None:
        """Every ``climb_every`` steps of a climbing exploit: double the LR or stop climbing."""
        assert self.stage is not None
        stage = self.stage
        lr = climb(stage)
        if lr is None:
            stage.climb_cap = None
            logger.info("stage %d: the climb holds lr=%g", self.stage_index, self.lr)
            return
        stage.chosen_lr = lr
        stage.climbs.append([self.global_step, lr])
        self._set_lr(lr)

    def _check_range_edge(self, lr: float | None, stage: StageState) -> None:
        """Warn, once per bound, when the given range looks wrong: two searched
        stages in a row whose best candidate is their outermost one in the outer
        quarter of the range (the best LR may lie beyond it), or a stage where
        every candidate diverged (``lr`` None: the range may be too high)."""
        if self.search_range is None:
            return
        lo, hi = self.search_range
        edge = None
        scored = [p.lr for p in stage.probes if p.forecast is not None]
        if lr is None:
            edge = "min_lr" if stage.probes and all(p.diverged for p in stage.probes) else None
        elif len(scored) >= 2:
            x = math.log(lr / lo) / math.log(hi / lo)
            if x >= 0.75 and lr == max(scored):
                edge = "max_lr"
            elif x <= 0.25 and lr == min(scored):
                edge = "min_lr"
        pinned = edge is not None and (edge == self._last_edge or lr is None)
        self._last_edge = edge
        if not pinned or edge not in self._unwarned_edges:
            return
        self._unwarned_edges.discard(edge)
        if edge == "max_lr":
            what = f"the best LR found, {lr:.4g}, sits at the top of the search range"
            fix = f"a larger LR may be better: pass a larger max_lr (e.g. max_lr={10 * hi:g})"
        elif lr is None:
            what = "every candidate LR diverged"
            fix = f"the range may be too high: pass a smaller min_lr (e.g. min_lr={lo / 100:g})"
        else:
            what = f"the best LR found, {lr:.4g}, sits at the bottom of the search range"
            fix = f"a smaller LR may be better: pass a smaller min_lr (e.g. min_lr={lo / 10:g})"
        warnings.warn(
            f"stage {self.stage_index}: {what} (min_lr={lo:g}, max_lr={hi:g}); {fix}",
            RangeWarning,
            stacklevel=4,
        )

    def _fallback_floor(self) -> float:
        """The bottom of the search range: the fallback LR unless it went non-finite."""
        assert self.search_range is not None
        return self.search_range[0]

    def _fallback_lr(self) -> float:
        """The LR when no candidate is left: ``min_lr``, or half the smallest LR
        whose exploit went non-finite when ``min_lr`` itself did (so a run where
        every LR diverges keeps going down instead of repeating one LR)."""
        assert self.stage is not None
        low = self._fallback_floor()
        failed = self.stage.nonfinite
        if failed and min(failed) <= low:
            return min(failed) / 2
        return low

    def _start_exploit(self, target: int, from_probe: bool) -> None:
        assert self.stage is not None
        self.stage.exploit_target = target
        self.stage.exploit_losses = []
        self.stage.exploit_best = None
        self.stage.from_probe = from_probe
        self.stage.best_at = 0
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
        if not math.isfinite(value):
            self._rollback("non-finite loss")
            return
        # The median over a long window costs tens of microseconds: check it every
        # tenth of a window (a blow-up is caught at most that many steps later).
        stride = max(1, stage.guard_window // 10)
        if len(stage.exploit_losses) % stride == 0:
            best = stage.exploit_best
            reason = exploit_guard(stage, self.config.guard_factor)
            if reason is not None:
                self._rollback(reason)
                return
            self._keep_best(best)
        if stage.climb_cap is not None and len(stage.exploit_losses) % stage.climb_every == 0:
            self._climb()
        done = len(stage.exploit_losses) >= stage.exploit_target and not stage.spec.final
        if done or self._at_anneal():
            reason = end_guard(stage)
            if reason is not None:
                self._rollback(reason)
                return
            self._end_exploit()

    def _keep_best(self, before: float | None) -> None:
        """Move the stage's snapshot to the exploit's state when its windowed loss just
        reached a new low (at most once a guard window): a rollback goes back there, not
        to the stage's start, so the steps that led to it are not lost.

        Only for the annealed race's hold, which is most of the run (a rollback to its
        start loses all of it) and whose LR cooled down to the best loss of the race
        from the start state. The forecast strategy's stages are short, and its LR,
        picked by a short probe's forecast, can hold the network in a chaotic state
        whose best window is no state to go on from (measured: BENCHMARKS.md).
        """
        assert self.stage is not None
        stage, n = self.stage, len(self.stage.exploit_losses)
        low = stage.exploit_best
        if not stage.spec.cool or before is None or low is None or low >= before:
            return
        # (A loss is taken before its update: the weights it leaves may not be finite.)
        if n - stage.best_at >= stage.guard_window and finite_weights(self.model):
            self._snapshot, stage.best_at = self._capture_live(), n

    def _val_every(self) -> int:
        """Probe steps between validation evaluations: ``val_every``, at most a quarter probe."""
        assert self.stage is not None
        return max(1, min(self.config.val_every, self.stage.spec.tau_probe // 4))

    def _rollback(self, reason: str) -> None:
        assert self.stage is not None and self._snapshot is not None
        stage = self.stage
        lr = stage.chosen_lr if stage.chosen_lr is not None else self.lr
        logger.warning(
            "stage %d: exploit at lr=%g rolled back to the state of step %d (%s)",
            self.stage_index,
            lr,
            self._snapshot.step,
            reason,
        )
        self.log.write(
            ROLLBACK,
            self.global_step,
            stage=self.stage_index,
            lr=lr,
            reason=reason,
            losses=stage.exploit_losses,
            back_to=self._snapshot.step,
        )
        if stage.from_probe and stage.winner is not None:
            # The winner's probe steps are counted as kept only by an exploit never rolled back.
            self.kept_steps -= _held_steps(stage.probes[stage.winner], stage.spec)
        stage.rejected.append(lr)
        if reason == "non-finite loss":
            stage.nonfinite.append(lr)
        for p in stage.probes:
            if p.lr == lr:
                p.rolled_back = True
        self.strategy.reject(lr)
        self._restore(self._snapshot)
        self._dirty = False
        if self._at_anneal():
            # No budget to exploit again: anneal from the snapshot at the next-best LR.
            ranked = self.strategy.rank(stage)
            self._set_lr(ranked[0].lr if ranked else self._fallback_lr())
            self.stage_index += 1
            self._enter_tail()
        else:
            self._decide("rollback")

    def _end_exploit(self) -> None:
        assert self.stage is not None
        stage = self.stage
        actual_train = stage.reached_train()
        actual = actual_train
        if self.val_fn is not None:
            # The objective reached, on the forecast's scale; it is also the next
            # stage's value at its snapshot, taken at this same state.
            actual = finite_or_none(float(self.val_fn()))
            self._next_val0 = actual
        self.log.write(
            EXPLOIT_END,
            self.global_step,
            stage=self.stage_index,
            lr=stage.chosen_lr,
            forecast=stage.chosen_forecast,
            actual=actual,
            actual_train=actual_train,
            steps=len(stage.exploit_losses),
            losses=stage.exploit_losses,
            climbs=stage.climbs,
        )
        if self.stage_index == 0:
            self._start_level = stage.ref_loss
        stalled = kept_no_gain(actual_train, self._start_level)
        if stalled:
            logger.warning(
                "stage %d kept no gain over the start of training (training loss %.4g against "
                "%.4g) at lr=%.3g: %s",
                self.stage_index,
                actual_train,
                self._start_level,
                stage.chosen_lr,
                "the final decay follows"
                if stage.spec.final
                else "the next stage searches above it",
            )
        self.stage_index += 1
        if self._at_anneal():
            self._enter_tail()
        else:
            self._begin_stage(stalled)

    def _enter_tail(self) -> None:
        """After the last stage: the final anneal, or done."""
        if self.config.total_steps is None:
            return
        steps = self.config.total_steps - self.global_step
        if steps <= 0:
            self._finish()
            return
        self._anneal = AnnealState(start=self.global_step, steps=steps, lr=self.lr)
        self._back_to_finite("the final decay")
        # The state the anneal starts from: where a non-finite anneal step goes back to.
        self._snapshot = self._capture_live()
        self.phase = Phase.ANNEAL
        self._log_phase(Phase.ANNEAL)
        self._apply_lr(self._anneal_lr())

    def _on_anneal(self, value: float) -> None:
        assert self._anneal is not None
        self._anneal.losses.append(value if math.isfinite(value) else None)
        if not math.isfinite(value):
            self._recover("anneal")
            return
        self._recent.append(value)
        self._apply_lr(self._anneal_lr())

    def _finish(self) -> None:
        if self.phase is Phase.PROBE and self._dirty and self._snapshot is not None:
            self._restore(self._snapshot)
        if self._snapshot is not None and not finite_weights(self.model):
            # Never end on non-finite weights while a finite state exists.
            warnings.warn(
                f"the run's last state has non-finite weights; restored the state of step "
                f"{self._snapshot.step}",
                NonFiniteWarning,
                stacklevel=3,
            )
            self._restore(self._snapshot)
        self.phase = Phase.DONE
        self._log_phase(Phase.DONE)
        self.log.write(
            RUN_END,
            self.global_step,
            search_steps=self.search_steps,
            kept_steps=self.kept_steps,
            exploit_steps=self.exploit_steps,
            total=self.global_step,
            anneal_losses=list(self._anneal.losses) if self._anneal is not None else [],
        )

    # -------------------------------------------------------------- helpers
    @property
    def _anneal_start(self) -> int:
        total = self.config.total_steps
        return math.inf if total is None else total - self.decay_steps  # type: ignore[return-value]

    def _at_anneal(self) -> bool:
        return self.config.total_steps is not None and self.global_step >= self._anneal_start

    def _progress(self) -> float:
        total = self.config.total_steps
        return 0.0 if total is None else self.global_step / total

    def _default_lr(self) -> float:
        """The geometric middle of the search range (1e-3 before the range test)."""
        if self.search_range is None:
            return 1e-3
        low, high = self.search_range
        return math.sqrt(low * high)

    def _warmup_lr(self, step: int) -> float:
        target = (self.config.warmup_lr or self._default_lr()) * self._lr_scale
        left = self._warmup_end - self._warmup_from
        return target * (step - self._warmup_from + 1) / max(left, 1)

    def _anneal_lr(self) -> float:
        a = self._anneal
        assert a is not None
        return self.strategy.decay_lr(a.lr * self._lr_scale, self.global_step - a.start, a.steps)

    def apply_lr(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Set every param group's LR to autolr's: ``current_lr`` times the group's ratio.

        The one way adapters apply the controller's LR (a framework may have
        changed it, or hold its own optimizer object). Groups whose LR was 0 at
        construction stay at 0.

        Args:
            optimizer: the optimizer to set (default: the controller's own).
        """
        target = optimizer if optimizer is not None else self.optimizer
        set_group_lrs(target, self.current_lr, self.ratios)

    def _apply_lr(self, lr: float) -> None:
        """Set the optimizer's LR without changing the tuned LR (warmup and anneal)."""
        self.current_lr = lr
        self.apply_lr()

    def _set_lr(self, lr: float) -> None:
        self.lr = lr
        self._apply_lr(lr)

    def _restore(self, snap: Snapshot) -> None:
        restore(snap, self.model, self.optimizer, self.extra_state)
        self.restored = True
        self.apply_lr()

    def _log_phase(self, phase: Phase) -> None:
        self.log.write(PHASE, self.global_step, phase=phase.value, lr=self.lr)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The controller's state: plain data, plus the snapshots' tensors.

        Everything but ``"snapshot"``, ``"winner"`` and ``"precool"`` (a race
        probe's state before its cooldown) is JSON-friendly. Save it
        with ``torch.save`` beside the model and optimizer; a run restored from
        it continues the current stage's search where it stopped.
        """
        return {
            "schema_version": STATE_SCHEMA_VERSION,
            "config": self.config.to_dict(),
            "phase": self.phase.value,
            "global_step": self.global_step,
            "search_steps": self.search_steps,
            "kept_steps": self.kept_steps,
            "exploit_steps": self.exploit_steps,
            "stage_index": self.stage_index,
            "stage": self.stage.to_dict() if self.stage is not None else None,
            "probe": asdict(self.probe) if self.probe is not None else None,
            "lr": self.lr,
            "current_lr": self.current_lr,
            "ratios": list(self.ratios),
            "recent": list(self._recent),
            "start_level": self._start_level,
            "decay_steps": self.decay_steps,
            "anneal": asdict(self._anneal) if self._anneal is not None else None,
            "dirty": self._dirty,
            "recovery": {
                "lr_scale": self._lr_scale,
                "count": self._recoveries,
                "warmup_from": self._warmup_from,
                "warmup_end": self._warmup_end,
            },
            "strategy": self.strategy.state_dict(),
            "search_range": list(self.search_range) if self.search_range is not None else None,
            "range_test": self._range.to_dict() if self._range is not None else None,
            "precool": self._precool.to_state() if self._precool is not None else None,
            "snapshot": self._snapshot.to_state() if self._snapshot is not None else None,
            "winner": self._winner.to_state() if self._winner is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`; the model and optimizer must be loaded separately.

        The whole state is read and checked before anything is assigned: on an
        error the tuner is left exactly as it was.

        Raises:
            StateError: not a state of this kind, unknown schema version, a
                missing or malformed field (named in the message).
        """
        if not isinstance(state, Mapping):
            raise StateError(f"AutoLRS state must be a mapping, got {type(state).__name__}")
        version = state.get("schema_version")
        if version != STATE_SCHEMA_VERSION:
            raise StateError(
                f"cannot load AutoLRS state of schema_version={version!r}; "
                f"this version reads {STATE_SCHEMA_VERSION}"
            )
        try:
            saved = AutoLRSConfig.from_dict(dict(state["config"]))
            stage = StageState.from_dict(state["stage"]) if state["stage"] else None
            if stage is not None and "winner_index" in state:  # written by earlier versions
                stage.winner = state["winner_index"]
            anneal = state["anneal"] or None
            new: dict[str, Any] = {
                "phase": Phase(state["phase"]),
                "global_step": int(state["global_step"]),
                "search_steps": int(state["search_steps"]),
                "kept_steps": int(state.get("kept_steps", 0)),
                "exploit_steps": int(state["exploit_steps"]),
                "stage_index": int(state["stage_index"]),
                "stage": stage,
                "probe": ProbeRecord(**state["probe"]) if state["probe"] else None,
                "lr": float(state["lr"]),
                "current_lr": float(state["current_lr"]),
                "ratios": [float(r) for r in state["ratios"]],
                "_recent": deque((float(v) for v in state["recent"]), maxlen=16),
                "_anneal": (
                    AnnealState(
                        int(anneal["start"]),
                        int(anneal["steps"]),
                        float(anneal["lr"]),
                        [None if v is None else float(v) for v in anneal.get("losses", [])],
                    )
                    if anneal
                    else None
                ),
                "_dirty": bool(state["dirty"]),
                # None in a checkpoint from before it was kept: "no gain" is then never judged.
                "_start_level": (
                    None if state.get("start_level") is None else float(state["start_level"])
                ),
                "decay_steps": int(state.get("decay_steps", saved.anneal_steps)),
            }
            recovery = state.get("recovery", {"lr_scale": 1.0, "count": 0, "warmup_from": 0})
            new["_lr_scale"] = float(recovery["lr_scale"])
            new["_recoveries"] = int(recovery["count"])
            new["_warmup_from"] = int(recovery["warmup_from"])
            new["_warmup_end"] = int(recovery.get("warmup_end", saved.warmup_steps))
            found = state.get("search_range", [saved.min_lr, saved.max_lr])
            new["search_range"] = (
                (float(found[0]), float(found[1])) if None not in (found or [None]) else None
            )
            test = state.get("range_test")
            new["_range"] = RangeTest(**test) if test else None
            pre = state.get("precool")
            new["_precool"] = Snapshot.from_state(pre) if pre is not None else None
            strategy_state = (
                state["strategy"] if "strategy" in state else {"proposer": state["proposer"]}
            )
            snap = Snapshot.from_state(state["snapshot"]) if state["snapshot"] is not None else None
            win = Snapshot.from_state(state["winner"]) if state["winner"] is not None else None
        except KeyError as exc:
            raise StateError(f"AutoLRS state is missing the key {exc}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"AutoLRS state is malformed: {exc}") from exc
        for label, found in (("snapshot", snap), ("winner", win), ("precool", new["_precool"])):
            why = (
                incompatibility(found, self.model, self.optimizer, self.extra_state)
                if found
                else None
            )
            if why is not None:
                raise StateError(f"AutoLRS state's {label} does not fit this run: {why}")
        if len(new["ratios"]) != len(self.optimizer.param_groups):
            raise StateError(
                f"AutoLRS state has {len(new['ratios'])} param-group ratios, the optimizer has "
                f"{len(self.optimizer.param_groups)} groups"
            )
        strategy = self.strategy
        if saved.to_dict() != self.config.to_dict():
            logger.warning("loading AutoLRS state saved with other settings; using the saved ones")
            if isinstance(strategy, ForecastStrategy):  # built from the config: rebuilt from it
                strategy = make_strategy(saved)
        probe_strategy = copy.deepcopy(strategy)
        try:
            probe_strategy.load_state_dict(strategy_state)
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"AutoLRS state has a malformed strategy state: {exc}") from exc
        # Everything read: assign.
        if self._searched_in_init:
            # The search a prober ran at construction moved the model: back to the
            # state it was built on (the run's checkpoint), and its records dropped.
            assert self._snapshot is not None
            self._restore(self._snapshot)
            self.log.records = [r for r in self.log.records if r["type"] == RUN_START]
            self._searched_in_init = False
            self.log.release()
        if saved.to_dict() != self.config.to_dict():
            self.config = saved
            self.plan = StagePlan(saved)
        self.strategy = probe_strategy
        for name, value in new.items():
            setattr(self, name, value)
        self._snapshot, self._winner = snap, win
        self._batch_cache = (-1, {})
        self.apply_lr()
        self.log.write(PHASE, self.global_step, phase=PHASE_RESUME, lr=self.lr)

    # ------------------------------------------------------------- reports
    def summary(self) -> Summary:
        """The finished stages (typed rows; ``print(tuner.summary())`` shows a table).

        Each row: the stage, the LR it exploited, the forecast (or, with the
        annealed strategy, the score after a cooldown) that chose it, the
        objective it reached, its exploit steps and its rollbacks.
        """
        rollbacks: dict[int, int] = {}
        for rec in self.log.of_type(ROLLBACK):
            rollbacks[rec["stage"]] = rollbacks.get(rec["stage"], 0) + 1
        rows = [
            StageRow(
                stage=rec["stage"],
                lr=rec["lr"],
                forecast=rec["forecast"],
                actual=rec["actual"],
                steps=rec["steps"],
                rollbacks=rollbacks.get(rec["stage"], 0),
            )
            for rec in self.log.of_type(EXPLOIT_END)
        ]
        scored_by = "score" if self.config.strategy == "anneal" else "forecast"
        return Summary(rows, self.search_steps, self.global_step, scored_by, self.kept_steps)


AutoLRS.__doc__ = (AutoLRS.__doc__ or "").replace("{options}", options_doc("            "))


def _held_steps(probe: ProbeRecord, spec: StageSpec) -> int:
    """Steps of a probe at its LR (its cooldown, if any, left out)."""
    return min(probe.steps, spec.tau_probe)


def _probe_fields(probe: ProbeRecord) -> dict[str, Any]:
    out = asdict(probe)
    out["steps"] = probe.steps
    return out
