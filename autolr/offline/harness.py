"""The controller driven from a run log: what replay and what-if share.

A dummy model (one scalar parameter per param group) stands in for the network,
and every value the controller asks for comes from the log: a validation
function and a probe backend that answer from the logged probes, the
controller's settings rebuilt from the logged config, and the run's forecaster.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from autolr.config import ANNEAL_FRACTION, REMOVED, option_names
from autolr.controller import PARTS, AutoLRS, Phase
from autolr.errors import AutoLRError, ConfigError
from autolr.forecast import Forecaster, make_forecaster
from autolr.offline.logs import LoggedRun, LoggedStage, warn_log
from autolr.probing import ProbeOutcome, ProbeRequest
from autolr.proposer import GPProposer
from autolr.runlog import DECISION, RANGE_TEST, of_type
from autolr.snapshot import Snapshot, capture
from autolr.strategy import default_proposer

logger = logging.getLogger(__name__)

REL_TOL = 1e-9
"""Relative tolerance of "the same number" when logged and replayed values are compared."""


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the controller's own warnings (rollbacks, ...): the run already logged them."""
    loggers = [
        logging.getLogger(f"autolr.{n}") for n in ("controller", "strategy", "proposer", "forecast")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class _Dummy(nn.Module):
    """One scalar parameter per param group: the model a replay 'trains' (never stepped)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.params = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in range(groups))


def dummy_training(initial_lrs: list[float]) -> tuple[nn.Module, torch.optim.Optimizer]:
    lrs = initial_lrs or [0.0]
    model = _Dummy(len(lrs))
    groups = [
        {"params": [p], "lr": lr if math.isfinite(lr) and lr >= 0 else 0.0}
        for p, lr in zip(model.params, lrs)
    ]
    return model, torch.optim.SGD(groups, lr=0.0)


def controller_kwargs(run: LoggedRun, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """AutoLRS arguments from the logged config, the run's proposer among them.

    Settings this version does not know are dropped with a warning. Options
    that were removed (:data:`autolr.config.REMOVED`) are read at the one value
    they now always have; a run that used another value of ``decide_by`` or
    ``prefer_larger`` cannot be replayed (a :class:`ConfigError` says so), while
    a logged ``acquisition`` is given to the rebuilt proposer.

    Raises:
        ConfigError: the run used a removed option at a value this version cannot honour.
    """
    cfg = run.config
    names = option_names()
    kwargs: dict[str, Any] = {}
    unknown = []
    for key, value in cfg.items():
        if key in ("objective", "gp_device", "snapshot_device"):
            continue
        if key in REMOVED:
            if key in ("decide_by", "prefer_larger", "extra") and value != REMOVED[key]:
                raise ConfigError(
                    f"{run.path}: the run used {key}={value!r}, an option this version "
                    "removed; it cannot be replayed exactly"
                )
            continue
        if key in names:
            kwargs[key] = value
        else:
            unknown.append(key)
    if unknown:
        warn_log(
            f"{run.path}: settings {sorted(unknown)} are unknown to this autolr and ignored; "
            "the replay may differ",
            run.warnings,
        )
    legacy = "cap_after_rollback" not in cfg and "strategy" not in run.start
    if cfg.get("cap_after_rollback") is False or legacy:
        warn_log(
            f"{run.path}: the run took any candidate after a rollback (cap_after_rollback "
            "off, or a log older than the option); this version only takes smaller ones, so "
            "the replay differs after a rollback",
            run.warnings,
        )
    if cfg.get("strategy") is None:
        # Logs written before the strategy option: the forecast rule ran.
        kwargs["strategy"] = "forecast"
    decisions = of_type(run.records, DECISION)
    older = bool(decisions) and all("decay_steps" not in r for r in decisions)
    if cfg.get("strategy") == "anneal" and older:
        if cfg.get("anneal_fraction") is None:
            # Logged before the race decided the decay: it was the planned one.
            kwargs["anneal_fraction"] = ANNEAL_FRACTION
        if cfg.get("warmup_steps"):
            warn_log(
                f"{run.path}: an annealed run with a warmup, logged before the race judged "
                "progress from its snapshot alone (it read the warmup's losses as its start "
                "level and noise); the replay may differ from the race on",
                run.warnings,
            )
    if "lr_trust" not in cfg:
        # Logs written before the trust region existed: whole range every
        # stage, and 5 probes a stage with a budget (the default then).
        kwargs["lr_trust"] = None
        if cfg.get("probes") is None and cfg.get("total_steps") is not None:
            kwargs["probes"] = 5
    kwargs["gp_device"] = _gp_device(str(cfg.get("gp_device", "auto")))
    kwargs["snapshot_device"] = "cpu"
    kwargs["log_path"] = None
    kwargs.update(overrides or {})
    return kwargs


def build_proposer(run: LoggedRun, kwargs: Mapping[str, Any]) -> GPProposer | None:
    """The run's GP proposer, with the acquisition it logged (its ``run_start.strategy``,
    or the ``acquisition`` setting of older logs); None while no range is known (a log
    cut in its range test: the controller builds one when the range is set)."""
    options = {k: v for k, v in kwargs.items() if k not in PARTS}
    config = AutoLRS.check_options(
        options.pop("min_lr", None), options.pop("max_lr", None), options.pop("total_steps", None),
        options,
    )  # fmt: skip
    tests = run.of_type(RANGE_TEST)  # the range the run's range test set
    low, high = tests[0]["lr_range"] if tests else (config.min_lr, config.max_lr)
    if low is None or high is None:
        return None
    proposer = default_proposer(config, low, high)
    logged = (run.start.get("strategy") or {}).get("proposer") or {}
    proposer.acquisition = str(logged.get("acquisition", run.config.get("acquisition", "ei")))
    proposer.beta = float(logged.get("beta", run.config.get("ucb_beta", 2.0)))
    return proposer


def _gp_device(name: str) -> str:
    if name == "auto":
        return name
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        return "cpu"
    if dev.type == "cuda" and not torch.cuda.is_available():
        logger.warning("the run's GP ran on %s, not available here: replaying on the CPU", name)
        return "cpu"
    return name


def build_forecaster(
    run: LoggedRun | None = None,
    name: str | None = None,
    **overrides: Any,
) -> Forecaster:
    """The run's forecaster, or another one, with some settings overridden.

    Args:
        run: the logged run; its forecaster settings are the starting point when
            ``name`` is None or names the same forecaster.
        name: ``"exponential"``, ``"power_law"``, ... (None: the run's). Another
            forecaster keeps the run's settings it shares (trimming, ``min_value``, ...).
        overrides: forecaster settings to change (``trim_outliers``,
            ``hampel_window``, ``hampel_k``, ``min_value``, ...); None values are ignored.

    Raises:
        ConfigError: unknown forecaster or bad settings.
    """
    logged = run.forecaster_config if run is not None else None
    logged_name = None
    if logged is not None:
        logged_name = logged.get("name")
    elif run is not None:
        logged_name = run.config.get("forecaster")
    spec: dict[str, Any]
    if name is None or name == logged_name:
        if logged is None and logged_name is None:
            raise ConfigError("the run log names no forecaster; pass one")
        spec = dict(logged) if logged is not None else {"name": logged_name}
    else:
        # Another curve family with the run's other settings (trimming, floor, ...),
        # so that the comparison is about the family alone.
        spec = make_forecaster(name).config()
        for key, value in (logged or {}).items():
            if key != "name" and key in spec:
                spec[key] = value
    changes = {k: v for k, v in overrides.items() if v is not None}
    spec.update(changes)
    try:
        return make_forecaster(spec)
    except ConfigError:
        if logged is None or spec.get("name") != logged_name or changes:
            raise
        # Settings written by another autolr version: keep the name, warn.
        msg = (
            f"the run's forecaster settings {logged} cannot be rebuilt here; using "
            f"{logged_name!r} with its default settings (results may differ)"
        )
        if run is not None:
            warn_log(msg, run.warnings)
        return make_forecaster(str(logged_name))


def nan_if_none(v: float | None) -> float:
    return math.nan if v is None else float(v)


class OutOfLog(AutoLRError):
    """The controller asked for a value the log does not hold."""


class LoggedValidation:
    """A ``val_fn`` that answers what the controller asks for, from the log.

    The controller asks for the objective at a stage's snapshot, during a probe,
    and (with newer versions) at an exploit's end; which one is read from its
    public state at the call, so the answer does not depend on the call order.

    Args:
        run: the logged run.
        stage_map: logged stage of the controller's stage index.
    """

    def __init__(self, run: LoggedRun, stage_map: Callable[[int], int] = lambda s: s) -> None:
        self.run = run
        self.stage_map = stage_map
        self.tuner: AutoLRS | None = None

    def __call__(self) -> float:
        tuner = self.tuner
        if tuner is None:  # inside the constructor: the first stage's snapshot
            return self._at_snapshot(self.stage_map(0))
        stage = self.stage_map(tuner.stage_index)
        if tuner.phase is Phase.PROBE and tuner.probe is not None and tuner.stage is not None:
            rec = self.run.probe(stage, len(tuner.stage.probes))
            k = len(tuner.probe.losses)
            if rec is None or k >= len(rec["losses"]):
                raise OutOfLog(f"the log has no validation loss {k} of probe {stage}")
            return nan_if_none(rec["losses"][k])
        current = tuner.stage
        if current is not None and current.spec.index == tuner.stage_index:
            st = self.run.stage(stage)
            end = st.exploit_end if st is not None else None
            if end is None or "actual" not in end:
                raise OutOfLog(f"the log has no validation loss at the end of stage {stage}")
            return nan_if_none(end["actual"])
        return self._at_snapshot(stage)

    def _at_snapshot(self, stage: int) -> float:
        st = self.run.stage(stage)
        if st is None or not has_val0(st):
            raise OutOfLog(f"the log has no validation loss at the snapshot of stage {stage}")
        return nan_if_none(st.probes[0]["losses"][0])


def has_val0(stage: LoggedStage) -> bool:
    """Validation probes logged with the objective at the snapshot as their first point."""
    return bool(stage.probes) and bool(stage.probes[0]["t"]) and stage.probes[0]["t"][0] == 0.0


class LoggedProber:
    """A :class:`autolr.probing.ProbeBackend` that answers with the logged probes.

    The end state of a probe (for keep-the-winner) is the dummy model's, given
    only in stages whose logged decision continued from a probe: a backend that
    returned none leaves the decision without one.
    """

    def __init__(
        self,
        run: LoggedRun,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        parallelism: int,
        stage_map: Callable[[int], int] = lambda s: s,
    ) -> None:
        self.logged = run
        self.model = model
        self.optimizer = optimizer
        self.parallelism = parallelism
        self.stage_map = stage_map
        self.problems: list[str] = []

    def reset(self) -> None:
        """Nothing to forget."""

    def run_probes(self, requests: list[ProbeRequest]) -> list[ProbeOutcome]:
        out = []
        for req in requests:
            stage = self.stage_map(req.stage)
            rec = self.logged.probe(stage, req.index)
            if rec is None:
                self.problems.append(f"probe {stage}.{req.index} is not in the log")
                out.append(ProbeOutcome(train_losses=[], error="not in the run log"))
                continue
            if not math.isclose(rec["lr"], req.lr, rel_tol=REL_TOL):
                self.problems.append(
                    f"probe {stage}.{req.index}: the controller asked for lr={req.lr:.6g}, "
                    f"the log has lr={rec['lr']:.6g}"
                )
            st = self.logged.stage(stage)
            assert st is not None
            val: list[tuple[float, float | None]] | None = None
            if req.val_every > 0 or self.logged.objective == "val_loss":
                pairs = list(zip(rec["t"], rec["losses"]))
                val = pairs[1:] if has_val0(st) else pairs
            error = None
            reason = str(rec.get("reason") or "")
            if reason.startswith("probe failed: "):
                error = reason[len("probe failed: ") :]
            dec = st.first_decision()
            end_state: Snapshot | None = None
            losses = list(rec["train_losses"])
            if (
                req.keep_state
                and losses
                and losses[-1] is not None
                and dec is not None
                and dec.get("from_probe")
            ):
                end_state = capture(self.model, self.optimizer)
            out.append(ProbeOutcome(train_losses=losses, val=val, end_state=end_state, error=error))
        return out

    def run(self, snapshot: Snapshot, requests: list[ProbeRequest]) -> list[ProbeOutcome]:
        return self.run_probes(requests)
