"""Settings of the autolr controller: every option defined once.

Each option is one field of :class:`AutoLRSConfig`, made by :func:`option` with
its default, its check and its one-line doc. The controller, the framework
callbacks, replay, the CLI and the README's options table all take option names
and docs from these fields (:func:`option_names`, :func:`options_table`);
nothing discovers options from a function signature. Adding an option is one
field here plus its use.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autolr.errors import ConfigError

# AutoLRS paper settings, used when no budget is given.
PAPER_TAU = 1000
PAPER_TAU_MAX = 8000
PAPER_PROBES = 10
PAPER_PROBE_FRACTION = 0.1
# Probes per stage with a budget (benchmarked: 3 beat 5 and 10 on W1, W3 and S0).
BUDGET_PROBES = 3
# The annealed strategy's race and decay (chosen on W1-W3 and S0; see BENCHMARKS.md).
ANNEAL_PROBES = 4
ANNEAL_FRACTION = 0.5
# Each race probe holds its LR for this share of the budget (then cools down).
RACE_PROBE_FRACTION = 0.02
# The decay the race decides (with `anneal_fraction` unset): a winner whose cooldown
# took less than SHORT_DECAY_GAIN of its training loss off decays over the last
# SHORT_ANNEAL_FRACTION of the budget instead of ANNEAL_FRACTION.
SHORT_DECAY_GAIN = 0.2
SHORT_ANNEAL_FRACTION = 0.25
# The race ends before its last rungs when, from its RACE_MIN_PROBES-th candidate on,
# the latest scores RACE_CLEAR standard errors worse than the best so far, at a larger LR.
RACE_MIN_PROBES = 3
RACE_CLEAR = 2.0

OBJECTIVES = ("train_loss", "val_loss")
STRATEGIES = ("forecast", "anneal")

Check = Callable[[str, Any], Any]


# ----------------------------------------------------------------- checks
def positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def above_one(name: str, value: Any) -> float:
    value = positive(name, value)
    if value <= 1.0:
        raise ConfigError(f"{name} must be above 1, got {value!r}")
    return value


# Step counts beyond this are surely a mistake, and float arithmetic on them overflows.
MAX_STEPS = 10**15


def integer(minimum: int) -> Check:
    def check(name: str, value: Any) -> int:
        # numbers.Integral: numpy integers count too.
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        value = int(value)
        if value < minimum:
            raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if value > MAX_STEPS:
            raise ConfigError(f"{name} must be at most {MAX_STEPS:.0e}, got {value!r}")
        return value

    return check


def fraction(low: float, high: float, *, open_low: bool = False) -> Check:
    def check(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ConfigError(f"{name} must be a number in [{low}, {high}], got {value!r}")
        if not low <= value <= high:
            raise ConfigError(f"{name} must be in [{low}, {high}], got {value!r}")
        if open_low and value <= low:
            raise ConfigError(f"{name} must be above {low}, got {value!r}")
        return float(value)

    return check


def trust_factor(name: str, value: Any) -> float:
    value = positive(name, value)
    if value <= 1.0:
        raise ConfigError(f"{name} must be above 1 (or None), got {value!r}")
    return value


def finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be None or a finite number, got {value!r}")
    return float(value)


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def one_of(*choices: str) -> Check:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
        return str(value)

    return check


def device_name(*special: str) -> Check:
    def check(name: str, value: Any) -> str:
        if value in special or _is_device_name(value):
            return str(value)
        allowed = " or ".join(repr(s) for s in special)
        raise ConfigError(f"{name} must be {allowed} or a torch device, got {value!r}")

    return check


def _is_device_name(name: Any) -> bool:
    import torch

    if not isinstance(name, str):
        return False
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return device.type != "meta"  # holds no data


def option(
    default: Any,
    doc: str,
    check: Check | None = None,
    *,
    optional: bool = False,
    derived: bool = False,
    forecast_only: bool = False,
) -> Any:
    """One option: its default, its check (skipped for None when ``optional``), its doc.

    ``derived`` marks a setting the controller fills in itself (recorded in the
    log, never passed by the user). ``forecast_only``: read by the ``forecast``
    strategy alone; set to another value than its default, it picks that strategy
    when none is named.
    """
    meta = {
        "doc": doc,
        "check": check,
        "optional": optional,
        "derived": derived,
        "forecast_only": forecast_only,
    }
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class AutoLRSConfig:
    """Every setting of :class:`autolr.AutoLRS` (plain data, JSON-friendly).

    :meth:`to_dict` goes into the run log and the controller's ``state_dict``;
    :meth:`from_dict` rebuilds it (used by replay and resume).
    """

    min_lr: float | None = option(
        None,
        "lower bound of the LR search (first param group's LR, linear scale); None: found "
        "by an LR range test at the start",
        positive,
        optional=True,
    )
    max_lr: float | None = option(
        None,
        "upper bound of the LR search (linear scale); None: found by the range test",
        positive,
        optional=True,
    )
    strategy: str | None = option(
        None,
        "the decision rule: `anneal` (range test, a race scored after a cooldown, the winner "
        "held, then a long decay; needs total_steps) or `forecast` (each probe's loss "
        "forecast at the stage's horizon, as in AutoLRS); default `anneal` with total_steps, "
        "else `forecast`, which an option only it reads (`tau`, `lr_trust`, ...) also picks",
        one_of(*STRATEGIES),
        optional=True,
    )
    cooldown_fraction: float = option(
        1.0,
        "with strategy `anneal`: each probe's cooldown to LR 0, as a fraction of its length",
        fraction(0.05, 2.0),
    )
    range_steps: int | None = option(
        None,
        "steps of the LR range test (run when min_lr or max_lr is None, and by strategy "
        "`anneal`); default 2% of total_steps, at least 40 (100 without total_steps)",
        integer(16),  # twice the ramp's first steps that read the start level and noise
        optional=True,
    )
    decay_shape: str | None = option(
        None,
        "shape of the final decay: `linear`, `1-sqrt` or `cosine` (default: `linear`; "
        "`1-sqrt` with strategy `anneal`)",
        one_of("linear", "1-sqrt", "cosine"),
        optional=True,
    )
    total_steps: int | None = option(
        None,
        "the step budget, probes included: the search is sized to fit it, the last "
        "`anneal_fraction` decays the LR and `finished` turns True when it is spent "
        "(None: strategy `forecast` with AutoLRS stage sizes, no decay, never finished)",
        integer(1),
        optional=True,
    )
    tau: int | None = option(
        None,
        "first stage's exploit horizon in steps (AutoLRS: 1000; sized from the budget)",
        integer(1),
        optional=True,
        forecast_only=True,
    )
    tau_max: int | None = option(
        None,
        "largest `tau` (AutoLRS: 8000; with a budget: 8 * tau)",
        integer(1),
        optional=True,
        forecast_only=True,
    )
    tau_probe: int | None = option(
        None,
        "probe length in steps at its LR (default: with strategy `anneal`, 2% of total_steps, "
        "at least `min_probe_steps`, then a cooldown; with `forecast`, `probe_fraction * tau`)",
        integer(1),
        optional=True,
    )
    probe_fraction: float = option(
        PAPER_PROBE_FRACTION,
        "`tau_probe / tau` when `tau_probe` is not given",
        fraction(0.001, 1.0, open_low=True),
        forecast_only=True,
    )
    growth: float = option(
        2.0, "factor by which `tau` grows each stage", fraction(1.0, 16.0), forecast_only=True
    )
    probes: int | None = option(
        None,
        "candidate LRs probed per stage (default: with strategy `anneal`, 4, the race's "
        "rungs, of which it may run fewer; with `forecast`, 3 with a budget, 10 (AutoLRS) "
        "without one)",
        integer(1),
        optional=True,
    )
    parallel_probes: int = option(
        1, "candidates proposed at once (batch acquisition) for a parallel `prober`", integer(1)
    )
    min_probe_steps: int = option(
        5, "shortest probe worth running; a stage with shorter probes skips its search", integer(2)
    )
    objective: str = option(
        "train_loss",
        "what probes are judged on: `val_loss` when a `val_fn` is given, else `train_loss`",
        one_of(*OBJECTIVES),
        derived=True,
    )
    val_every: int = option(
        5,
        "with strategy `forecast`: probe steps between validation evaluations (at most a "
        "quarter of `tau_probe`); the annealed race evaluates once, after each probe's "
        "cooldown",
        integer(1),
    )
    warmup_steps: int = option(
        0, "steps of linear warmup from 0 to `warmup_lr` before the first stage", integer(0)
    )
    warmup_lr: float | None = option(
        None,
        "LR reached at the end of warmup (default: geometric mean of the search range, "
        "`min_lr` and `max_lr` as the range test narrowed or found them)",
        positive,
        optional=True,
    )
    anneal_fraction: float | None = option(
        None,
        "fraction of `total_steps` decayed at the end (default with a budget: with strategy "
        "`anneal` decided by the race, 0.5, or 0.25 when its cooldowns gained little; 0.1 "
        "with `forecast`; 0: none)",
        fraction(0.0, 0.9),
        optional=True,
    )
    anneal_to: float = option(
        0.0,
        "LR at the end of the anneal, as a fraction of the LR it starts from",
        fraction(0.0, 1.0),
    )
    keep_winner: bool = option(
        True, "continue the exploit from the best probe's end state instead of re-training", flag
    )
    early_abort: bool = option(
        True,
        "stop a probe whose loss blows up (`blowup_factor` x its start); non-finite always stops",
        flag,
    )
    blowup_factor: float = option(2.0, "see `early_abort`", above_one)
    guard_factor: float = option(
        1.5,
        "an exploit whose recent median exceeds this times the stage's start loss rolls back "
        "to the snapshot (the annealed hold: to its best state) and takes the next-best "
        "candidate",
        above_one,
    )
    initial_probes: int = option(
        3,
        "space-filling probes per stage before the GP proposes",
        integer(1),
        forecast_only=True,
    )
    warm_start: bool = option(
        False,
        "share what earlier stages learned through a GP over (log lr, training progress)",
        flag,
        forecast_only=True,
    )
    loss_floor: float | None = option(
        0.0,
        "lowest possible loss (None for losses that can be negative); forecasts never go below",
        finite,
        optional=True,
    )
    forecast_pessimism: float = option(
        0.0,
        "forecast the highest value among the curve rates the probe cannot rule out "
        "(profile likelihood, in z units; 0: the point forecast)",
        fraction(0.0, 10.0),
        forecast_only=True,
    )
    lr_trust: float | None = option(
        2.0,
        "after the first stage, probe only within this factor of the previous stage's LR "
        "(None: the whole range every stage, as in AutoLRS)",
        trust_factor,
        optional=True,
        forecast_only=True,
    )
    seed: int = option(
        0, "seeds every choice; the same seed gives the same LRs for the same losses", integer(0)
    )
    gp_device: str = option(
        "auto", "device of the GP: `auto` (CUDA when available) or a device", device_name("auto")
    )
    snapshot_device: str = option(
        "cpu",
        "where snapshots live: `cpu`, `same` (the model's device) or a device",
        device_name("same"),
    )

    def __post_init__(self) -> None:
        if self.strategy is None:
            # Resolved here so that a run log and a saved state name the rule that ran.
            self.strategy = "anneal" if self.total_steps is not None else "forecast"
            if self.forecast_settings():
                self.strategy = "forecast"
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            check = f.metadata["check"]
            if check is not None and not (value is None and f.metadata["optional"]):
                setattr(self, f.name, check(f.name, value))
        if self.warmup_lr is not None and self.max_lr is not None and self.warmup_lr > self.max_lr:
            raise ConfigError(
                f"warmup_lr must be at most max_lr, got warmup_lr={self.warmup_lr!r} > "
                f"max_lr={self.max_lr!r}"
            )
        if self.min_lr is not None and self.max_lr is not None and self.min_lr >= self.max_lr:
            raise ConfigError(
                f"min_lr must be below max_lr, got min_lr={self.min_lr!r} >= max_lr={self.max_lr!r}"
            )
        if self.tau is not None and self.tau_max is not None and self.tau_max < self.tau:
            raise ConfigError(
                f"tau_max must be >= tau, got tau_max={self.tau_max} < tau={self.tau}"
            )
        if self.tau_probe is not None and self.tau is not None and self.tau_probe > self.tau:
            raise ConfigError(
                f"tau_probe must be <= tau, got tau_probe={self.tau_probe} > tau={self.tau}"
            )

    def forecast_settings(self) -> list[str]:
        """The options set away from their defaults that only the forecast strategy reads."""
        return [
            f.name
            for f in dataclasses.fields(self)
            if f.metadata["forecast_only"] and getattr(self, f.name) != f.default
        ]

    @property
    def n_probes(self) -> int:
        """Probes per stage: the given value, else 4 (the race's rungs) with strategy
        ``anneal``; with ``forecast``, 10 (paper) without a budget, 3 with one."""
        if self.probes is not None:
            return self.probes
        if self.strategy == "anneal":
            return ANNEAL_PROBES
        return PAPER_PROBES if self.total_steps is None else BUDGET_PROBES

    @property
    def needs_range_test(self) -> bool:
        """A range test runs first: no full range given, or the annealed strategy."""
        return self.min_lr is None or self.max_lr is None or self.strategy == "anneal"

    @property
    def shape(self) -> str:
        """The final decay's shape."""
        if self.decay_shape is not None:
            return self.decay_shape
        return "1-sqrt" if self.strategy == "anneal" else "linear"

    @property
    def n_range_steps(self) -> int:
        """Steps of the range test (0 when none runs)."""
        if not self.needs_range_test:
            return 0
        if self.range_steps is not None:
            return self.range_steps
        return max(40, round(0.02 * self.total_steps)) if self.total_steps else 100

    @property
    def anneal_steps(self) -> int:
        """Steps of the final decay as planned (0 without ``total_steps``); the
        annealed strategy's race may shorten it (``AutoLRS.decay_steps``)."""
        if self.total_steps is None:
            return 0
        default = ANNEAL_FRACTION if self.strategy == "anneal" else 0.1
        frac = default if self.anneal_fraction is None else self.anneal_fraction
        return int(round(frac * self.total_steps))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def build(cls, options: Mapping[str, Any], *, owner: str = "AutoLRS") -> AutoLRSConfig:
        """Validate user options by name, then build the config.

        Raises:
            ConfigError: an unknown option (the message lists the known ones), or
                a value out of range.
        """
        check_option_names(options, owner=owner)
        return cls(**options)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AutoLRSConfig:
        """Rebuild a config saved by :meth:`to_dict` (a run log's or a state's).

        Settings that older versions had and that were removed are accepted at
        the value every run used; any other value cannot be honoured and is an
        error that names it.
        """
        data = dict(data)
        for name, default in REMOVED.items():
            if name in data:
                value = data.pop(name)
                if value != default:
                    raise ConfigError(
                        f"this config sets {name}={value!r}, an option this version removed "
                        f"(only {default!r} is read)"
                    )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown AutoLRS settings: {unknown}")
        return cls(**data)


# Options of earlier versions that measured to nothing, at the value they were
# always used with (the benchmark findings keep the evidence). Old run logs and
# states name them; they are read and dropped.
REMOVED: dict[str, Any] = {
    "decide_by": "forecast",
    "prefer_larger": 0.0,
    "cap_after_rollback": True,
    "extra": {},
    "forecaster": "exponential",
    "acquisition": "ei",
    "ucb_beta": 2.0,
}


def option_fields() -> list[dataclasses.Field[Any]]:
    """The user options, in declaration order (derived settings left out)."""
    return [f for f in dataclasses.fields(AutoLRSConfig) if not f.metadata["derived"]]


def option_names() -> frozenset[str]:
    """Names a user may pass as options."""
    return frozenset(f.name for f in option_fields())


def check_option_names(
    options: Mapping[str, Any], *, owner: str = "AutoLRS", extra: frozenset[str] = frozenset()
) -> None:
    """Raise :class:`ConfigError` naming any key of ``options`` that is no option."""
    allowed = option_names() | extra
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"unknown {owner} options {unknown}; allowed: {sorted(allowed)}")


def _default_text(f: dataclasses.Field[Any]) -> str:
    return "None" if f.default is None else repr(f.default)


def options_doc(indent: str = "        ") -> str:
    """The options as Google-style ``Args`` lines, for docstrings."""
    lines = []
    for f in option_fields():
        doc = f.metadata["doc"].replace("`", "``")
        lines.append(f"{indent}{f.name}: {doc} (default {_default_text(f)}).")
    return "\n".join(lines)


def options_table() -> str:
    """The options as a Markdown table (the README's table is this text)."""
    rows = ["| option | default | what it does |", "|---|---|---|"]
    for f in option_fields():
        rows.append(f"| `{f.name}` | `{_default_text(f)}` | {f.metadata['doc']} |")
    return "\n".join(rows)
