"""The run log: one JSON object per line, every stage, probe and decision.

This module is the run log's schema, its writer and its one reader:

- every record type is a name (:data:`RUN_START`, :data:`PROBE`, ...) and a
  dataclass below that lists its fields, each documented once;
- :class:`RunLog` writes records and refuses a record whose fields are not
  exactly its type's (a programming error: :class:`~autolr.errors.SchemaError`);
- :func:`read_records` (and :func:`read_run_log`, its records alone) reads a log
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

Schema version 1 grew within the version: fields marked *added within version 1*
may be missing from logs that older autolr versions wrote; the lenient reader
accepts that, the strict one does not.
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
from typing import Any, ClassVar, NamedTuple

from autolr.errors import LogFormatError, LogWarning, SchemaError

__all__ = [
    "DECISION",
    "ENVELOPE",
    "EXPLOIT_END",
    "PHASE",
    "PHASE_RESUME",
    "PROBE",
    "RANGE_TEST",
    "RECORD_TYPES",
    "ROLLBACK",
    "RUN_END",
    "RUN_START",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STAGE_START",
    "LogRecords",
    "RunLog",
    "Segments",
    "clean",
    "fields_of",
    "of_type",
    "read_records",
    "read_run_log",
    "required_fields",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

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


def _added() -> Any:
    """A field added within schema version 1: older logs may lack it."""
    return field(metadata={"added": True})


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
    """

    TYPE: ClassVar[str] = DECISION
    stage: int
    lr: float
    forecast: float | None
    candidates: list[dict[str, Any]]
    reason: str
    from_probe: bool = _added()


@dataclass(frozen=True)
class Rollback:
    """``rollback``: the guard restored the snapshot during an exploit.

    Attributes:
        stage: stage number.
        lr: the LR whose exploit was rolled back.
        losses: exploit losses until the guard fired.
        reason: what the guard saw (added within version 1).
    """

    TYPE: ClassVar[str] = ROLLBACK
    stage: int
    lr: float
    losses: list[float | None]
    reason: str = _added()


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
    """

    TYPE: ClassVar[str] = EXPLOIT_END
    stage: int
    lr: float | None
    losses: list[float | None]
    steps: int
    forecast: float | None = _added()
    actual: float | None = _added()
    actual_train: float | None = _added()


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
        best_lr: the LR at the lowest smoothed loss.
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
        exploit_steps: steps spent exploiting (added within version 1).
    """

    TYPE: ClassVar[str] = RUN_END
    total: int
    search_steps: int = _added()
    exploit_steps: int = _added()


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


def required_fields(type_: str) -> tuple[str, ...]:
    """The fields of a record type that every version-1 log has."""
    return tuple(f.name for f in dataclasses.fields(SCHEMA[type_]) if not f.metadata.get("added"))


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


# --------------------------------------------------------------------------- reading


class Segments(NamedTuple):
    """How the records of a log make one run across its resumes (see the module doc).

    Every field holds indices into :attr:`LogRecords.records`, in order; each
    record is in exactly one of ``kept``, ``abandoned`` and ``fresh``.

    Attributes:
        kept: the logical run: the records one uninterrupted run would have
            written, and the resume records.
        abandoned: records of work redone after a resume: those at steps after
            the step the run was resumed from.
        fresh: records a resumed controller's construction wrote before its
            resume record (its ``run_start``, its stage-0 ``stage_start`` or
            warmup ``phase``), and, when the log begins at a resume, the first
            construction's records other than its ``run_start``.
        resumes: the resume records (a subset of ``kept``).
        begins_at: 0, or the step the log begins at when its first controller
            was loaded from a checkpoint whose earlier records are in another log.
    """

    kept: list[int]
    abandoned: list[int]
    fresh: list[int]
    resumes: list[int]
    begins_at: int = 0


class LogRecords(NamedTuple):
    """What :func:`read_records` read.

    Attributes:
        records: the records as written, in order (lenient: the skipped ones left out).
        lines: the 1-based line number of each record.
        warnings: the flaws skipped or repaired (lenient mode; empty when strict).
        segments: how the records make one run across resumes.
    """

    records: list[dict[str, Any]]
    lines: list[int]
    warnings: list[str]
    segments: Segments

    def logical(self) -> LogRecords:
        """The logical run alone: records, lines and segments of ``segments.kept``."""
        kept = self.segments.kept
        where = {k: n for n, k in enumerate(kept)}
        return LogRecords(
            [self.records[k] for k in kept],
            [self.lines[k] for k in kept],
            self.warnings,
            Segments(
                list(range(len(kept))),
                [],
                [],
                [where[k] for k in self.segments.resumes],
                self.segments.begins_at,
            ),
        )

    def abandoned(self) -> list[dict[str, Any]]:
        """The records of work redone after a resume, in order."""
        return [self.records[k] for k in self.segments.abandoned]


