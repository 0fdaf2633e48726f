"""Offline replay of a run log through the controller, and simulated runs on the NQM.

Replay feeds a logged run back through :class:`autolr.AutoLRS` itself: no second
implementation of the algorithm. A dummy model (one scalar parameter per param
group) stands in for the network, nothing is trained, and every loss the
controller asks for comes from the log:

- warmup: the stage's ``recent`` losses (the only warmup losses the log keeps; the
  others are fed as NaN, which the controller ignores there);
- probes: the probe's ``train_losses`` (and, with a validation objective, its
  ``losses`` through a validation function that returns them in order);
- exploit: the losses of each rollback, then of ``exploit_end``;
- anneal: nothing is logged, NaN is fed (the anneal takes no decision).

:func:`replay_run` checks that the replayed records equal the logged ones, field by
field. :func:`what_if` re-decides each stage from its logged probe series with
other forecaster settings, stage by stage, again through the controller: a fresh
controller per stage is given the stage's pre-snapshot losses and the logged
probes in their logged order. When Bayesian optimization with the new forecasts
would have proposed an LR that was never probed, the result says so; those
losses do not exist, and none are made up.

:func:`simulate_nqm` drives the controller on the noisy quadratic model
(:mod:`autolr.simulate`) and compares the schedule it really applied with the
optimal schedule for the same step budget.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autolr.controller import AutoLRS, Phase
from autolr.errors import AutoLRError, ConfigError, LogFormatError
from autolr.forecast import Forecaster, make_forecaster
from autolr.importers import LogWarning
from autolr.probing import ProbeOutcome, ProbeRequest
from autolr.proposer import GPProposer
from autolr.runlog import SCHEMA_VERSION
from autolr.snapshot import Snapshot, capture

__all__ = [
    "LogWarning",
    "LoggedRun",
    "LoggedStage",
    "Mismatch",
    "NQMRun",
    "ReplayResult",
    "StageWhatIf",
    "WhatIfResult",
    "build_forecaster",
    "load_run",
    "replay_run",
    "simulate_nqm",
    "what_if",
]

logger = logging.getLogger(__name__)

# Fields each record type must have (beyond type, schema_version, step).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "run_start": ("config", "initial_lrs"),
    "stage_start": ("stage", "tau", "tau_probe", "probes", "exploit_steps"),
    "probe": ("stage", "index", "lr", "t", "losses", "train_losses", "diverged", "forecast"),
    "decision": ("stage", "lr", "forecast", "candidates", "reason"),
    "rollback": ("stage", "lr", "losses"),
    "exploit_end": ("stage", "lr", "losses", "steps"),
    "phase": ("phase",),
    "run_end": ("total",),
}
# Fields that hold loss series: a non-finite number there is read as null, with a warning.
_SERIES_FIELDS = ("losses", "train_losses", "recent")
_IGNORED_FIELDS = ("time", "schema_version")
_REL_TOL = 1e-9


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the controller's own warnings (rollbacks, ...): the run already logged them."""
    loggers = [logging.getLogger(f"autolr.{n}") for n in ("controller", "proposer", "forecast")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _warn(message: str, sink: list[str] | None = None) -> None:
    logger.debug(message)
    if sink is not None:
        sink.append(message)
    warnings.warn(message, LogWarning, stacklevel=3)


# --------------------------------------------------------------------------- reading


@dataclass
class LoggedStage:
    """The records of one stage, in log order.

    Attributes:
        index: stage number.
        start: its ``stage_start`` record.
        probes: its ``probe`` records, by probe index.
        decisions: its ``decision`` records (a rollback is followed by another decision).
        rollbacks: its ``rollback`` records.
        exploit_end: its ``exploit_end`` record, None when the log ends before it.
    """

    index: int
    start: dict[str, Any]
    probes: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    exploit_end: dict[str, Any] | None = None

    @property
    def tau(self) -> int:
        return int(self.start["tau"])

    @property
    def tau_probe(self) -> int:
        return int(self.start["tau_probe"])

    @property
    def n_probes(self) -> int:
        """Probes the plan gave the stage (the log may hold fewer if it ends mid-search)."""
        return int(self.start["probes"])

    @property
    def recent(self) -> list[float] | None:
        """Finite losses before the snapshot (None in logs written before this field)."""
        rec = self.start.get("recent")
        return None if rec is None else [float(v) for v in rec if v is not None]

    @property
    def searched(self) -> bool:
        """Every planned probe is in the log."""
        return self.n_probes > 0 and len(self.probes) == self.n_probes

    def exploit_losses(self) -> list[float | None]:
        """Every exploit step's loss, rolled-back exploits included, in order."""
        out: list[float | None] = []
        for rb in self.rollbacks:
            out.extend(rb["losses"])
        if self.exploit_end is not None:
            out.extend(self.exploit_end["losses"])
        return out

    def first_decision(self) -> dict[str, Any] | None:
        return self.decisions[0] if self.decisions else None


@dataclass
class LoggedRun:
    """A run log, read and checked.

    Attributes:
        path: the file read.
        records: every record, in order.
        lines: the 1-based line number of each record.
        stages: the stages, in order.
        warnings: flaws that were skipped or repaired while reading.
    """

    path: str
    records: list[dict[str, Any]]
    lines: list[int]
    stages: list[LoggedStage]
    warnings: list[str] = field(default_factory=list)

    @property
    def start(self) -> dict[str, Any]:
        return self.records[0]

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.start["config"])

    @property
    def initial_lrs(self) -> list[float]:
        return [float(v) for v in self.start["initial_lrs"]]

    @property
    def forecaster_config(self) -> dict[str, Any] | None:
        fc = self.start.get("forecaster")
        return dict(fc) if isinstance(fc, Mapping) else None

    @property
    def prober(self) -> str | None:
        """Class name of the probe backend; None when probes ran in the training loop."""
        value = self.start.get("prober")
        if value is None and "prober" not in self.start:
            # Logs written before the field: a parallel search needs a backend.
            return "ProbeBackend" if int(self.config.get("parallel_probes", 1)) > 1 else None
        return value

    @property
    def objective(self) -> str:
        return str(self.config.get("objective", "train_loss"))

    @property
    def run_end(self) -> dict[str, Any] | None:
        ends = [r for r in self.records if r["type"] == "run_end"]
        return ends[-1] if ends else None

    @property
    def last_step(self) -> int:
        return int(self.records[-1]["step"])

    def stage(self, index: int) -> LoggedStage | None:
        for st in self.stages:
            if st.index == index:
                return st
        return None

    def probe(self, stage: int, index: int) -> dict[str, Any] | None:
        st = self.stage(stage)
        if st is None or index >= len(st.probes):
            return None
        return st.probes[index]

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == type_]


