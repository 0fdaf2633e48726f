"""Exact replay: a logged run fed back through the controller, every record compared.

Replay feeds a logged run back through :class:`autolr.AutoLRS` itself: no second
implementation of the algorithm. Nothing is trained (see
:mod:`autolr.offline.harness`), and every loss the controller asks for comes
from the log:

- warmup: the stage's ``recent`` losses (the only warmup losses the log keeps; the
  others are fed as NaN, which the controller ignores there);
- probes: the probe's ``train_losses`` (and, with a validation objective, its
  ``losses`` through a validation function that returns them in order);
- exploit: the losses of each rollback, then of ``exploit_end``;
- anneal: the losses ``run_end`` holds (``anneal_losses``; 0.0 for a log
  without them, the anneal takes no decision but a recovery).

:func:`replay_run` checks that the replayed records equal the logged ones, field by
field. A resumed run is replayed as its logical run (:class:`LoggedRun`): one
controller is driven through it from the start, across the resume points, and
every record is compared but the ``resume`` phase records themselves (a run that
was never interrupted writes none).
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolr.controller import AutoLRS, Phase
from autolr.errors import AutoLRError, ConfigError, LogFormatError
from autolr.offline.harness import (
    REL_TOL,
    LoggedProber,
    LoggedValidation,
    OutOfLog,
    build_forecaster,
    build_proposer,
    controller_kwargs,
    dummy_training,
    nan_if_none,
    quiet,
)
from autolr.offline.logs import LoggedRun, LoggedStage, load_run, warn_log
from autolr.runlog import (
    DECISION,
    PHASE,
    PHASE_RESUME,
    PROBE,
    RANGE_TEST,
    ROLLBACK,
    RUN_START,
    is_recovery,
)

__all__ = ["Mismatch", "ReplayResult", "replay_run"]

_IGNORED_FIELDS = ("time", "schema_version")


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
            with NaN losses where the log keeps none: the warmup, and the anneal of
            a log without ``anneal_losses``).
        compared: logged records compared (run_start and resume records excluded).
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
            "probes": len(run.of_type(PROBE)),
            "decisions": len(run.of_type(DECISION)),
            "rollbacks": len(run.of_type(ROLLBACK)),
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
            "resumed_at": [r["step"] for r in self.run.resumes],
            "abandoned": len(self.run.abandoned),
        }


def _feed_warmup(stage0: LoggedStage | None, warmup_steps: int, skip: int = 0) -> deque[float]:
    """The warmup's losses: only the last ones before stage 0 are logged (its
    ``recent``), and only they matter; the steps before get a finite stand-in.
    The warmup may have taken more than ``warmup_steps`` steps (restarts after
    a non-finite loss; ``skip`` of its steps are fed as such): stage 0 starts at
    the step it took."""
    recent = (stage0.recent if stage0 is not None else None) or []
    steps = warmup_steps if stage0 is None else max(warmup_steps, int(stage0.start["step"]))
    steps -= skip
    kept = list(recent[-steps:]) if steps else []
    filler = kept[0] if kept else 0.0
    return deque([filler] * max(0, steps - len(kept)) + kept)


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
        LogFormatError: the log cannot be read (see :func:`load_run`), or it
            begins at a resume (its earlier records are in another log).
    """
    if not isinstance(run, LoggedRun):
        run = load_run(run)
    if run.begins_at:
        raise LogFormatError(
            f"{run.path}: the log begins at a resume from step {run.begins_at}: the run's "
            "earlier records are in another log; replay needs them (append this log to "
            "that one and replay the whole)"
        )
    model, optimizer = dummy_training(run.initial_lrs)
    backend = run.prober is not None
    stopped: str | None = None
    kwargs = controller_kwargs(run)
    proposer = build_proposer(run, kwargs)
    if proposer is not None:
        kwargs["proposer"] = proposer
    try:
        kwargs["forecaster"] = build_forecaster(run)
    except ConfigError as exc:
        raise ConfigError(
            f"{run.path}: cannot rebuild the run's forecaster ({exc}); a custom forecaster "
            "cannot be replayed exactly, but what_if() can re-decide with a built-in one"
        ) from None
    if run.stages and run.stages[0].recent is None and kwargs.get("warmup_steps"):
        warn_log(
            f"{run.path}: the log has no pre-snapshot losses (an older autolr wrote it); "
            "stage 0 may replay differently",
            run.warnings,
        )
    val = LoggedValidation(run) if run.objective == "val_loss" else None
    kwargs["val_fn"] = val
    prober = None
    if backend:
        prober = LoggedProber(run, model, optimizer, int(kwargs.get("parallel_probes", 1)))
        kwargs["prober"] = prober
    tuner: AutoLRS | None = None
    fed: list[tuple[int, float, str, float]] = []
    try:
        with quiet():
            tuner = AutoLRS(model, optimizer, **kwargs)
            if val is not None:
                val.tuner = tuner
            stopped = _drive(run, tuner, fed)
    except OutOfLog as exc:
        stopped = str(exc)
    except AutoLRError as exc:
        stopped = f"the controller raised {type(exc).__name__}: {exc}"
    if prober is not None and prober.problems and stopped is None:
        stopped = prober.problems[0]
    replayed = tuner.log.records if tuner is not None else []
    mismatches, compared = _compare(run, replayed, max_mismatches)
    stage0 = run.stages[0].start if run.stages else {}
    older = stage0.get("cool") and "level" not in stage0 and not run.config.get("warmup_steps")
    if mismatches and older:
        warn_log(
            f"{run.path}: an annealed run logged before its race read the start loss and "
            "noise from the range test's first steps (it read its probes' first losses): "
            "that may be why its race replays differently",
            run.warnings,
        )
    logged = {st.index: len(st.probes) for st in run.stages if st.start.get("cool")}
    for rec in replayed:
        stage, mine = int(rec.get("stage") or 0), len(rec.get("candidates") or [])
        if mismatches and rec["type"] == DECISION and 0 < mine < logged.get(stage, 0):
            warn_log(
                f"{run.path}: its race replays ending after fewer candidates than logged "
                f"({mine} of {logged[stage]}): a race now ends once a candidate scores "
                "clearly worse than a larger LR's, and an older autolr ran every rung; "
                "that may be why it replays differently",
                run.warnings,
            )
            break
    return ReplayResult(run, tuner, compared, mismatches, stopped, fed)


