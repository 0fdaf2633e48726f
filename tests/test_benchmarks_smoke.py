"""Smoke tests of the benchmark suite: workloads build, train, evaluate; a baseline runs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# the benchmark suite lives next to the package, not inside it
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import autolr_hook  # noqa: E402
from benchmarks.methods import METHODS, RunSpec, build_optimizer, plan_runs, run_one  # noqa: E402
from benchmarks.schedules import SCHEDULES, lr_factor  # noqa: E402
from benchmarks.workloads import WORKLOADS  # noqa: E402


@pytest.mark.parametrize("wid", sorted(WORKLOADS))
def test_workload_make_step_eval(wid: str) -> None:
    w = WORKLOADS[wid]
    grid = w.lr_grid()
    assert len(grid) >= 6
    assert all(math.isclose(b / a, 2.0) for a, b in zip(grid, grid[1:]))
    assert any(math.isclose(lr, w.default_lr) for lr in grid)
    assert w.quick_steps * 5 <= w.full_steps
    assert w.grid_schedules and set(w.grid_schedules) <= set(SCHEDULES)
    inst = w.make(0)
    opt = build_optimizer(w, "cosine", inst.model.parameters(), 10)
    before = [p.detach().clone() for p in inst.model.parameters()]
    losses = [inst.train_step(inst.model, opt, next(inst.train_batches)) for _ in range(3)]
    assert all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(a, p) for a, p in zip(before, inst.model.parameters()))
    val, test = inst.eval_val(), inst.eval_test()
    assert math.isfinite(val) and math.isfinite(test)
    assert inst.eval_val() == val  # evaluation has no side effects


def test_same_seed_same_batches_and_init() -> None:
    w = WORKLOADS["W1"]
    a, b, c = w.make(1), w.make(1), w.make(2)
    xa, xb, xc = next(a.train_batches)[0], next(b.train_batches)[0], next(c.train_batches)[0]
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)
    pa, pb = next(a.model.parameters()), next(b.model.parameters())
    assert torch.equal(pa, pb)


def test_mnist1d_is_generated_not_downloaded(monkeypatch, tmp_path) -> None:
    import mnist1d.data

    from benchmarks.workloads import mnist1d_cnn

    def no_network(*args, **kwargs):
        raise AssertionError("MNIST-1D must be generated, not downloaded")

    monkeypatch.setattr(mnist1d.data.requests, "get", no_network)
    monkeypatch.chdir(tmp_path)
    mnist1d_cnn.load_splits.cache_clear()
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    splits = mnist1d_cnn.load_splits()
    assert np.random.rand() == expected_next  # the caller's numpy RNG is untouched
    assert {k: len(v[1]) for k, v in splits.items()} == {"train": 3500, "val": 500, "test": 1000}
    assert list(tmp_path.iterdir()) == []


def test_schedules_shapes() -> None:
    total = 100
    for name in SCHEDULES:
        f = [lr_factor(name, s, total) for s in range(total)]
        assert max(f) == pytest.approx(1.0)
        assert all(0 < x <= 1 for x in f)
    assert lr_factor("cosine", 0, total) < 1  # warmup
    assert lr_factor("wsd", 79, total) == 1.0 and lr_factor("wsd", 80, total) < 1
    assert lr_factor("cosine", 99, total) < 0.01
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_factor("step", 0, total)


def test_plan_covers_grid_and_methods() -> None:
    w = WORKLOADS["S0"]
    plan = plan_runs(w, ["cosine", "prodigy"], [0, 1])
    assert len(plan) == 2 * (len(w.lr_grid()) + 1)
    assert len({s.key for s in plan}) == len(plan)
    with pytest.raises(ValueError, match=r"unknown methods \['sgdr'\]"):
        plan_runs(w, ["sgdr"], [0])
    assert set(METHODS) >= {"cosine", "linear", "wsd", "constant", "schedulefree", "prodigy"}
    assert "pb2" in METHODS
    w3 = WORKLOADS["W3"]
    assert {s.method for s in plan_runs(w3, ["cosine", "linear"], [0])} == {"cosine"}
    assert [s.key for s in plan_runs(w, ["pb2"], [0, 1])] == ["pb2#seed0", "pb2#seed1"]


def test_baseline_run_at_tiny_budget() -> None:
    w = WORKLOADS["W1"]
    r = run_one(w, RunSpec("cosine", 0, 0.1), total_steps=20, eval_points=4)
    assert r["steps"] == 20 and not r["diverged"]
    assert [p[0] for p in r["val_curve"]] == [0, 5, 10, 15, 20]
    assert r["final_val"] == r["val_curve"][-1][1] < r["val_curve"][0][1]
    assert math.isfinite(r["final_test"])
    assert max(r["lr_curve"]["values"]) == pytest.approx(0.1)
    json.dumps(r)


@pytest.mark.parametrize("method", ["schedulefree", "prodigy", "constant"])
def test_other_optimizers_run_on_nqm(method: str) -> None:
    w = WORKLOADS["S0"]
    lr = w.default_lr if method == "constant" else None
    r = run_one(w, RunSpec(method, 0, lr), total_steps=30, eval_points=3)
    assert r["steps"] == 30 and math.isfinite(r["final_val"])
    if method == "constant":
        assert r["expected_final_loss"] > 0


def test_runner_writes_results_and_report(tmp_path: Path) -> None:
    from benchmarks import run

    report = tmp_path / "BENCH.md"
    argv = ["--workloads", "S0", "--seeds", "2", "--steps", "40", "--methods", "constant,wsd"]
    argv += ["--results", str(tmp_path), "--report", str(report)]
    assert run.main(argv) == 0
    data = json.loads((tmp_path / "S0_T40.json").read_text())
    assert len(data["runs"]) == 2 * 2 * len(WORKLOADS["S0"].lr_grid())
    labels = [row["label"] for row in data["summary"]]
    assert "constant (default LR 0.1)" in labels
    text = report.read_text()
    assert "### S0" in text and "optimal SGD schedule" in text and "S0_T40.png" in text
    assert (tmp_path / "S0_T40.png").stat().st_size > 0
    # a second call with another method merges into the same file
    assert run.main([*argv[:6], "--methods", "cosine", *argv[8:], "--no-report"]) == 0
    data = json.loads((tmp_path / "S0_T40.json").read_text())
    assert {r["method"] for r in data["runs"]} == {"constant", "wsd", "cosine"}


def test_autolr_hook_filters_settings() -> None:
    from autolr import AutoLRS

    settings = {"probes": 10, "decide_by": "posterior"}  # an option this version removed
    accepted, ignored = autolr_hook._split_settings(AutoLRS, settings)
    assert accepted == {"probes": 10} and ignored == ["decide_by"]
    # Every variant's settings are options of this AutoLRS: none silently dropped.
    for variant in autolr_hook.VARIANTS.values():
        kept, dropped = autolr_hook._split_settings(AutoLRS, variant.settings)
        assert kept == variant.settings and dropped == [], variant.name


def test_autolr_hook_availability_says_why_autolr_is_missing(monkeypatch) -> None:
    assert autolr_hook.availability() == (True, "")
    monkeypatch.setitem(sys.modules, "autolr", None)  # as if not installed
    ok, err = autolr_hook.availability()
    assert ok is False and "Error: import of autolr halted" in err


def test_runner_strict_fails_on_a_failed_run(tmp_path: Path, monkeypatch) -> None:
    from benchmarks import methods, run

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(methods, "run_one", broken)  # what run_guarded calls
    argv = ["--workloads", "S0", "--seeds", "1", "--steps", "20", "--methods", "prodigy"]
    argv += ["--results", str(tmp_path), "--no-report"]
    assert run.main(argv) == 0  # a failed run is recorded, the others go on
    data = json.loads((tmp_path / "S0_T20.json").read_text())
    assert data["runs"][0]["error"] == "RuntimeError: boom"
    assert run.main([*argv, "--strict"]) == 1


def test_diagnostics_from_run_log_records() -> None:
    records = [
        {"type": "probe", "stage": 0, "lr": 0.1, "diverged": False, "forecast": 0.5},
        {"type": "probe", "stage": 0, "lr": 1.0, "diverged": True, "reason": "loss blew up"},
        {
            "type": "decision",
            "stage": 0,
            "reason": "best_forecast",
            "candidates": [{"lr": 0.1, "forecast": 0.5}, {"lr": 1.0, "forecast": None}],
        },
        {"type": "rollback", "stage": 0, "lr": 0.1, "reason": "loss rose"},
        {"type": "decision", "stage": 0, "reason": "fallback", "candidates": []},
        {"type": "exploit_end", "stage": 0, "lr": 0.001, "forecast": 0.5, "actual": 0.4},
    ]
    d = autolr_hook.diagnostics(records)
    assert d["probes"] == 2 and d["diverged_probes"] == 1
    assert d["diverged_reasons"] == ["loss blew up"]
    assert d["rollbacks"] == 1 and d["rollback_reasons"] == ["loss rose"]
    assert d["fallbacks"] == 1
    assert d["forecast_rel_error"] == [pytest.approx(0.25)]
    assert d["candidates"] == {0: [[0.1, 0.5], [1.0, None]]}
    json.dumps(d)


def test_autolr_run_reports_config_and_diagnostics() -> None:
    w = WORKLOADS["S0"]
    variant = autolr_hook.AutoLRVariant("v", "v", val_objective=True)
    r = run_one(w, RunSpec("v", 0), total_steps=200, eval_points=4, autolr_variant=variant)
    assert r["steps"] == 200 and math.isfinite(r["final_val"])
    info = r["autolr"]
    assert info["settings"]["objective"] == "val_loss"
    assert info["config"]["objective"] == "val_loss" and info["config"]["total_steps"] == 200
    assert info["diagnostics"]["probes"] >= 1
    json.dumps(r)


def test_micro_benchmarks_run_at_tiny_sizes() -> None:
    from benchmarks import micro

    (over,) = micro.bench_overhead(steps=20, repeats=1, tau_probes=(20,))
    assert over["tau_probe"] == 20 and over["cpu_plain_us"] > 0
    (fc,) = micro.bench_forecast([(3, 30)], repeats=1)
    assert fc["series"] == 3 and fc["max_rel_gap_at_10T"] < 1e-3  # batched == reference
    (snap,) = micro.bench_snapshot([2_000], repeats=1)
    assert snap["snapshot_bytes"] >= snap["bytes"]  # the same tensors, plus step counters
    assert snap["bytes"] >= 3 * 4 * snap["params"]  # parameters and two AdamW moments
    (dec,) = micro.bench_decision([3], repeats=1)[:1]
    assert dec["k"] == 3 and dec["gp_points"] == 3 and dec["median_s"] > 0


def test_ablation_runs_and_report_sections(tmp_path: Path) -> None:
    from benchmarks import ablate, micro, report

    names, skipped = ablate.variants()
    assert ablate.DEFAULT in names and "objective=val_loss" in names
    assert not set(names) & set(skipped)
    argv = ["--workloads", "S0", "--seeds", "1", "--steps", "200", "--only", "objective"]
    argv += ["--results", str(tmp_path), "--no-report", "--logs", str(tmp_path / "logs")]
    assert ablate.main(argv) == 0
    data = json.loads((tmp_path / "ablations" / "S0_T200.json").read_text())
    assert {r["method"] for r in data["runs"]} == {"default", "objective=val_loss"}
    assert all(r.get("error") is None for r in data["runs"])
    assert len(list((tmp_path / "logs").glob("*.jsonl"))) == 2
    (tmp_path / "micro.json").write_text(
        json.dumps({"meta": {**_MICRO_META}, "forecast": micro.bench_forecast([(2, 20)], 1)})
    )
    text = report.build_report(tmp_path, tmp_path / "B.md")
    assert "## Ablations of the forecast strategy's options" in text
    assert "| objective | val_loss |" in text
    assert "## Micro-benchmarks" in text and "| 2 x 20 |" in text


def test_report_prefers_full_micro_figures_over_quick_ones(tmp_path: Path) -> None:
    from benchmarks import micro, report

    quick = {"meta": {**_MICRO_META}, "forecast": micro.bench_forecast([(2, 20)], 1)}
    (tmp_path / micro.MICRO_QUICK_FILE).write_text(json.dumps(quick))
    text = report.build_report(tmp_path, tmp_path / "B.md")
    assert "`python -m benchmarks.micro --quick`" in text and "| 2 x 20 |" in text
    full = {"meta": {**_MICRO_META, "quick": False}, "forecast": micro.bench_forecast([(3, 30)], 1)}
    (tmp_path / micro.MICRO_FILE).write_text(json.dumps(full))
    text = report.build_report(tmp_path, tmp_path / "B.md")
    assert "`python -m benchmarks.micro`:" in text and "| 3 x 30 |" in text
    assert "| 2 x 20 |" not in text


_MICRO_META = {
    "quick": True,
    "python": "3",
    "torch": "2",
    "threads": 1,
    "cpus": 1,
    "date": "today",
    "wall_time_s": 1.0,
    "load_average_start": [1.0, 1.0, 1.0],
}


@pytest.mark.slow
def test_pb2_spends_the_budget_over_the_population() -> None:
    pytest.importorskip("sklearn")
    ray = pytest.importorskip("ray")
    from benchmarks import pb2

    try:
        r = pb2.run_pb2(WORKLOADS["S0"], 0, total_steps=48, population=4, perturbations=2)
    finally:
        ray.shutdown()
    assert r["method"] == "pb2" and r["steps"] == 48  # 4 members x 12 steps
    assert r["pb2"]["member_steps"] == 12 and r["pb2"]["interval"] == 6
    assert math.isfinite(r["final_val"]) and math.isfinite(r["final_test"])
    lo, hi = WORKLOADS["S0"].lr_range()
    assert all(lo * 0.999 <= lr <= hi * 1.001 for lr in r["lr_curve"]["values"])
    assert r["val_curve"][-1][0] == 48
    json.dumps(r)


def test_runner_keeps_runs_when_the_grid_widens(tmp_path: Path, monkeypatch) -> None:
    import dataclasses

    from benchmarks import run

    w = WORKLOADS["S0"]
    argv = ["--workloads", "S0", "--seeds", "1", "--steps", "20", "--methods", "constant,prodigy"]
    argv += ["--results", str(tmp_path), "--no-report"]
    assert run.main(argv) == 0
    before = json.loads((tmp_path / "S0_T20.json").read_text())["runs"]
    wider = dataclasses.replace(w, grid_exponents=(-4, *w.grid_exponents))
    monkeypatch.setitem(WORKLOADS, "S0", wider)
    assert run.main([*argv, "--missing-only"]) == 0
    data = json.loads((tmp_path / "S0_T20.json").read_text())
    lrs = sorted(r["peak_lr"] for r in data["runs"] if r["method"] == "constant")
    assert lrs == pytest.approx(wider.lr_grid())
    assert all(r in data["runs"] for r in before)  # saved runs kept as they were, not rerun
    assert sum(r["method"] == "prodigy" for r in data["runs"]) == 1
    assert data["meta"]["lr_grid"] == pytest.approx(wider.lr_grid())


def test_spearman_rank_correlation() -> None:
    from benchmarks.report import spearman

    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 2, 3], [4, 3, 3, 1]) == pytest.approx(-1.0)  # ties: mean ranks
    assert math.isnan(spearman([1, 2], [1, 2]))


def test_confirmation_workloads_start_where_they_should() -> None:
    from benchmarks.workloads import finetune

    w4, w5 = WORKLOADS["W4"], WORKLOADS["W5"]
    assert w4.confirmation and w5.confirmation and not WORKLOADS["W1"].confirmation
    assert w4.make(0).eval_val() == pytest.approx(math.log(10), rel=0.02)  # on the plateau
    state = torch.get_rng_state()
    finetune.pretrained_body.cache_clear()
    body = finetune.pretrained_body()
    assert torch.equal(torch.get_rng_state(), state)  # pretraining leaves the RNG alone
    finetune.pretrained_body.cache_clear()
    again = finetune.pretrained_body()
    assert all(torch.equal(body[k], again[k]) for k in body)  # deterministic
    tasks = finetune.load_tasks()
    assert int(tasks["pretrain"][1].max()) == 4 and int(tasks["train"][1].max()) == 4
    a, b = w5.make(0), w5.make(1)
    assert torch.equal(a.model[0][0].weight, b.model[0][0].weight)  # the same pretrained body
    assert not torch.equal(a.model[1].weight, b.model[1].weight)  # a new, seeded head


def test_range_sweep_ranges_and_tuned_lr() -> None:
    from benchmarks import ranges

    lo, hi = ranges.range_around(0.05, 2)
    assert (lo, hi) == (pytest.approx(0.005), pytest.approx(0.5))
    lo, hi = ranges.range_around(1e-3, 3)
    assert math.sqrt(lo * hi) == pytest.approx(1e-3) and hi / lo == pytest.approx(1e3)
    with pytest.raises(ValueError, match="decades must be positive and finite, got 0"):
        ranges.range_around(0.1, 0)
    assert ranges.parse_ranges("1, 2,wide,none") == ["1", "2", "wide", "none"]
    with pytest.raises(ValueError, match="got 'all'"):
        ranges.parse_ranges("1,all")
    assert ranges.resolve_range("none", 0.1) is None
    assert ranges.resolve_range("wide", 0.1) == ranges.WIDE_RANGE
    runs = [
        {"method": "cosine", "peak_lr": 0.1, "final_val": v, "seed": s}
        for s, v in enumerate([0.5, 0.2, 0.3])
    ] + [
        {"method": "wsd", "peak_lr": 0.2, "final_val": v, "seed": s}
        for s, v in enumerate([0.1, 0.25, None])  # one seed diverged: median 0.25
    ]
    lr, which = ranges.tuned_lr({"meta": {"workload": "W"}, "runs": runs})
    assert lr == 0.2 and which.startswith("wsd")


def test_dead_network_status() -> None:
    from benchmarks.report import run_status

    curve = [[0, 2.30, 0.0], [10, 1.0, 0.1]]
    assert run_status({"final_val": 0.3, "val_curve": curve}, math.log(10)) == "ok"
    assert run_status({"final_val": 2.29, "val_curve": curve}, math.log(10)) == "dead"
    assert run_status({"final_val": 2.6, "val_curve": curve}, None) == "dead"
    assert run_status({"final_val": None, "diverged": True, "val_curve": curve}, None) == (
        "non-finite"
    )
    assert run_status({"final_val": None, "error": "boom"}, None) == "failed"


def test_the_held_lr_is_the_longest_exploits() -> None:
    from benchmarks.report import _held_lr

    stages = [{"lr": 0.1, "steps": 50}, {"lr": 0.4, "steps": 900}, {"lr": 0.2, "steps": 0}]
    assert _held_lr({"autolr": {"diagnostics": {"stages": stages}}}) == 0.4
    assert _held_lr({"autolr": {"diagnostics": {"stages": []}}}) is None
    assert _held_lr({"peak_lr": 0.1}) is None


def test_range_sweep_runs_and_reports(tmp_path: Path) -> None:
    from benchmarks import ranges, run

    argv = ["--workloads", "W5", "--seeds", "1", "--steps", "200", "--methods", "autolr"]
    argv += ["--range-decades", "2,none", "--center-lr", "1e-3"]
    argv += ["--results", str(tmp_path), "--report", str(tmp_path / "B.md")]
    assert run.main(argv) == 0
    data = json.loads((tmp_path / "ranges" / "W5_T200.json").read_text())
    assert data["meta"]["ranges"]["2"] == [pytest.approx(1e-4), pytest.approx(1e-2)]
    supported = ranges.no_range_supported()
    assert sorted(r["range"] for r in data["runs"]) == (["2", "none"] if supported else ["2"])
    assert data["meta"]["unsupported"] == ([] if supported else ["none"])
    (r,) = [r for r in data["runs"] if r["range"] == "2"]
    assert r.get("error") is None and r["steps"] <= 200 and r["median_lr"] > 0
    text = (tmp_path / "B.md").read_text()
    assert "## Confirmation workloads" in text and "W5: search-range sweep" in text
    assert "| autolr | 2 decades [0.0001, 0.01] |" in text