def load_run(path: str | Path) -> LoggedRun:
    """Read a run log leniently where it is safe, strictly where it is not.

    Skipped with a :class:`LogWarning`: a truncated last line (a run killed while
    writing), records of an unknown type. Repaired with a warning: a non-finite
    number (``NaN``, ``Infinity``) in a loss series, read as null like the
    controller writes it.

    Raises:
        LogFormatError: the file is missing or empty, a line other than the last
            is not JSON, a record has an unknown ``schema_version``, lacks a field
            or holds a wrong value, steps go backwards, or the file holds more
            than one run. The message names the file, the line and the field.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LogFormatError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LogFormatError(f"{p}: cannot read the run log ({exc})") from None
    raw_lines = text.splitlines()
    last_content = max((i for i, line in enumerate(raw_lines) if line.strip()), default=-1)
    found: list[str] = []
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    for i, line in enumerate(raw_lines):
        if not line.strip():
            continue
        where = f"{p}, line {i + 1}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == last_content:
                _warn(f"{where}: truncated last line skipped ({exc.msg})", found)
                continue
            raise LogFormatError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise LogFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        rec = _check_record(rec, where, found)
        if rec is None:
            continue
        records.append(rec)
        lines.append(i + 1)
    if not records:
        raise LogFormatError(f"{p}: no records (an empty run log)")
    return _assemble(str(p), records, lines, found)


def _check_record(rec: dict[str, Any], where: str, found: list[str]) -> dict[str, Any] | None:
    if "type" not in rec:
        raise LogFormatError(f"{where}: record has no 'type' field")
    version = rec.get("schema_version")
    if version != SCHEMA_VERSION:
        raise LogFormatError(
            f"{where}: schema_version={version!r} is not supported; "
            f"this autolr reads run logs of schema_version {SCHEMA_VERSION}"
        )
    type_ = rec["type"]
    if type_ not in REQUIRED_FIELDS:
        _warn(f"{where}: record of unknown type {type_!r} skipped", found)
        return None
    step = rec.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise LogFormatError(f"{where}: field 'step' must be an int >= 0, got {step!r}")
    for name in REQUIRED_FIELDS[type_]:
        if name not in rec:
            raise LogFormatError(f"{where}: {type_} record is missing the field {name!r}")
    for name in _SERIES_FIELDS:
        if name in rec:
            rec[name] = _series(rec[name], f"{where}: field {name!r}", found)
    for name in ("stage", "index", "tau", "tau_probe", "probes", "exploit_steps", "total"):
        if name in rec:
            value = rec[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise LogFormatError(f"{where}: field {name!r} must be an int >= 0, got {value!r}")
    if type_ in ("probe", "decision", "rollback") or (type_ == "exploit_end"):
        lr = rec["lr"]
        if lr is not None and not _finite_number(lr):
            raise LogFormatError(f"{where}: field 'lr' must be a finite number, got {lr!r}")
        if type_ != "exploit_end" and lr is None:
            raise LogFormatError(f"{where}: field 'lr' must be a finite number, got null")
    if type_ == "probe":
        t = rec["t"]
        if not isinstance(t, list) or not all(_finite_number(v) for v in t):
            raise LogFormatError(f"{where}: field 't' must be a list of finite numbers")
        if len(t) != len(rec["losses"]):
            raise LogFormatError(
                f"{where}: fields 't' ({len(t)} values) and 'losses' "
                f"({len(rec['losses'])} values) differ in length"
            )
    if type_ == "run_start":
        cfg = rec["config"]
        if not isinstance(cfg, dict):
            raise LogFormatError(f"{where}: field 'config' must be an object")
        for name in ("min_lr", "max_lr"):
            if not _finite_number(cfg.get(name)) or cfg[name] <= 0:
                raise LogFormatError(
                    f"{where}: field 'config.{name}' must be a positive number, "
                    f"got {cfg.get(name)!r}"
                )
        lrs = rec["initial_lrs"]
        if not isinstance(lrs, list) or not all(_finite_number(v) for v in lrs):
            raise LogFormatError(f"{where}: field 'initial_lrs' must be a list of numbers")
    return rec


def _finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _series(value: Any, where: str, found: list[str]) -> list[float | None]:
    if not isinstance(value, list):
        raise LogFormatError(f"{where} must be a list of numbers, got {type(value).__name__}")
    out: list[float | None] = []
    bad = 0
    for v in value:
        if v is None:
            out.append(None)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise LogFormatError(f"{where} must hold numbers or null, got {v!r}")
        elif not math.isfinite(v):
            out.append(None)
            bad += 1
        else:
            out.append(float(v))
    if bad:
        _warn(f"{where}: {bad} non-finite value(s) read as null", found)
    return out


def _assemble(
    path: str, records: list[dict[str, Any]], lines: list[int], found: list[str]
) -> LoggedRun:
    if records[0]["type"] != "run_start":
        raise LogFormatError(
            f"{path}, line {lines[0]}: the first record must be run_start, "
            f"got {records[0]['type']!r}"
        )
    stages: list[LoggedStage] = []
    last_step = 0
    for rec, line in zip(records, lines):
        where = f"{path}, line {line}"
        type_ = rec["type"]
        if type_ == "run_start" and rec is not records[0]:
            raise LogFormatError(
                f"{where}: a second run_start: the file holds more than one run "
                "(a resumed run or two runs appending to one log); split it into one "
                "file per run"
            )
        if rec["step"] < last_step:
            raise LogFormatError(
                f"{where}: step {rec['step']} comes after step {last_step}: records out of order"
            )
        last_step = rec["step"]
        if type_ == "run_start":
            continue
        if type_ == "phase" and rec.get("phase") == "resume":
            raise LogFormatError(
                f"{where}: the run was resumed from a checkpoint here; replay reads "
                "uninterrupted runs only"
            )
        if type_ in ("phase", "run_end"):
            continue
        if type_ == "stage_start":
            expected = stages[-1].index + 1 if stages else 0
            if rec["stage"] != expected:
                raise LogFormatError(
                    f"{where}: field 'stage' is {rec['stage']}, expected {expected} "
                    "(stages out of order)"
                )
            stages.append(LoggedStage(index=rec["stage"], start=rec))
            continue
        if not stages or stages[-1].index != rec["stage"]:
            raise LogFormatError(
                f"{where}: {type_} record of stage {rec['stage']} outside that stage "
                "(no matching stage_start before it)"
            )
        st = stages[-1]
        if type_ == "probe":
            if rec["index"] != len(st.probes):
                raise LogFormatError(
                    f"{where}: field 'index' is {rec['index']}, expected {len(st.probes)} "
                    "(probes out of order)"
                )
            st.probes.append(rec)
        elif type_ == "decision":
            st.decisions.append(rec)
        elif type_ == "rollback":
            st.rollbacks.append(rec)
        elif type_ == "exploit_end":
            st.exploit_end = rec
    return LoggedRun(path=path, records=records, lines=lines, stages=stages, warnings=found)


# --------------------------------------------------------------------------- controller


class _Dummy(nn.Module):
    """One scalar parameter per param group: the model a replay 'trains' (never stepped)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.params = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in range(groups))


