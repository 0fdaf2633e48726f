"""Importers: real files from TensorBoard, Lightning, HF, plain CSV/JSONL; bad data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from autolr.cli import main
from autolr.errors import LogFormatError, LogWarning
from autolr.offline.importers import (
    LossLog,
    detect_format,
    load_loss_log,
    read_autolr_log,
    read_jsonl,
    read_lightning_csv,
    read_table_csv,
    read_tensorboard,
    read_trainer_state,
)


def curve(step: int) -> float:
    return 0.5 + 2.0 * math.exp(-step / 60)


def lr_at(step: int) -> float:
    return 0.1 if step < 100 else 0.01


# ------------------------------------------------------------------ TensorBoard


@pytest.fixture
def tb_dir(tmp_path: Path) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    folder = tmp_path / "tb" / "run1"
    writer = SummaryWriter(log_dir=str(folder))
    for step in range(0, 200, 2):
        writer.add_scalar("train/loss", curve(step), step)
        writer.add_scalar("train/lr", lr_at(step), step)
        if step % 20 == 0:
            writer.add_scalar("val/loss", curve(step) + 0.1, step)
    writer.close()
    return folder


def test_tensorboard_events(tb_dir: Path) -> None:
    log = read_tensorboard(tb_dir.parent)  # the run's folder is found below
    assert log.source == "tensorboard" and log.name == "train/loss" and log.lr_name == "train/lr"
    assert log.steps == list(range(0, 200, 2))
    assert log.loss == pytest.approx([curve(s) for s in log.steps], rel=1e-6)
    assert log.lr == pytest.approx([lr_at(s) for s in log.steps], rel=1e-6)
    val = load_loss_log(tb_dir, name="val/loss")
    assert val.steps == list(range(0, 200, 20))
    event = next(tb_dir.glob("events.out.tfevents*"))
    assert detect_format(event) == "tensorboard"
    assert load_loss_log(event).steps == log.steps


def test_tensorboard_errors(tb_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LogFormatError, match="no scalar tag named 'nope'; available: "):
        read_tensorboard(tb_dir, tag="nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LogFormatError, match="no TensorBoard event files"):
        read_tensorboard(tmp_path / "empty")
    from torch.utils.tensorboard import SummaryWriter

    other = SummaryWriter(log_dir=str(tb_dir.parent / "run2"))
    other.add_scalar("loss", 1.0, 0)
    other.close()
    with pytest.raises(LogFormatError, match="event files of several runs"):
        read_tensorboard(tb_dir.parent)


# ------------------------------------------------------------------ Lightning


def test_lightning_csvlogger_from_a_real_fit(tmp_path: Path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen)
    data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    trainer = pl.Trainer(
        max_steps=30,
        logger=CSVLogger(str(tmp_path / "logs")),
        callbacks=[LearningRateMonitor(logging_interval="step")],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=8))
    folder = Path(trainer.logger.log_dir)
    assert detect_format(folder) == "lightning"
    log = load_loss_log(folder)
    assert log.source == "lightning" and log.name == "train_loss" and log.lr_name == "lr-SGD"
    assert log.steps == list(range(len(log.steps))) and len(log.steps) >= 25
    assert all(v is not None and v > 0 for v in log.lr)
    assert log.lr[0] == pytest.approx(0.1) and log.lr[-1] < log.lr[0]  # the StepLR decay


def test_lightning_style_csv_with_separate_rows(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    rows = ["epoch,lr-AdamW,step,train_loss,val_loss"]
    for step in range(0, 50):
        rows.append(f",{lr_at(step * 4)},{step},,")
        rows.append(f"0,,{step},{curve(step)},")
        if step % 10 == 9:
            rows.append(f"0,,{step},,{curve(step) + 0.2}")
    path.write_text("\n".join(rows) + "\n")
    log = read_lightning_csv(path)
    assert log.name == "train_loss" and log.steps == list(range(50))
    assert log.lr == [lr_at(s * 4) for s in range(50)]
    val = read_lightning_csv(path, column="val_loss")
    assert val.steps == [9, 19, 29, 39, 49]


# ------------------------------------------------------------------ Hugging Face


def test_hf_trainer_state(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from transformers.trainer_callback import TrainerState

    history = []
    for step in range(10, 310, 10):
        history.append(
            {
                "epoch": step / 100,
                "grad_norm": 1.0,
                "learning_rate": 5e-5 * (1 - step / 400),
                "loss": curve(step),
                "step": step,
            }
        )
        if step % 100 == 0:
            history.append({"epoch": step / 100, "eval_loss": curve(step) + 0.1, "step": step})
    history.append({"epoch": 3.0, "step": 300, "train_loss": 1.0, "train_runtime": 9.0})
    state = TrainerState(global_step=300, max_steps=300, log_history=history)
    folder = tmp_path / "checkpoint-300"
    folder.mkdir()
    state.save_to_json(str(folder / "trainer_state.json"))
    assert detect_format(folder) == "hf"
    log = load_loss_log(folder)
    assert log.source == "hf" and log.name == "loss" and log.lr_name == "learning_rate"
    assert log.steps == list(range(10, 310, 10))
    assert log.lr[0] == pytest.approx(5e-5 * (1 - 10 / 400))
    ev = read_trainer_state(folder / "trainer_state.json", key="eval_loss")
    assert ev.steps == [100, 200, 300] and ev.lr is None
    with pytest.raises(LogFormatError, match="no log_history entry has 'nope'"):
        read_trainer_state(folder, key="nope")
    bad = tmp_path / "state.json"
    bad.write_text(json.dumps({"global_step": 3}))
    with pytest.raises(LogFormatError, match="without 'log_history'"):
        load_loss_log(bad)


def test_hf_rows_logged_in_autolr_s_range_test_or_probes_are_left_out(tmp_path: Path) -> None:
    phases = {10: "range", 20: "probe", 30: "probe", 40: "exploit", 50: "anneal"}
    history = [{"loss": curve(s), "step": s, "autolr_phase": p} for s, p in phases.items()]
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"log_history": history}))
    assert read_trainer_state(path).steps == [40, 50]


# ------------------------------------------------------------------ plain CSV / JSONL


def test_plain_csv_and_jsonl(tmp_path: Path) -> None:
    csv_path = tmp_path / "loss.csv"
    csv_path.write_text(
        "step,loss,lr\n" + "".join(f"{s},{curve(s)},{lr_at(s)}\n" for s in range(60))
    )
    log = load_loss_log(csv_path)
    assert isinstance(log, LossLog) and log.source == "csv"
    assert log.steps == list(range(60)) and log.lr == [lr_at(s) for s in range(60)]
    steps, loss = log.tensors()
    assert steps.dtype == torch.float64 and loss.shape == (60,)
    jl = tmp_path / "loss.jsonl"
    jl.write_text("".join(json.dumps({"step": s, "loss": curve(s)}) + "\n" for s in range(60)))
    log2 = load_loss_log(jl)
    assert log2.source == "jsonl" and log2.loss == log.loss and log2.lr is None
    assert log2.to_dict()["steps"] == log.steps


def test_bad_points_are_skipped_or_sorted_with_warnings(tmp_path: Path) -> None:
    path = tmp_path / "messy.csv"
    lines = ["step,loss"]
    for s in [0, 1, 2, 5, 3, 4, 4, 6]:
        lines.append(f"{s},{float(s)}")
    lines.append("7,nan")
    lines.append("8,inf")
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(LogWarning) as record:
        log = read_table_csv(path)
    messages = " | ".join(str(w.message) for w in record)
    assert "2 non-finite loss value(s) skipped (first at step 7)" in messages
    assert "steps out of order (step 3 after 5)" in messages
    assert "1 repeated step(s)" in messages
    assert log.steps == [0, 1, 2, 3, 4, 5, 6] and log.dropped == 3


def test_truncated_and_broken_lines(tmp_path: Path) -> None:
    jl = tmp_path / "cut.jsonl"
    jl.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.9}\n{"step": 2, "lo')
    with pytest.warns(LogWarning, match=r"line 3: truncated last line skipped"):
        assert read_jsonl(jl).steps == [0, 1]
    jl.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "lo\n{"step": 2, "loss": 0.8}\n')
    with pytest.raises(LogFormatError, match=r"cut.jsonl, line 2: not valid JSON"):
        read_jsonl(jl)
    csv_path = tmp_path / "cut.csv"
    csv_path.write_text("step,loss,lr\n0,1.0,0.1\n1,0.9,0.1\n2,0.8")
    with pytest.warns(LogWarning, match=r"line 4: truncated last row skipped"):
        assert read_table_csv(csv_path).steps == [0, 1]
    csv_path.write_text("step,loss\n0,1.0\n1,abc\n2,0.8\n")
    with pytest.raises(LogFormatError, match=r"line 3: column 'loss' holds 'abc', not a number"):
        read_table_csv(csv_path)


def test_missing_columns_and_ambiguous_names(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("iter_x,loss\n0,1.0\n")
    with pytest.raises(LogFormatError, match=r"no 'step' column among \['iter_x', 'loss'\]"):
        read_table_csv(path)
    path.write_text("step,loss_a,loss_b\n0,1.0,2.0\n")
    with pytest.raises(LogFormatError, match=r"several loss columns \['loss_a', 'loss_b'\]"):
        read_table_csv(path)
    assert read_table_csv(path, column="loss_b").loss == [2.0]
    path.write_text("step,accuracy\n0,0.5\n")
    with pytest.raises(LogFormatError, match="no training-loss column found"):
        read_table_csv(path)
    path.write_text("step,loss\n0,nan\n")
    with pytest.warns(LogWarning), pytest.raises(LogFormatError, match="no finite 'loss' values"):
        read_table_csv(path)
    jl = tmp_path / "run.jsonl"
    jl.write_text(json.dumps({"type": "run_start", "schema_version": 1, "step": 0}) + "\n")
    with pytest.raises(LogFormatError, match="autolr run log; read it with format 'autolr'"):
        read_jsonl(jl)
    assert detect_format(jl) == "autolr"
    with pytest.raises(LogFormatError, match="run_start record is missing the field"):
        load_loss_log(jl)  # read as the run log it is, checked as one
    odd = tmp_path / "x.parquet"
    odd.write_text("")
    with pytest.raises(LogFormatError, match="unknown log format"):
        load_loss_log(odd)
    with pytest.raises(LogFormatError, match="no such file"):
        load_loss_log(tmp_path / "absent.csv")


def test_cli_forecast_eval_on_a_bad_file_exits_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("step,loss\n0,1.0\n1,abc\n2,0.8\n")
    assert main(["forecast-eval", str(path)]) == 2
    err = capsys.readouterr().err
    assert "autolr forecast-eval: error:" in err and "line 3" in err and "Traceback" not in err


def test_an_annealed_run_s_curve_holds_its_winner_s_steps_at_its_lr_not_its_cooldown() -> None:
    # The hold goes on from the winner's state before its cooldown: the cooldown is
    # put back, and is no part of the kept model's way.
    path = Path(__file__).parent / "fixtures" / "runlogs" / "digits_anneal.jsonl"
    from autolr.offline.logs import load_run

    stage = load_run(path).stages[0]
    assert stage.start["cool"] > 0 and stage.decisions[-1]["from_probe"]
    winner = next(p for p in stage.probes if p["lr"] == stage.decisions[-1]["lr"])
    log = read_autolr_log(path)
    held = winner["train_losses"][: stage.start["tau_probe"]]
    assert len(log.steps) == len(held) + len(stage.exploit_end["losses"])
    assert list(log.loss[: len(held)]) == pytest.approx(held)
    assert list(log.loss[len(held) :]) == pytest.approx(stage.exploit_end["losses"])


def test_an_autolr_curve_keeps_what_a_rollback_kept_and_drops_the_rest(tmp_path):
    # The annealed hold goes back to its best state: its steps up to there are kept,
    # and the winner's probe steps before them; the rest of that exploit is not.
    from autolr import AutoLRS
    from autolr.offline.logs import load_run
    from tests.conftest import Regression, blow_up_the_hold, make_model

    path = tmp_path / "run.jsonl"
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=800, log_path=path)
    blow_up_the_hold(Regression(), model, opt, tuner, after=60, finish=True)
    (stage,) = load_run(path).stages
    (rollback,) = stage.rollbacks
    kept = rollback["back_to"] - (rollback["step"] - len(rollback["losses"]))
    assert kept > 0 and stage.decisions[0]["from_probe"]
    held = stage.tau_probe
    curve = read_autolr_log(path)
    before = len(stage.recent or [])
    assert len(curve.steps) == before + held + kept + len(stage.exploit_end["losses"])
    got = list(curve.loss[before + held : before + held + kept])
    assert got == pytest.approx(rollback["losses"][:kept])
