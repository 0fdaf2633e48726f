"""Reading a run log back: every record checked, a resumed run's segments told apart.

:func:`read_records` (and :func:`read_run_log`, its records alone) reads a log
strictly (any flaw raises) or leniently (the flaws a killed run or an older
autolr leaves are skipped or repaired with a :class:`~autolr.errors.LogWarning`).
The schema it checks against is :mod:`autolr.runlog`, which also says how a
resumed run's log holds its segments.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any, NamedTuple

from autolr.errors import LogFormatError, LogWarning
from autolr.runlog import (
    DECISION,
    ENVELOPE,
    EXPLOIT_END,
    PHASE,
    PHASE_RESUME,
    PROBE,
    READ_VERSIONS,
    ROLLBACK,
    RUN_START,
    SCHEMA,
    SCHEMA_VERSION,
    fields_of,
    required_fields,
)

__all__ = ["LogRecords", "Segments", "read_records", "read_run_log"]

logger = logging.getLogger(__name__)


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
_SERIES_FIELDS = ("losses", "train_losses", "recent", "anneal_losses")
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
        if isinstance(version, bool) or version not in READ_VERSIONS:
            raise LogFormatError(
                f"{where}: schema_version={version!r} is not supported; this autolr reads "
                f"run logs of schema_version {', '.join(map(str, READ_VERSIONS))} (it writes "
                f"{SCHEMA_VERSION})"
            )
        type_ = rec["type"]
        if type_ not in SCHEMA:
            self.flaw(f"{where}: record of unknown type {type_!r}", "skipped")
            return None
        step = rec.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise LogFormatError(f"{where}: field 'step' must be an int >= 0, got {step!r}")
        # Strict: every field the newest writer of the version wrote (a version-1 log
        # written after the fields added within version 1 has them all).
        for name in required_fields(type_, max(version, 2) if self.strict else version):
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
            type's fields of its schema version (a log an autolr wrote, complete;
            a version-2 record needs no field new in version 3). False: read what a
            killed run or an older autolr left, skipping with a
            :class:`~autolr.errors.LogWarning` a truncated last line and records
            of an unknown type, reading a non-finite number in a loss series as
            null, accepting version-1 records without the fields added within
            version 1 (and records with fields a newer autolr added), and a ``run_start`` a resumed
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
