"""The run log: one JSON object per line, every stage, probe and decision.

Schema (version 1). Every record has ``type``, ``schema_version`` and ``step``
(the controller's global step when written; probe steps count). Types:

- ``run_start``: ``config`` (all settings), ``initial_lrs`` (the param groups' LRs),
  ``forecaster`` (its ``config()``), ``prober`` (class name of the probe backend, or
  null when probes run in the training loop).
- ``stage_start``: ``stage``, ``tau``, ``tau_probe``, ``probes``, ``exploit_steps``,
  ``recent`` (the last finite losses before the snapshot, up to 16, which the
  stage's reference loss and noise level come from; replay needs them for warmup),
  ``lr_bounds`` (``[low, high]`` LRs the stage may probe under ``lr_trust``; null:
  the whole ``[min_lr, max_lr]`` range).
- ``probe``: ``stage``, ``index``, ``lr``, ``t`` (probe-local steps of each
  objective value), ``losses`` (objective values; null where non-finite),
  ``train_losses`` (every step's training loss), ``diverged``, ``reason``,
  ``fit`` (``a``, ``b``, ``c``, ``sse``, ``n_used``), ``forecast`` (loss at
  ``t = tau``), ``steps``.
- ``decision``: ``stage``, ``lr``, ``forecast``, ``candidates`` (lr, forecast,
  diverged of each probe), ``from_probe`` (the winner's end state was kept),
  ``reason`` (``best_forecast``, ``rollback`` or ``fallback``).
- ``rollback``: ``stage``, ``lr``, ``reason``, ``losses`` (exploit losses until the guard fired).
- ``exploit_end``: ``stage``, ``lr``, ``forecast``, ``actual`` (the objective
  reached: the validation loss with a validation objective, else the median of
  the last exploit losses), ``actual_train`` (median of the last exploit
  training losses), ``steps``, ``losses`` (every exploit step's loss).
- ``phase``: ``phase`` (``warmup``, ``anneal``, ``done``), ``lr``.
- ``run_end``: ``search_steps``, ``exploit_steps``, ``total``.

Non-finite numbers are written as ``null``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


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


class RunLog:
    """Appends records to a JSON-lines file (if a path is given) and keeps them in memory.

    Args:
        path: file to append to; parent folders are created. None keeps records in memory only.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.records: list[dict[str, Any]] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, type_: str, step: int, **fields: Any) -> dict[str, Any]:
        record = {"type": type_, "schema_version": SCHEMA_VERSION, "step": step}
        record.update(clean(fields))
        record["time"] = time.time()
        self.records.append(record)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, allow_nan=False) + "\n")
        return record

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == type_]


def read_run_log(path: str | Path) -> list[dict[str, Any]]:
    """Records of a run log, in order (strict; the replay module reads leniently)."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
