"""A stage's state, and the guards that judge its exploit.

Plain data saved in the controller's ``state_dict``, and pure functions of it:
the controller asks :func:`exploit_guard` during an exploit and
:func:`end_guard` at its end whether to roll back to the stage snapshot.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from autolr.plan import StageSpec
from autolr.probing import ProbeRecord


@dataclass
class StageState:
    """The current stage's progress.

    Attributes:
        spec: the stage's lengths.
        start_step: global step of the stage snapshot.
        progress: fraction of the budget done at the snapshot.
        ref_loss: median of the losses before the snapshot (the stage's start loss);
            for an annealed race right after the range test, of the ramp's first
            losses (taken at the snapshot's state); else, for a race, the first
            probe's first loss, set when it finishes.
        noise: robust sd of those losses (0 for a race judged from its first probe).
        recent_max: the highest of them (the blow-up rule's reference).
        val0: the validation objective at the snapshot, with a validation objective.
        probes: the stage's finished probes.
        chosen_lr, chosen_forecast: the exploit's LR and its score.
        rejected: LRs whose exploit was rolled back.
        nonfinite: those of them rolled back for a non-finite loss.
        exploit_losses: the exploit's losses so far (None where non-finite).
        exploit_target: the exploit's length in steps.
        exploit_best: the lowest windowed median the exploit reached.
        from_probe: the exploit continues from the winner probe's end state.
        winner: index of the probe whose end state is kept, if any.
        guarded: the guards judge this exploit (not a fallback below ``min_lr``,
            taken after ``min_lr`` itself failed; a non-finite loss still rolls back).
        climb_cap: while the exploit climbs off a plateau (see :func:`climb`), the
            highest LR it may climb to; None: no climb.
        climb_every: exploit steps between two doublings of the climb.
        climbs: ``[step, lr]`` of each doubling of the climb.
        best_at: the exploit step the stage's snapshot last moved to (the annealed
            hold's best state so far, where a rollback goes; 0: the stage's start).
    """

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
    nonfinite: list[float] = field(default_factory=list)
    exploit_losses: list[float | None] = field(default_factory=list)
    exploit_target: int = 0
    exploit_best: float | None = None
    from_probe: bool = False
    winner: int | None = None
    guarded: bool = True
    climb_cap: float | None = None
    climb_every: int = 0
    climbs: list[list[float]] = field(default_factory=list)
    best_at: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageState:
        data = dict(data)
        data["spec"] = StageSpec(**data["spec"])
        data["probes"] = [ProbeRecord(**p) for p in data["probes"]]
        return cls(**data)

    @property
    def abort_ref(self) -> float | None:
        """Loss level the blow-up rule compares with: the highest of the last
        losses before the snapshot (per-batch losses near zero are heavy-tailed,
        so their median would make ordinary batches look like a blow-up)."""
        return self.recent_max if self.recent_max is not None else self.ref_loss

    @property
    def guard_window(self) -> int:
        """Exploit steps the guards take the median over."""
        return max(3, self.spec.tau_probe // 2)

    def reached_train(self) -> float | None:
        """The training loss the exploit reached: the median of its last window (None: none)."""
        finite = [v for v in self.exploit_losses[-self.guard_window :] if v is not None]
        return statistics.median(finite) if finite else None

    def step_noise(self) -> float:
        """Per-step loss noise (robust sd): the stage's ``noise``, else from the fits."""
        rmse = [
            math.sqrt(p.fit["sse"] / max(p.fit["n_used"], 1.0))
            for p in self.probes
            if p.fit is not None and "sse" in p.fit
        ]
        return max(self.noise, statistics.median(rmse) if rmse else 0.0)


@dataclass
class AnnealState:
    """The final decay: first step, length, the LR it starts from, and each step's loss
    so far (None where non-finite; kept across a recovery, which restarts the decay)."""

    start: int
    steps: int
    lr: float
    losses: list[float | None] = field(default_factory=list)


NO_GAIN = 0.02
"""A stage "kept no gain" when its objective is not below the first stage's start by this share."""


def _guard_ref(stage: StageState, n_recent: int) -> float | None:
    """The stage's start loss when the guard judges this exploit, else None.

    The guard needs a known start loss, a searched stage, a full window, and
    a guarded exploit.
    """
    if stage.spec.probes == 0 or n_recent < stage.guard_window or not stage.guarded:
        return None
    return stage.ref_loss


def _step_spread(stage: StageState) -> float:
    """Step-to-step noise of the exploit's last losses (robust sd of their differences
    over sqrt 2: a falling or rising trend does not count as noise)."""
    values = [v for v in stage.exploit_losses[-4 * stage.guard_window :] if v is not None]
    return robust_sd([b - a for a, b in zip(values, values[1:])]) / math.sqrt(2.0)


def exploit_guard(stage: StageState, guard_factor: float) -> str | None:
    """Why the exploit must roll back now, or None (updates ``stage.exploit_best``).

    Fires when the median of the last ``guard_window`` losses exceeds
    ``guard_factor`` times the stage's start loss, or when the exploit had
    clearly improved and then gave back nine tenths of that gain: the signature
    of a network the LR killed. A gain is clear when the loss fell below the
    start by ``guard_factor`` (a third at the default), or, smaller, when it
    stands out of the step-to-step noise and is at least :data:`NO_GAIN` of the
    start (the gain a stage must keep): a network that leaves its initial
    plateau at a too-large LR falls a little, then dies back to the plateau.
    """
    recent = stage.exploit_losses[-stage.guard_window :]
    ref = _guard_ref(stage, len(recent))
    if ref is None:
        return None
    med = statistics.median(v for v in recent if v is not None)
    gf = guard_factor
    # "Clearly" above: beyond the factor and beyond the per-step noise.
    margin = 4.0 * stage.step_noise()
    stage.exploit_best = med if stage.exploit_best is None else min(stage.exploit_best, med)
    if med > max(gf * ref, ref + margin):
        return f"loss rose above {gf:g}x the stage start loss"
    best = stage.exploit_best
    gain = ref - best
    if gain > margin and med - best > 0.9 * gain:
        if best < ref / gf or (gain > NO_GAIN * abs(ref) and gain > 4.0 * _step_spread(stage)):
            return "loss fell, then rose back to the stage start loss"
    if (
        stage.spec.cool
        and stage.climb_cap is None
        and len(stage.exploit_losses) >= 4 * stage.guard_window
        and best >= ref
    ):
        # The annealed race's no-progress rule: a dead network sits at its start level,
        # not even its best window below it (no noise margin: in doubt, no rollback).
        return "no progress: the loss never left the stage start level"
    return None


def climb(stage: StageState) -> float | None:
    """While an exploit climbs off a plateau: the LR for the next steps, or None to stop.

    Called every ``climb_every`` exploit steps. The climb stops (None) once the
    exploit made a gain (its windowed median below the stage start by :data:`NO_GAIN`
    of it; no noise margin: in doubt, the climb stops), or
    when the LR would pass ``climb_cap``; else the LR doubles. A warmup that
    finds its own peak: on a plateau every LR looks alike for a probe's length,
    and the first LR large enough to leave it is held, before one large enough
    to kill the network. The slower the climb, the smaller the LR at which the
    network leaves the plateau, so the controller spreads the doublings from
    the fallback LR to the cap over the whole exploit.
    """
    assert stage.climb_cap is not None and stage.chosen_lr is not None
    ref = stage.ref_loss
    best = stage.exploit_best
    if ref is not None and best is not None:
        if ref - best > NO_GAIN * abs(ref):
            return None
    lr = 2.0 * stage.chosen_lr
    return lr if lr <= stage.climb_cap else None


def end_guard(stage: StageState) -> str | None:
    """At the end of an exploit: did the stage leave the loss clearly above its start?

    A too-large LR can degrade training slowly, stage after stage, without
    ever crossing the in-exploit thresholds. A stage whose last losses sit
    above the loss at its snapshot by more than the per-step noise allows
    is rolled back like any other failed exploit.
    """
    window = stage.guard_window
    recent = [v for v in stage.exploit_losses[-window:] if v is not None]
    ref = _guard_ref(stage, len(recent))
    if ref is None:
        return None
    margin = 4.0 * stage.step_noise() / math.sqrt(window) + 0.02 * abs(ref)
    if statistics.median(recent) > ref + margin:
        return "the stage ended above its start loss"
    return None


def kept_no_gain(reached: float | None, start: float | None) -> bool:
    """True when ``reached`` is not clearly below ``start`` (the objective when the first
    stage began): nothing learnt since. False when either is unknown."""
    if reached is None or start is None:
        return False
    return reached >= start - NO_GAIN * abs(start)


def robust_sd(values: list[float]) -> float:
    """1.4826 times the median absolute deviation (0 for fewer than 3 values)."""
    if len(values) < 3:
        return 0.0
    med = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - med) for v in values)


