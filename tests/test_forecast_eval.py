"""forecast-eval: windows, errors by horizon, forecaster comparison, recommendation, CLI."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from autolr.cli import main
from autolr.errors import ConfigError, LogFormatError
from autolr.offline.forecast_eval import default_taus, evaluate_forecasts, make_windows
from autolr.offline.importers import LossLog


def exp_log(n: int = 1200, noise: float = 0.0, seed: int = 0, lr=None) -> LossLog:
    rng = random.Random(seed)
    steps = list(range(n))
    loss = [0.5 + 2.0 * math.exp(-s / 150) + noise * rng.gauss(0, 1) for s in steps]
    return LossLog(steps=steps, loss=loss, lr=lr, source="csv", path="synthetic")


def test_windows_share_starts_across_probe_lengths_and_read_the_actual_loss() -> None:
    log = exp_log()
    short, _ = make_windows(log, 10, 200)
    long, _ = make_windows(log, 50, 200)
    assert [w.start for w in short] == [w.start for w in long]
    assert len(short) == 48
    for w in short:
        assert w.t == [float(k) for k in range(10)]
        assert w.losses == log.loss[w.start : w.start + 10]
        # the median of a monotone stretch centred on the horizon is its value there
        assert w.actual == pytest.approx(log.loss[w.start + 200])
        assert w.start + 200 + 5 <= log.steps[-1]


def test_windows_skip_lr_changes_when_the_log_has_the_lr() -> None:
    lr = [0.1 if s < 600 else 0.01 for s in range(1200)]
    log = exp_log(lr=lr)
    kept, left = make_windows(log, 20, 200, max_windows=2000)
    assert left > 0
    for w in kept:
        assert not (w.start < 600 <= w.start + 205)
    every, none_left = make_windows(log, 20, 200, max_windows=2000, max_lr_change=None)
    assert none_left == 0 and len(every) == len(kept) + left


def test_noise_free_exponential_is_forecast_almost_exactly() -> None:
    res = evaluate_forecasts(exp_log(), taus=[100, 200], fractions=(0.1, 0.25))
    rows = [r for r in res.rows if r.forecaster == "exponential"]
    assert {(r.tau_probe, r.tau) for r in rows} == {(10, 100), (25, 100), (20, 200), (50, 200)}
    for r in rows:
        assert r.windows > 0 and r.failed == 0
        assert r.median_rel_error < 0.01, r


def test_forecasters_are_compared_on_the_same_windows() -> None:
    res = evaluate_forecasts(exp_log(), taus=[300], fractions=(0.1,))
    by_name = {r.forecaster: r for r in res.rows}
    assert set(by_name) == {"exponential", "power_law"}
    assert by_name["exponential"].windows == by_name["power_law"].windows > 0
    # exponential data, exponential fit: the shift to each window's start changes nothing
    assert by_name["exponential"].median_rel_error < by_name["power_law"].median_rel_error


def test_recommendation_and_errors_by_horizon() -> None:
    log = exp_log(n=3000, noise=0.02, seed=1)
    res = evaluate_forecasts(log, max_windows=24)
    taus = sorted({r.tau for r in res.rows})
    assert taus == default_taus(log)
    assert {r.forecaster for r in res.rows} == {"exponential", "power_law"}
    for tau in taus:  # the same windows for both forecasters
        counts = {(r.tau_probe, r.windows) for r in res.rows if r.tau == tau}
        assert len({tp for tp, _ in counts}) == len(counts)
    rec = res.recommendation
    assert rec is not None and rec.tau in taus
    assert abs(math.log(rec.tau / 300)) == min(abs(math.log(t / 300)) for t in taus)
    assert rec.tau_probe < rec.tau and rec.forecaster in ("exponential", "power_law")
    best = min(
        r.median_rel_error for r in res.rows if r.tau == rec.tau and r.median_rel_error is not None
    )
    assert rec.median_rel_error <= max(0.05, 1.2 * best) + 1e-12
    assert len(res.by_horizon) == len(taus)
    assert "the log has no LR" in res.notes[0]
    data = res.to_dict()
    json.dumps(data)
    assert data["recommendation"]["tau_probe"] == rec.tau_probe
    headers, rows = res.table()
    assert len(rows) == len(res.rows) and len(headers) == len(rows[0])


def test_bad_arguments_and_short_logs() -> None:
    log = exp_log(n=300)
    with pytest.raises(ConfigError, match=r"fractions must be numbers in \(0, 1\), got \[1.5\]"):
        evaluate_forecasts(log, fractions=(1.5,))
    with pytest.raises(ConfigError, match="max_windows must be >= 1, got 0"):
        evaluate_forecasts(log, max_windows=0)
    with pytest.raises(ConfigError, match="unknown forecaster 'nope'"):
        evaluate_forecasts(log, forecasters=["nope"])
    with pytest.raises(LogFormatError, match="too few to test forecasts"):
        evaluate_forecasts(exp_log(n=30))


def test_cli_table_and_json(tmp_path: Path, capsys) -> None:
    log = exp_log(n=1500, noise=0.01)
    path = tmp_path / "loss.csv"
    path.write_text(
        "step,loss,lr\n" + "".join(f"{s},{v},0.1\n" for s, v in zip(log.steps, log.loss))
    )
    args = ["forecast-eval", str(path), "--tau", "100,300", "--max-windows", "16"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "median rel err" in out and "power_law" in out and "recommended: tau_probe=" in out
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["tau"] for r in data["rows"]} == {100, 300}
    assert data["log"]["lr_name"] == "lr"
    with pytest.raises(SystemExit) as exc:
        main(["forecast-eval", str(path), "--tau", "x"])
    assert exc.value.code == 2
    assert "expected integers separated by commas" in capsys.readouterr().err
