"""The run log: one JSON object per line, every stage, probe and decision.

This module is the run log's schema and its writer (the one reader is
:mod:`autolr.offline.reader`: reading logs back is the offline wing's work):

- every record type is a name (:data:`RUN_START`, :data:`PROBE`, ...) and a
  dataclass below that lists its fields, each documented once;
- :class:`RunLog` writes records and refuses a record whose fields are not
  exactly its type's (a programming error: :class:`~autolr.errors.SchemaError`);
- :func:`~autolr.offline.reader.read_records` (and ``read_run_log``, its records alone) reads a log
  back, strictly (any flaw raises) or leniently (the flaws a killed run or an
  older autolr leaves are skipped or repaired with a :class:`LogWarning`).

A resumed run appends to its log: the new controller's construction writes its
own ``run_start`` (and its stage-0 ``stage_start`` or warmup ``phase``), then
``load_state_dict`` writes a ``phase`` record with phase :data:`PHASE_RESUME` at
the checkpoint's step ``N``. One log so holds a run's *segments*; the reader
tells them apart (:class:`Segments`, :meth:`LogRecords.logical`): the records a
resumed construction wrote before its resume record are not part of the run,
and the earlier records at steps after ``N`` are work that was redone
(*abandoned*). What remains, resume records included, is the *logical run*: the
records one uninterrupted run would have written, plus where it resumed.

Every record has ``type``, ``schema_version``, ``step`` (the controller's global
step when written; probe steps count) and ``time`` (Unix time of the write).
Non-finite numbers are written as ``null``.

Schema versions (:data:`SCHEMA_VERSION` is written, :data:`READ_VERSIONS` are read):

- **1**: the forecast strategy's log. It grew within the version: fields marked
  *added within version 1* may be missing from logs that older autolr versions
  wrote; the lenient reader accepts that, the strict one does not. Its last
  releases also wrote the annealed strategy's records (``range_test``, a race's
  ``cool``, ``climbs``, ``decay_steps``, ``kept_steps``) under version 1.
- **2**: the records and fields below, every one of them in every record: the
  annealed strategy's log (range test, cooldown branches, the decided decay). A
  version-2 record that lacks a field is a flaw for both readers; an autolr that
  reads only version 1 refuses a version-2 log instead of misreading it.
- **3**: version 2 and ``stage_start.level``, the start loss and noise a stage
  judges against (an annealed race reads them from the range test's first steps).
- **4**: version 3 and ``rollback.back_to``, the step of the state a rollback
  went back to.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from autolr.errors import LogWarning, SchemaError

__all__ = [
    "DECISION",
    "ENVELOPE",
    "EXPLOIT_END",
    "PHASE",
    "PHASE_RESUME",
    "PROBE",
    "RANGE_TEST",
    "READ_VERSIONS",
    "RECORD_TYPES",
    "RECOVERY",
    "ROLLBACK",
    "RUN_END",
    "RUN_START",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STAGE_START",
    "RunLog",
    "clean",
    "fields_of",
    "is_recovery",
    "of_type",
    "required_fields",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 4
READ_VERSIONS = (1, 2, 3, 4)
"""The schema versions the reader (:mod:`autolr.offline.reader`) accepts."""

# Record types.
RUN_START = "run_start"
STAGE_START = "stage_start"
PROBE = "probe"
DECISION = "decision"
ROLLBACK = "rollback"
EXPLOIT_END = "exploit_end"
PHASE = "phase"
RUN_END = "run_end"

RANGE_TEST = "range_test"

PHASE_RESUME = "resume"
"""The ``phase`` a resumed run writes (the others are :class:`autolr.Phase` values)."""

ENVELOPE = ("type", "schema_version", "step", "time")
"""Fields every record has, whatever its type."""

RECOVERY = "non-finite loss in the "
"""How the ``reason`` of a recovery's ``rollback`` begins (a non-finite loss in the
warmup or the anneal, outside any stage's search or exploit): see :func:`is_recovery`."""


