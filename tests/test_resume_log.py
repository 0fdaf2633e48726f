"""A resumed run's log: one file holds its segments; report, replay and forecast-eval read it.

The logs are real: a plain loop saves ``tuner.state_dict()`` with the model and
the optimizer, is killed later, is rebuilt with the same ``log_path`` and loaded
from the checkpoint, and runs to the end.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from autolr import AutoLRS
from autolr.cli import main
from autolr.errors import LogFormatError, LogWarning
from autolr.offline.importers import load_loss_log
from autolr.offline.logs import load_run
from autolr.offline.reader import read_records
from autolr.offline.replay import replay_run
from autolr.runlog import PHASE_RESUME, RUN_START
from tests.conftest import Regression, make_model, train_step

STEPS = 300
# The forecast strategy: stages of probes to stop in (the annealed race has its resume tests).
OPTIONS = {
    "min_lr": 1e-3,
    "max_lr": 1.0,
    "total_steps": STEPS,
    "seed": 2,
    "warmup_steps": 10,
    "strategy": "forecast",
}


def _parts(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = make_model(seed)
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def _train(tuner: AutoLRS, model, opt, start: int = 0, stop: int | None = None, save=None):
    ckpt = None
    for i, batch in enumerate(Regression().stream(start=start), start=start):
        if tuner.finished or i == stop:
            break
        tuner.step(train_step(model, opt, batch))
        if save is not None and tuner.global_step == save:
            ckpt = copy.deepcopy(
                {"model": model.state_dict(), "opt": opt.state_dict(), "tuner": tuner.state_dict()}
            )
    return ckpt


def resumed_log(path: Path, save_at: int, kill_at: int) -> Path:
    """Train, checkpoint at ``save_at``, die at ``kill_at``, resume into the same log."""
    model, opt = _parts()
    ckpt = _train(
        AutoLRS(model, opt, log_path=path, **OPTIONS), model, opt, stop=kill_at, save=save_at
    )
    assert ckpt is not None
    model, opt = _parts(99)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    tuner = AutoLRS(model, opt, log_path=path, **OPTIONS)
    tuner.load_state_dict(ckpt["tuner"])
    _train(tuner, model, opt, start=save_at)
    assert tuner.finished
    return path


def full_log(path: Path) -> Path:
    model, opt = _parts()
    _train(AutoLRS(model, opt, log_path=path, **OPTIONS), model, opt)
    return path


def _plain(records: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "time"}
        for r in records
        if not (r["type"] == "phase" and r["phase"] == PHASE_RESUME)
    ]


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resumed")
    return {
        "full": full_log(root / "full.jsonl"),
        # Checkpoint in the exploit of stage 1, killed in the anneal.
        "exploit": resumed_log(root / "exploit.jsonl", 150, 285),
        "warmup": resumed_log(root / "warmup.jsonl", 5, 40),
        "probe": resumed_log(root / "probe.jsonl", 85, 120),
        "at_once": resumed_log(root / "at_once.jsonl", 100, 100),
    }


def test_the_reader_tells_the_segments_apart(logs: dict[str, Path]) -> None:
    read = read_records(logs["exploit"])  # strict: a resumed log is no flaw
    records, seg = read.records, read.segments
    assert [r["type"] for r in records].count(RUN_START) == 2
    (resume,) = seg.resumes
    n = records[resume]["step"]
    assert n == 150 and records[resume]["phase"] == PHASE_RESUME
    second = [i for i, r in enumerate(records) if r["type"] == RUN_START][1]
    # The fresh construction's records: its run_start and its warmup phase, at step 0.
    assert seg.fresh == list(range(second, resume))
    assert all(records[i]["step"] == 0 for i in seg.fresh)
    # The first segment's work after step 150 was redone.
    assert seg.abandoned and all(records[i]["step"] > n and i < second for i in seg.abandoned)
    assert sorted(seg.kept + seg.abandoned + seg.fresh) == list(range(len(records)))
    logical = read.logical()
    assert [r["type"] for r in logical.records].count(RUN_START) == 1
    assert logical.lines == [read.lines[i] for i in seg.kept]
    assert read.abandoned() == [records[i] for i in seg.abandoned]


@pytest.mark.parametrize("name", ["exploit", "warmup", "probe", "at_once"])
def test_the_logical_run_is_the_uninterrupted_one(logs: dict[str, Path], name: str) -> None:
    run = load_run(logs[name])
    assert len(run.resumes) == 1 and not run.warnings
    full = load_run(logs["full"])
    # Same data, same seed: the run the segments make is the run that was never killed.
    assert _plain(run.records)[1:] == _plain(full.records)[1:]
    assert bool(run.abandoned) == (name != "at_once")


@pytest.mark.parametrize("name", ["exploit", "warmup", "probe", "at_once"])
def test_replay_is_exact_across_the_resume(logs: dict[str, Path], name: str) -> None:
    result = replay_run(logs[name])
    assert result.stopped is None
    assert result.matches, [m.describe() for m in result.mismatches]
    # Every record compared but run_start and the resume record.
    assert result.compared == len(result.run.records) - 2
    assert result.to_dict()["resumed_at"] == [result.run.resumes[0]["step"]]


def test_cli_report_replay_and_forecast_eval_read_a_resumed_log(
    logs: dict[str, Path], tmp_path: Path, capsys
) -> None:
    path = str(logs["exploit"])
    assert main(["replay", path]) == 0
    text = capsys.readouterr().out
    assert "reproduces the run exactly" in text and "resumed at step(s) 150" in text
    assert main(["report", path, "-o", str(tmp_path)]) == 0
    page = (tmp_path / "exploit.html").read_text()
    assert "reproduces every logged decision" in page and "Resumed from a checkpoint" in page
    assert (tmp_path / "exploit.png").stat().st_size > 10_000
    assert main(["report", path, "-o", str(tmp_path / "quick"), "--no-replay"]) == 0
    capsys.readouterr()
    assert main(["forecast-eval", path, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["log"]["source"] == "autolr" and report["rows"]


def test_the_importer_reads_the_kept_models_curve(logs: dict[str, Path]) -> None:
    resumed = load_loss_log(logs["exploit"])
    full = load_loss_log(logs["full"])
    assert resumed.source == "autolr" and resumed.name == "train_loss"
    # The resume changes nothing of the curve; probe steps leave no gap in it.
    assert resumed.steps == full.steps == list(range(1, len(full) + 1))
    assert resumed.loss == full.loss and resumed.lr == full.lr
    run = load_run(logs["full"])
    kept = 0
    for st in run.stages:
        if st.exploit_end is not None:
            kept += st.exploit_end["steps"]
            if st.decisions[-1]["from_probe"]:  # the exploit went on from the winning probe
                kept += len(next(p for p in st.probes if p["lr"] == st.decisions[-1]["lr"])["t"])
    # The warmup's 10 logged losses, then the winning probes' steps and the exploits'.
    assert len(full) == 10 + kept and kept > run.stages[0].exploit_end["steps"]


def test_two_runs_in_one_log_are_refused(logs: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    path.write_text(logs["full"].read_text() + logs["full"].read_text())
    with pytest.raises(LogFormatError, match="second run_start not followed by a 'resume'"):
        read_records(path)
    with pytest.raises(LogFormatError, match="second run_start"):
        load_run(path)
    # A resumed process that died before it loaded its checkpoint: its lines are skipped.
    head = logs["full"].read_text().splitlines()[:2]
    path.write_text(logs["full"].read_text() + "\n".join(head) + "\n")
    with pytest.raises(LogFormatError, match="second run_start at the end"):
        read_records(path)
    with pytest.warns(LogWarning, match="second run_start at the end"):
        run = load_run(path)
    assert replay_run(run).matches


def test_a_log_that_begins_at_a_resume_names_the_missing_part(tmp_path: Path) -> None:
    model, opt = _parts()
    tuner = AutoLRS(model, opt, **OPTIONS)
    ckpt = _train(tuner, model, opt, stop=120, save=100)
    assert ckpt is not None
    model, opt = _parts()
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    path = tmp_path / "second_half.jsonl"
    tuner = AutoLRS(model, opt, log_path=path, **OPTIONS)
    tuner.load_state_dict(ckpt["tuner"])
    _train(tuner, model, opt, start=100)
    read = read_records(path)
    assert read.segments.begins_at == 100 and read.logical().records[1]["phase"] == PHASE_RESUME
    with pytest.raises(LogFormatError, match="begins at a resume from step 100"):
        load_run(path)
    assert main(["replay", str(path)]) == 2


def test_a_run_resumed_twice(tmp_path: Path) -> None:
    path = tmp_path / "twice.jsonl"
    model, opt = _parts()
    tuner = AutoLRS(model, opt, log_path=path, **OPTIONS)
    ckpt = _train(tuner, model, opt, stop=120, save=85)
    start = 85
    for save, kill in ((200, 230), (None, None)):
        assert ckpt is not None
        model, opt = _parts(99)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        tuner = AutoLRS(model, opt, log_path=path, **OPTIONS)
        tuner.load_state_dict(ckpt["tuner"])
        ckpt = _train(tuner, model, opt, start=start, stop=kill, save=save)
        start = save or 0
    assert tuner.finished
    run = load_run(path)
    assert [r["step"] for r in run.resumes] == [85, 200]
    full = load_run(full_log(tmp_path / "full.jsonl"))
    assert _plain(run.records)[1:] == _plain(full.records)[1:]
    result = replay_run(run)
    assert result.matches and result.compared == len(run.records) - 3
