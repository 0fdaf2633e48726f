"""Report: the arrays behind each plot, then the PNG and the self-contained HTML."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from autolr import AutoLRS
from autolr.cli import main
from autolr.errors import AutoLRError
from autolr.offline.logs import LoggedRun, load_run
from autolr.offline.replay import ReplayResult, replay_run
from autolr.offline.report import (
    OBJECTIVE_KINDS,
    PHASES,
    effective_settings,
    forecast_vs_actual,
    gp_posterior,
    objective_series,
    probe_curves,
    race,
    range_curve,
    render_figures,
    settings_rows,
    step_series,
    write_report,
)
from tests.conftest import Regression, blow_up_the_hold, make_model
from tests.test_replay import write_trap_log

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VAL_LOG = Path(__file__).parent / "fixtures" / "runlogs" / "digits_val.jsonl"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> LoggedRun:
    path = tmp_path_factory.mktemp("report") / "trap.jsonl"
    write_trap_log(path, total=240, warmup_steps=8, probes=4, strategy="forecast")
    return load_run(path)


@pytest.fixture(scope="module")
def replayed(run: LoggedRun) -> ReplayResult:
    result = replay_run(run)
    assert result.matches
    return result


def test_step_series_matches_the_log(run: LoggedRun, replayed: ReplayResult) -> None:
    s = step_series(run, replayed)
    n = run.run_end["total"]
    assert s["step"].tolist() == list(range(n))
    assert set(s["phase"].tolist()) <= set(PHASES)
    assert np.isfinite(s["lr"]).all() and (s["lr"] > 0).all()
    for p in run.of_type("probe"):
        span = slice(p["step"] - len(p["train_losses"]), p["step"])
        assert (s["phase"][span] == "probe").all()
        assert np.allclose(s["lr"][span], p["lr"])
        assert np.allclose(s["loss"][span], p["train_losses"])
    for rb in run.of_type("rollback"):
        span = slice(rb["step"] - len(rb["losses"]), rb["step"])
        assert (s["phase"][span] == "rolled_back").all()
    assert (s["phase"][:8] == "warmup").all()
    anneal = run.of_type("phase")[-2]
    assert anneal["phase"] == "anneal" and (s["phase"][anneal["step"] :] == "anneal").all()
    # warmup losses are not logged, but the last pre-snapshot losses are
    recent = run.stages[0].recent
    assert np.allclose(s["loss"][8 - len(recent) : 8], recent)
    # the anneal's losses are, in run_end: every anneal step's loss
    logged = run.run_end["anneal_losses"]
    assert len(logged) == n - anneal["step"] > 0
    assert np.allclose(s["loss"][anneal["step"] :], logged)
    assert np.array_equal(replayed.tuner.trace_loss[anneal["step"] :], logged)


def test_step_series_keeps_the_hold_up_to_the_state_a_rollback_went_back_to(
    tmp_path: Path,
) -> None:
    """An annealed hold rolled back to its best state: the steps before that state are
    exploit (kept), the ones after it rolled back; both match a replay."""
    task = Regression()
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    path = tmp_path / "hold.jsonl"
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=600, log_path=path)
    blow_up_the_hold(task, model, opt, tuner, after=120, finish=True)
    run = load_run(path)
    (rb,) = run.of_type("rollback")
    start = rb["step"] - len(rb["losses"])
    assert start < rb["back_to"] < rb["step"]
    for s in (step_series(run, False), step_series(run)):
        assert (s["phase"][start : rb["back_to"]] == "exploit").all()
        assert (s["phase"][rb["back_to"] : rb["step"]] == "rolled_back").all()
        assert np.allclose(s["loss"][start : rb["step"]], rb["losses"])


def test_step_series_without_replay_agrees_where_the_log_speaks(
    run: LoggedRun, replayed: ReplayResult
) -> None:
    with_replay = step_series(run, replayed)
    alone = step_series(run, False)
    known = ~np.isnan(alone["lr"])
    assert known.sum() > 0.7 * len(known)
    assert np.array_equal(with_replay["lr"][known], alone["lr"][known])
    assert np.isnan(alone["lr"][:8]).all()  # the warmup LR comes from the replay only
    assert np.array_equal(with_replay["phase"], alone["phase"])


def test_probe_curves_reproduce_the_logged_forecasts(run: LoggedRun) -> None:
    for st in run.stages:
        curves = probe_curves(run, st.index, points=33)
        assert len(curves) == len(st.probes)
        for c, p in zip(curves, st.probes):
            assert c["lr"] == p["lr"] and c["tau"] == st.tau
            assert c["t"].shape == c["losses"].shape == (len(p["t"]),)
            if p["diverged"]:
                assert c["curve"] is None
                continue
            assert c["curve_t"][0] == 0 and c["curve_t"][-1] == st.tau
            assert c["curve"].shape == (33,)
            assert c["curve"][-1] == pytest.approx(p["forecast"], rel=1e-6, abs=1e-9)
    with pytest.raises(AutoLRError, match="no stage 9"):
        probe_curves(run, 9)


def test_gp_posterior_is_refit_from_the_probes(run: LoggedRun) -> None:
    st = run.stages[0]
    gp = gp_posterior(run, 0, points=50)
    assert gp is not None
    lo, hi = run.config["min_lr"], run.config["max_lr"]
    assert gp["lrs"].shape == gp["mean"].shape == gp["std"].shape == (50,)
    assert gp["lrs"][0] == pytest.approx(lo) and gp["lrs"][-1] == pytest.approx(hi)
    assert np.isfinite(gp["mean"]).all() and (gp["std"] >= 0).all()
    finite = [p for p in st.probes if not p["diverged"]]
    assert gp["obs_lr"].tolist() == [p["lr"] for p in finite]
    assert gp["chosen_lr"] == st.first_decision()["lr"]
    # the posterior passes near what it was fitted to
    at_obs = np.interp(np.log(gp["obs_lr"]), np.log(gp["lrs"]), gp["mean"])
    spread = gp["obs_value"].max() - gp["obs_value"].min()
    assert np.abs(at_obs - gp["obs_value"]).max() <= 0.5 * spread + 3 * gp["std"].max()


def test_forecast_vs_actual(run: LoggedRun) -> None:
    fva = forecast_vs_actual(run)
    ends = run.of_type("exploit_end")
    assert fva["stage"].tolist() == [e["stage"] for e in ends]
    assert fva["lr"].tolist() == [e["lr"] for e in ends]
    assert np.allclose(fva["actual"], [e["actual"] for e in ends])
    assert np.allclose(fva["forecast"], [e["forecast"] for e in ends])
    assert np.allclose(fva["error"], fva["forecast"] - fva["actual"])
    assert np.allclose(fva["rel_error"] * np.abs(fva["actual"]), fva["error"])


def test_objective_series_has_the_validation_loss_over_time() -> None:
    run = load_run(VAL_LOG)
    obj = objective_series(run)
    assert obj is not None and set(obj["kind"].tolist()) == set(OBJECTIVE_KINDS)
    assert (np.diff(obj["step"]) >= 0).all()
    ends = obj["kind"] == "stage_end"
    finished = [st.exploit_end for st in run.stages if st.exploit_end is not None]
    assert obj["step"][ends].tolist() == [e["step"] for e in finished]
    assert np.allclose(obj["value"][ends], [e["actual"] for e in finished])
    # One snapshot value per stage with probes, at the stage's start: t = 0 of its probes.
    snaps = obj["kind"] == "snapshot"
    assert obj["step"][snaps].tolist() == [st.start["step"] for st in run.stages if st.probes]
    assert np.allclose(obj["value"][snaps], [st.probes[0]["losses"][0] for st in run.stages])
    # Every probe's other values, at the global step they were measured at.
    p = run.stages[1].probes[1]
    start = p["step"] - p["steps"]
    mask = (obj["kind"] == "probe") & (obj["step"] > start) & (obj["step"] <= p["step"])
    assert obj["step"][mask].tolist() == [start + int(t) for t in p["t"][1:]]
    assert np.allclose(obj["value"][mask], p["losses"][1:])


def test_objective_series_is_none_for_a_training_loss_run(run: LoggedRun) -> None:
    assert run.objective == "train_loss" and objective_series(run) is None


def test_effective_settings_are_the_stage_plan_used(run: LoggedRun) -> None:
    eff = effective_settings(run)
    # The config leaves the plan to autolr; the stage_start records say what it was.
    assert eff["configured"]["tau"] is None and eff["configured"]["probes"] == 4
    for key in ("tau", "tau_probe", "probes", "exploit_steps"):
        assert eff["stages"][key] == [st.start[key] for st in run.stages], key
    assert eff["steps"] == run.run_end["total"]
    assert eff["search_steps"] == run.run_end["search_steps"] > 0
    assert 0 < eff["search_share"] < 1 and eff["forecaster"] == "exponential"
    rows = {k: (given, used) for k, given, used in settings_rows(run)}
    assert rows["tau"] == ("-", ", ".join(str(st.tau) for st in run.stages))
    assert rows["probes per stage"][1].startswith("4")


def test_render_figures_keys(monkeypatch: pytest.MonkeyPatch, run: LoggedRun) -> None:
    import autolr.offline.report as report

    monkeypatch.setattr(report, "_png", lambda fig: PNG_MAGIC + b"stub")
    monkeypatch.setattr(report, "_stack", lambda pngs: b"".join(pngs))
    images = render_figures(run, False)
    assert set(images) == {"overview", "all"} | {f"stage {st.index}" for st in run.stages}
    assert all(v.startswith(PNG_MAGIC) for v in images.values())


def test_render_and_write(run: LoggedRun, tmp_path: Path) -> None:
    files = write_report(run, tmp_path / "out", replay=False)
    assert files.png.read_bytes().startswith(PNG_MAGIC)
    page = files.html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == 1 + len(run.stages)
    assert all(base64.b64decode(b).startswith(PNG_MAGIC) for b in embedded)
    # self-contained: nothing is loaded from elsewhere
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<table>" in page and "rollbacks" in page
    assert "<td>tau</td><td>-</td>" in page and "None" not in page


def test_a_validation_run_draws_its_objective(tmp_path: Path) -> None:
    files = write_report(VAL_LOG, tmp_path, replay=False)
    assert files.png.read_bytes().startswith(PNG_MAGIC)
    assert "val_loss" in files.html.read_text()


def test_cli_report(run: LoggedRun, tmp_path: Path, capsys) -> None:
    assert main(["report", run.path, "-o", str(tmp_path), "--no-replay"]) == 0
    out = capsys.readouterr().out
    stem = Path(run.path).stem
    assert f"{stem}.png" in out and (tmp_path / f"{stem}.html").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "run_start", "schema_version": 1, "step": 0}\n')
    assert main(["report", str(bad), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing the field 'config'" in err and "Traceback" not in err


# ------------------------------------------------------ the annealed strategy's run
@pytest.fixture(scope="module")
def annealed_run(tmp_path_factory: pytest.TempPathFactory) -> LoggedRun:
    path = tmp_path_factory.mktemp("report") / "annealed.jsonl"
    write_trap_log(path, total=600)  # the default strategy with a budget
    run = load_run(path)
    assert run.config["strategy"] == "anneal"
    return run


def test_an_annealed_run_shows_its_range_test_and_its_race(annealed_run: LoggedRun) -> None:
    run = annealed_run
    s = step_series(run, True)
    (test,) = run.of_type("range_test")
    n = len(test["lrs"])
    # The ramp's steps are phase "range" at the ramp's LRs, ahead of everything else.
    assert (s["phase"][:n] == "range").all() and np.allclose(s["lr"][:n], test["lrs"])
    curve = range_curve(run)
    assert curve is not None and curve["lr_range"] == tuple(test["lr_range"])
    # Each race probe: its LR held, then cooled down towards 0 (the branch put back).
    st = run.stages[0]
    for p in st.probes:
        span = s["lr"][p["step"] - len(p["train_losses"]) : p["step"]]
        held = min(len(span), st.start["tau_probe"])
        assert np.allclose(span[:held], p["lr"])
        if len(span) > held:
            assert (np.diff(span[held:]) < 0).all() and span[-1] < 0.1 * p["lr"]
    cands = race(run, 0)
    assert [c["lr"] for c in cands] == [p["lr"] for p in st.probes]
    assert sum(c["chosen"] for c in cands) == 1
    assert all((c["score"] is None) == bool(c["reason"]) for c in cands)


def test_an_annealed_run_is_drawn_and_says_its_strategy(
    annealed_run: LoggedRun, tmp_path: Path
) -> None:
    images = render_figures(annealed_run, False)
    assert set(images) == {"overview", "all", "stage 0"}
    assert all(v.startswith(PNG_MAGIC) for v in images.values())
    page = write_report(annealed_run, tmp_path, replay=False).html.read_text()
    assert "<td>strategy</td><td>anneal</td>" in page