def is_recovery(record: dict[str, Any]) -> bool:
    """True for the ``rollback`` of a recovery in the warmup or the anneal."""
    return record.get("type") == ROLLBACK and str(record.get("reason", "")).startswith(RECOVERY)


def _added() -> Any:
    """A field added within schema version 1: older logs may lack it (every version-2
    log has it)."""
    return field(metadata={"added": True, "since": 2})


def _new_in(version: int) -> Any:
    """A field new in schema ``version``: logs of earlier versions lack it."""
    return field(metadata={"since": version})


@dataclass(frozen=True)
class RunStart:
    """``run_start``: the first record of a run.

    Attributes:
        config: all settings (:meth:`autolr.AutoLRSConfig.to_dict`).
        initial_lrs: the param groups' LRs when the controller was built.
        forecaster: the forecaster's ``config()`` (added within version 1).
        prober: class name of the probe backend, or null when probes run in the
            training loop (added within version 1).
        strategy: the decision strategy's ``config()``: its ``name`` and its
            proposer's settings (added within version 1).
    """

    TYPE: ClassVar[str] = RUN_START
    config: dict[str, Any]
    initial_lrs: list[float]
    forecaster: dict[str, Any] | None = _added()
    prober: str | None = _added()
    strategy: dict[str, Any] | None = _added()


@dataclass(frozen=True)
class StageStart:
    """``stage_start``: a stage begins, at its snapshot.

    Attributes:
        stage: stage number, from 0.
        tau: the stage's exploit horizon in steps (the forecasts are at ``t = tau``).
        tau_probe: steps of each probe.
        probes: probes the plan gives the stage (0: exploit only).
        exploit_steps: steps of the stage's exploit.
        recent: the last finite losses before the snapshot, up to 16, which the
            stage's reference loss and noise level come from; replay needs them
            for warmup (added within version 1).
        lr_bounds: ``[low, high]`` LRs the stage may probe under ``lr_trust``;
            null: the whole ``[min_lr, max_lr]`` range (added within version 1).
        cool: steps of each probe's cooldown after its ``tau_probe`` steps, 0 for
            none (added within version 1).
        level: ``[start loss, noise]`` the stage judges its probes and exploit
            against, from the losses before its snapshot or, for an annealed race,
            from the range test's first steps; null when unknown at the snapshot (the
            race then reads its probes' first losses) (new in version 3).
    """

    TYPE: ClassVar[str] = STAGE_START
    stage: int
    tau: int
    tau_probe: int
    probes: int
    exploit_steps: int
    recent: list[float] = _added()
    lr_bounds: list[float] | None = _added()
    cool: int = _added()
    level: list[float] | None = _new_in(3)


@dataclass(frozen=True)
class Probe:
    """``probe``: one probe of a stage, written when it ends.

    Attributes:
        stage: stage number.
        index: probe number within the stage, from 0.
        lr: base LR probed, linear scale.
        t: probe-local steps of each objective value.
        losses: objective values (null where non-finite).
        train_losses: every probe step's training loss (null where non-finite).
        diverged: the probe was stopped as diverged (or failed).
        forecast: forecast loss at ``t = tau``; null when diverged.
        reason: why it stopped early or was rejected (``''`` when it ran fully;
            ``'probe failed: ...'`` when the backend failed) (added within version 1).
        fit: fitted curve parameters (``a``, ``b``, ``c``, ``sse``, ``n_used``), or
            null (added within version 1).
        rolled_back: the exploit at this LR was rolled back by the guard (added
            within version 1).
        steps: probe steps trained (added within version 1).
    """

    TYPE: ClassVar[str] = PROBE
    stage: int
    index: int
    lr: float
    t: list[float]
    losses: list[float | None]
    train_losses: list[float | None]
    diverged: bool
    forecast: float | None
    reason: str = _added()
    fit: dict[str, float] | None = _added()
    rolled_back: bool = _added()
    steps: int = _added()


