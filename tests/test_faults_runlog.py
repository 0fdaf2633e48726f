"""A process killed in the middle of a run leaves a run log whose every line is valid:
the strict reader reads it, and it is the start of the log the whole run writes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from autolr.offline.reader import read_run_log

ROOT = Path(__file__).resolve().parents[1]
STEPS = 300

# The training run of the child process: killed with os._exit (no cleanup, no
# flush of Python's buffers, as a crash or a kill -9) at step KILL_STEP, or right
# after the KILL_WRITE-th record reached the file.
CHILD = textwrap.dedent(
    """
    import os, sys
    import torch
    import autolr.runlog as runlog
    from autolr import AutoLRS
    from tests.conftest import Regression, make_model, train_step

    log_path, steps = sys.argv[1], int(sys.argv[2])
    kill_step, kill_write = int(sys.argv[3]), int(sys.argv[4])
    append, writes = runlog.RunLog._append, [0]

    def append_then_maybe_die(self, records):
        append(self, records)
        writes[0] += 1
        if writes[0] == kill_write:
            os._exit(9)

    runlog.RunLog._append = append_then_maybe_die
    task = Regression()
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tuner = AutoLRS(model, opt, 1e-3, 1.0, total_steps=steps, warmup_steps=10, seed=0,
                    log_path=log_path)
    for i, batch in enumerate(task.stream()):
        if i == kill_step:
            os._exit(9)
        tuner.step(train_step(model, opt, batch))
        if tuner.finished:
            break
    """
)


def _run_child(log: Path, kill_step: int = -1, kill_write: int = -1) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(log), str(STEPS), str(kill_step), str(kill_write)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode


def _without_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


@pytest.fixture(scope="module")
def full_log(tmp_path_factory) -> list[dict[str, Any]]:
    log = tmp_path_factory.mktemp("full") / "run.jsonl"
    assert _run_child(log) == 0
    records = read_run_log(log)
    assert records[-1]["type"] == "run_end"
    return _without_time(records)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_step", "kill_write"),
    [(5, -1), (37, -1), (151, -1), (-1, 1), (-1, 12)],
    ids=["warmup", "first-stage", "later-stage", "after-run_start", "after-12th-write"],
)
def test_a_killed_run_leaves_a_valid_log_that_starts_the_full_one(
    tmp_path, full_log, kill_step, kill_write
):
    log = tmp_path / "run.jsonl"
    assert _run_child(log, kill_step, kill_write) == 9  # killed, not finished
    records = _without_time(read_run_log(log, strict=True))  # every line valid, whole
    assert records and records[0]["type"] == "run_start"
    assert records[-1]["type"] != "run_end"
    assert records == full_log[: len(records)]  # nothing torn, nothing out of order
    if kill_write > 0:
        assert len(records) >= kill_write  # a write appends one record or more
    else:
        assert records[-1]["step"] <= kill_step
