"""The stage plan: how long each stage exploits and probes.

AutoLRS (no budget): ``tau`` starts at 1000 and doubles each stage up to 8000,
``tau_probe = tau / 10``, 10 probes a stage. With ``total_steps`` the plan is
sized from the budget: four growing stages (``tau0, 2 tau0, 4 tau0, 8 tau0`` at
``growth = 2``) cover the steps left after warmup and the final anneal, probe
steps included, and the last stage absorbs whatever remains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autolr import config as settings
from autolr.config import PAPER_TAU, PAPER_TAU_MAX, AutoLRSConfig
from autolr.errors import ConfigError

GROWING_STAGES = 4


@dataclass(frozen=True)
class StageSpec:
    """Lengths of one stage, in training steps.

    Attributes:
        index: stage number, from 0.
        tau: exploit horizon; forecasts are made for ``t = tau`` steps after the snapshot.
        tau_probe: steps of each probe.
        probes: number of candidate LRs probed (0: no search, exploit only).
        exploit_steps: steps trained at the chosen LR after the search.
        final: the last stage: its exploit runs until the final anneal (or the budget's end).
    """

    index: int
    tau: int
    tau_probe: int
    probes: int
    exploit_steps: int
    final: bool = False
    cool: int = 0

    @property
    def probe_steps(self) -> int:
        """Steps of one probe: ``tau_probe`` at its LR, then ``cool`` decaying to 0."""
        return self.tau_probe + self.cool

    @property
    def search_steps(self) -> int:
        return self.probes * self.probe_steps

    @property
    def cost(self) -> int:
        return self.search_steps + self.exploit_steps


class StagePlan:
    """Computes each stage's lengths from the config and the steps still available."""

    def __init__(self, config: AutoLRSConfig) -> None:
        self.config = config
        self.probes = config.n_probes
        self.fraction = config.probe_fraction
        if config.strategy == "anneal":
            if config.total_steps is None:
                raise ConfigError(
                    "strategy='anneal' needs total_steps: its race and its decay are sized "
                    "from the budget"
                )
            first = self._anneal_stage(0, self.available_steps)
            if first.probes == 0:
                raise ConfigError(
                    f"total_steps={config.total_steps} is too small for strategy='anneal': "
                    f"{self.probes} probes need about {self.probes * 3 * config.min_probe_steps} "
                    "steps plus the hold (fewer probes=, or strategy='forecast')"
                )
            self.tau0 = self.tau_max = first.tau
            return
        if config.total_steps is None:
            self.tau0 = config.tau or PAPER_TAU
            self.tau_max = config.tau_max or max(self.tau0, PAPER_TAU_MAX)
        else:
            available = self.available_steps
            growth_sum = sum(config.growth**i for i in range(GROWING_STAGES))
            per_tau = (
                1.0 + self.probes * self.fraction - (self.fraction if config.keep_winner else 0)
            )
            # Fewer, longer stages when the budget would make probes too short.
            shortest = math.ceil(config.min_probe_steps / self.fraction)
            self.tau0 = config.tau or max(shortest, int(available / (growth_sum * per_tau)))
            self.tau_max = config.tau_max or max(
                self.tau0, int(round(self.tau0 * config.growth ** (GROWING_STAGES - 1)))
            )
            first = self._nominal(0)
            if config.tau is not None and available < first.cost:
                raise ConfigError(
                    f"tau={config.tau} does not fit total_steps={config.total_steps}: one stage "
                    f"at that tau takes {first.cost} steps and {available} are left after "
                    "warmup and anneal; pass a smaller tau, or none (it is then sized from "
                    "the budget)"
                )
            if available < first.cost or first.tau_probe < config.min_probe_steps:
                need = self._minimal_cost()
                raise ConfigError(
                    f"total_steps={config.total_steps} is too small for one stage: "
                    f"{self.probes} probes of at least {config.min_probe_steps} steps plus the "
                    f"exploit need about {need} steps after warmup "
                    f"({config.warmup_steps}) and the final anneal ({config.anneal_steps})"
                )

    @property
    def available_steps(self) -> int:
        """Steps for stages: the budget less range test, warmup and anneal (with a budget)."""
        cfg = self.config
        if cfg.total_steps is None:
            raise ConfigError("available_steps needs total_steps")
        return cfg.total_steps - cfg.n_range_steps - cfg.warmup_steps - cfg.anneal_steps

    def _tau_probe(self, tau: int) -> int:
        if self.config.tau_probe is not None:
            return min(self.config.tau_probe, tau)
        return max(1, int(round(tau * self.fraction)))

    def _anneal_stage(self, index: int, remaining: int | None) -> StageSpec:
        """The annealed strategy's plan: one race of ``probes`` candidates, each
        ``tau_probe`` steps then a cooldown, and the winner held to the decay."""
        assert remaining is not None and self.config.total_steps is not None
        total = self.config.total_steps
        held = round(settings.RACE_PROBE_FRACTION * total)
        tp = self.config.tau_probe or max(self.config.min_probe_steps, held)
        cool = max(2, round(self.config.cooldown_fraction * tp))
        search = self.probes * (tp + cool)
        if index > 0 or remaining <= search + tp:
            return StageSpec(index, max(remaining, 0), 0, 0, max(remaining, 0), final=True)
        return StageSpec(index, remaining, tp, self.probes, remaining - search, True, cool)

    def _minimal_cost(self) -> int:
        probe = self.config.min_probe_steps
        tau = max(probe, math.ceil(probe / self.fraction))
        return self.probes * probe + tau

    def _nominal(self, index: int) -> StageSpec:
        tau = min(self.tau_max, int(round(self.tau0 * self.config.growth**index)))
        tau_probe = self._tau_probe(tau)
        exploit = tau - (tau_probe if self.config.keep_winner else 0)
        return StageSpec(index, tau, tau_probe, self.probes, exploit)

    def stage(self, index: int, remaining: int | None) -> StageSpec:
        """Lengths of stage ``index`` given the steps left for stages.

        Args:
            index: stage number.
            remaining: steps left before the final anneal, or None without a budget.

        Returns:
            The stage; when the budget is short its exploit is cut, its probes
            shortened, or (below ``min_probe_steps``) its search dropped so the
            previous LR exploits the rest. The last stage absorbs the remainder.
        """
        if self.config.strategy == "anneal":
            return self._anneal_stage(index, remaining)
        spec = self._nominal(index)
        if remaining is None:
            return spec
        if remaining <= 0:
            return StageSpec(index, 0, 0, 0, 0, final=True)
        if remaining < spec.cost:
            # Shrink the stage to fit what is left.
            per_tau = (
                1.0
                + self.probes * self.fraction
                - (self.fraction if self.config.keep_winner else 0)
            )
            tau = max(1, int(remaining / per_tau))
            tau_probe = self._tau_probe(tau)
            if (
                tau_probe < self.config.min_probe_steps
                or self.probes * tau_probe >= remaining
                or tau < self.tau0 // 2
            ):
                return StageSpec(index, remaining, 0, 0, remaining, final=True)
            return StageSpec(
                index, tau, tau_probe, self.probes, remaining - self.probes * tau_probe, final=True
            )
        after = remaining - spec.cost
        next_spec = self._nominal(index + 1)
        if after < next_spec.cost:
            # Too little left for another full stage: this one exploits to the end.
            return StageSpec(
                index,
                spec.tau,
                spec.tau_probe,
                spec.probes,
                remaining - spec.search_steps,
                final=True,
            )
        return spec