@dataclass(frozen=True)
class Decision:
    """``decision``: the LR a stage exploits (a rollback is followed by another one).

    Attributes:
        stage: stage number.
        lr: the LR chosen.
        forecast: its forecast loss (null: none usable).
        candidates: ``lr``, ``forecast``, ``diverged`` of each probe.
        reason: ``best_forecast``, ``rollback`` (the next candidate after a
            rollback) or ``fallback`` (no candidate left: ``min_lr``).
        from_probe: the winner's end state was kept (the exploit continues from
            it) (added within version 1).
        decay_steps: steps of the final decay as they stand after this decision
            (the annealed strategy's race may shorten the planned one) (added
            within version 1).
    """

    TYPE: ClassVar[str] = DECISION
    stage: int
    lr: float
    forecast: float | None
    candidates: list[dict[str, Any]]
    reason: str
    from_probe: bool = _added()
    decay_steps: int | None = _added()


@dataclass(frozen=True)
class Rollback:
    """``rollback``: the guard restored the snapshot during an exploit.

    Attributes:
        stage: stage number.
        lr: the LR whose exploit was rolled back.
        losses: exploit losses until the guard fired.
        reason: what the guard saw (added within version 1).
        back_to: the step of the state restored: the stage's snapshot, which in the
            annealed hold moves to the hold's best state so far; for a recovery, the
            state the warmup or the anneal started from (new in version 4).
    """

    TYPE: ClassVar[str] = ROLLBACK
    stage: int
    lr: float
    losses: list[float | None]
    reason: str = _added()
    back_to: int = _new_in(4)


@dataclass(frozen=True)
class ExploitEnd:
    """``exploit_end``: a stage's exploit finished.

    Attributes:
        stage: stage number.
        lr: the LR exploited (null: none).
        losses: every exploit step's loss.
        steps: exploit steps.
        forecast: the chosen LR's forecast (added within version 1).
        actual: the objective reached: the validation loss with a validation
            objective, else the median of the last exploit losses (added within
            version 1).
        actual_train: median of the last exploit training losses (added within
            version 1).
        climbs: ``[step, lr]`` each time a climb off a plateau doubled the LR
            during the exploit (added within version 1).
    """

    TYPE: ClassVar[str] = EXPLOIT_END
    stage: int
    lr: float | None
    losses: list[float | None]
    steps: int
    forecast: float | None = _added()
    actual: float | None = _added()
    actual_train: float | None = _added()
    climbs: list[list[float]] = _added()


@dataclass(frozen=True)
class PhaseChange:
    """``phase``: the run entered a phase outside the stages.

    Attributes:
        phase: ``warmup``, ``anneal``, ``done``, or ``resume`` (a run resumed
            from a checkpoint here).
        lr: the LR at the change (added within version 1).
    """

    TYPE: ClassVar[str] = PHASE
    phase: str
    lr: float | None = _added()


@dataclass(frozen=True)
class RangeTestRecord:
    """``range_test``: the LR range test at the start, written when it stops
    (added within version 1).

    Attributes:
        lrs: LR of each ramp step, linear scale.
        losses: each ramp step's training loss (null where non-finite).
        reason: why the ramp stopped.
        best_lr: the LR the ramp read as best (its lowest smoothed loss; a tenth
            of where it stopped without a clear drop, :attr:`autolr.rangetest.RangeTest.best_lr`).
        lr_range: ``[low, high]``: the search range it set.
    """

    TYPE: ClassVar[str] = RANGE_TEST
    lrs: list[float]
    losses: list[float | None]
    reason: str
    best_lr: float
    lr_range: list[float]


@dataclass(frozen=True)
class RunEnd:
    """``run_end``: the budget is spent.

    Attributes:
        total: steps taken, probes included.
        search_steps: steps spent probing (added within version 1).
        kept_steps: of them, the winners' probe steps the exploit continued from
            (added within version 1).
        exploit_steps: steps spent exploiting (added within version 1).
        anneal_losses: every step's loss in the final decay, in order (null where
            non-finite; empty without one) (added within version 1).
    """

    TYPE: ClassVar[str] = RUN_END
    total: int
    search_steps: int = _added()
    kept_steps: int = _added()
    exploit_steps: int = _added()
    anneal_losses: list[float | None] = _added()


