"""The LR range test: an exponential LR ramp that finds where the loss falls and where it fails.

Run from a snapshot at the start of training (the controller restores it after;
its steps count in the budget). The LR grows from :data:`LOW` to :data:`HIGH`
over ``steps`` steps. The ramp stops at a non-finite loss, at a blow-up (the
smoothed loss above ``BLOWUP`` times its start), and at "no progress": the
smoothed loss has given back ``GIVEBACK`` of the gain it had made. On a network
sitting on its initial plateau a too-large LR does not explode, it drifts back
to the plateau level: the last rule is the one that sees it.

``best_lr`` is the ramp's LR at the lowest smoothed loss (a centred moving
average). When the loss never fell clearly below its start, it is a tenth of
the LR where the ramp stopped; so it is when the ramp blew up more than
:data:`FAR` times above its lowest loss: a loss that truly fell there would have
gone on falling over the decades between, so that lowest point is a dip of noise
on a flat floor (a loss as noisy as its level, on a short ramp).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

LOW, HIGH = 1e-6, 10.0
WARM = 8  # first steps (the LR still tiny): they give the start level and the noise
STILL = 1e-4  # an LR that leaves the state as it was over WARM steps (start_losses)
BLOWUP = 1.5
GIVEBACK = 0.75
EMA = 0.2  # weight of each new loss in the smoothed loss the stop rules watch
BELOW, ABOVE = 10.0, 3.0  # the forecast strategy searches [best_lr / BELOW, best_lr * ABOVE]
FAR = 100.0  # a lowest loss this far below a blow-up is noise (best_lr)
TOP = 1.0  # the annealed race's ladder starts at best_lr * TOP


@dataclass
class RangeTest:
    """The ramp's state (plain data).

    Attributes:
        steps: the ramp's length.
        lrs: LR of each step taken, linear scale.
        losses: each step's loss (None where non-finite).
        ema: the smoothed loss; start: its level at the start; low: its lowest.
    """

    steps: int
    lrs: list[float] = field(default_factory=list)
    losses: list[float | None] = field(default_factory=list)
    ema: float | None = None
    start: float | None = None
    low: float | None = None
    noise: float = 0.0

    def lr(self, i: int) -> float:
        """LR of step ``i`` (from 0) of the ramp."""
        ratio = (HIGH / LOW) ** (1.0 / max(self.steps - 1, 1))
        return LOW * ratio ** min(i, self.steps - 1)

    def add(self, lr: float, value: float) -> str | None:
        """Record one step; the reason the ramp stops, or None to go on."""
        self.lrs.append(lr)
        if not math.isfinite(value):
            self.losses.append(None)
            # An LR this small cannot make a loss non-finite: a bad batch did (the
            # controller puts non-finite weights back). Many such: the run is broken.
            if lr > STILL or self.losses.count(None) > WARM:
                return "non-finite loss"
            return "end of the ramp" if len(self.losses) >= self.steps else None
        self.losses.append(value)
        n = sum(v is not None for v in self.losses)
        if n == WARM:
            finite = [v for v in self.losses if v is not None]
            self.start = self.ema = self.low = statistics.fmean(finite)
            self.noise = statistics.pstdev(finite)
        elif n > WARM:
            assert self.ema is not None and self.start is not None and self.low is not None
            self.ema = (1 - EMA) * self.ema + EMA * value
            self.low = min(self.low, self.ema)
            if self._blown(self.ema):
                return f"loss above {BLOWUP:g}x its start"
            gain = self.start - self.low
            # Only a clear gain (beyond the start's noise) can be given back.
            if gain > 2 * self.noise and self.ema - self.low > GIVEBACK * gain:
                return "no progress: the loss gave back its gain"
        if len(self.losses) >= self.steps:
            return "end of the ramp"
        return None

    @property
    def blew_up(self) -> bool:
        """The ramp stopped at a non-finite loss or a blow-up (read from its data)."""
        if self.losses and self.losses[-1] is None:
            return True
        return self.ema is not None and self._blown(self.ema)

    def _blown(self, ema: float) -> bool:
        """The smoothed loss is above ``BLOWUP`` times the start and 3 noises above it."""
        start = self.start
        return start is not None and ema > max(BLOWUP * start, start + 3 * self.noise)

    @property
    def best_lr(self) -> float:
        """The LR at the lowest smoothed loss; a tenth of the stop LR without a clear
        drop, or when the ramp blew up more than :data:`FAR` times above that LR."""
        finite = [(lr, v) for lr, v in zip(self.lrs, self.losses) if v is not None]
        if len(finite) <= WARM:
            return self.lrs[0] if self.lrs else LOW
        values = [v for _, v in finite]
        half = 2
        smooth = [
            statistics.fmean(values[max(0, i - half) : i + half + 1]) for i in range(len(values))
        ]
        i = min(range(WARM, len(smooth)), key=lambda j: smooth[j])
        start = statistics.fmean(values[:WARM])
        noise = statistics.pstdev(values[:WARM])
        far = self.blew_up and self.lrs[-1] > FAR * finite[i][0]
        if smooth[i] >= start - noise or far:
            return self.lrs[-1] / 10
        return finite[i][0]

    @property
    def start_losses(self) -> list[float]:
        """The finite losses of the ramp's first :data:`WARM` steps taken at an LR still
        at most :data:`STILL`: the loss level and noise of the state the ramp started
        from (empty when fewer than 3, as on a ramp of a few steps)."""
        out = [
            v for lr, v in zip(self.lrs[:WARM], self.losses[:WARM]) if v is not None and lr <= STILL
        ]
        return out if len(out) >= 3 else []

    def suggested_range(self, config: Any) -> tuple[float, float]:
        """The search range this ramp suggests, before any range given narrows it.

        The annealed strategy races ``probes`` LRs halving down from ``best_lr``;
        the forecast strategy searches ``[best_lr / BELOW, ABOVE * best_lr]``.
        """
        best = self.best_lr
        if config.strategy == "anneal":
            high = TOP * best
            return high / 2.0 ** max(config.n_probes - 1, 1), high
        return best / BELOW, ABOVE * best

    def outside(self, config: Any) -> str | None:
        """The bound of the range given that the ramp's suggestion lies wholly beyond
        (``"max_lr"``: above it, ``"min_lr"``: below it), or None."""
        low, high = self.suggested_range(config)
        if config.max_lr is not None and low >= config.max_lr:
            return "max_lr"
        if config.min_lr is not None and high <= config.min_lr:
            return "min_lr"
        return None

    def search_range(self, config: Any) -> tuple[float, float]:
        """The search range this ramp suggests, narrowed to the range given, if any."""
        low, high = self.suggested_range(config)
        given_low = config.min_lr if config.min_lr is not None else 0.0
        given_high = config.max_lr if config.max_lr is not None else math.inf
        low, high = max(low, given_low), min(high, given_high)
        if not low < high:
            # The test disagrees with the range given: keep what was given.
            low = given_low if config.min_lr is not None else given_high / 100
            high = given_high if config.max_lr is not None else given_low * 100
        return low, high

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
