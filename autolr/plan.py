"""The stage plan: how long each stage exploits and probes.

With ``total_steps`` the range test, the warmup and the final decay come out of
the budget first; the stages share the steps left.

- Strategy ``anneal`` (the default with a budget): one stage, the race of
  ``n_probes`` probes (each 2% of the budget at its LR, at least
  ``min_probe_steps``, then a cooldown ``cooldown_fraction`` times as long), its
  winner held until the final decay.
- Strategy ``forecast`` with a budget: four growing stages (``tau0, 2 tau0,
  4 tau0, 8 tau0`` at ``growth = 2``) cover the steps left, probe steps included,
  and the last stage absorbs whatever remains. Without a budget, AutoLRS's plan:
  ``tau`` starts at 1000 and doubles each stage up to 8000, ``tau_probe = tau /
  10``, 10 probes a stage.

A budget too small for one stage is a :class:`~autolr.errors.ConfigError` that
names what takes the steps and about how large a ``total_steps`` the other
options need.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from autolr import config as settings
from autolr.config import MAX_STEPS, PAPER_TAU, PAPER_TAU_MAX, AutoLRSConfig
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

    def __init__(self, config: AutoLRSConfig, *, explain: bool = True) -> None:
        """Raises :class:`ConfigError` when the budget holds no stage; ``explain=False``
        leaves the requirement out of the message (used to search for it)."""
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
                raise ConfigError(self._anneal_too_small() if explain else "too small")
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
                    f"at that tau takes {first.cost} steps and {max(available, 0)} are left "
                    f"after {self._taken()}; pass a smaller tau, or none (it is then sized "
                    "from the budget)"
                )
            if available < first.cost or first.tau_probe < config.min_probe_steps:
                if not explain:
                    raise ConfigError("too small")
                probes = _count(self.probes, "probe")
                raise ConfigError(
                    f"total_steps={config.total_steps} is too small for one stage: "
                    f"{probes} of at least {config.min_probe_steps} steps plus the "
                    f"exploit need about {self._minimal_cost()} steps, and "
                    f"{max(available, 0)} are left after {self._taken()}; "
                    + self._budget_needed(self._forecast_hint())
                )

    def _taken(self) -> str:
        """What comes out of the budget before the stages, for error messages."""
        cfg = self.config
        assert cfg.total_steps is not None
        given = cfg.range_steps is not None and cfg.needs_range_test
        test = f"range_steps={cfg.n_range_steps}" if given else str(cfg.n_range_steps)
        share = cfg.anneal_steps / cfg.total_steps
        decay = f"{cfg.anneal_steps}, {share:.0%} of the budget"
        if cfg.anneal_fraction is not None:
            decay += f": anneal_fraction={cfg.anneal_fraction:g}"
        warmup = f"warmup_steps={cfg.warmup_steps}" if cfg.warmup_steps else "0"
        taken = f"the warmup ({warmup}) and the final decay ({decay})"
        return f"the range test ({test}), {taken}" if cfg.n_range_steps else taken

    def _forecast_hint(self) -> str:
        skip = "min_lr and max_lr to skip the range test, " if self.config.n_range_steps else ""
        return f"give {skip}fewer probes= or a smaller min_probe_steps"

    def _anneal_too_small(self) -> str:
        cfg = self.config
        assert cfg.total_steps is not None
        tp, cool = self._race_probe()
        if cfg.tau_probe is not None:
            length = f"tau_probe={tp} steps"
        else:
            length = (
                f"{tp} steps (2% of the budget, at least min_probe_steps={cfg.min_probe_steps})"
            )
        cooldown = f"a {cool}-step cooldown"
        if cfg.cooldown_fraction != 1.0:
            cooldown += f" (cooldown_fraction={cfg.cooldown_fraction:g})"
        probes = _count(self.probes, "probe")
        return (
            f"total_steps={cfg.total_steps} is too small for strategy='anneal': "
            f"{max(self.available_steps, 0)} steps are left after {self._taken()}, and the "
            f"race needs more than {self.probes * (tp + cool) + tp}: {probes} of "
            f"{length} at their LR and {cooldown} each, then a hold longer than one probe; "
            + self._budget_needed(
                "fewer probes=, a smaller cooldown_fraction or anneal_fraction, or "
                "strategy='forecast'"
            )
        )

    def _budget_needed(self, hint: str) -> str:
        """About the smallest ``total_steps`` whose plan fits, the other options as
        given, and ``hint`` (what else to change) for the end of an error message."""

        def fits(total: int) -> bool:
            try:
                StagePlan(dataclasses.replace(self.config, total_steps=total), explain=False)
            except ConfigError:
                return False
            return True

        assert self.config.total_steps is not None
        low = self.config.total_steps  # does not fit
        high = min(2 * low, MAX_STEPS)
        while not fits(high):
            if high >= MAX_STEPS:
                return (
                    "no total_steps fits these options: their shares of the budget add up to "
                    f"more than all of it ({hint})"
                )
            low, high = high, min(2 * high, MAX_STEPS)
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if fits(mid) else (mid, high)
        return f"these options need total_steps of about {high} or more ({hint})"

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

    def _race_probe(self) -> tuple[int, int]:
        """A race probe's steps at its LR and its cooldown's steps."""
        assert self.config.total_steps is not None
        held = round(settings.RACE_PROBE_FRACTION * self.config.total_steps)
        tp = self.config.tau_probe or max(self.config.min_probe_steps, held)
        return tp, max(2, round(self.config.cooldown_fraction * tp))

    def _anneal_stage(self, index: int, remaining: int | None) -> StageSpec:
        """The annealed strategy's plan: one race of ``probes`` candidates, each
        ``tau_probe`` steps then a cooldown, and the winner held to the decay."""
        assert remaining is not None
        tp, cool = self._race_probe()
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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