SCHEMA: dict[str, type] = {
    cls.TYPE: cls
    for cls in (
        RunStart,
        StageStart,
        Probe,
        Decision,
        Rollback,
        ExploitEnd,
        PhaseChange,
        RunEnd,
        RangeTestRecord,
    )
}
"""Each record type's dataclass (its fields, their docs and which were added later)."""

RECORD_TYPES = tuple(SCHEMA)


def fields_of(type_: str) -> tuple[str, ...]:
    """Every field of a record type, envelope excluded, in schema order."""
    return tuple(f.name for f in dataclasses.fields(SCHEMA[type_]))


def required_fields(type_: str, version: int = 1) -> tuple[str, ...]:
    """The fields every record of a type has in a log of schema ``version``: in
    version 1, those not added within it; from version 2 on, all the version had
    (each field's ``since``: fields added within version 1 are in version 2)."""
    return tuple(
        f.name for f in dataclasses.fields(SCHEMA[type_]) if f.metadata.get("since", 0) <= version
    )


# --------------------------------------------------------------------------- writing


def clean(value: Any) -> Any:
    """JSON-friendly copy: tensors to lists, non-finite floats to None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def _check_fields(type_: str, fields: dict[str, Any]) -> None:
    if type_ not in SCHEMA:
        raise SchemaError(
            f"unknown run-log record type {type_!r}; the schema has {list(RECORD_TYPES)}"
        )
    want = fields_of(type_)
    missing = [name for name in want if name not in fields]
    unknown = [name for name in fields if name not in want]
    if missing or unknown:
        raise SchemaError(
            f"{type_} record written with missing fields {missing} and unknown fields "
            f"{unknown}; its fields are {list(want)} (autolr/runlog.py)"
        )


class RunLog:
    """Appends records to a JSON-lines file (if a path is given) and keeps them in memory.

    A write to the file that fails (disk full, a folder at the path) never
    raises: the record stays in memory (:attr:`records` is always whole),
    :attr:`failed_writes` counts it, and the first failure is warned of with a
    :class:`~autolr.errors.LogWarning`. So a caller's state never depends on
    whether its log line reached the disk. Each line is written whole, so a crash
    at any point leaves every line in the file valid JSON.

    Args:
        path: file to append to; parent folders are created. None keeps records in memory only.
        hold: keep records in memory only until :meth:`release` (a controller
            whose construction fails leaves no line in the file).
    """

    def __init__(self, path: str | Path | None = None, *, hold: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.records: list[dict[str, Any]] = []
        self.failed_writes = 0
        self._held = hold

    def release(self) -> None:
        """Stop holding: write every record so far to the file, then each as it comes."""
        if self._held:
            self._held = False
            self._append(self.records)

    def _append(self, records: list[dict[str, Any]]) -> None:
        if self.path is None or not records:
            return
        text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            self.failed_writes += len(records)
            if self.failed_writes == len(records):
                warnings.warn(
                    f"cannot write the run log {self.path} ({exc}); records are kept in "
                    "memory only (RunLog.records) and training goes on",
                    LogWarning,
                    stacklevel=4,
                )

    def write(self, type_: str, step: int, **fields: Any) -> dict[str, Any]:
        """Append one record.

        Args:
            type_: a record type of :data:`SCHEMA`.
            step: the controller's global step.
            fields: exactly the type's fields.

        Raises:
            SchemaError: an unknown type, or fields missing or not in the type's schema.
        """
        _check_fields(type_, fields)
        record = {"type": type_, "schema_version": SCHEMA_VERSION, "step": step}
        record.update(clean(fields))
        record["time"] = time.time()
        self.records.append(record)
        if not self._held:
            self._append([record])
        return record

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        """The records of one type, in order."""
        return of_type(self.records, type_)


def of_type(records: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    """The records of one type (a name of :data:`RECORD_TYPES`), in order."""
    if type_ not in SCHEMA:
        raise SchemaError(f"unknown run-log record type {type_!r}; the schema has {RECORD_TYPES}")
    return [r for r in records if r.get("type") == type_]
