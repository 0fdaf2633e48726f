"""Candidate LRs by Gaussian-process Bayesian optimization over log(lr).

The search space is ``x = (log lr - log min_lr) / (log max_lr - log min_lr)`` in
``[0, 1]``. The objective is the forecast loss (lower is better). A diverged
probe is told to the GP as a bad but finite value: the worst finite forecast of
the data plus a margin, recomputed whenever the data change (a fixed ``1e6``
would wreck the GP's standardization).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch

from autolr.errors import FitError

logger = logging.getLogger(__name__)

GRID_SIZE = 257


@dataclass
class Observation:
    """One probed LR.

    Attributes:
        x: normalized log-LR in ``[0, 1]``.
        value: forecast loss, or None when the probe diverged.
        stage: stage index the probe belongs to.
        progress: fraction of the training budget done at the stage start, in ``[0, 1]``.
    """

    x: float
    value: float | None
    stage: int
    progress: float = 0.0

    @property
    def diverged(self) -> bool:
        return self.value is None


class Proposer(Protocol):
    """Proposes LRs to probe and learns from their outcomes."""

    def propose(self, q: int) -> list[float]: ...

    def observe(self, lr: float, value: float | None) -> None: ...

    def mark_diverged(self, lr: float) -> None: ...

    def reset(
        self, stage: int, progress: float, bounds: tuple[float, float] | None = None
    ) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class GPProposer:
    """BoTorch ``SingleTaskGP`` (Matérn 5/2, standardized outcomes) over normalized log(lr).

    Args:
        min_lr: lower bound of the search, linear scale.
        max_lr: upper bound of the search, linear scale.
        acquisition: ``"ei"`` (log expected improvement; q > 1 uses qLogNEI),
            ``"ucb"`` (lower confidence bound on the loss with ``beta``), or
            ``"lcb-autolrs"`` (the paper's kappa = 1e6, pure exploration).
        beta: UCB exploration weight.
        initial: probes per stage placed space-filling before the GP is used.
        warm_start: keep earlier stages' observations and fit a GP over
            ``(log lr, training progress)`` with per-stage standardized values.
        seed: seeds the space-filling design; each call also runs under a
            forked RNG seeded from it, so proposals are reproducible and the
            caller's RNG streams are untouched.
        device: device of the GP (``"auto"``: CUDA when available).
        min_distance: normalized distance under which a grid point counts as
            already probed (never re-probed within a stage).
    """

    def __init__(
        self,
        min_lr: float,
        max_lr: float,
        *,
        acquisition: str = "ei",
        beta: float = 2.0,
        initial: int = 3,
        warm_start: bool = False,
        seed: int = 0,
        device: str = "auto",
        min_distance: float = 0.5 / (GRID_SIZE - 1),
    ) -> None:
        self.log_min = math.log(min_lr)
        self.log_max = math.log(max_lr)
        self.acquisition = acquisition
        self.beta = beta
        self.initial = initial
        self.warm_start = warm_start
        self.seed = seed
        self.device = resolve_device(device)
        self.min_distance = min_distance
        self.observations: list[Observation] = []
        self.stage = 0
        self.progress = 0.0
        self.calls = 0
        self.bounds = (0.0, 1.0)

    def config(self) -> dict[str, Any]:
        """The settings a replay needs to rebuild this proposer (JSON-friendly)."""
        return {
            "name": "gp",
            "acquisition": self.acquisition,
            "beta": self.beta,
            "initial": self.initial,
            "warm_start": self.warm_start,
        }

    # -- conversions -------------------------------------------------------
    def to_x(self, lr: float) -> float:
        return (math.log(lr) - self.log_min) / (self.log_max - self.log_min)

    def to_lr(self, x: float) -> float:
        return math.exp(self.log_min + x * (self.log_max - self.log_min))

    # -- protocol ----------------------------------------------------------
    def reset(self, stage: int, progress: float, bounds: tuple[float, float] | None = None) -> None:
        """Start a stage: forget other stages' data unless ``warm_start``.

        ``bounds``: the ``(low, high)`` LRs this stage may propose (default: the
        whole ``[min_lr, max_lr]`` range).
        """
        self.stage = stage
        self.progress = progress
        self.calls = 0
        self.bounds = (0.0, 1.0)
        if bounds is not None:
            lo, hi = (min(max(self.to_x(b), 0.0), 1.0) for b in bounds)
            if not lo < hi:
                raise ValueError(f"stage bounds must satisfy low < high, got {bounds!r}")
            self.bounds = (lo, hi)
        if not self.warm_start:
            self.observations = []

    def observe(self, lr: float, value: float | None) -> None:
        """Record a probe's forecast (None: diverged)."""
        if value is not None and not math.isfinite(value):
            value = None
        self.observations.append(Observation(self.to_x(lr), value, self.stage, self.progress))

    def mark_diverged(self, lr: float) -> None:
        """Turn the current stage's observation at ``lr`` into a divergence."""
        x = self.to_x(lr)
        for obs in self.observations:
            if obs.stage == self.stage and abs(obs.x - x) < 1e-9:
                obs.value = None

    def stage_observations(self) -> list[Observation]:
        return [o for o in self.observations if o.stage == self.stage]

    def propose(self, q: int = 1) -> list[float]:
        """Next ``q`` LRs to probe, linear scale, inside the bounds, none probed this stage."""
        seed = self.seed * 100_003 + self.stage * 1_009 + self.calls
        self.calls += 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            xs = self._propose_x(q)
        return [self.to_lr(x) for x in xs]

    # -- internals ---------------------------------------------------------
    def _grid(self) -> torch.Tensor:
        grid = torch.linspace(0.0, 1.0, GRID_SIZE, dtype=torch.float64)
        lo, hi = self.bounds
        grid = grid[(grid >= lo - 1e-12) & (grid <= hi + 1e-12)]
        taken = [o.x for o in self.stage_observations()]
        if not taken:
            return grid
        dist = (grid[:, None] - torch.tensor(taken, dtype=torch.float64)[None, :]).abs()
        return grid[dist.min(dim=1).values > self.min_distance]

    def _space_filling(self, q: int) -> list[float]:
        """Stratified points of the initial design, then the largest gaps."""
        done = len(self.stage_observations())
        xs: list[float] = []
        gen = torch.Generator().manual_seed(self.seed * 7919 + self.stage)
        offsets = torch.rand(self.initial, generator=gen, dtype=torch.float64)
        for i in range(done, min(self.initial, done + q)):
            # Interleave strata so the first probes already span the range.
            stratum = _interleaved(self.initial)[i]
            lo, hi = self.bounds
            xs.append(lo + (hi - lo) * float((stratum + offsets[stratum]) / self.initial))
        while len(xs) < q:
            xs.append(self._largest_gap(xs))
        return xs

    def _largest_gap(self, extra: list[float]) -> float:
        grid = self._grid()
        taken = torch.tensor([o.x for o in self.stage_observations()] + extra, dtype=torch.float64)
        if taken.numel() == 0 or grid.numel() == 0:
            return 0.5
        dist = (grid[:, None] - taken[None, :]).abs().min(dim=1).values
        return float(grid[int(torch.argmax(dist))])

    def _propose_x(self, q: int) -> list[float]:
        current = self.stage_observations()
        finite_now = [o for o in current if not o.diverged]
        usable = self.observations if self.warm_start else current
        if len(current) < self.initial and not (self.warm_start and len(usable) >= self.initial):
            return self._space_filling(q)
        if not finite_now and not self.warm_start:
            # Everything diverged so far: search below the smallest diverged LR.
            low = min(o.x for o in current)
            grid = self._grid()
            below = grid[grid < low]
            if below.numel() == 0:
                return self._space_filling(q)
            return [float(below[len(below) // 2])] + [self._largest_gap([]) for _ in range(q - 1)]
        try:
            return self._bo_step(q)
        except FitError as exc:
            logger.warning("GP proposal failed (%s); using a space-filling point instead", exc)
            xs: list[float] = []
            for _ in range(q):
                xs.append(self._largest_gap(xs))
            return xs

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X, Y)`` for the GP: X ``(n, 1)`` or ``(n, 2)``, Y ``(n, 1)`` negated loss."""
        data = self.observations if self.warm_start else self.stage_observations()
        ys = _fill_diverged(data, self.warm_start)
        cols = [[o.x] + ([o.progress] if self.warm_start else []) for o in data]
        X = torch.tensor(cols, dtype=torch.float64)
        Y = -torch.tensor(ys, dtype=torch.float64).unsqueeze(-1)
        return X, Y

    def _fit(self) -> Any:
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms.outcome import Standardize
        from botorch.models.utils.gpytorch_modules import get_matern_kernel_with_gamma_prior
        from gpytorch.mlls import ExactMarginalLogLikelihood

        X, Y = self.training_data()
        X, Y = X.to(self.device), Y.to(self.device)
        last_exc: Exception | None = None
        for attempt in range(3):
            model = SingleTaskGP(
                X,
                Y,
                covar_module=get_matern_kernel_with_gamma_prior(ard_num_dims=X.shape[-1]),
                outcome_transform=Standardize(m=1),
            ).to(self.device)
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fit_gpytorch_mll(mll)
                return model
            except Exception as exc:  # noqa: BLE001 - botorch raises several types
                last_exc = exc
                torch.manual_seed(attempt + 1)
        raise FitError(f"GP fit failed after 3 attempts on {X.shape[0]} points: {last_exc}")

    def _bo_step(self, q: int) -> list[float]:
        from botorch.acquisition import (
            LogExpectedImprovement,
            UpperConfidenceBound,
            qLogNoisyExpectedImprovement,
            qUpperConfidenceBound,
        )
        from botorch.optim import optimize_acqf_discrete

        model = self._fit()
        grid = self._grid()
        if grid.numel() < q:
            raise FitError(f"only {grid.numel()} unprobed grid points left for q={q}")
        choices = grid.unsqueeze(-1)
        if self.warm_start:
            choices = torch.cat([choices, torch.full_like(choices, self.progress)], dim=-1)
        choices = choices.to(self.device)
        X, Y = self.training_data()
        X, Y = X.to(self.device), Y.to(self.device)
        acqf: Any
        if self.acquisition == "ei":
            if q == 1:
                now = X[:, -1] == self.progress if self.warm_start else None
                best = Y[now].max() if now is not None and bool(now.any()) else Y.max()
                acqf = LogExpectedImprovement(model, best_f=best)
            else:
                acqf = qLogNoisyExpectedImprovement(model, X_baseline=X, prune_baseline=True)
        else:
            beta = 1e12 if self.acquisition == "lcb-autolrs" else self.beta**2
            acqf = (
                UpperConfidenceBound(model, beta=beta)
                if q == 1
                else qUpperConfidenceBound(model, beta=beta)
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cand, _ = optimize_acqf_discrete(acqf, q=q, choices=choices, unique=True)
        return [float(c[0]) for c in cand.cpu()]

    def posterior(self, lrs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GP posterior mean and std of the forecast loss at ``lrs`` (linear scale, ``(m,)``).

        Returns:
            ``(mean, std)``, each ``(m,)``, in loss units, for the current stage.
        """
        model = self._fit()
        x = (lrs.double().log() - self.log_min) / (self.log_max - self.log_min)
        X = x.unsqueeze(-1)
        if self.warm_start:
            X = torch.cat([X, torch.full_like(X, self.progress)], dim=-1)
        with torch.no_grad():
            post = model.posterior(X.to(self.device))
        return -post.mean.squeeze(-1).cpu(), post.variance.clamp_min(0).sqrt().squeeze(-1).cpu()

    def state_dict(self) -> dict[str, Any]:
        return {
            "observations": [asdict(o) for o in self.observations],
            "stage": self.stage,
            "progress": self.progress,
            "calls": self.calls,
            "bounds": list(self.bounds),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.observations = [Observation(**o) for o in state["observations"]]
        self.stage = int(state["stage"])
        self.progress = float(state["progress"])
        self.calls = int(state["calls"])
        lo, hi = state.get("bounds", (0.0, 1.0))
        self.bounds = (float(lo), float(hi))


def _interleaved(n: int) -> list[int]:
    """Strata order 0..n-1 such that each prefix spreads over the range (middle, ends, ...)."""
    order: list[int] = []
    pending = [(0, n)]
    while pending:
        nxt = []
        for lo, hi in pending:
            if lo >= hi:
                continue
            mid = (lo + hi) // 2
            order.append(mid)
            nxt += [(lo, mid), (mid + 1, hi)]
        pending = nxt
    return order


def _fill_diverged(data: list[Observation], per_stage: bool) -> list[float]:
    """Values for the GP: diverged probes become the worst finite value plus a margin.

    With ``per_stage`` each stage's values are standardized first (median 0,
    spread 1), so stages at different loss levels can share one GP.
    """
    groups: dict[int, list[int]] = {}
    for i, o in enumerate(data):
        groups.setdefault(o.stage if per_stage else 0, []).append(i)
    out = [0.0] * len(data)
    for idx in groups.values():
        finite = [data[i].value for i in idx if data[i].value is not None]
        vals = [v for v in finite if v is not None]
        if vals:
            lo, hi = min(vals), max(vals)
            spread = max(hi - lo, 0.1 * abs(hi), 1e-3)
            bad = hi + spread
        else:
            lo, spread, bad = 0.0, 1.0, 1.0
        center = sorted(vals)[len(vals) // 2] if vals else 0.0
        for i in idx:
            v = data[i].value
            y = bad if v is None else v
            out[i] = (y - center) / spread if per_stage else y
    return out
