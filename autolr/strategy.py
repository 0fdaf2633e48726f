"""Decision strategies: what to probe, how to score a probe, what to pick, when to decay.

The controller (:mod:`autolr.controller`) owns phases, snapshots, steps, guards
and the budget; at each decision it consults a :class:`Strategy`. Strategies are
small stateful objects (BoTorch's ``StoppingCriterion`` shape): built from the
config and the parts handed in (forecaster, proposer), with ``reset()`` and
plain-data ``state_dict()``.

:class:`ForecastStrategy` is AutoLRS's rule with this project's measured
changes: each probe is scored by an exponential forecast of its loss ``tau``
steps after the snapshot, the lowest forecast wins, and after the first stage the
search stays within ``lr_trust`` of the last stage's LR.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Protocol

import torch

from autolr import config as settings
from autolr.config import AutoLRSConfig
from autolr.errors import ConfigError, FitError
from autolr.forecast import Forecaster, make_forecaster
from autolr.plan import StageSpec
from autolr.probing import ProbeRecord
from autolr.proposer import GPProposer, Proposer
from autolr.stage import kept_no_gain, robust_sd


class StageView(Protocol):
    """What a strategy reads of a stage (the controller's ``StageState``)."""

    spec: StageSpec
    probes: list[ProbeRecord]
    rejected: list[float]
    progress: float
    ref_loss: float | None
    val0: float | None


class Strategy(Protocol):
    """The decision rule the controller consults."""

    name: str

    def begin_stage(
        self,
        index: int,
        progress: float,
        last_lr: float,
        searched_before: bool,
        stalled: bool = False,
    ) -> tuple[float, float] | None:
        """A stage starts; returns the ``(low, high)`` LRs it may probe (None: the whole range).

        ``stalled``: the last stage ended with no gain over the objective at the
        first stage's start (:func:`autolr.stage.kept_no_gain`) without a guard
        firing: nothing learnt yet at ``last_lr``.
        """
        ...

    def propose(self, q: int) -> list[float]:
        """The next ``q`` LRs to probe, linear scale."""
        ...

    def set_range(self, low: float, high: float, ceiling: float | None = None) -> None:
        """The search range, once known (after the range test), linear scale;
        ``ceiling``: the LR where the range test's ramp stopped."""
        ...

    def climb_ceiling(self, stage: StageView) -> float | None:
        """When no candidate of a stage is left: the highest LR the exploit may climb
        to off a plateau (:func:`autolr.stage.climb`), or None to hold the fallback LR."""
        ...

    def score(self, probe: ProbeRecord, stage: StageView) -> None:
        """Score a finished probe in place (``forecast``: its score, lower is better;
        ``fit``; ``diverged`` if unscorable)."""
        ...

    def searched_enough(self, stage: StageView) -> bool:
        """The stage's search may end now, before its planned probes (asked after each
        finished probe, or batch of probes; the exploit takes the steps left). Return
        False to run every planned probe."""
        ...

    def rank(self, stage: StageView) -> list[ProbeRecord]:
        """The stage's eligible candidates, best first (empty: none left)."""
        ...

    def decay_fraction(self, stage: StageView, winner: ProbeRecord | None) -> float | None:
        """The final decay's share of the budget, decided with a stage's LR from its
        search's ``winner`` (None: no winner); None keeps the planned one."""
        ...

    def reject(self, lr: float) -> None:
        """The exploit at ``lr`` was rolled back."""
        ...

    def decay_lr(self, start_lr: float, done: int, steps: int) -> float:
        """LR of step ``done`` (from 0) of a final decay of ``steps`` steps from ``start_lr``."""
        ...

    def config(self) -> dict[str, Any]:
        """JSON-friendly description of the strategy and its parts (for the run log)."""
        ...

    def reset(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def default_forecaster(config: AutoLRSConfig) -> Forecaster:
    """The exponential forecaster with the config's floor and pessimism."""
    spec: dict[str, Any] = {"name": "exponential", "min_value": config.loss_floor}
    if config.forecast_pessimism > 0:
        spec["pessimism"] = config.forecast_pessimism
    return make_forecaster(spec)


def default_proposer(
    config: AutoLRSConfig, low: float | None = None, high: float | None = None
) -> GPProposer:
    """The GP proposer over ``[low, high]`` (default ``[min_lr, max_lr]``) with the config's
    settings."""
    low = config.min_lr if low is None else low
    high = config.max_lr if high is None else high
    if low is None or high is None:
        raise ConfigError("the GP proposer needs a search range: min_lr and max_lr")
    return GPProposer(
        low,
        high,
        initial=config.initial_probes,
        warm_start=config.warm_start,
        seed=config.seed,
        device=config.gp_device,
    )


class ForecastStrategy:
    """Score probes by their forecast loss at the exploit horizon; pick the lowest.

    Args:
        config: the controller's settings (``lr_trust``, ``min_lr``, ``max_lr``,
            ``anneal_to`` are read).
        forecaster: fits each probe's series and forecasts ``t = tau`` (default:
            :func:`default_forecaster`).
        proposer: proposes the LRs to probe (default: :func:`default_proposer`).
    """

    name = "forecast"

    def __init__(
        self,
        config: AutoLRSConfig,
        forecaster: Forecaster | None = None,
        proposer: Proposer | None = None,
    ) -> None:
        self.cfg = config
        self.forecaster = forecaster if forecaster is not None else default_forecaster(config)
        self.low, self.high = config.min_lr, config.max_lr
        self.ceiling: float | None = None
        self._own_proposer = proposer is None
        # Without a full range the default proposer is built once the range test set it.
        known = proposer is not None or config.needs_range_test
        self.proposer: Proposer = proposer if known else default_proposer(config)  # type: ignore[assignment]

    def set_range(self, low: float, high: float, ceiling: float | None = None) -> None:
        """The range test's range: the default proposer is built over it."""
        self.low, self.high = low, high
        self.ceiling = ceiling
        if self._own_proposer:
            self.proposer = default_proposer(self.cfg, low, high)

    def climb_ceiling(self, stage: StageView) -> float | None:
        """None: a stage with no candidate left holds the fallback LR."""
        return None

    def begin_stage(
        self,
        index: int,
        progress: float,
        last_lr: float,
        searched_before: bool,
        stalled: bool = False,
    ) -> tuple[float, float] | None:
        """Within ``lr_trust`` of the last LR; after a stalled stage, above it.

        A stage that learnt nothing at an LR that set off no guard says that LR is
        too small to leave where training started (a plateau), not too large (a
        too-large LR trips the guards): the trust region moves up to
        ``[last_lr, last_lr * lr_trust**2]``.
        """
        centre = last_lr * self.cfg.lr_trust if stalled and self.cfg.lr_trust else last_lr
        bounds = self._bounds(centre) if searched_before else None
        self.proposer.reset(index, progress, bounds)
        return bounds

    def _bounds(self, lr: float) -> tuple[float, float] | None:
        """Within ``lr_trust`` of the last stage's LR, clipped to the range (None: whole range)."""
        trust = self.cfg.lr_trust
        if trust is None or self.low is None or self.high is None:
            return None
        lo = max(self.low, lr / trust)
        hi = min(self.high, lr * trust)
        return (lo, hi) if lo < hi else None

    def propose(self, q: int) -> list[float]:
        return self.proposer.propose(q)

    def searched_enough(self, stage: StageView) -> bool:
        """Never: every planned probe runs."""
        return False

    def score(self, probe: ProbeRecord, stage: StageView) -> None:
        if not probe.diverged:
            self._forecast(probe, stage.spec.tau)
        self.proposer.observe(probe.lr, probe.forecast)

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

    def rank(self, stage: StageView) -> list[ProbeRecord]:
        """By forecast, among probes not rolled back and below every rolled-back LR.

        Every rollback reason is a sign of a too-large LR, so a larger candidate
        would most likely fail too and waste its exploit.
        """
        out = [p for p in stage.probes if p.forecast is not None and p.lr not in stage.rejected]
        if stage.rejected:
            cap = min(stage.rejected)
            out = [p for p in out if p.lr < cap]
        return sorted(out, key=lambda p: p.forecast if p.forecast is not None else math.inf)

    def decay_fraction(self, stage: StageView, winner: ProbeRecord | None) -> float | None:
        """The planned decay (``anneal_fraction``)."""
        return None

    def reject(self, lr: float) -> None:
        self.proposer.mark_diverged(lr)

    def decay_lr(self, start_lr: float, done: int, steps: int) -> float:
        """Decay of the config's shape to ``anneal_to`` times the start LR."""
        return start_lr * decay_factor(self.cfg.shape, done, steps, self.cfg.anneal_to)

    def config(self) -> dict[str, Any]:
        settings = getattr(self.proposer, "config", None)
        return {"name": self.name, "proposer": settings() if callable(settings) else None}

    def reset(self) -> None:
        """Nothing beyond the proposer's per-stage reset (see :meth:`begin_stage`)."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "proposer": self.proposer.state_dict() if self.proposer is not None else None,
            "range": [self.low, self.high],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        low, high = state.get("range", (self.cfg.min_lr, self.cfg.max_lr))
        if low is not None and high is not None and (low, high) != (self.low, self.high):
            self.set_range(float(low), float(high))
        if state["proposer"] is not None:
            self.proposer.load_state_dict(state["proposer"])


def decay_factor(shape: str, done: int, steps: int, to: float = 0.0) -> float:
    """LR factor of step ``done`` (from 0) of a ``steps``-step decay, from 1 towards ``to``.

    Shapes: ``linear``, ``1-sqrt`` (``1 - sqrt(progress)``: falls fast at the end)
    and ``cosine``; ``progress`` runs from ``1 / (steps + 1)`` to
    ``steps / (steps + 1)``, so neither end is exactly 1 or 0.
    """
    left = max(0.0, (steps - done) / (steps + 1))
    if shape == "linear":
        f = left
    elif shape == "1-sqrt":
        f = 1.0 - math.sqrt(1.0 - left)
    else:
        f = 0.5 * (1.0 + math.cos(math.pi * (1.0 - left)))
    return to + (1 - to) * f


class AnnealStrategy(ForecastStrategy):
    """Decide as tuned schedules do: score each LR by the loss after annealing it.

    One race at the start over a geometric ladder below the range test's top
    (``high, high / 2, ...``): each probe holds its LR, then cools down linearly
    to 0 (the controller runs both), and is scored by the objective at the end of
    the cooldown (the median of its last losses, or the validation loss). A
    candidate that ends the cooldown less than 2% below the stage start made no
    progress (:func:`autolr.stage.kept_no_gain`) and is out; when every one is
    out that way (a plateau), the exploit climbs from the ladder's floor
    (:meth:`climb_ceiling`). The winner (its pre-cooldown state kept) is held until
    the final decay, shaped ``decay_shape``: ``anneal_fraction`` of the budget when
    given, else decided with the winner (:meth:`decay_fraction`).
    """

    name = "anneal"

    def __init__(
        self,
        config: AutoLRSConfig,
        forecaster: Forecaster | None = None,
        proposer: Proposer | None = None,
    ) -> None:
        super().__init__(config, forecaster, proposer)
        self.next = 0

    def begin_stage(
        self,
        index: int,
        progress: float,
        last_lr: float,
        searched_before: bool,
        stalled: bool = False,
    ) -> tuple[float, float] | None:
        self.next = 0
        return None

    def propose(self, q: int) -> list[float]:
        """The ladder's next ``q`` rungs, fewer where it reaches the range's floor:
        a rung below it is raised to it once, and the ladder ends there."""
        if self.high is None or self.low is None:
            raise ConfigError("the annealed race needs its range (the range test sets it)")
        out: list[float] = []
        while len(out) < q and self.ladder_left():
            out.append(max(self.low, self.high / 2.0**self.next))
            self.next += 1
        return out

    def ladder_left(self) -> bool:
        """Whether the ladder has a rung left: one above the range's floor came last."""
        if self.high is None or self.low is None or self.next == 0:
            return True
        return self.high / 2.0 ** (self.next - 1) > self.low

    def score(self, probe: ProbeRecord, stage: StageView) -> None:
        if probe.diverged:
            return
        tail = [v for v in probe.losses[-score_window(stage.spec) :] if v is not None]
        if not tail:
            probe.diverged, probe.reason = True, "no finite loss after the cooldown"
            return
        value = tail[-1] if self.cfg.objective == "val_loss" else statistics.median(tail)
        start = stage.val0 if stage.val0 is not None else stage.ref_loss
        if start is None and probe.train_losses and probe.train_losses[0] is not None:
            start = probe.train_losses[0]
        if start is not None and kept_no_gain(value, start):
            probe.diverged, probe.reason = True, "no progress: back at the start level"
            return
        probe.forecast = value

    def searched_enough(self, stage: StageView) -> bool:
        """The race ends before its last rungs when, from its ``RACE_MIN_PROBES``-th
        candidate on, the latest (the smallest LR yet) scores ``RACE_CLEAR`` standard
        errors (:func:`score_error`) worse than the best so far, which holds a larger
        LR, or made no progress: further down the ladder the score only rises. (Never
        after two: one noisy rung in between can be worse than both its neighbours.)
        A candidate out for another reason (a blow-up, a failed probe) ends nothing.
        With the training-loss objective only; a validation score has no error to read.
        With a ``prober`` it is asked between batches of ``parallel_probes``: with 2
        or more in a batch, every rung of a 4-rung race runs. It ends, whatever the
        objective, where the ladder reaches the range's floor (a range given that
        cuts it short: no LR is raced twice).
        """
        if not self.ladder_left():
            return True
        probes = stage.probes
        if self.cfg.objective != "train_loss" or not (
            settings.RACE_MIN_PROBES <= len(probes) < stage.spec.probes
        ):
            return False
        last = probes[-1]
        scored = [p for p in probes[:-1] if p.forecast is not None]
        if not scored:
            return False
        best = min(scored, key=lambda p: p.forecast if p.forecast is not None else math.inf)
        if best.lr <= last.lr or best.forecast is None:
            return False
        if last.forecast is None:  # out: ends the race only for making no progress
            return (last.reason or "").startswith("no progress")
        err_best, err_last = score_error(best, stage.spec), score_error(last, stage.spec)
        if err_best is None or err_last is None:
            return False
        return last.forecast - best.forecast > settings.RACE_CLEAR * math.hypot(err_best, err_last)

    def decay_fraction(self, stage: StageView, winner: ProbeRecord | None) -> float | None:
        """A short decay (``SHORT_ANNEAL_FRACTION``) when the winner's cooldown took
        less than ``SHORT_DECAY_GAIN`` of its training loss off (:func:`cooldown_gain`):
        there is little noise to anneal away and more to gain at the held LR. With
        no winner (a plateau, where every candidate made no progress), the largest
        gain of any candidate's full cooldown is read instead. The planned decay
        otherwise, when no cooldown can be read, or when ``anneal_fraction`` is set."""
        if self.cfg.anneal_fraction is not None:
            return None
        probes = [winner] if winner is not None else stage.probes
        gains = [g for g in (cooldown_gain(p, stage.spec) for p in probes) if g is not None]
        if not gains or max(gains) >= settings.SHORT_DECAY_GAIN:
            return None
        return settings.SHORT_ANNEAL_FRACTION

    def reject(self, lr: float) -> None:
        """Nothing to tell: the race's ladder is fixed."""

    def climb_ceiling(self, stage: StageView) -> float | None:
        """A race where every candidate made no progress, none blew up, was run on a
        plateau: the exploit climbs from the ladder's floor, up to the LR where the
        range test stopped (twice the ladder's top when that is unknown), never
        above a ``max_lr`` given."""
        plateau = all(
            p.diverged and (p.reason or "").startswith("no progress") for p in stage.probes
        )
        if not stage.probes or not plateau:
            return None
        cap = self.ceiling
        if cap is None and self.high is not None:
            cap = 2.0 * self.high
        if cap is not None and self.cfg.max_lr is not None:
            cap = min(cap, self.cfg.max_lr)
        return cap

    def state_dict(self) -> dict[str, Any]:
        return {
            "proposer": None,
            "range": [self.low, self.high],
            "next": self.next,
            "ceiling": self.ceiling,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        low, high = state.get("range", (None, None))
        if low is not None and high is not None:
            self.low, self.high = float(low), float(high)
        self.next = int(state.get("next", 0))
        ceiling = state.get("ceiling")
        self.ceiling = float(ceiling) if ceiling is not None else None


def score_window(spec: StageSpec) -> int:
    """How many of a race probe's last values its score reads (a third of its cooldown, >= 3)."""
    return max(3, spec.cool // 3)


def score_error(probe: ProbeRecord, spec: StageSpec) -> float | None:
    """The standard error of a race probe's training-loss score (the median of its
    last :func:`score_window` losses), from their step-to-step spread: the robust sd
    of successive differences over the root of 2, times 1.25 (a median's
    efficiency) over the root of their count. None with fewer than 4 finite losses,
    or no spread to read (losses on a coarse grid, as in low precision)."""
    tail = [v for v in probe.train_losses[-score_window(spec) :] if v is not None]
    if len(tail) < 4:
        return None
    steps = [b - a for a, b in zip(tail, tail[1:])]
    error = robust_sd(steps) / math.sqrt(2.0) * 1.25 / math.sqrt(len(tail))
    return error if error > 0 else None


def cooldown_gain(probe: ProbeRecord, spec: StageSpec) -> float | None:
    """The share of its training loss a race probe's cooldown took off.

    ``1 - cooled / held``: ``held`` the median training loss of the last steps at
    the probe's LR, ``cooled`` that of the last steps of its cooldown (as many as
    its score reads, :func:`score_window`). None without a cooldown, with too few
    finite losses, or when ``held`` is not positive.
    """
    if spec.cool <= 0:
        return None
    n = score_window(spec)
    losses = probe.train_losses
    held = [v for v in losses[max(0, spec.tau_probe - n) : spec.tau_probe] if v is not None]
    cooled = [v for v in losses[spec.tau_probe :][-n:] if v is not None]
    if len(held) < 2 or len(cooled) < 2 or len(losses) < spec.probe_steps:
        return None
    level = statistics.median(held)
    if level <= 0:
        return None
    return 1.0 - statistics.median(cooled) / level


def make_strategy(
    config: AutoLRSConfig, forecaster: Forecaster | None = None, proposer: Proposer | None = None
) -> ForecastStrategy:
    """The strategy the config names."""
    cls = AnnealStrategy if config.strategy == "anneal" else ForecastStrategy
    return cls(config, forecaster=forecaster, proposer=proposer)
