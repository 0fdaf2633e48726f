"""Reading a run log for the offline tools: records grouped into stages, checked.

:func:`load_run` reads a run log leniently where it is safe and strictly where
it is not, and groups its records into a :class:`LoggedRun` of
:class:`LoggedStage` objects, the form replay, what-if and the report work on.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolr.errors import LogFormatError, LogWarning
from autolr.runlog import SCHEMA_VERSION

__all__ = ["LoggedRun", "LoggedStage", "load_run", "warn_log"]

logger = logging.getLogger(__name__)

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


def warn_log(message: str, sink: list[str] | None = None) -> None:
    logger.debug(message)
    if sink is not None:
        sink.append(message)
    warnings.warn(message, LogWarning, stacklevel=3)


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
                warn_log(f"{where}: truncated last line skipped ({exc.msg})", found)
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
        warn_log(f"{where}: record of unknown type {type_!r} skipped", found)
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
        warn_log(f"{where}: {bad} non-finite value(s) read as null", found)
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
