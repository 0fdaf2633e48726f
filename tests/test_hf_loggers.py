"""autolr's per-step values reach the Trainer's loggers: TensorBoard and a CSV logger, read back."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from transformers import Trainer, TrainerCallback  # noqa: E402
from transformers.integrations import TensorBoardCallback  # noqa: E402

from autolr import Phase  # noqa: E402
from autolr.errors import AutoLRWarning  # noqa: E402
from autolr.integrations.hf import AutoLRSCallback  # noqa: E402
from tests.test_hf import OPTIONS, STEPS, Sequences, make_args, make_model  # noqa: E402

AUTOLR_KEYS = ("autolr_lr", "autolr_stage", "autolr_phase")


class CsvLogger(TrainerCallback):
    """A user's logger: one CSV row per training log, with the keys of the first row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: list[str] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" not in logs:
            return
        row = {"step": state.global_step, **logs}
        with self.path.open("a", newline="") as f:
            if self.fields is None:
                self.fields = list(row)
                csv.DictWriter(f, self.fields).writeheader()
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)


class StopAfterFirstStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = True
        return control


def test_report_to_loggers_and_a_csv_logger_get_autolr_values(tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    table = tmp_path / "rows.csv"
    cb = AutoLRSCallback(min_lr=1e-4, max_lr=1e-1, **OPTIONS)
    trainer = Trainer(
        model=make_model(),
        args=make_args(tmp_path, report_to=["tensorboard"]),
        train_dataset=Sequences(),
        # The user's logger listed before autolr, as the Trainer's loggers are.
        callbacks=[CsvLogger(table), cb],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", AutoLRWarning)
        assert cb.attach(trainer) is cb
        handler = trainer.callback_handler.callbacks
        assert handler[0] is cb and sum(c is cb for c in handler) == 1
        assert any(isinstance(c, TensorBoardCallback) for c in handler)
        trainer.train()

    rows = [r for r in trainer.state.log_history if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert all(set(AUTOLR_KEYS) <= set(r) for r in rows)

    # TensorBoard: the event file, read back.
    (run,) = {p.parent for p in (tmp_path / "runs").rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    lr = events.Scalars("train/autolr_lr")
    stage = events.Scalars("train/autolr_stage")
    assert [e.step for e in lr] == [e.step for e in stage] == list(range(1, STEPS + 1))
    assert [e.value for e in lr] == pytest.approx([r["autolr_lr"] for r in rows], rel=1e-6)
    assert [e.value for e in stage] == [float(r["autolr_stage"]) for r in rows]
    learning_rate = events.Scalars("train/learning_rate")
    assert [e.value for e in learning_rate] == pytest.approx(
        [r["learning_rate"] for r in rows], rel=1e-6
    )
    phase = events.Tensors("train/autolr_phase/text_summary")
    assert [e.step for e in phase] == list(range(1, STEPS + 1))
    written = [e.tensor_proto.string_val[0].decode() for e in phase]
    assert written == [r["autolr_phase"] for r in rows]
    assert written[0] == Phase.PROBE.value and written[-1] == Phase.ANNEAL.value

    # The CSV logger listed before the callback: every row has autolr's columns.
    with table.open(newline="") as f:
        read = list(csv.DictReader(f))
    assert [int(r["step"]) for r in read] == list(range(1, STEPS + 1))
    assert [r["autolr_phase"] for r in read] == [r["autolr_phase"] for r in rows]
    assert [float(r["autolr_lr"]) for r in read] == [r["autolr_lr"] for r in rows]
    assert [int(r["autolr_stage"]) for r in read] == [r["autolr_stage"] for r in rows]


def test_attach_adds_a_callback_the_trainer_was_not_given(tmp_path):
    cb = AutoLRSCallback(min_lr=1e-4, max_lr=1e-1, **OPTIONS)
    seen: list[dict[str, Any]] = []

    class Early(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(dict(logs))

    trainer = Trainer(
        model=make_model(),
        args=make_args(tmp_path),
        train_dataset=Sequences(),
        callbacks=[Early(), StopAfterFirstStep()],
    )
    cb.attach(trainer)
    assert trainer.callback_handler.callbacks[0] is cb
    trainer.train()
    assert cb.tuner is not None and cb.tuner.global_step == 1
    assert seen[0]["autolr_phase"] == "probe" and seen[0]["autolr_stage"] == 0


def test_report_to_without_attach_warns_and_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    cb = AutoLRSCallback(min_lr=1e-4, max_lr=1e-1, **OPTIONS)
    trainer = Trainer(
        model=make_model(),
        args=make_args(tmp_path, report_to=["tensorboard"]),
        train_dataset=Sequences(),
        callbacks=[cb, StopAfterFirstStep()],
    )
    with pytest.warns(AutoLRWarning, match=r"report_to=\['tensorboard'\].*\.attach\(trainer\)"):
        trainer.train()
