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
from typing import Any, Protocol

import torch

from autolr.config import AutoLRSConfig
from autolr.errors import FitError
from autolr.forecast import Forecaster, make_forecaster
from autolr.probing import ProbeRecord
from autolr.proposer import GPProposer, Proposer


class StageView(Protocol):
    """What a strategy reads of a stage (the controller's ``StageState``)."""

    probes: list[ProbeRecord]
    rejected: list[float]
    progress: float


class Strategy(Protocol):
    """The decision rule the controller consults."""

    name: str

    def begin_stage(
        self, index: int, progress: float, last_lr: float, searched_before: bool
    ) -> tuple[float, float] | None:
        """A stage starts; returns the ``(low, high)`` LRs it may probe (None: the whole range)."""
        ...

    def propose(self, q: int) -> list[float]:
        """The next ``q`` LRs to probe, linear scale."""
        ...

    def score(self, probe: ProbeRecord, tau: int) -> None:
        """Score a finished probe in place (``forecast``, ``fit``; ``diverged`` if unscorable)."""
        ...

    def rank(self, stage: StageView) -> list[ProbeRecord]:
        """The stage's eligible candidates, best first (empty: none left)."""
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


def default_proposer(config: AutoLRSConfig) -> GPProposer:
    """The GP proposer over ``[min_lr, max_lr]`` with the config's settings."""
    return GPProposer(
        config.min_lr,
        config.max_lr,
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
        self.proposer = proposer if proposer is not None else default_proposer(config)

    def begin_stage(
        self, index: int, progress: float, last_lr: float, searched_before: bool
    ) -> tuple[float, float] | None:
        bounds = self._bounds(last_lr) if searched_before else None
        self.proposer.reset(index, progress, bounds)
        return bounds

    def _bounds(self, lr: float) -> tuple[float, float] | None:
        """Within ``lr_trust`` of the last stage's LR, clipped to the range (None: whole range)."""
        trust = self.cfg.lr_trust
        if trust is None:
            return None
        lo = max(self.cfg.min_lr, lr / trust)
        hi = min(self.cfg.max_lr, lr * trust)
        return (lo, hi) if lo < hi else None

    def propose(self, q: int) -> list[float]:
        return self.proposer.propose(q)

    def score(self, probe: ProbeRecord, tau: int) -> None:
        if not probe.diverged:
            self._forecast(probe, tau)
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

    def reject(self, lr: float) -> None:
        self.proposer.mark_diverged(lr)

    def decay_lr(self, start_lr: float, done: int, steps: int) -> float:
        """Linear decay to ``anneal_to`` times the start LR."""
        frac = max(0.0, (steps - done) / (steps + 1))
        to = self.cfg.anneal_to
        return start_lr * (to + (1 - to) * frac)

    def config(self) -> dict[str, Any]:
        settings = getattr(self.proposer, "config", None)
        return {"name": self.name, "proposer": settings() if callable(settings) else None}

    def reset(self) -> None:
        """Nothing beyond the proposer's per-stage reset (see :meth:`begin_stage`)."""

    def state_dict(self) -> dict[str, Any]:
        return {"proposer": self.proposer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.proposer.load_state_dict(state["proposer"])
