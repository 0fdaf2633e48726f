"""Settings of the autolr controller, validated once at construction."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from autolr.errors import ConfigError

ACQUISITIONS = ("ei", "ucb", "lcb-autolrs")
OBJECTIVES = ("train_loss", "val_loss")
DECISIONS = ("forecast", "posterior")

# AutoLRS paper settings, used when no budget is given.
PAPER_TAU = 1000
PAPER_TAU_MAX = 8000
PAPER_PROBES = 10
PAPER_PROBE_FRACTION = 0.1
# Probes per stage with a budget (benchmarked: 3 beat 5 and 10 on W1, W3 and S0).
BUDGET_PROBES = 3


def _check_positive_finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_fraction(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be in [{low}, {high}], got {value!r}")
    return float(value)


@dataclass
class AutoLRSConfig:
    """Every setting of :class:`autolr.AutoLRS`; see its docstring for each field.

    JSON-friendly: :meth:`to_dict` goes into the run log and the controller's
    ``state_dict``, and :meth:`from_dict` rebuilds it (used by replay).
    """

    min_lr: float
    max_lr: float
    total_steps: int | None = None
    tau: int | None = None
    tau_max: int | None = None
    tau_probe: int | None = None
    probe_fraction: float = PAPER_PROBE_FRACTION
    growth: float = 2.0
    probes: int | None = None
    parallel_probes: int = 1
    min_probe_steps: int = 5
    objective: str = "train_loss"
    val_every: int = 5
    warmup_steps: int = 0
    warmup_lr: float | None = None
    anneal_fraction: float | None = None
    anneal_to: float = 0.0
    keep_winner: bool = True
    early_abort: bool = True
    blowup_factor: float = 2.0
    guard_factor: float = 1.5
    acquisition: str = "ei"
    ucb_beta: float = 2.0
    initial_probes: int = 3
    warm_start: bool = False
    forecaster: str = "exponential"
    loss_floor: float | None = 0.0
    forecast_pessimism: float = 0.0
    decide_by: str = "forecast"
    prefer_larger: float = 0.0
    lr_trust: float | None = 2.0
    cap_after_rollback: bool = True
    seed: int = 0
    gp_device: str = "auto"
    snapshot_device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.min_lr = _check_positive_finite("min_lr", self.min_lr)
        self.max_lr = _check_positive_finite("max_lr", self.max_lr)
        if self.min_lr >= self.max_lr:
            raise ConfigError(
                f"min_lr must be below max_lr, got min_lr={self.min_lr!r} >= max_lr={self.max_lr!r}"
            )
        _check_int("total_steps", self.total_steps, 1, allow_none=True)
        _check_int("tau", self.tau, 1, allow_none=True)
        _check_int("tau_max", self.tau_max, 1, allow_none=True)
        _check_int("tau_probe", self.tau_probe, 1, allow_none=True)
        _check_int("probes", self.probes, 1, allow_none=True)
        _check_int("parallel_probes", self.parallel_probes, 1)
        _check_int("min_probe_steps", self.min_probe_steps, 2)
        _check_int("val_every", self.val_every, 1)
        _check_int("warmup_steps", self.warmup_steps, 0)
        _check_int("initial_probes", self.initial_probes, 1)
        _check_int("seed", self.seed, 0)
        self.probe_fraction = _check_fraction("probe_fraction", self.probe_fraction, 0.001, 1.0)
        if self.probe_fraction <= 0.001:
            raise ConfigError(f"probe_fraction must be above 0.001, got {self.probe_fraction!r}")
        self.growth = _check_fraction("growth", self.growth, 1.0, 16.0)
        if self.anneal_fraction is not None:
            self.anneal_fraction = _check_fraction(
                "anneal_fraction", self.anneal_fraction, 0.0, 0.9
            )
        self.anneal_to = _check_fraction("anneal_to", self.anneal_to, 0.0, 1.0)
        self.blowup_factor = _check_positive_finite("blowup_factor", self.blowup_factor)
        self.guard_factor = _check_positive_finite("guard_factor", self.guard_factor)
        if self.blowup_factor <= 1.0:
            raise ConfigError(f"blowup_factor must be above 1, got {self.blowup_factor!r}")
        if self.guard_factor <= 1.0:
            raise ConfigError(f"guard_factor must be above 1, got {self.guard_factor!r}")
        self.ucb_beta = _check_positive_finite("ucb_beta", self.ucb_beta)
        if self.warmup_lr is not None:
            self.warmup_lr = _check_positive_finite("warmup_lr", self.warmup_lr)
        if self.loss_floor is not None and (
            isinstance(self.loss_floor, bool)
            or not isinstance(self.loss_floor, (int, float))
            or not math.isfinite(self.loss_floor)
        ):
            raise ConfigError(
                f"loss_floor must be None or a finite number, got {self.loss_floor!r}"
            )
        self.forecast_pessimism = _check_fraction(
            "forecast_pessimism", self.forecast_pessimism, 0.0, 10.0
        )
        self.prefer_larger = _check_fraction("prefer_larger", self.prefer_larger, 0.0, 1.0)
        if self.lr_trust is not None:
            self.lr_trust = _check_positive_finite("lr_trust", self.lr_trust)
            if self.lr_trust <= 1.0:
                raise ConfigError(f"lr_trust must be above 1 (or None), got {self.lr_trust!r}")
        if self.decide_by not in DECISIONS:
            raise ConfigError(f"decide_by must be one of {DECISIONS}, got {self.decide_by!r}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.acquisition not in ACQUISITIONS:
            raise ConfigError(
                f"acquisition must be one of {ACQUISITIONS}, got {self.acquisition!r}"
            )
        if self.gp_device != "auto" and not _is_device_name(self.gp_device):
            raise ConfigError(f"gp_device must be 'auto' or a torch device, got {self.gp_device!r}")
        if self.snapshot_device not in ("same",) and not _is_device_name(self.snapshot_device):
            raise ConfigError(
                f"snapshot_device must be 'cpu', 'same' or a torch device, "
                f"got {self.snapshot_device!r}"
            )
        if self.tau is not None and self.tau_max is not None and self.tau_max < self.tau:
            raise ConfigError(
                f"tau_max must be >= tau, got tau_max={self.tau_max} < tau={self.tau}"
            )
        if self.tau_probe is not None and self.tau is not None and self.tau_probe > self.tau:
            raise ConfigError(
                f"tau_probe must be <= tau, got tau_probe={self.tau_probe} > tau={self.tau}"
            )

    @property
    def n_probes(self) -> int:
        """Probes per stage: the given value, else 10 (paper) without a budget, 3 with one."""
        if self.probes is not None:
            return self.probes
        return PAPER_PROBES if self.total_steps is None else BUDGET_PROBES

    @property
    def anneal_steps(self) -> int:
        """Steps of the final linear decay (0 without ``total_steps``)."""
        if self.total_steps is None:
            return 0
        fraction = 0.1 if self.anneal_fraction is None else self.anneal_fraction
        return int(round(fraction * self.total_steps))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoLRSConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown AutoLRS settings: {unknown}")
        return cls(**data)


def _is_device_name(name: Any) -> bool:
    import torch

    if not isinstance(name, str):
        return False
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True