def _drive(run: LoggedRun, tuner: AutoLRS, fed: list[tuple[int, float, str, float]]) -> str | None:
    """Step the controller with the logged losses; the reason it stopped early, or None."""
    # Steps whose non-finite loss made the warmup or the anneal go back (their rollbacks).
    nan_steps = {int(r["step"]) for r in run.of_type(ROLLBACK) if is_recovery(r)}
    stage0 = run.stage(0)
    first = int(stage0.start["step"]) if stage0 is not None else 0
    ramp_steps = len(run.of_type(RANGE_TEST)[0]["losses"]) if run.of_type(RANGE_TEST) else 0
    skip = ramp_steps + sum(1 for s in nan_steps if s <= first)  # steps not fed from `warm`
    warm = _feed_warmup(stage0, tuner.config.warmup_steps, skip)
    exploit: dict[int, deque[float | None]] = {
        st.index: deque(st.exploit_losses()) for st in run.stages
    }
    finished_log = run.run_end is not None
    end_step = run.last_step
    ramp = run.of_type(RANGE_TEST)
    ramp_losses: deque[float | None] = deque(ramp[0]["losses"] if ramp else [])
    # The anneal's losses: in run_end (logs before that field: none, 0.0 is fed).
    logged_anneal = (run.run_end or {}).get("anneal_losses")
    anneal: deque[float | None] | None = None if logged_anneal is None else deque(logged_anneal)
    while not tuner.finished:
        phase = tuner.phase
        if phase in (Phase.WARMUP, Phase.ANNEAL) and tuner.global_step + 1 in nan_steps:
            value = math.nan
            if phase is Phase.ANNEAL and anneal:
                anneal.popleft()
        elif phase is Phase.RANGE:
            if not ramp_losses:
                return "the log ends during the range test"
            value = nan_if_none(ramp_losses.popleft())
        elif phase is Phase.WARMUP:
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
            if k == 0 and not math.isclose(rec["lr"], tuner.probe.lr, rel_tol=REL_TOL):
                return (
                    f"probe {s}.{i}: the controller chose lr={tuner.probe.lr:.6g}, "
                    f"the log has lr={rec['lr']:.6g}"
                )
            if k >= len(rec["train_losses"]):
                return f"probe {s}.{i} runs longer in the replay than the logged {k} steps"
            value = nan_if_none(rec["train_losses"][k])
        elif phase is Phase.EXPLOIT:
            queue = exploit.get(tuner.stage_index)
            if not queue:
                if not finished_log and tuner.global_step >= end_step:
                    return None
                return f"the log ends during the exploit of stage {tuner.stage_index}"
            value = nan_if_none(queue.popleft())
        else:  # ANNEAL: its losses decide nothing but a recovery
            if not finished_log and tuner.global_step >= end_step:
                return None
            value = nan_if_none(anneal.popleft()) if anneal else 0.0
        fed.append((tuner.global_step, tuner.current_lr, tuner.phase.value, value))
        tuner.step(value)
    return None


def _compare(
    run: LoggedRun, replayed: list[dict[str, Any]], limit: int
) -> tuple[list[Mismatch], int]:
    logged = [
        (rec, line)
        for rec, line in list(zip(run.records, run.lines))[1:]
        if not (rec["type"] == PHASE and rec.get("phase") == PHASE_RESUME)
    ]
    mine = [r for r in replayed if r["type"] != RUN_START]
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
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)
