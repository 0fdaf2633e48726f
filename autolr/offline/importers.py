"""Import loss curves that other tools logged, into one form: :class:`LossLog`.

Readers (``load_loss_log(path)`` picks one from the file, or ``format=`` names it):

- ``tensorboard``: event files (``events.out.tfevents.*``, or a folder holding them),
  read with TensorBoard's ``EventAccumulator`` (``pip install "autolr[test]"`` or
  ``pip install tensorboard``). Scalar tags: the loss (``train/loss``, ``loss``, ...)
  and, when present, the LR (``lr``, ``learning_rate``, ``lr-SGD``, ...).
- ``lightning``: the ``metrics.csv`` of Lightning's ``CSVLogger``: one row per
  logging call, a ``step`` column, empty cells for metrics not logged in that row
  (``LearningRateMonitor`` writes ``lr-<Optimizer>`` in rows of its own).
- ``hf``: the ``trainer_state.json`` of the Hugging Face ``Trainer``: its
  ``log_history`` entries with ``loss`` (or another key), ``learning_rate`` and ``step``.
- ``csv``: a plain CSV with a header: ``step``, ``loss`` (or a named column), and
  optionally ``lr``.
- ``jsonl``: one JSON object a line with ``step``, ``loss`` and optionally ``lr``.
- ``autolr``: an autolr run log (resumed runs too: their logical run): the
  training curve the kept model went through (:func:`read_autolr_log`).

Every reader ends in the same checks: non-finite losses are dropped, steps out of
order are sorted and repeated steps keep their last value, each with a
:class:`LogWarning`; a file with no usable point raises
:class:`autolr.errors.LogFormatError` naming the file (and the line or field).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autolr.errors import LogFormatError, LogWarning, require

__all__ = [
    "FORMATS",
    "LossLog",
    "detect_format",
    "load_loss_log",
    "read_autolr_log",
    "read_jsonl",
    "read_lightning_csv",
    "read_table_csv",
    "read_tensorboard",
    "read_trainer_state",
]

logger = logging.getLogger(__name__)

FORMATS = ("tensorboard", "lightning", "hf", "csv", "jsonl", "autolr")

# Preferred names of the training loss, in order; otherwise the one name with "loss"
# in it that is not a validation/test metric.
_LOSS_NAMES = (
    "train/loss",
    "train_loss",
    "train_loss_step",
    "loss",
    "training_loss",
    "train/loss_step",
    "Loss/train",
    "loss/train",
)
_NOT_TRAIN = re.compile(r"val|valid|eval|test|epoch", re.IGNORECASE)
_LR_NAME = re.compile(r"(^|[/_\-.])(lr|learning[_\-]?rate)($|[/_\-.])", re.IGNORECASE)


def _warn(message: str) -> None:
    logger.debug(message)
    warnings.warn(message, LogWarning, stacklevel=3)


@dataclass(frozen=True)
class LossLog:
    """A loss curve as a training tool logged it.

    Attributes:
        steps: `(n,)` training steps, increasing, no repeats (the tool's own counter).
        loss: `(n,)` finite losses at those steps.
        lr: `(n,)` LR in force at each step (linear scale; None where unknown), or
            None when the log has no LR at all.
        source: the reader that made it (one of :data:`FORMATS`).
        path: the file or folder read.
        name: the tag, column or key the loss came from.
        lr_name: the tag, column or key the LR came from ('' when none).
        dropped: points dropped by the checks (non-finite, repeated).
    """

    steps: list[int]
    loss: list[float]
    lr: list[float | None] | None = None
    source: str = ""
    path: str = ""
    name: str = "loss"
    lr_name: str = ""
    dropped: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.steps)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(steps, loss)``, each an `(n,)` float64 tensor."""
        return (
            torch.tensor(self.steps, dtype=torch.float64),
            torch.tensor(self.loss, dtype=torch.float64),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": self.path,
            "name": self.name,
            "lr_name": self.lr_name,
            "steps": list(self.steps),
            "loss": list(self.loss),
            "lr": None if self.lr is None else list(self.lr),
            "dropped": self.dropped,
        }


def _finish(
    points: Iterable[tuple[float, float]],
    lr_points: Iterable[tuple[float, float]] | None,
    *,
    source: str,
    path: str,
    name: str,
    lr_name: str = "",
) -> LossLog:
    """Check and normalize (step, loss) pairs; align the LR to the loss steps."""
    pts = list(points)
    finite = [(s, v) for s, v in pts if math.isfinite(v)]
    dropped = len(pts) - len(finite)
    if dropped:
        first = next(s for s, v in pts if not math.isfinite(v))
        _warn(f"{path}: {dropped} non-finite loss value(s) skipped (first at step {first:g})")
    steps_seen = [s for s, _ in finite]
    if any(b < a for a, b in zip(steps_seen, steps_seen[1:])):
        i = next(i for i, (a, b) in enumerate(zip(steps_seen, steps_seen[1:])) if b < a)
        _warn(
            f"{path}: steps out of order (step {steps_seen[i + 1]:g} after "
            f"{steps_seen[i]:g}); sorted by step"
        )
    by_step: dict[int, float] = {}
    # A stable sort by step: of repeated steps, the one logged last wins.
    for step, value in sorted(finite, key=lambda sv: sv[0]):
        by_step[_as_step(step, path)] = value
    repeats = len(finite) - len(by_step)
    if repeats:
        _warn(f"{path}: {repeats} repeated step(s); the last value logged for a step is kept")
    if not by_step:
        raise LogFormatError(f"{path}: no finite {name!r} values to read")
    steps = sorted(by_step)
    loss = [by_step[s] for s in steps]
    lr: list[float | None] | None = None
    if lr_points is not None:
        lrs = sorted(
            ((_as_step(s, path), v) for s, v in lr_points if math.isfinite(v)),
            key=lambda sv: sv[0],
        )
        if lrs:
            lr = []
            j, current = 0, None
            for s in steps:  # the LR in force at each step: the last one logged at or before it
                while j < len(lrs) and lrs[j][0] <= s:
                    current = lrs[j][1]
                    j += 1
                lr.append(current)
    return LossLog(
        steps=steps,
        loss=loss,
        lr=lr,
        source=source,
        path=path,
        name=name,
        lr_name=lr_name if lr is not None else "",
        dropped=dropped + repeats,
    )


def _as_step(value: float, path: str) -> int:
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise LogFormatError(f"{path}: step {value!r} is not a whole number >= 0")
    return int(value)


def _pick(names: Sequence[str], wanted: str | None, what: str, path: str) -> str:
    """The loss name: the one asked for, a preferred name, or the only 'loss' name."""
    if wanted is not None:
        if wanted not in names:
            raise LogFormatError(
                f"{path}: no {what} named {wanted!r}; available: {', '.join(sorted(names))}"
            )
        return wanted
    for name in _LOSS_NAMES:
        if name in names:
            return name
    lossy = [n for n in names if "loss" in n.lower() and not _NOT_TRAIN.search(n)]
    if len(lossy) == 1:
        return lossy[0]
    if not lossy:
        raise LogFormatError(
            f"{path}: no training-loss {what} found among {sorted(names)}; name one"
        )
    raise LogFormatError(f"{path}: several loss {what}s {sorted(lossy)}; name the one to read")


def _pick_lr(names: Sequence[str], wanted: str | None, path: str) -> str | None:
    if wanted is not None:
        if wanted not in names:
            raise LogFormatError(
                f"{path}: no LR named {wanted!r}; available: {', '.join(sorted(names))}"
            )
        return wanted
    found = sorted(n for n in names if _LR_NAME.search(n))
    return found[0] if found else None


# --------------------------------------------------------------------------- tensorboard


def _event_dir(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise LogFormatError(f"{path}: no such file or folder")
    dirs = sorted({f.parent for f in path.rglob("events.out.tfevents*")})
    if not dirs:
        raise LogFormatError(f"{path}: no TensorBoard event files (events.out.tfevents.*)")
    if len(dirs) > 1:
        listing = ", ".join(str(d) for d in dirs[:6])
        raise LogFormatError(
            f"{path}: event files of several runs ({listing}); name the run's folder"
        )
    return dirs[0]


def read_tensorboard(
    path: str | Path, tag: str | None = None, lr_tag: str | None = None
) -> LossLog:
    """Read a scalar loss curve (and the LR, when logged) from TensorBoard event files.

    Args:
        path: an event file, or a folder holding one run's event files (searched
            recursively; several runs is an error).
        tag: scalar tag of the loss (default: ``train/loss``, ``loss``, ... or the
            only tag with "loss" in it that is not a validation metric).
        lr_tag: scalar tag of the LR (default: the first tag like ``lr``,
            ``learning_rate``, ``lr-SGD``; none is fine).

    Raises:
        MissingDependencyError: tensorboard is not installed.
        LogFormatError: no event files, no such tag, or nothing usable.
    """
    require("tensorboard", "test")
    from tensorboard.backend.event_processing import event_accumulator

    p = Path(path)
    src = _event_dir(p)
    acc = event_accumulator.EventAccumulator(str(src), size_guidance={"scalars": 0})
    try:
        acc.Reload()
    except Exception as exc:  # noqa: BLE001 - tensorboard raises several kinds
        raise LogFormatError(f"{src}: cannot read the TensorBoard events ({exc})") from None
    tags = list(acc.Tags().get("scalars", []))
    if not tags:
        raise LogFormatError(f"{src}: the event files hold no scalars")
    name = _pick(tags, tag, "scalar tag", str(src))
    lr_name = _pick_lr(tags, lr_tag, str(src))
    points = [(float(e.step), float(e.value)) for e in acc.Scalars(name)]
    lr_points = [(float(e.step), float(e.value)) for e in acc.Scalars(lr_name)] if lr_name else None
    return _finish(
        points, lr_points, source="tensorboard", path=str(p), name=name, lr_name=lr_name or ""
    )


# --------------------------------------------------------------------------- CSV


def _read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LogFormatError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LogFormatError(f"{path}: cannot read ({exc})") from None
    lines = text.splitlines()
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise LogFormatError(f"{path}: empty file (no header)") from None
    header = [h.strip() for h in header]
    rows: list[tuple[int, dict[str, str]]] = []
    n_lines = len(lines)
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            if line == n_lines:
                _warn(f"{path}, line {line}: truncated last row skipped")
                continue
            raise LogFormatError(
                f"{path}, line {line}: {len(cells)} cells for {len(header)} columns"
            )
        rows.append((line, dict(zip(header, (c.strip() for c in cells)))))
    return header, rows


def _cell(value: str, path: Path, line: int, column: str) -> float | None:
    if value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise LogFormatError(
            f"{path}, line {line}: column {column!r} holds {value!r}, not a number"
        ) from None


def _csv_log(
    path: Path,
    header: list[str],
    rows: list[tuple[int, dict[str, str]]],
    column: str | None,
    lr_column: str | None,
    source: str,
) -> LossLog:
    step_col = next((c for c in ("step", "global_step", "Step", "iteration") if c in header), None)
    if step_col is None:
        raise LogFormatError(f"{path}: no 'step' column among {header}")
    metrics = [c for c in header if c != step_col]
    name = _pick(metrics, column, "column", str(path))
    lr_name = _pick_lr(metrics, lr_column, str(path))
    points: list[tuple[float, float]] = []
    lr_points: list[tuple[float, float]] = []
    for line, row in rows:
        step = _cell(row[step_col], path, line, step_col)
        if step is None:
            continue
        value = _cell(row[name], path, line, name)
        if value is not None:
            points.append((step, value))
        if lr_name is not None:
            lr = _cell(row[lr_name], path, line, lr_name)
            if lr is not None:
                lr_points.append((step, lr))
    return _finish(
        points,
        lr_points if lr_name else None,
        source=source,
        path=str(path),
        name=name,
        lr_name=lr_name or "",
    )


def read_lightning_csv(
    path: str | Path, column: str | None = None, lr_column: str | None = None
) -> LossLog:
    """Read the ``metrics.csv`` that Lightning's ``CSVLogger`` writes.

    Args:
        path: the file, or the logger's version folder holding it.
        column: loss column (default: ``train_loss``, ``train_loss_step``, ``loss``,
            ... or the only training-loss column).
        lr_column: LR column (default: the first like ``lr-SGD`` or ``lr``).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.csv"
    header, rows = _read_csv_rows(p)
    return _csv_log(p, header, rows, column, lr_column, "lightning")


def read_table_csv(
    path: str | Path, column: str | None = None, lr_column: str | None = None
) -> LossLog:
    """Read a plain CSV with a header: ``step``, ``loss`` (or ``column``), optional ``lr``."""
    p = Path(path)
    header, rows = _read_csv_rows(p)
    return _csv_log(p, header, rows, column, lr_column, "csv")


# --------------------------------------------------------------------------- JSON


def read_trainer_state(
    path: str | Path, key: str | None = None, lr_key: str | None = None
) -> LossLog:
    """Read ``log_history`` from a Hugging Face ``trainer_state.json``.

    Args:
        path: the file, or a checkpoint folder holding it.
        key: loss key (default ``loss``, the training loss the Trainer logs every
            ``logging_steps``; ``eval_loss`` reads the evaluations).
        lr_key: LR key (default ``learning_rate``).

    Rows that :class:`autolr.integrations.hf.AutoLRSCallback` logged in its range test
    or a probe (``autolr_phase``) are left out: those branches were put back, and are
    no part of the trained model's way (its steps keep the Trainer's numbering).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "trainer_state.json"
    try:
        state = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LogFormatError(f"{p}: no such file") from None
    except json.JSONDecodeError as exc:
        raise LogFormatError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LogFormatError(f"{p}: cannot read ({exc})") from None
    history = state.get("log_history") if isinstance(state, Mapping) else None
    if not isinstance(history, list):
        raise LogFormatError(f"{p}: no 'log_history' list (not a trainer_state.json?)")
    keys = sorted({k for e in history if isinstance(e, Mapping) for k in e})
    name = key or "loss"
    if name not in keys:
        raise LogFormatError(f"{p}: no log_history entry has {name!r}; keys: {', '.join(keys)}")
    lr_name = lr_key or ("learning_rate" if "learning_rate" in keys else None)
    if lr_key is not None and lr_key not in keys:
        raise LogFormatError(f"{p}: no log_history entry has {lr_key!r}; keys: {', '.join(keys)}")
    points: list[tuple[float, float]] = []
    lr_points: list[tuple[float, float]] = []
    for i, entry in enumerate(history):
        if not isinstance(entry, Mapping) or name not in entry:
            continue
        if entry.get("autolr_phase") in ("range", "probe"):
            continue
        if "step" not in entry:
            raise LogFormatError(f"{p}: log_history[{i}] has {name!r} but no 'step'")
        step = _number(entry["step"], f"{p}: log_history[{i}]['step']")
        points.append((step, _number(entry[name], f"{p}: log_history[{i}][{name!r}]")))
        if lr_name is not None and entry.get(lr_name) is not None:
            lr_points.append((step, _number(entry[lr_name], f"{p}: log_history[{i}][{lr_name!r}]")))
    return _finish(
        points,
        lr_points if lr_name else None,
        source="hf",
        path=str(p),
        name=name,
        lr_name=lr_name or "",
    )


def _number(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LogFormatError(f"{where} must be a number, got {value!r}")
    return float(value)


def read_jsonl(path: str | Path, key: str | None = None, lr_key: str | None = None) -> LossLog:
    """Read JSON lines with ``step``, ``loss`` (or ``key``) and optionally ``lr``.

    A truncated last line is skipped with a warning; a bad line elsewhere is an error.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LogFormatError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LogFormatError(f"{p}: cannot read ({exc})") from None
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records: list[tuple[int, dict[str, Any]]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == last:
                _warn(f"{p}, line {i + 1}: truncated last line skipped")
                continue
            raise LogFormatError(f"{p}, line {i + 1}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise LogFormatError(f"{p}, line {i + 1}: expected a JSON object")
        if _is_run_log(rec):
            raise LogFormatError(
                f"{p}: this is an autolr run log; read it with format 'autolr' "
                "(read_autolr_log; `autolr forecast-eval` detects it) or `autolr report`"
            )
        records.append((i + 1, rec))
    keys = sorted({k for _, r in records for k in r})
    name = _pick([k for k in keys if k != "step"], key, "key", str(p))
    lr_name = _pick_lr([k for k in keys if k not in ("step", name)], lr_key, str(p))
    points: list[tuple[float, float]] = []
    lr_points: list[tuple[float, float]] = []
    for lineno, rec in records:
        where = f"{p}, line {lineno}"
        if name not in rec:
            continue
        if "step" not in rec:
            raise LogFormatError(f"{where}: field 'step' is missing")
        step = _number(rec["step"], f"{where}: field 'step'")
        points.append((step, _number(rec[name], f"{where}: field {name!r}")))
        if lr_name is not None and rec.get(lr_name) is not None:
            lr_points.append((step, _number(rec[lr_name], f"{where}: field {lr_name!r}")))
    return _finish(
        points,
        lr_points if lr_name else None,
        source="jsonl",
        path=str(p),
        name=name,
        lr_name=lr_name or "",
    )


def _is_run_log(rec: Any) -> bool:
    return isinstance(rec, dict) and "schema_version" in rec and "type" in rec


def read_autolr_log(path: str | Path) -> LossLog:
    """The training curve of an autolr run log: the losses the kept model went through.

    Probes and rolled-back exploits start from a snapshot that is put back, so
    they are not on the way of the model that trains on; what is: the warmup's
    last losses (the log keeps up to 16, stage 0's ``recent``), and per stage
    the winning probe's steps when its end state was kept (``from_probe``), then
    the steps of its exploits: a rollback keeps those up to the state it went back
    to (the hold's best, or none back at the stage's start). ``steps`` counts those steps
    only (the training progress of the kept model, from 1), so a probe's steps
    leave no gap; ``lr`` is the LR of each. An annealed race's winner counts its
    steps at its LR, not its cooldown (the hold goes on from before it); the final
    decay's losses (``run_end.anneal_losses``) are left out. A resumed run's log
    is read as its logical run (:func:`autolr.offline.load_run`).

    Raises:
        LogFormatError: the run log cannot be read, or holds no such loss.
    """
    from autolr.offline.logs import load_run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LogWarning)  # load_run's, repeated below
        run = load_run(path)
    for message in run.warnings:
        _warn(message)
    points: list[tuple[float, float]] = []
    lr_points: list[tuple[float, float]] = []
    step = 0
    for st in run.stages:
        if st.index == 0:
            recent = st.recent or []
            first = max(0, int(st.start["step"]) - len(recent))
            for k, v in enumerate(recent):
                points.append((first + k + 1, float(v)))
            step = max(step, int(st.start["step"]))
        end = st.exploit_end
        if end is None:
            break
        # The stage's way as (step of the state after it, loss, LR): a rollback cuts it
        # back to the state it went back to (the stage's start, or the hold's best).
        way: list[tuple[int, float | None, float | None]] = []
        chose = st.decisions[0] if st.decisions else None
        winner = None
        if chose is not None and chose.get("from_probe"):
            winner = next((q for q in st.probes if q["lr"] == chose["lr"]), None)
        if winner is not None:
            # An annealed race's winner goes on from its state before its cooldown.
            losses = winner["train_losses"]
            held = int(st.start["tau_probe"]) if st.start.get("cool") else len(losses)
            begin = int(winner["step"]) - len(losses)
            way += [(begin + k + 1, v, winner["lr"]) for k, v in enumerate(losses[:held])]
        for rec in [*st.rollbacks, end]:
            begin = int(rec["step"]) - len(rec["losses"])
            way += [(begin + k + 1, v, rec["lr"]) for k, v in enumerate(rec["losses"])]
            if rec is not end:
                back = rec.get("back_to")
                back_to = int(st.start["step"]) if back is None else int(back)
                way = [w for w in way if w[0] <= back_to]
        for _, value, rate in way:
            step += 1
            points.append((step, math.nan if value is None else float(value)))
            if rate is not None:
                lr_points.append((step, float(rate)))
    if not points:
        raise LogFormatError(f"{path}: the run log holds no warmup or exploit losses")
    return _finish(
        points, lr_points, source="autolr", path=str(path), name="train_loss", lr_name="lr"
    )


# --------------------------------------------------------------------------- dispatch


def detect_format(path: str | Path) -> str:
    """Guess the format of ``path`` from its name and first bytes (one of :data:`FORMATS`).

    Raises:
        LogFormatError: nothing known at ``path``.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "trainer_state.json").is_file():
            return "hf"
        if (p / "metrics.csv").is_file():
            return "lightning"
        if any(p.rglob("events.out.tfevents*")):
            return "tensorboard"
        raise LogFormatError(
            f"{p}: no event files, metrics.csv or trainer_state.json in this folder"
        )
    if not p.exists():
        raise LogFormatError(f"{p}: no such file")
    if p.name.startswith("events.out.tfevents"):
        return "tensorboard"
    if p.name == "trainer_state.json":
        return "hf"
    suffix = p.suffix.lower()
    if suffix == ".csv":
        try:
            head = p.open(encoding="utf-8").readline()
        except (OSError, UnicodeDecodeError) as exc:
            raise LogFormatError(f"{p}: cannot read ({exc})") from None
        cols = [c.strip() for c in head.split(",")]
        return "lightning" if p.name == "metrics.csv" or "epoch" in cols else "csv"
    if suffix in (".jsonl", ".ndjson"):
        try:
            with p.open(encoding="utf-8") as fh:
                head = next((line for line in fh if line.strip()), "")
            first = json.loads(head)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return "jsonl"  # read_jsonl names the flaw
        return "autolr" if _is_run_log(first) else "jsonl"
    if suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LogFormatError(f"{p}: not valid JSON ({exc})") from None
        if isinstance(data, Mapping) and "log_history" in data:
            return "hf"
        raise LogFormatError(f"{p}: a JSON file without 'log_history' (not a trainer_state.json)")
    raise LogFormatError(
        f"{p}: unknown log format; name one of {', '.join(FORMATS)} (file suffix {suffix!r})"
    )


def load_loss_log(
    path: str | Path,
    *,
    format: str = "auto",
    name: str | None = None,
    lr_name: str | None = None,
) -> LossLog:
    """Read a loss curve from any supported log.

    Args:
        path: file or folder.
        format: ``"auto"`` (see :func:`detect_format`) or one of :data:`FORMATS`.
        name: the loss tag, column or key (default: the training loss, guessed).
        lr_name: the LR tag, column or key (default: guessed; none is fine).

    Raises:
        LogFormatError: unknown format or unreadable log (the message names the
            file and the line, column or key).
        MissingDependencyError: tensorboard is needed and not installed.
    """
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "tensorboard":
        return read_tensorboard(path, name, lr_name)
    if fmt == "lightning":
        return read_lightning_csv(path, name, lr_name)
    if fmt == "hf":
        return read_trainer_state(path, name, lr_name)
    if fmt == "csv":
        return read_table_csv(path, name, lr_name)
    if fmt == "jsonl":
        return read_jsonl(path, name, lr_name)
    if fmt == "autolr":
        if name not in (None, "train_loss") or lr_name not in (None, "lr"):
            raise LogFormatError(
                f"{path}: an autolr run log has one curve (train_loss, lr); "
                f"got name={name!r}, lr_name={lr_name!r}"
            )
        return read_autolr_log(path)
    raise LogFormatError(f"unknown log format {format!r}; choose auto or one of {FORMATS}")