def _dummy_training(initial_lrs: list[float]) -> tuple[nn.Module, torch.optim.Optimizer]:
    lrs = initial_lrs or [0.0]
    model = _Dummy(len(lrs))
    groups = [
        {"params": [p], "lr": lr if math.isfinite(lr) and lr >= 0 else 0.0}
        for p, lr in zip(model.params, lrs)
    ]
    return model, torch.optim.SGD(groups, lr=0.0)


_CONTROLLER_ARGS = set(inspect.signature(AutoLRS.__init__).parameters) - {
    "self",
    "model",
    "optimizer",
}


def _controller_kwargs(
    run: LoggedRun, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """AutoLRS arguments from the logged config (settings this version lacks are dropped)."""
    cfg = run.config
    kwargs: dict[str, Any] = {}
    unknown = []
    for key, value in cfg.items():
        if key in ("objective", "forecaster", "extra", "gp_device", "snapshot_device"):
            continue
        if key in _CONTROLLER_ARGS:
            kwargs[key] = value
        else:
            unknown.append(key)
    if unknown:
        _warn(
            f"{run.path}: settings {sorted(unknown)} are unknown to this autolr and ignored; "
            "the replay may differ",
            run.warnings,
        )
    if "cap_after_rollback" not in cfg:
        # Logs written before the option: any remaining candidate after a rollback.
        kwargs["cap_after_rollback"] = False
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
            _warn(msg, run.warnings)
        return make_forecaster(str(logged_name))


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


class _OutOfLog(AutoLRError):
    """The controller asked for a value the log does not hold."""


class _LoggedValidation:
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
                raise _OutOfLog(f"the log has no validation loss {k} of probe {stage}")
            return _nan(rec["losses"][k])
        current = tuner.stage
        if current is not None and current.spec.index == tuner.stage_index:
            st = self.run.stage(stage)
            end = st.exploit_end if st is not None else None
            if end is None or "actual" not in end:
                raise _OutOfLog(f"the log has no validation loss at the end of stage {stage}")
            return _nan(end["actual"])
        return self._at_snapshot(stage)

    def _at_snapshot(self, stage: int) -> float:
        st = self.run.stage(stage)
        if st is None or not _has_val0(st):
            raise _OutOfLog(f"the log has no validation loss at the snapshot of stage {stage}")
        return _nan(st.probes[0]["losses"][0])


def _has_val0(stage: LoggedStage) -> bool:
    """Validation probes logged with the objective at the snapshot as their first point."""
    return bool(stage.probes) and bool(stage.probes[0]["t"]) and stage.probes[0]["t"][0] == 0.0


class _LoggedProber:
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
            if not math.isclose(rec["lr"], req.lr, rel_tol=_REL_TOL):
                self.problems.append(
                    f"probe {stage}.{req.index}: the controller asked for lr={req.lr:.6g}, "
                    f"the log has lr={rec['lr']:.6g}"
                )
            st = self.logged.stage(stage)
            assert st is not None
            val: list[tuple[float, float | None]] | None = None
            if req.val_every > 0 or self.logged.objective == "val_loss":
                pairs = list(zip(rec["t"], rec["losses"]))
                val = pairs[1:] if _has_val0(st) else pairs
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


# --------------------------------------------------------------------------- exact replay


@dataclass
class Mismatch:
    """A logged record that the replay did not reproduce.

    Attributes:
        line: line of the logged record (None: the replay wrote a record the log lacks).
        type: record type.
        stage: stage of the record, if any.
        field: the field that differs ('' when the record itself is missing or extra).
        logged: the logged value.
        replayed: the value the replay wrote.
    """

    line: int | None
    type: str
    stage: int | None
    field: str
    logged: Any
    replayed: Any

    def describe(self) -> str:
        where = f"line {self.line}" if self.line is not None else "after the log's end"
        stage = f" (stage {self.stage})" if self.stage is not None else ""
        if not self.field:
            return f"{where}: {self.type}{stage}: logged {self.logged}, replayed {self.replayed}"
        return (
            f"{where}: {self.type}{stage} field {self.field!r}: logged {_short(self.logged)}, "
            f"replayed {_short(self.replayed)}"
        )


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class ReplayResult:
    """What :func:`replay_run` found.

    Attributes:
        run: the logged run.
        tuner: the controller after the replay (its ``log.records`` are the replayed
            records; ``trace_lr``/``trace_loss``/``trace_phase`` hold every step,
            with NaN losses where the log keeps none: warmup and anneal).
        compared: logged records compared (run_start excluded).
        mismatches: the differences found (the first ones; comparison stops at a
            missing or extra record).
        stopped: why the replay stopped before the end of the log, or None.
        steps: every step the replay fed to ``step()``: ``(global step, LR applied,
            phase, loss fed)``; the loss is NaN where the log keeps none. Probes
            run by a probe backend happen inside ``step()`` and are not in it.
    """

    run: LoggedRun
    tuner: AutoLRS | None
    compared: int
    mismatches: list[Mismatch]
    stopped: str | None
    steps: list[tuple[int, float, str, float]] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        """Every logged record (decisions, probes, rollbacks, ...) was reproduced."""
        return not self.mismatches

    def counts(self) -> dict[str, int]:
        run = self.run
        return {
            "stages": len(run.stages),
            "probes": len(run.of_type("probe")),
            "decisions": len(run.of_type("decision")),
            "rollbacks": len(run.of_type("rollback")),
            "steps": run.last_step,
        }

    def stage_rows(self) -> list[dict[str, Any]]:
        """One row per logged stage: the search, the choice, rollbacks, and the outcome."""
        bad = {m.stage for m in self.mismatches}
        rows = []
        for st in self.run.stages:
            dec = st.first_decision()
            end = st.exploit_end
            rows.append(
                {
                    "stage": st.index,
                    "tau": st.tau,
                    "tau_probe": st.tau_probe,
                    "probes": len(st.probes),
                    "diverged": sum(1 for p in st.probes if p["diverged"]),
                    "chosen_lr": dec["lr"] if dec else None,
                    "chosen_forecast": dec["forecast"] if dec else None,
                    "rollbacks": len(st.rollbacks),
                    "final_lr": end["lr"] if end else None,
                    "actual": end.get("actual") if end else None,
                    "reproduced": st.index not in bad,
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.run.path,
            "matches": self.matches,
            "compared": self.compared,
            "counts": self.counts(),
            "stopped": self.stopped,
            "mismatches": [m.__dict__ for m in self.mismatches],
            "stages": self.stage_rows(),
            "warnings": list(self.run.warnings),
        }


def _feed_warmup(stage0: LoggedStage | None, warmup_steps: int) -> deque[float]:
    recent = (stage0.recent if stage0 is not None else None) or []
    fill = max(0, warmup_steps - len(recent))
    return deque([math.nan] * fill + list(recent[-warmup_steps:] if warmup_steps else []))


def replay_run(run: LoggedRun | str | Path, *, max_mismatches: int = 20) -> ReplayResult:
    """Feed a logged run through the controller and compare every record.

    Args:
        run: a :class:`LoggedRun` or the path of a run log.
        max_mismatches: stop listing differences after this many.

    Returns:
        A :class:`ReplayResult`; ``matches`` is True when every logged record
        (stages, probes with their forecasts and fits, decisions, rollbacks,
        exploit ends, phases) was reproduced.

    Raises:
        LogFormatError: the log cannot be read (see :func:`load_run`).
    """
    if not isinstance(run, LoggedRun):
        run = load_run(run)
    model, optimizer = _dummy_training(run.initial_lrs)
    backend = run.prober is not None
    stopped: str | None = None
    kwargs = _controller_kwargs(run)
    try:
        kwargs["forecaster"] = build_forecaster(run)
    except ConfigError as exc:
        raise ConfigError(
            f"{run.path}: cannot rebuild the run's forecaster ({exc}); a custom forecaster "
            "cannot be replayed exactly, but what_if() can re-decide with a built-in one"
        ) from None
    if run.stages and run.stages[0].recent is None and kwargs.get("warmup_steps"):
        _warn(
            f"{run.path}: the log has no pre-snapshot losses (an older autolr wrote it); "
            "stage 0 may replay differently",
            run.warnings,
        )
    val = _LoggedValidation(run) if run.objective == "val_loss" else None
    kwargs["val_fn"] = val
    prober = None
    if backend:
        prober = _LoggedProber(run, model, optimizer, int(kwargs.get("parallel_probes", 1)))
        kwargs["prober"] = prober
    tuner: AutoLRS | None = None
    fed: list[tuple[int, float, str, float]] = []
    try:
        with _quiet():
            tuner = AutoLRS(model, optimizer, **kwargs)
            if val is not None:
                val.tuner = tuner
            stopped = _drive(run, tuner, fed)
    except _OutOfLog as exc:
        stopped = str(exc)
    except AutoLRError as exc:
        stopped = f"the controller raised {type(exc).__name__}: {exc}"
    if prober is not None and prober.problems and stopped is None:
        stopped = prober.problems[0]
    replayed = tuner.log.records if tuner is not None else []
    mismatches, compared = _compare(run, replayed, max_mismatches)
    return ReplayResult(run, tuner, compared, mismatches, stopped, fed)


def _drive(run: LoggedRun, tuner: AutoLRS, fed: list[tuple[int, float, str, float]]) -> str | None:
    """Step the controller with the logged losses; the reason it stopped early, or None."""
    warm = _feed_warmup(run.stage(0), tuner.config.warmup_steps)
    exploit: dict[int, deque[float | None]] = {
        st.index: deque(st.exploit_losses()) for st in run.stages
    }
    finished_log = run.run_end is not None
    end_step = run.last_step
    while not tuner.finished:
        phase = tuner.phase
        if phase is Phase.WARMUP:
            if not warm:
                return "the log ends during the warmup"
            value = warm.popleft()
        elif phase is Phase.PROBE:
            assert tuner.stage is not None and tuner.probe is not None
            s, i = tuner.stage_index, len(tuner.stage.probes)
            rec = run.probe(s, i)
            if rec is None:
                return f"the log has no probe {s}.{i} (it ends during the search)"
            k = tuner.probe.steps
            if k == 0 and not math.isclose(rec["lr"], tuner.probe.lr, rel_tol=_REL_TOL):
                return (
                    f"probe {s}.{i}: the controller chose lr={tuner.probe.lr:.6g}, "
                    f"the log has lr={rec['lr']:.6g}"
                )
            if k >= len(rec["train_losses"]):
                return f"probe {s}.{i} runs longer in the replay than the logged {k} steps"
            value = _nan(rec["train_losses"][k])
        elif phase is Phase.EXPLOIT:
            queue = exploit.get(tuner.stage_index)
            if not queue:
                if not finished_log and tuner.global_step >= end_step:
                    return None
                return f"the log ends during the exploit of stage {tuner.stage_index}"
            value = _nan(queue.popleft())
        else:  # ANNEAL: its losses are not logged and decide nothing
            if not finished_log and tuner.global_step >= end_step:
                return None
            value = math.nan
        fed.append((tuner.global_step, tuner.current_lr, tuner.phase.value, value))
        tuner.step(value)
    return None


def _compare(
    run: LoggedRun, replayed: list[dict[str, Any]], limit: int
) -> tuple[list[Mismatch], int]:
    logged = list(zip(run.records, run.lines))[1:]
    mine = [r for r in replayed if r["type"] != "run_start"]
    out: list[Mismatch] = []
    compared = 0
    for n, (rec, line) in enumerate(logged):
        if n >= len(mine):
            out.append(
                Mismatch(line, rec["type"], rec.get("stage"), "", "present", "never written")
            )
            break
        other = mine[n]
        compared += 1
        if other["type"] != rec["type"] or other.get("stage") != rec.get("stage"):
            out.append(
                Mismatch(
                    line,
                    rec["type"],
                    rec.get("stage"),
                    "",
                    f"{rec['type']} (stage {rec.get('stage')})",
                    f"{other['type']} (stage {other.get('stage')})",
                )
            )
            break
        for key, value in rec.items():
            if key in _IGNORED_FIELDS:
                continue
            if key not in other:
                out.append(Mismatch(line, rec["type"], rec.get("stage"), key, value, None))
            elif not _same(value, other[key]):
                out.append(Mismatch(line, rec["type"], rec.get("stage"), key, value, other[key]))
            if len(out) >= limit:
                return out, compared
    else:
        # A log without run_end stopped early: what the controller writes next is no mismatch.
        if len(mine) > len(logged) and run.run_end is not None:
            extra = mine[len(logged)]
            out.append(Mismatch(None, extra["type"], extra.get("stage"), "", "absent", "written"))
    return out[:limit], compared


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


# --------------------------------------------------------------------------- what-if


class _ForcedProposer:
    """Wraps the controller's GP proposer: BO still proposes, the logged LRs are probed.

    What BO would have proposed is recorded, so a replay can say where the new
    forecasts would have sent the search to an LR the log has no losses for.
    """

    def __init__(
        self,
        lrs: list[float],
        stage: int,
        progress: float,
        inner: GPProposer | None = None,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        self.lrs = lrs
        self.bounds = bounds
        self.stage = stage
        self.progress = progress
        self.inner = inner
        self.next = 0
        self.proposed: list[float] = []

    def reset(self, stage: int, progress: float, bounds: tuple[float, float] | None = None) -> None:
        assert self.inner is not None
        # The logged stage's trust region: the one-stage controller of a what-if
        # has no earlier stage to derive it from.
        self.inner.reset(self.stage, self.progress, self.bounds or bounds)

    def propose(self, q: int = 1) -> list[float]:
        assert self.inner is not None
        self.proposed.extend(self.inner.propose(q))
        out = self.lrs[self.next : self.next + q]
        self.next += q
        if len(out) < q:
            raise _OutOfLog(f"the log has only {len(self.lrs)} probes in stage {self.stage}")
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _StageController(AutoLRS):
    """AutoLRS whose proposer is wrapped by a :class:`_ForcedProposer` (what-if replays)."""

    def __init__(self, *args: Any, forced: _ForcedProposer, **kwargs: Any) -> None:
        self._forced = forced
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def proposer(self) -> Any:
        return self._forced

    @proposer.setter
    def proposer(self, inner: GPProposer) -> None:
        # A proposer carried over from earlier stages (warm start) wins over a fresh one.
        if self._forced.inner is None:
            self._forced.inner = inner


@dataclass
class StageWhatIf:
    """One stage re-decided from its logged probes.

    Attributes:
        stage: stage number.
        lrs: `(k,)` probed LRs (linear scale), logged order.
        logged_forecasts: what the run's forecaster said (None: diverged).
        new_forecasts: what the new forecaster says (None: diverged or fit failed).
        logged_lr: the LR the run chose first.
        new_lr: the LR the new forecasts choose among the logged probes (``min_lr``
            when none is usable, as the controller falls back).
        new_forecast: its forecast.
        bo_lrs: what BO would have proposed with the new forecasts, probe by probe.
        bo_departs: first probe index where BO would have proposed an unlogged LR (None: never).
        actual: loss reached at the end of the stage's exploit (at the logged final LR).
        final_lr: LR of the stage's last exploit (after rollbacks).
        rolled_back: LRs whose exploit the guard rolled back.
        note: what can and cannot be said about the new choice.
    """

    stage: int
    lrs: list[float]
    logged_forecasts: list[float | None]
    new_forecasts: list[float | None]
    logged_lr: float | None
    new_lr: float | None
    new_forecast: float | None
    bo_lrs: list[float]
    bo_departs: int | None
    actual: float | None
    final_lr: float | None
    rolled_back: list[float]
    note: str

    @property
    def differs(self) -> bool:
        if self.logged_lr is None or self.new_lr is None:
            return self.logged_lr != self.new_lr
        return not math.isclose(self.logged_lr, self.new_lr, rel_tol=_REL_TOL)


@dataclass
class WhatIfResult:
    """:func:`what_if` output: per-stage decisions under other forecaster settings.

    Attributes:
        run: the logged run.
        forecaster: settings of the forecaster used (``config()``).
        stages: one entry per stage with a full logged search.
        skipped: stages that could not be re-decided, with the reason.
    """

    run: LoggedRun
    forecaster: dict[str, Any]
    stages: list[StageWhatIf]
    skipped: dict[int, str]

    @property
    def changed(self) -> list[int]:
        """Stages that would have chosen another LR."""
        return [s.stage for s in self.stages if s.differs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.run.path,
            "forecaster": self.forecaster,
            "logged_forecaster": self.run.forecaster_config,
            "changed": self.changed,
            "stages": [{**s.__dict__, "differs": s.differs} for s in self.stages],
            "skipped": {str(k): v for k, v in self.skipped.items()},
            "warnings": list(self.run.warnings),
        }


def what_if(
    run: LoggedRun | str | Path,
    forecaster: str | Mapping[str, Any] | Forecaster | None = None,
    **forecaster_options: Any,
) -> WhatIfResult:
    """Re-decide every stage of a logged run with other forecaster settings.

    Each stage runs through a fresh controller (same code, same settings) that is
    given the stage's pre-snapshot losses, then the logged probes in their logged
    order; its decision is the choice among the logged candidates. BO still
    proposes with the new forecasts, and where it would have probed an LR the log
    has no losses for, the result records it (``bo_departs``) instead of inventing
    a series. Exploits are not replayed: a new choice that the run never
    exploited has no known outcome.

    Args:
        run: a :class:`LoggedRun` or the path of a run log.
        forecaster: a name (``"power_law"``), a config dict, a forecaster object,
            or None for the run's own.
        forecaster_options: settings to override (``trim_outliers=False``, ...).

    Raises:
        LogFormatError: the log cannot be read.
        ConfigError: bad forecaster settings.
    """
    if not isinstance(run, LoggedRun):
        run = load_run(run)
    if forecaster is None or isinstance(forecaster, str):
        fc = build_forecaster(run, forecaster, **forecaster_options)
    elif isinstance(forecaster, Mapping):
        fc = build_forecaster(None, None, **{**dict(forecaster), **forecaster_options})
    else:
        fc = make_forecaster(forecaster)
    stages: list[StageWhatIf] = []
    skipped: dict[int, str] = {}
    total = run.config.get("total_steps")
    warmup = int(run.config.get("warmup_steps") or 0)
    shared: GPProposer | None = None
    for st in run.stages:
        if st.n_probes == 0:
            skipped[st.index] = "no search (exploit only)"
            continue
        if not st.searched:
            skipped[st.index] = f"the log holds {len(st.probes)} of {st.n_probes} probes"
            continue
        if st.recent is None and (st.index > 0 or warmup > 0):
            skipped[st.index] = "the log has no pre-snapshot losses (written by an older autolr)"
            continue
        progress = st.start["step"] / total if total else 0.0
        try:
            with _quiet():
                result, shared = _decide_stage(run, st, fc, progress, shared)
        except (_OutOfLog, AutoLRError) as exc:
            skipped[st.index] = f"{type(exc).__name__}: {exc}"
            continue
        stages.append(result)
    return WhatIfResult(run, fc.config(), stages, skipped)


def _decide_stage(
    run: LoggedRun,
    st: LoggedStage,
    fc: Forecaster,
    progress: float,
    shared: GPProposer | None,
) -> tuple[StageWhatIf, GPProposer]:
    lrs = [float(p["lr"]) for p in st.probes]
    logged_bounds = st.start.get("lr_bounds")
    forced = _ForcedProposer(
        lrs, st.index, progress, shared, tuple(logged_bounds) if logged_bounds else None
    )
    recent = st.recent or []
    model, optimizer = _dummy_training(run.initial_lrs)
    backend = run.prober is not None
    overrides: dict[str, Any] = {
        "total_steps": None,
        "tau": st.tau,
        "tau_max": st.tau,
        "tau_probe": st.tau_probe,
        "probes": st.n_probes,
        "warmup_steps": len(recent),
        "warmup_lr": None,
        "anneal_fraction": None,
        "forecaster": fc,
        "trace": False,
    }
    kwargs = _controller_kwargs(run, overrides)
    val = _LoggedValidation(run, lambda s: st.index) if run.objective == "val_loss" else None
    kwargs["val_fn"] = val
    if backend:
        kwargs["prober"] = _LoggedProber(
            run, model, optimizer, int(kwargs.get("parallel_probes", 1)), lambda s: st.index
        )
    fc.reset()
    tuner = _StageController(model, optimizer, forced=forced, **kwargs)
    if val is not None:
        val.tuner = tuner
    feed = deque(recent)
    while tuner.phase in (Phase.WARMUP, Phase.PROBE):
        if tuner.phase is Phase.WARMUP:
            tuner.step(feed.popleft())
            continue
        assert tuner.stage is not None and tuner.probe is not None
        rec = st.probes[len(tuner.stage.probes)]
        k = tuner.probe.steps
        if k >= len(rec["train_losses"]):
            raise _OutOfLog(f"probe {st.index}.{len(tuner.stage.probes)} runs past its log")
        tuner.step(_nan(rec["train_losses"][k]))
    decision = tuner.log.of_type("decision")
    if not decision:
        raise _OutOfLog(f"stage {st.index} reached no decision")
    dec = decision[0]
    probes = tuner.log.of_type("probe")
    logged_dec = st.first_decision()
    departs = next(
        (i for i, (a, b) in enumerate(zip(forced.proposed, lrs)) if not math.isclose(a, b)),
        None,
    )
    new_lr = dec["lr"]
    fallback = dec["reason"] == "fallback"
    rolled = [float(r["lr"]) for r in st.rollbacks]
    end = st.exploit_end
    note = _note(new_lr, logged_dec["lr"] if logged_dec else None, rolled, departs, fallback)
    result = StageWhatIf(
        stage=st.index,
        lrs=lrs,
        logged_forecasts=[p["forecast"] for p in st.probes],
        new_forecasts=[p["forecast"] for p in probes],
        logged_lr=logged_dec["lr"] if logged_dec else None,
        new_lr=new_lr,
        new_forecast=dec["forecast"],
        bo_lrs=list(forced.proposed),
        bo_departs=departs,
        actual=end.get("actual") if end else None,
        final_lr=end["lr"] if end else None,
        rolled_back=rolled,
        note=note,
    )
    assert forced.inner is not None
    # What the run learned after the decision: the rolled-back LRs (used with warm_start).
    for lr in rolled:
        forced.inner.mark_diverged(lr)
    return result, forced.inner


def _note(
    new: float | None,
    old: float | None,
    rolled: list[float],
    departs: int | None,
    fallback: bool = False,
) -> str:
    parts = []
    if new is None:
        parts.append("no decision")
    elif old is not None and math.isclose(new, old, rel_tol=_REL_TOL):
        parts.append("same choice" + (" (no usable forecast: min_lr)" if fallback else ""))
    elif fallback:
        parts.append("no usable forecast: the controller would fall back to min_lr")
    elif any(math.isclose(new, r, rel_tol=_REL_TOL) for r in rolled):
        parts.append(f"lr={new:.4g} was exploited in the run and rolled back by the guard")
    else:
        parts.append(f"lr={new:.4g} was never exploited: its outcome is unknown")
    if departs is not None:
        parts.append(
            f"from probe {departs} on, BO would have probed LRs the log has no losses for; "
            "the logged probes were used"
        )
    return "; ".join(parts)


# --------------------------------------------------------------------------- NQM runs


class _TrackedQuadratic(nn.Module):
    """A :class:`~autolr.simulate.NoisyQuadratic` that remembers the LR of every step it kept.

    The history is a buffer, so the controller's snapshots save and restore it
    with ``theta``: after the run it holds the schedule the final ``theta``
    really went through (probes that were rolled back are not in it).
    """

    history: torch.Tensor
    count: torch.Tensor

    def __init__(self, nqm: nn.Module, capacity: int) -> None:
        super().__init__()
        self.nqm = nqm
        self.register_buffer("history", torch.zeros(capacity, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def record(self, lr: float) -> None:
        i = int(self.count)
        if i < self.history.numel():
            self.history[i] = lr
        self.count += 1

    def schedule(self) -> torch.Tensor:
        return self.history[: int(self.count)].clone()


@dataclass
class NQMRun:
    """A controller run on the noisy quadratic model and its exact scores.

    Attributes:
        log_path: the run log written (None: in memory only).
        records: the run log's records.
        total_steps: steps taken, probes included (the compute spent).
        search_steps: steps spent probing.
        schedule: `(n,)` float64 LRs of the steps the final parameters went
            through, in order (n <= total_steps; rolled-back probes are not in it).
        expected_loss: exact expected loss of ``schedule`` (over the gradient noise).
        final_loss: noise-free loss at the final parameters of this run (one draw).
        optimal_loss: exact expected loss of the best schedule of ``total_steps`` steps.
        optimal_constant_lr: best constant LR for ``total_steps`` steps.
        optimal_constant_loss: its exact expected loss.
        settings: the controller options used.
    """

    log_path: str | None
    records: list[dict[str, Any]]
    total_steps: int
    search_steps: int
    schedule: torch.Tensor
    expected_loss: float
    final_loss: float
    optimal_loss: float
    optimal_constant_lr: float
    optimal_constant_loss: float
    settings: dict[str, Any]

    @property
    def regret(self) -> float:
        """Expected loss above the optimal schedule's for the same number of steps."""
        return self.expected_loss - self.optimal_loss

    def to_dict(self) -> dict[str, Any]:
        return {
            "log_path": self.log_path,
            "total_steps": self.total_steps,
            "search_steps": self.search_steps,
            "kept_steps": int(self.schedule.numel()),
            "expected_loss": self.expected_loss,
            "final_loss": self.final_loss,
            "optimal_loss": self.optimal_loss,
            "regret": self.regret,
            "optimal_constant_lr": self.optimal_constant_lr,
            "optimal_constant_loss": self.optimal_constant_loss,
            "settings": {k: v for k, v in self.settings.items() if _jsonable(v)},
        }


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def simulate_nqm(
    total_steps: int = 400,
    *,
    dim: int = 50,
    batch_size: int = 8,
    seed: int = 0,
    min_lr: float | None = None,
    max_lr: float | None = None,
    log_path: str | Path | None = None,
    optimal_chunks: int = 32,
    compare: bool = True,
    **options: Any,
) -> NQMRun:
    """Drive :class:`autolr.AutoLRS` on the noisy quadratic model with plain SGD.

    The controller sees the minibatch loss of every step, as with a real network.
    Its schedule (the LRs of the steps the final parameters kept) is scored
    exactly with :func:`autolr.simulate.sgd_expected_loss` and compared with
    :func:`autolr.simulate.optimal_schedule` for the same ``total_steps``: probe
    steps cost compute, so the comparison is at equal compute.

    Args:
        total_steps: the budget, probes included.
        dim: coordinates of the problem (curvature ``1 / i``).
        batch_size: minibatch size (noise variance ``c / B``).
        seed: seeds the gradient noise and the controller.
        min_lr: lower bound of the search (default ``1e-3 * max_stable_lr``).
        max_lr: upper bound of the search (default ``0.95 * max_stable_lr``).
        log_path: where to write the run log (None: in memory).
        optimal_chunks: pieces of the optimal schedule.
        compare: compute the optimal schedule (False: the ``optimal_*`` fields are NaN).
        options: other :class:`autolr.AutoLRS` options (``forecaster``, ``probes``, ...).

    Raises:
        ConfigError: bad settings.
    """
    from autolr.simulate import NoisyQuadratic, optimal_schedule, sgd_expected_loss

    nqm = NoisyQuadratic(dim=dim, batch_size=batch_size, seed=seed, dtype=torch.float64)
    spec = nqm.spec
    top = spec.max_stable_lr
    lo = 1e-3 * top if min_lr is None else min_lr
    hi = 0.95 * top if max_lr is None else max_lr
    model = _TrackedQuadratic(nqm, total_steps)
    optimizer = torch.optim.SGD(nqm.parameters(), lr=math.sqrt(lo * hi))
    if log_path is not None:
        Path(log_path).unlink(missing_ok=True)
    options.setdefault("seed", seed)
    options.setdefault("gp_device", "cpu")
    tuner = AutoLRS(
        model,
        optimizer,
        min_lr=lo,
        max_lr=hi,
        total_steps=total_steps,
        log_path=log_path,
        **options,
    )
    while not tuner.finished:
        lr = float(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad(set_to_none=True)
        loss = nqm()
        loss.backward()
        optimizer.step()
        model.record(lr)
        tuner.step(loss.detach())
    schedule = model.schedule()
    with torch.no_grad():
        expected = float(sgd_expected_loss(schedule, spec)[-1]) if schedule.numel() else math.nan
    opt_loss = const_lr = const_loss = math.nan
    if compare:
        best = optimal_schedule(total_steps, spec, num_chunks=min(optimal_chunks, total_steps))
        opt_loss, const_lr = best.expected_loss, best.constant_lr
        const_loss = best.constant_expected_loss
    logger.info(
        "NQM: %d steps (%d probing), expected loss %.4g, optimal %.4g",
        tuner.global_step,
        tuner.search_steps,
        expected,
        opt_loss,
    )
    return NQMRun(
        log_path=str(log_path) if log_path is not None else None,
        records=tuner.log.records,
        total_steps=tuner.global_step,
        search_steps=tuner.search_steps,
        schedule=schedule,
        expected_loss=expected,
        final_loss=float(nqm.expected_loss()),
        optimal_loss=opt_loss,
        optimal_constant_lr=const_lr,
        optimal_constant_loss=const_loss,
        settings={"dim": dim, "batch_size": batch_size, "min_lr": lo, "max_lr": hi, **options},
    )