# Fields that hold loss series: a non-finite number there is read as null (lenient).
_SERIES_FIELDS = ("losses", "train_losses", "recent")
_COUNT_FIELDS = ("stage", "index", "tau", "tau_probe", "probes", "exploit_steps", "total")


class _Reader:
    def __init__(self, path: Path, strict: bool) -> None:
        self.path = path
        self.strict = strict
        self.found: list[str] = []

    def flaw(self, what: str, repair: str) -> None:
        """A flaw: the lenient reader warns ``what`` and ``repair``; the strict one raises."""
        if self.strict:
            raise LogFormatError(f"{what} (strict read)")
        message = f"{what} {repair}"
        logger.debug(message)
        self.found.append(message)
        warnings.warn(message, LogWarning, stacklevel=4)

    def read(self) -> LogRecords:
        p = self.path
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LogFormatError(f"{p}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise LogFormatError(f"{p}: cannot read the run log ({exc})") from None
        raw_lines = text.splitlines()
        last_content = max((i for i, line in enumerate(raw_lines) if line.strip()), default=-1)
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
                    self.flaw(f"{where}: truncated last line", f"skipped ({exc.msg})")
                    continue
                raise LogFormatError(f"{where}: not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise LogFormatError(
                    f"{where}: nested too deeply to read (not a record autolr writes)"
                ) from None
            if not isinstance(rec, dict):
                raise LogFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            checked = self.check(rec, where)
            if checked is None:
                continue
            records.append(checked)
            lines.append(i + 1)
        if not records:
            raise LogFormatError(f"{p}: no records (an empty run log)")
        return LogRecords(records, lines, self.found, self.segments(records, lines))

    def segments(self, records: list[dict[str, Any]], lines: list[int]) -> Segments:
        """Tell a run's segments apart: see :class:`Segments`."""
        kept: list[int] = []
        abandoned: list[int] = []
        fresh: list[int] = []
        resumes: list[int] = []
        begins_at = 0
        pending: list[int] | None = None  # a later run_start and its construction's records
        for i, rec in enumerate(records):
            type_ = rec["type"]
            if type_ == RUN_START and i > 0:
                if pending is not None:
                    raise self.two_runs(lines[pending[0]], lines[i])
                pending = [i]
            elif type_ == PHASE and rec.get("phase") == PHASE_RESUME:
                n = rec["step"]
                if pending is None and n > 0 and all(records[k]["step"] == 0 for k in kept):
                    # Loaded right after construction, into a log of its own.
                    fresh.extend(kept[1:])
                    kept = kept[:1]
                    begins_at = n
                abandoned.extend(k for k in kept if records[k]["step"] > n)
                kept = [k for k in kept if records[k]["step"] <= n]
                if pending is not None:
                    fresh.extend(pending)
                    pending = None
                kept.append(i)
                resumes.append(i)
            elif pending is not None:
                if rec["step"] > 0:
                    raise self.two_runs(lines[pending[0]], lines[i])
                pending.append(i)
            else:
                kept.append(i)
        if pending is not None:
            self.flaw(
                f"{self.path}, line {lines[pending[0]]}: a second run_start at the end with no "
                "resume record after it (a resumed run stopped before it loaded its checkpoint)",
                f"skipped ({len(pending)} record(s))",
            )
            fresh.extend(pending)
        return Segments(kept, sorted(abandoned), sorted(fresh), resumes, begins_at)

    def two_runs(self, first: int, line: int) -> LogFormatError:
        return LogFormatError(
            f"{self.path}, line {first}: a second run_start not followed by a "
            f"'{PHASE_RESUME}' phase record (line {line} goes on at a later step): the file "
            "holds more than one run; split it into one file per run"
        )

    def check(self, rec: dict[str, Any], where: str) -> dict[str, Any] | None:
        if "type" not in rec:
            raise LogFormatError(f"{where}: record has no 'type' field")
        version = rec.get("schema_version")
        if version != SCHEMA_VERSION:
            raise LogFormatError(
                f"{where}: schema_version={version!r} is not supported; "
                f"this autolr reads run logs of schema_version {SCHEMA_VERSION}"
            )
        type_ = rec["type"]
        if type_ not in SCHEMA:
            self.flaw(f"{where}: record of unknown type {type_!r}", "skipped")
            return None
        step = rec.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise LogFormatError(f"{where}: field 'step' must be an int >= 0, got {step!r}")
        for name in fields_of(type_) if self.strict else required_fields(type_):
            if name not in rec:
                raise LogFormatError(f"{where}: {type_} record is missing the field {name!r}")
        if self.strict:
            known = set(fields_of(type_)) | set(ENVELOPE)
            unknown = sorted(k for k in rec if k not in known)
            if unknown:
                raise LogFormatError(f"{where}: {type_} record has unknown fields {unknown}")
        for name in _SERIES_FIELDS:
            if name in rec:
                rec[name] = self.series(rec[name], f"{where}: field {name!r}")
        for name in _COUNT_FIELDS:
            if name in rec:
                value = rec[name]
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise LogFormatError(
                        f"{where}: field {name!r} must be an int >= 0, got {value!r}"
                    )
        if type_ in (PROBE, DECISION, ROLLBACK, EXPLOIT_END):
            lr = rec["lr"]
            if lr is not None and not _finite_number(lr):
                raise LogFormatError(f"{where}: field 'lr' must be a finite number, got {lr!r}")
            if type_ != EXPLOIT_END and lr is None:
                raise LogFormatError(f"{where}: field 'lr' must be a finite number, got null")
        if type_ == PROBE:
            t = rec["t"]
            if not isinstance(t, list) or not all(_finite_number(v) for v in t):
                raise LogFormatError(f"{where}: field 't' must be a list of finite numbers")
            if len(t) != len(rec["losses"]):
                raise LogFormatError(
                    f"{where}: fields 't' ({len(t)} values) and 'losses' "
                    f"({len(rec['losses'])} values) differ in length"
                )
        if type_ == RUN_START:
            cfg = rec["config"]
            if not isinstance(cfg, dict):
                raise LogFormatError(f"{where}: field 'config' must be an object")
            for name in ("min_lr", "max_lr"):
                # null: no range given (the run's range test set it).
                if cfg.get(name) is not None and (
                    not _finite_number(cfg.get(name)) or cfg[name] <= 0
                ):
                    raise LogFormatError(
                        f"{where}: field 'config.{name}' must be a positive number or null, "
                        f"got {cfg.get(name)!r}"
                    )
            lrs = rec["initial_lrs"]
            if not isinstance(lrs, list) or not all(_finite_number(v) for v in lrs):
                raise LogFormatError(f"{where}: field 'initial_lrs' must be a list of numbers")
        return rec

    def series(self, value: Any, where: str) -> list[float | None]:
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
            self.flaw(f"{where}: {bad} non-finite value(s)", "read as null")
        return out


def _finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def read_records(path: str | Path, *, strict: bool = True) -> LogRecords:
    """Read and check a run log against the schema.

    Both modes check every record: a known ``schema_version``, the fields of its
    type, counts that are ints >= 0, finite LRs, consistent probe series.

    Args:
        path: the run log.
        strict: True: any flaw raises, and every record must have exactly its
            type's fields (a log this autolr wrote, complete). False: read what a
            killed run or an older autolr left, skipping with a
            :class:`~autolr.errors.LogWarning` a truncated last line and records
            of an unknown type, reading a non-finite number in a loss series as
            null, and accepting records without the fields added within version 1
            (or with fields a newer autolr added), and a ``run_start`` a resumed
            run wrote at the end before it loaded its checkpoint.

    Returns:
        The records as written and their :class:`Segments`; a resumed run's log
        holds several, :meth:`LogRecords.logical` is the run they make.

    Raises:
        LogFormatError: the file is missing or empty, a line other than the last
            is not JSON, a record has an unknown ``schema_version``, lacks a field
            or holds a wrong value, a second ``run_start`` is not followed by a
            resume record (two runs in one file) (or, strict, any flaw). The
            message names the file, the line and the field.
    """
    return _Reader(Path(path), strict).read()


def read_run_log(path: str | Path, *, strict: bool = True) -> list[dict[str, Any]]:
    """The records of a run log as written, in order (see :func:`read_records`; a
    resumed run's logical records: ``read_records(path).logical().records``)."""
    return read_records(path, strict=strict).records
