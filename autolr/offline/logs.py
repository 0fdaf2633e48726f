"""Reading a run log for the offline tools: records grouped into stages, checked.

:func:`load_run` reads a run log leniently where it is safe and strictly where
it is not, and groups its records into a :class:`LoggedRun` of
:class:`LoggedStage` objects, the form replay, what-if and the report work on.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolr.errors import LogFormatError, LogWarning
from autolr.offline.reader import read_records
from autolr.runlog import (
    DECISION,
    EXPLOIT_END,
    PHASE,
    PHASE_RESUME,
    PROBE,
    RANGE_TEST,
    ROLLBACK,
    RUN_END,
    RUN_START,
    STAGE_START,
    is_recovery,
    of_type,
)

__all__ = ["LoggedRun", "LoggedStage", "load_run", "warn_log"]

logger = logging.getLogger(__name__)


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
        """The search is in the log: every planned probe, or a decision after fewer
        (a race that ended early)."""
        return self.n_probes > 0 and (len(self.probes) == self.n_probes or bool(self.decisions))

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

    A resumed run's log holds its segments (:class:`autolr.offline.reader.Segments`):
    ``records`` is the logical run they make (what one uninterrupted run would
    have written, with a ``phase`` record ``resume`` where it resumed), and the
    work redone after a resume is in ``abandoned``.

    Attributes:
        path: the file read.
        records: every record of the logical run, in order.
        lines: the 1-based line number of each record.
        stages: the stages, in order.
        warnings: flaws that were skipped or repaired while reading.
        abandoned: records of work redone after a resume (the steps after the
            checkpoint a resume went back to), in order; empty for an
            uninterrupted run.
        begins_at: 0, or the step the log begins at when it was written by a
            run loaded from a checkpoint whose earlier records are in another log.
    """

    path: str
    records: list[dict[str, Any]]
    lines: list[int]
    stages: list[LoggedStage]
    warnings: list[str] = field(default_factory=list)
    abandoned: list[dict[str, Any]] = field(default_factory=list)
    begins_at: int = 0

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
        ends = self.of_type(RUN_END)
        return ends[-1] if ends else None

    @property
    def resumes(self) -> list[dict[str, Any]]:
        """The ``phase`` records ``resume``: where the run resumed from a checkpoint."""
        return [r for r in self.of_type(PHASE) if r.get("phase") == PHASE_RESUME]

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
        """The records of one type (:data:`autolr.runlog.RECORD_TYPES`), in order."""
        return of_type(self.records, type_)


def load_run(path: str | Path, *, strict: bool = False) -> LoggedRun:
    """Read a run log (:func:`autolr.offline.reader.read_records`) and group it into stages.

    By default the log is read leniently where it is safe and strictly where it
    is not. Skipped with a :class:`~autolr.errors.LogWarning`: a truncated last
    line (a run killed while writing), records of an unknown type. Repaired with
    a warning: a non-finite number (``NaN``, ``Infinity``) in a loss series, read
    as null like the controller writes it. A resumed run's log is read as the
    logical run its segments make (see :class:`LoggedRun`).

    Args:
        path: the run log.
        strict: read strictly instead: any flaw raises.

    Raises:
        LogFormatError: the file is missing or empty, a line other than the last
            is not JSON, a record has an unknown ``schema_version``, lacks a field
            or holds a wrong value, steps go backwards, stages or probes are out
            of order, or the file holds more than one run. The message names the
            file, the line and the field.
    """
    read = read_records(path, strict=strict)
    run = read.logical()
    begins = read.segments.begins_at
    try:
        out = _assemble(str(Path(path)), run.records, run.lines, read.warnings)
    except LogFormatError as exc:
        if not begins:
            raise
        raise LogFormatError(
            f"{exc}; the log begins at a resume from step {begins}: the run's earlier "
            "records are in another log (append this log to that one and read the whole)"
        ) from None
    out.abandoned = read.abandoned()
    out.begins_at = read.segments.begins_at
    return out


def _assemble(
    path: str, records: list[dict[str, Any]], lines: list[int], found: list[str]
) -> LoggedRun:
    if records[0]["type"] != RUN_START:
        raise LogFormatError(
            f"{path}, line {lines[0]}: the first record must be run_start, "
            f"got {records[0]['type']!r}"
        )
    stages: list[LoggedStage] = []
    last_step = 0
    for rec, line in zip(records, lines):
        where = f"{path}, line {line}"
        type_ = rec["type"]
        if type_ == RUN_START and rec is not records[0]:
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
        if type_ == RUN_START:
            continue
        if type_ in (PHASE, RUN_END, RANGE_TEST) or is_recovery(rec):
            continue  # records of no stage (a recovery belongs to the warmup or the anneal)
        if type_ == STAGE_START:
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
        if type_ == PROBE:
            if rec["index"] != len(st.probes):
                raise LogFormatError(
                    f"{where}: field 'index' is {rec['index']}, expected {len(st.probes)} "
                    "(probes out of order)"
                )
            st.probes.append(rec)
        elif type_ == DECISION:
            st.decisions.append(rec)
        elif type_ == ROLLBACK:
            st.rollbacks.append(rec)
        elif type_ == EXPLOIT_END:
            st.exploit_end = rec
    return LoggedRun(path=path, records=records, lines=lines, stages=stages, warnings=found)