@dataclass(frozen=True)
class StageRow:
    """One finished stage, as :meth:`autolr.AutoLRS.summary` reports it.

    Attributes:
        stage: stage number.
        lr: the LR the stage exploited (linear scale).
        forecast: the strategy's score of that LR (the loss it forecast), None for a fallback.
        actual: the objective the exploit reached (validation loss with a ``val_fn``).
        steps: exploit steps.
        rollbacks: exploits of this stage the guards rolled back.
    """

    stage: int
    lr: float
    forecast: float | None
    actual: float | None
    steps: int
    rollbacks: int


class Summary(list[StageRow]):
    """The finished stages, in order; ``print()`` shows them as a table.

    Attributes:
        search_steps: steps spent on probes so far (the range test's included).
        total_steps: steps taken so far, probes included.
        kept_steps: of the search steps, the winners' probe steps at their LR that
            the exploit continued from (trained at the chosen LR, not lost); an
            exploit rolled back counts none, even where it went back only to its best state.
        scored_by: what each row's ``forecast`` is: ``forecast`` (the forecast
            strategy's) or ``score`` (the annealed strategy's loss after a cooldown).
    """

    def __init__(
        self,
        rows: list[StageRow],
        search_steps: int,
        total_steps: int,
        scored_by: str = "forecast",
        kept_steps: int = 0,
    ) -> None:
        super().__init__(rows)
        self.search_steps = search_steps
        self.total_steps = total_steps
        self.scored_by = scored_by
        self.kept_steps = kept_steps

    def __str__(self) -> str:
        def num(v: float | None, spec: str) -> str:
            return "-" if v is None else format(v, spec)

        lines = [
            f"{'stage':>5} {'lr':>10} {self.scored_by:>10} {'actual':>10} {'steps':>7} "
            f"{'rollbacks':>9}"
        ]
        for r in self:
            lines.append(
                f"{r.stage:>5} {r.lr:>10.4g} {num(r.forecast, '10.4g')} {num(r.actual, '10.4g')} "
                f"{r.steps:>7} {r.rollbacks:>9}"
            )
        share = self.search_steps / self.total_steps if self.total_steps else 0.0
        kept = f"; {self.kept_steps} of them kept, the winners' probes" if self.kept_steps else ""
        lines.append(f"search: {self.search_steps} of {self.total_steps} steps ({share:.0%}{kept})")
        return "\n".join(lines)
