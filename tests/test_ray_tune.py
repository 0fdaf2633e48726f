"""AutoLRS as a Ray Tune search: a stock Tuner, a function trainable, checkpoints, restore."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch
from conftest import Regression, make_model, train_step

import autolr
from autolr.errors import ConfigError, InputError, StateError

ray = pytest.importorskip("ray")
tune = pytest.importorskip("ray.tune")
from autolr.integrations.ray_tune import (  # noqa: E402
    TuneReporter,
    autolrs_trainable,
    load_checkpoint,
    save_checkpoint,
)

TESTS_DIR = str(Path(__file__).resolve().parent)
TASK = Regression()
TOTAL = 200
COLUMNS = ["step", "lr", "phase", "stage", "loss"]


@pytest.fixture(scope="module")
def ray_session():
    # Trials import this module's helpers (and conftest) from the tests folder.
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        job_config=ray.job_config.JobConfig(code_search_path=[TESTS_DIR]),
    )
    yield
    ray.shutdown()


def model_for(config):
    return make_model(config["autolrs"]["seed"])


def sgd_for(model, config):
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def data(config, start):
    return (TASK.batch_at(i) for i in itertools.count(start))


class FailOnce:
    """Data that raises once, at batch ``at``, while the flag file is absent."""

    def __init__(self, flag: str, at: int) -> None:
        self.flag, self.at = flag, at

    def __call__(self, config, start):
        for i in itertools.count(start):
            if i == self.at and not os.path.exists(self.flag):
                Path(self.flag).touch()
                raise RuntimeError("interrupted")
            yield TASK.batch_at(i)


def trainable_with(data_fn, report_every=5):
    return autolrs_trainable(
        model_for,
        sgd_for,
        train_step,
        data_fn,
        report_every=report_every,
        checkpoint_every=40,
        num_threads=1,
    )


def space(seeds):
    return {
        "autolrs": {
            "min_lr": 1e-3,
            "max_lr": 1.0,
            "total_steps": TOTAL,
            "seed": tune.grid_search(seeds),
        }
    }


def rows(result):
    """(step, lr, phase, stage, loss) per report; a step reported again after a restore once."""
    frame = result.metrics_dataframe.drop_duplicates("step", keep="last")
    return [tuple(r) for r in frame[COLUMNS].itertuples(index=False)]


@pytest.fixture(scope="module")
def search(ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("tune")
    tuner = tune.Tuner(
        trainable_with(data),
        param_space=space([0, 1]),
        run_config=tune.RunConfig(storage_path=str(storage), name="search", verbose=0),
    )
    return tuner.fit()


# ------------------------------------------------------------------ validation
def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="report_every must be a positive integer, got 0"):
        autolrs_trainable(model_for, sgd_for, train_step, data, report_every=0)
    with pytest.raises(ConfigError, match="checkpoint_every must be .* or None, got 2.5"):
        autolrs_trainable(model_for, sgd_for, train_step, data, checkpoint_every=2.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="data must be callable, got list"):
        autolrs_trainable(model_for, sgd_for, train_step, [])  # type: ignore[arg-type]


def test_checkpoint_round_trip(tmp_path):
    model = make_model(0)
    opt = sgd_for(model, None)
    tuner = autolr.AutoLRS(model, opt, 1e-3, 1.0, total_steps=TOTAL, seed=0)
    for i in range(30):
        tuner.step(train_step(model, opt, TASK.batch_at(i)))
    save_checkpoint(tmp_path, tuner, model, opt, user={"consumed": 30})
    model2 = make_model(5)
    opt2 = sgd_for(model2, None)
    tuner2 = autolr.AutoLRS(model2, opt2, 1e-3, 1.0, total_steps=TOTAL, seed=0)
    assert load_checkpoint(tmp_path, tuner2, model2, opt2) == {"consumed": 30}
    assert tuner2.global_step == 30 and tuner2.phase is tuner.phase
    for key, tensor in model.state_dict().items():
        assert torch.equal(model2.state_dict()[key], tensor)
    with pytest.raises(StateError, match="no autolr checkpoint in"):
        load_checkpoint(tmp_path / "missing", tuner2, model2, opt2)


def test_reporter_settings_are_named():
    model = make_model(0)
    opt = sgd_for(model, None)
    tuner = autolr.AutoLRS(model, opt, 1e-3, 1.0, total_steps=TOTAL)
    with pytest.raises(ConfigError, match="checkpoint_every must be .* or None, got 0"):
        TuneReporter(tuner, model, opt, checkpoint_every=0)


# ------------------------------------------------------------------- with Tune
@pytest.mark.slow
def test_search_results_land_in_the_result_grid(search):
    assert len(search) == 2 and not search.errors
    for result in search:
        frame = result.metrics_dataframe
        assert set(COLUMNS) <= set(frame.columns)
        # Reports come from the main trajectory; the search shows in its own columns.
        assert "exploit" in set(frame["phase"]) and "probe" not in set(frame["phase"])
        assert frame["search_steps"].iloc[-1] > 0 and frame["search_loss"].notna().any()
        assert frame["step"].iloc[-1] == TOTAL
        assert frame["stage"].max() >= 1
        # Within the range while searching and holding; the final decay goes below it.
        assert frame["lr"][frame["phase"] != "anneal"].between(1e-3, 1.0).all()
        assert frame["lr"].between(0.0, 1.0).all()
        assert result.checkpoint is not None
    best = search.get_best_result(metric="loss", mode="min")
    assert best.config["autolrs"]["seed"] in (0, 1)
    # The final checkpoint loads into a fresh run, finished.
    config = best.config
    model = model_for(config)
    opt = sgd_for(model, config)
    tuner = autolr.AutoLRS(model, opt, **config["autolrs"])
    with best.checkpoint.as_directory() as directory:
        user = load_checkpoint(directory, tuner, model, opt)
    assert tuner.finished and tuner.global_step == TOTAL and user["consumed"] > 0


@pytest.mark.slow
def test_interrupted_search_resumes_with_tuner_restore(search, tmp_path):
    flaky = trainable_with(FailOnce(str(tmp_path / "failed"), at=130))
    path = str(tmp_path / "flaky")
    first = tune.Tuner(
        flaky,
        param_space=space([0]),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            name="flaky",
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    ).fit()
    assert (tmp_path / "failed").exists()
    assert len(first.errors) == 1
    assert first[0].checkpoint is not None  # saved before the failure
    assert tune.Tuner.can_restore(path)

    resumed = tune.Tuner.restore(path, trainable=flaky, resume_errored=True).fit()
    assert not resumed.errors
    result = resumed[0]
    assert result.metrics_dataframe["step"].iloc[-1] == TOTAL
    # Resumed from the checkpoint, the run is the one that was never interrupted.
    uninterrupted = [r for r in search if r.config["autolrs"]["seed"] == 0][0]
    assert rows(result) == rows(uninterrupted)


@pytest.mark.slow
def test_asha_and_early_stopping_never_act_on_a_probe(ray_session, tmp_path):
    """ASHA and a divergence stopper on ``loss`` beside autolr: probes that blow up
    (max_lr=1.0 on this task) must not stop the trial, a real main-trajectory
    blow-up would."""
    from ray.tune.schedulers import ASHAScheduler

    from autolr.offline.reader import read_run_log

    limit = 20.0  # far above every main-trajectory loss of this run, below its worst probe
    log = tmp_path / "trial.jsonl"
    # The forecast strategy probes up to max_lr, where probes blow up.
    options = {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": TOTAL, "seed": 0}
    options["strategy"] = "forecast"
    grid = tune.Tuner(
        trainable_with(data, report_every=1),
        param_space={"autolrs": {**options, "log_path": str(log)}},
        tune_config=tune.TuneConfig(
            scheduler=ASHAScheduler(metric="loss", mode="min", grace_period=2, max_t=10_000)
        ),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            name="asha",
            verbose=0,
            stop=lambda trial_id, result: not result["loss"] < limit,
        ),
    ).fit()
    assert not grid.errors
    frame = grid[0].metrics_dataframe
    assert frame["step"].iloc[-1] == TOTAL  # neither ASHA nor the stopper ended it
    assert (frame["loss"] < limit).all()
    probe_losses = [v for r in read_run_log(log) if r["type"] == "probe" for v in r["losses"] if v]
    assert max(probe_losses) > limit  # a report of probe losses would have stopped it


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["forecast", "anneal"])
def test_a_trial_needs_no_lr_range(ray_session, tmp_path, strategy):
    grid = tune.Tuner(
        trainable_with(data),
        param_space={"autolrs": {"total_steps": TOTAL, "seed": 0, "strategy": strategy}},
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="norange", verbose=0),
    ).fit()
    assert not grid.errors
    frame = grid[0].metrics_dataframe
    assert frame["step"].iloc[-1] == TOTAL and frame["loss"].notna().all()
    assert frame["search_steps"].iloc[-1] > 0  # the range test and the probes


def ten_batches(config, start):
    return (TASK.batch_at(i) for i in range(start, 10))


@pytest.mark.slow
def test_a_trial_whose_data_runs_out_in_the_search_ends_with_a_checkpoint(ray_session, tmp_path):
    grid = tune.Tuner(
        trainable_with(ten_batches),
        param_space={**space([0]), "autolrs": {**space([0])["autolrs"], "seed": 0}},
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="short", verbose=0),
    ).fit()
    assert not grid.errors
    result = grid[0]
    last = result.metrics_dataframe.iloc[-1]
    assert result.checkpoint is not None
    assert last["phase"] in ("range", "probe") and last["lr"] == last["lr"]  # set, not NaN
