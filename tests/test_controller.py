"""The controller in a plain PyTorch loop: stages, probes, decisions, guard, resume, log."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from autolr import AutoLRS, ConfigError, LocalProber, Phase, StateError
from autolr.offline.reader import read_run_log
from autolr.plan import StageSpec
from autolr.runlog import SCHEMA_VERSION
from autolr.stage import StageState, exploit_guard
from tests.conftest import Regression, blow_up_the_hold, make_model, train_step


def _run(task, steps=600, seed=0, model_seed=0, stop_at=None, **kw):
    model = make_model(model_seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=steps, seed=seed, **kw)
    used = []
    for i, batch in enumerate(task.stream()):
        if tuner.finished or (stop_at is not None and i == stop_at):
            break
        used.append(opt.param_groups[0]["lr"])
        tuner.step(train_step(model, opt, batch))
    return tuner, model, opt, used


def test_plain_loop_runs_the_stages_within_the_budget(task):
    tuner, _, _, used = _run(task, steps=600, strategy="forecast")
    assert tuner.finished and tuner.global_step == 600 and len(used) == 600
    assert tuner.search_steps > 0 and tuner.exploit_steps > 0
    types = [r["type"] for r in tuner.log.records]
    assert types[0] == "run_start" and types[-1] == "run_end"
    assert types.count("stage_start") >= 2
    probes = tuner.log.of_type("probe")
    assert all(1e-3 <= p["lr"] <= 1.0 for p in probes)
    decisions = tuner.log.of_type("decision")
    best = [d for d in decisions if d["reason"] == "best_forecast"]
    assert best, [d["reason"] for d in decisions]
    for d in best:
        finite = [c for c in d["candidates"] if c["forecast"] is not None]
        assert d["forecast"] == min(c["forecast"] for c in finite)
        assert d["lr"] == min(finite, key=lambda c: c["forecast"])["lr"]
    # The last 10% anneals linearly down.
    tail = used[-60:]
    assert all(b <= a + 1e-12 for a, b in zip(tail, tail[1:]))
    assert tail[-1] < 0.05 * tail[0]


def test_lr_used_each_step_is_the_controllers(task):
    tuner, _, _, used = _run(task, steps=400)
    assert list(tuner.trace_lr) == pytest.approx(used, rel=0, abs=0)


def test_probes_within_a_stage_never_repeat_an_lr(task):
    tuner, *_ = _run(task, steps=600)
    by_stage: dict[int, list[float]] = {}
    for p in tuner.log.of_type("probe"):
        by_stage.setdefault(p["stage"], []).append(p["lr"])
    for lrs in by_stage.values():
        assert len(set(lrs)) == len(lrs)


def test_param_groups_keep_their_ratios(task):
    model = make_model()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": model[2].parameters(), "lr": 0.01},
        ],
        momentum=0.9,
    )
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=400)
    for batch in task.stream():
        g0, g1 = (g["lr"] for g in opt.param_groups)
        assert g1 == pytest.approx(0.1 * g0)
        assert g0 == pytest.approx(tuner.current_lr)
        tuner.step(train_step(model, opt, batch))
        if tuner.finished:
            break
    assert tuner.ratios == pytest.approx([1.0, 0.1])


def test_diverging_probes_are_marked_and_the_run_goes_on():
    task = Regression()
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    # A range reaching far into divergence for this problem.
    tuner = AutoLRS(
        model, opt, min_lr=1e-3, max_lr=1e3, total_steps=600, seed=1, strategy="forecast"
    )
    for batch in task.stream():
        tuner.step(train_step(model, opt, batch))
        if tuner.finished:
            break
    probes = tuner.log.of_type("probe")
    diverged = [p for p in probes if p["diverged"]]
    assert diverged, "a range up to 1e3 must produce diverged probes"
    assert all(p["forecast"] is None for p in diverged)
    assert any(
        len(p["train_losses"]) < 0.5 * max(len(q["train_losses"]) for q in probes) for p in diverged
    ), "early abort saves the rest of the probe"
    assert all(math.isfinite(v) for v in model.state_dict()["0.weight"].flatten().tolist())
    decisions = tuner.log.of_type("decision")
    assert any(d["reason"] != "fallback" for d in decisions)
    for d in decisions:
        chosen = [c for c in d["candidates"] if c["lr"] == d["lr"]]
        if d["reason"] == "fallback":
            continue  # min_lr, not a candidate
        # A probed LR was chosen, and it is not one that diverged.
        assert len(chosen) == 1 and not chosen[0]["diverged"], d


def test_nan_during_exploit_rolls_back_and_decides_again(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=800, seed=0)
    poisoned = False
    for batch in task.stream():
        loss = train_step(model, opt, batch)
        if tuner.phase is Phase.EXPLOIT and tuner.stage_index == 0 and not poisoned:
            first_choice = tuner.lr
            snap = {k: v.clone() for k, v in tuner._snapshot.model.items()}
            poisoned = True
            tuner.step(torch.tensor(float("nan")))
            assert tuner.restored
            assert all(torch.equal(snap[k], v) for k, v in model.state_dict().items())
            assert tuner.lr != first_choice
            continue
        tuner.step(loss)
        if tuner.finished:
            break
    rollbacks = tuner.log.of_type("rollback")
    assert rollbacks and rollbacks[0]["reason"] == "non-finite loss"
    redo = [d for d in tuner.log.of_type("decision") if d["reason"] == "rollback"]
    assert redo and redo[0]["lr"] != rollbacks[0]["lr"]


def test_guard_rolls_back_when_the_exploit_blows_up(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=800, seed=0)
    blow_up_the_hold(task, model, opt, tuner, after=0)
    assert "1.5x the stage start loss" in tuner.log.of_type("rollback")[0]["reason"]


def test_same_seed_same_decisions_and_other_seed_differs(task):
    a, *_ = _run(task, steps=400, seed=3, strategy="forecast")
    b, *_ = _run(task, steps=400, seed=3, strategy="forecast")
    c, *_ = _run(task, steps=400, seed=4, strategy="forecast")
    lrs = lambda t: [p["lr"] for p in t.log.of_type("probe")]  # noqa: E731
    assert lrs(a) == lrs(b)
    assert lrs(a) != lrs(c)


def test_reproducible_in_another_process(task, tmp_path):
    here, *_ = _run(task, steps=300, seed=5)
    script = textwrap.dedent(
        """
        import json, sys, torch
        sys.path.insert(0, %r)
        from tests.conftest import Regression, make_model, train_step
        from autolr import AutoLRS
        torch.set_num_threads(1)
        task = Regression()
        model = make_model(0)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=300, seed=5)
        for batch in task.stream():
            if tuner.finished:
                break
            tuner.step(train_step(model, opt, batch))
        print(json.dumps([p["lr"] for p in tuner.log.of_type("probe")]))
        """
    ) % str(__import__("pathlib").Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        p["lr"] for p in here.log.of_type("probe")
    ]


def test_controller_does_not_consume_the_callers_rng(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=400)
    tuner.strategy.propose(1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("stop_at", [20, 75, 230])
def test_resume_mid_stage_continues_the_search(task, tmp_path, stop_at):
    full, full_model, *_ = _run(task, steps=500, seed=2, strategy="forecast")
    # Interrupted run: stop, save everything, rebuild fresh objects, load, go on.
    part, model, opt, _ = _run(task, steps=500, seed=2, stop_at=stop_at, strategy="forecast")
    assert part.phase in (Phase.PROBE, Phase.EXPLOIT)
    ckpt = tmp_path / "ckpt.pt"
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "tuner": part.state_dict()}, ckpt
    )
    state = torch.load(ckpt, weights_only=True)
    model2 = make_model(99)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05, momentum=0.9)
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    tuner2 = AutoLRS(
        model2, opt2, min_lr=1e-3, max_lr=1.0, total_steps=500, seed=2, strategy="forecast"
    )
    tuner2.load_state_dict(state["tuner"])
    assert tuner2.global_step == stop_at and tuner2.phase is part.phase
    for batch in task.stream(start=stop_at):
        if tuner2.finished:
            break
        tuner2.step(train_step(model2, opt2, batch))
    resumed = part.log.of_type("decision") + tuner2.log.of_type("decision")
    assert [d["lr"] for d in resumed] == [d["lr"] for d in full.log.of_type("decision")]
    for k, v in full_model.state_dict().items():
        torch.testing.assert_close(model2.state_dict()[k], v)


def test_load_state_dict_rejects_unknown_schema(task):
    tuner, *_ = _run(task, steps=300, stop_at=5)
    state = tuner.state_dict()
    state["schema_version"] = 99
    with pytest.raises(StateError, match="schema_version=99"):
        tuner.load_state_dict(state)
    del state["phase"]
    state["schema_version"] = 1
    with pytest.raises(StateError, match="missing the key 'phase'"):
        tuner.load_state_dict(state)


def test_run_log_schema(task, tmp_path):
    path = tmp_path / "run.jsonl"
    tuner, *_ = _run(task, steps=400, log_path=path)
    records = read_run_log(path)
    assert records == json.loads(json.dumps(tuner.log.records))
    assert all(r["schema_version"] == SCHEMA_VERSION for r in records)
    probe = records[[r["type"] for r in records].index("probe")]
    for key in (
        "stage",
        "index",
        "lr",
        "t",
        "losses",
        "train_losses",
        "diverged",
        "reason",
        "fit",
        "forecast",
        "steps",
    ):
        assert key in probe
    ends = [r for r in records if r["type"] == "exploit_end"]
    assert ends and all("forecast" in r and "actual" in r for r in ends)


def test_validation_objective(task):
    val_batch = Regression(seed=7).batch_at(0)
    calls = []

    def val_fn():
        model.eval()
        with torch.no_grad():
            loss = torch.nn.functional.mse_loss(model(val_batch[0]), val_batch[1])
        model.train()
        calls.append(float(loss))
        return float(loss)

    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(
        model,
        opt,
        min_lr=1e-3,
        max_lr=1.0,
        total_steps=500,
        val_fn=val_fn,
        val_every=4,
        strategy="forecast",
    )
    for batch in task.stream():
        tuner.step(train_step(model, opt, batch))
        if tuner.finished:
            break
    probe = [p for p in tuner.log.of_type("probe") if not p["diverged"]][0]
    assert probe["t"][:2] == [0.0, tuner.log.of_type("stage_start")[0]["tau_probe"] // 4]
    assert probe["losses"][0] == calls[0] and probe["losses"][1] in calls
    assert tuner.config.objective == "val_loss"


def test_common_batches_give_every_probe_the_same_data(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=400)
    seen: dict[tuple[int, int], list[int]] = {}
    counter = iter(range(10**6))
    for batch in tuner.batches((i, task.batch_at(i)) for i in counter):
        i, b = batch
        if tuner.phase is Phase.PROBE:
            key = (tuner.stage_index, len(tuner.log.of_type("probe")))
            seen.setdefault(key, []).append(i)
        tuner.step(train_step(model, opt, b))
    stage0 = [v for (s, _), v in seen.items() if s == 0]
    assert len(stage0) > 1 and all(v == stage0[0] for v in stage0)


def test_common_batches_after_a_resume_mid_probe_keep_each_batch_at_its_step(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=400)
    counter = iter(range(10**6))
    data = ((i, task.batch_at(i)) for i in counter)
    for _, b in tuner.batches(data):
        tuner.step(train_step(model, opt, b))
        if tuner.probe is not None and tuner.probe.steps == 5:
            break
    resumed = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=400)
    resumed.load_state_dict(tuner.state_dict())
    seen: dict[int, dict[int, int]] = {}
    for i, b in resumed.batches(data):
        if resumed.phase is Phase.PROBE and resumed.stage_index == 0:
            seen.setdefault(len(resumed.log.of_type("probe")), {})[resumed.probe.steps] = i
        resumed.step(train_step(model, opt, b))
        if resumed.stage_index > 0 or resumed.phase is not Phase.PROBE and seen:
            break
    first, *others = seen.values()
    assert min(first) == 5 and others
    for steps in others:  # the steps the resumed probe ran: its batches, at those steps
        assert all(steps[k] == first[k] for k in first if k in steps)


def test_local_prober_backend_matches_inline_decisions(task):
    steps = 400

    def inline():
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        tuner = AutoLRS(
            model, opt, min_lr=1e-3, max_lr=1.0, total_steps=steps, seed=1, strategy="forecast"
        )
        data = (task.batch_at(i) for i in range(10**6))
        for batch in tuner.batches(data):
            tuner.step(train_step(model, opt, batch))
        return tuner

    def backend():
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        # Stage 0's probes see the same batches the inline run's cache replays.
        prober = LocalProber(
            model, opt, train_step, lambda stage, index: (task.batch_at(i) for i in range(10**6))
        )
        return AutoLRS(
            model,
            opt,
            min_lr=1e-3,
            max_lr=1.0,
            total_steps=steps,
            seed=1,
            prober=prober,
            strategy="forecast",
        )

    a, b = inline(), backend()
    pa = [p for p in a.log.of_type("probe") if p["stage"] == 0]
    pb = b.log.of_type("probe")
    assert [p["lr"] for p in pa] == [p["lr"] for p in pb]
    assert [p["forecast"] for p in pa] == pytest.approx([p["forecast"] for p in pb])
    assert a.log.of_type("decision")[0]["lr"] == b.log.of_type("decision")[0]["lr"]
    assert b.phase is Phase.EXPLOIT and b.global_step == b.search_steps > 0


def test_local_prober_restores_after_a_failing_probe(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    calls = {"n": 0}

    def flaky_step(m, o, batch):
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("worker lost")
        return train_step(m, o, batch)

    prober = LocalProber(model, opt, flaky_step, lambda s, i: task.stream())
    tuner = AutoLRS(
        model,
        opt,
        min_lr=1e-3,
        max_lr=1.0,
        total_steps=400,
        prober=prober,
        keep_winner=False,
        strategy="forecast",
    )
    failed = [p for p in tuner.log.of_type("probe") if p["reason"].startswith("probe failed")]
    assert failed and "worker lost" in failed[0]["reason"]
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())
    assert tuner.phase is Phase.EXPLOIT


def _prober_run(task, log_path, upto=None, state=None):
    """A forecast-strategy run on a LocalProber, its loop's batches by step; stopped
    after ``upto`` loop steps (a checkpoint), or resumed from ``state`` as the README
    says: model and optimizer loaded, the tuner rebuilt alike, then its state loaded."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    prober = LocalProber(model, opt, train_step, lambda s, i: task.stream())
    tuner = AutoLRS(
        model, opt, min_lr=1e-3, max_lr=1.0, total_steps=400, prober=prober,
        strategy="forecast", log_path=log_path,
    )  # fmt: skip
    k = 0
    if state is not None:
        tuner.load_state_dict(state["autolr"])
        k = state["k"]
    while not tuner.finished:
        tuner.step(train_step(model, opt, task.batch_at(k)))
        k += 1
        if k == upto:
            saved = {"model": model.state_dict(), "opt": opt.state_dict(), "k": k}
            return copy.deepcopy({**saved, "autolr": tuner.state_dict()})
    return model


def test_a_run_on_a_prober_resumes_as_the_readme_says_and_replays(task, tmp_path):
    # Rebuilt, the tuner runs its first stage's search on the prober at construction;
    # load_state_dict undoes it: the model is the checkpoint's, and the log replays.
    whole = _prober_run(task, tmp_path / "whole.jsonl")
    log = tmp_path / "cut.jsonl"
    state = _prober_run(task, log, upto=150)
    resumed = _prober_run(task, log, state=state)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    from autolr.offline.replay import replay_run

    result = replay_run(log)
    assert result.matches, [m.describe() for m in result.mismatches]


def test_an_interrupted_prober_search_leaves_a_tuner_that_searches_on(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    calls = []

    def interrupted(m, o, batch):
        calls.append(1)
        if len(calls) == 30:  # as a Ctrl-C in the second candidate
            raise KeyboardInterrupt
        return train_step(m, o, batch)

    prober = LocalProber(model, opt, interrupted, lambda s, i: task.stream())
    tuner = AutoLRS(model, opt, total_steps=800, prober=prober)  # the race runs on it
    stream = task.stream()
    with pytest.raises(KeyboardInterrupt), tuner:
        for batch in stream:
            tuner.step(train_step(model, opt, batch))
    for batch in stream:
        tuner.step(train_step(model, opt, batch))
        if tuner.finished:
            break
    assert tuner.finished and all(torch.isfinite(p).all() for p in model.parameters())
    lrs = [c["lr"] for c in tuner.log.of_type("decision")[0]["candidates"]]
    assert len(lrs) == len(set(lrs)) >= 3 and lrs == sorted(lrs, reverse=True)


def test_local_prober_keeps_the_param_groups_ratios_and_needs_the_val_fn_asked_for(task):
    model = make_model()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.08},
            {"params": model[2].parameters(), "lr": 0.02},
        ]
    )
    seen = []

    def step(m, o, batch):
        seen.append(o.param_groups[0]["lr"] / o.param_groups[1]["lr"])
        return train_step(m, o, batch)

    prober = LocalProber(model, opt, step, lambda s, i: task.stream())
    AutoLRS(
        model, opt, min_lr=1e-3, max_lr=1.0, total_steps=400, prober=prober, strategy="forecast"
    )  # its first stage's search runs here, on the prober
    assert seen and all(r == pytest.approx(4.0) for r in seen)
    with pytest.raises(ConfigError, match="LocalProber was given no val_fn"):
        AutoLRS(
            model,
            opt,
            min_lr=1e-3,
            max_lr=1.0,
            total_steps=400,
            strategy="forecast",
            val_fn=lambda: 1.0,
            prober=LocalProber(model, opt, train_step, lambda s, i: task.stream()),
        )


def test_a_backend_end_state_that_does_not_fit_the_optimizer_is_never_restored(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    class Garbled(LocalProber):
        def run(self, snapshot, requests):
            outs = super().run(snapshot, requests)
            for out in outs:
                for state in out.end_state.optimizer["state"].values():
                    state["momentum_buffer"] = torch.zeros(3)  # no parameter's shape
            return outs

    prober = Garbled(model, opt, train_step, lambda s, i: task.stream())
    tuner = AutoLRS(
        model, opt, min_lr=1e-3, max_lr=1.0, total_steps=400, prober=prober, strategy="forecast"
    )
    assert tuner.phase is Phase.EXPLOIT and not tuner.log.of_type("decision")[0]["from_probe"]
    for batch in task.stream():  # the user's optimizer steps on
        tuner.step(train_step(model, opt, batch))
        if tuner.global_step >= 200:
            break
    assert all(s["momentum_buffer"].shape == p.shape for p, s in opt.state.items())


def test_no_budget_uses_paper_stage_sizes():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0)
    assert tuner.stage is not None
    assert (tuner.stage.spec.tau, tuner.stage.spec.tau_probe, tuner.stage.spec.probes) == (
        1000,
        100,
        10,
    )
    assert tuner.plan.stage(5, None).tau == 8000
    assert not tuner.finished


def test_warmup_ramps_then_searches(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(
        model,
        opt,
        min_lr=1e-3,
        max_lr=1.0,
        total_steps=500,
        warmup_steps=20,
        warmup_lr=0.1,
        strategy="forecast",
    )
    lrs = []
    for i in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        tuner.step(train_step(model, opt, task.batch_at(i)))
    assert lrs == pytest.approx([0.1 * (i + 1) / 20 for i in range(20)])
    assert tuner.phase is Phase.PROBE


def test_step_after_finish_warns_and_keeps_lr(task, caplog):
    tuner, *_ = _run(task, steps=300)
    lr = tuner.lr
    tuner.step(0.1)
    assert tuner.lr == lr and "after the budget was spent" in caplog.text


def test_a_stage_that_ends_above_its_start_is_rolled_back(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(
        model,
        opt,
        min_lr=1e-3,
        max_lr=1.0,
        total_steps=1000,
        seed=0,
        guard_factor=4.0,
        strategy="forecast",
    )
    for batch in task.stream():
        loss = train_step(model, opt, batch)
        stage = tuner.stage
        if tuner.phase is Phase.EXPLOIT and tuner.stage_index == 1 and stage.ref_loss:
            # Clearly worse than the start (beyond the noise), never past guard_factor:
            # only the check at the end of the exploit sees it.
            loss = loss * 0 + stage.ref_loss * 2.5
        tuner.step(loss)
        if tuner.finished or tuner.log.of_type("rollback"):
            break
    (rb,) = tuner.log.of_type("rollback")
    assert rb["reason"] == "the stage ended above its start loss"
    assert tuner.restored and tuner.lr != rb["lr"]


def test_later_stages_probe_within_the_trust_region(task):
    tuner, *_ = _run(task, steps=1000, lr_trust=2.0, strategy="forecast")
    starts = tuner.log.of_type("stage_start")
    decisions = tuner.log.of_type("decision")
    probes = tuner.log.of_type("probe")
    assert len(starts) >= 3
    assert starts[0]["lr_bounds"] is None  # the first stage searches the whole range
    for start in starts[1:]:
        s = start["stage"]
        last = [d for d in decisions if d["stage"] == s - 1][-1]["lr"]
        low, high = start["lr_bounds"]
        assert low == pytest.approx(max(1e-3, last / 2))
        assert high == pytest.approx(min(1.0, last * 2))
        lrs = [p["lr"] for p in probes if p["stage"] == s]
        assert lrs and all(low * (1 - 1e-9) <= lr <= high * (1 + 1e-9) for lr in lrs)


def test_without_trust_region_every_stage_searches_the_whole_range(task):
    tuner, *_ = _run(task, steps=1000, lr_trust=None, probes=5)
    starts = tuner.log.of_type("stage_start")
    assert len(starts) >= 3 and all(s["lr_bounds"] is None for s in starts)
    by_stage: dict[int, list[float]] = {}
    for p in tuner.log.of_type("probe"):
        by_stage.setdefault(p["stage"], []).append(p["lr"])
    # The space-filling start of each stage spans the range: a ratio a 2x region cannot hold.
    assert all(max(lrs) / min(lrs) > 4.0 for lrs in by_stage.values() if len(lrs) >= 3)


def test_a_stage_that_fell_back_leaves_the_next_one_the_whole_range(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(
        model, opt, min_lr=1e-3, max_lr=1.0, total_steps=1000, seed=0, strategy="forecast"
    )
    for batch in task.stream():
        loss = train_step(model, opt, batch)
        if tuner.phase is Phase.PROBE and tuner.stage_index == 0:
            loss = loss * math.nan  # every candidate of the first stage fails
        tuner.step(loss)
        if tuner.finished or len(tuner.log.of_type("stage_start")) == 2:
            break
    assert tuner.log.of_type("decision")[0]["reason"] == "fallback"
    assert tuner.log.of_type("stage_start")[1]["lr_bounds"] is None
    assert tuner.strategy.proposer.bounds == (0.0, 1.0)


def _two_failed_exploits(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(
        model, opt, min_lr=1e-3, max_lr=1.0, total_steps=800, seed=4, probes=5, strategy="forecast"
    )
    for batch in task.stream():
        loss = train_step(model, opt, batch)
        if tuner.phase is Phase.EXPLOIT and len(tuner.log.of_type("rollback")) < 2:
            loss = loss * math.nan
        tuner.step(loss)
        if tuner.finished or tuner.stage_index > 0:
            break
    return tuner.log.of_type("decision")


def test_after_a_rollback_only_smaller_lrs_are_tried(task):
    decisions = _two_failed_exploits(task)
    probes = sorted(c["lr"] for c in decisions[0]["candidates"] if c["forecast"] is not None)
    # The first choice is not the smallest candidate, so a smaller one exists to fall to.
    assert decisions[0]["lr"] > probes[0]
    assert decisions[1]["reason"] == "rollback"
    # Every later candidate is below every LR rolled back before it; with none left
    # below, the fallback is min_lr (half of it once min_lr went non-finite).
    assert any(d["reason"] == "fallback" for d in decisions)
    for i, d in enumerate(decisions[1:], start=1):
        if d["reason"] == "fallback":
            assert d["lr"] in (1e-3, 5e-4)
        else:
            assert d["lr"] < min(c["lr"] for c in decisions[:i])


class Plateau(nn.Module):
    """A loss flat at its start level until the LRs taken add up to ``escape``, then falling.

    What a network on its initial plateau shows a short probe: nothing, at any LR.
    The state lives in a buffer, so snapshots save and restore it.
    """

    travelled: torch.Tensor

    def __init__(self, escape: float, seed: int = 0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.escape = escape
        self.register_buffer("travelled", torch.tensor(0.0, dtype=torch.float64))
        self.gen = torch.Generator().manual_seed(seed)

    def train_step(self, lr: float) -> float:
        self.travelled += lr
        past = max(0.0, float(self.travelled) - self.escape)
        return 2.3 * math.exp(-past) * (1 + 0.01 * float(torch.randn((), generator=self.gen)))


def test_a_stage_that_kept_no_gain_moves_the_next_search_up(caplog):
    model = Plateau(escape=40.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tuner = AutoLRS(
        model, opt, min_lr=1e-3, max_lr=10.0, total_steps=1200, seed=0, strategy="forecast"
    )
    with caplog.at_level("WARNING", logger="autolr.controller"):
        while not tuner.finished:
            tuner.step(model.train_step(opt.param_groups[0]["lr"]))
    starts = {r["stage"]: r for r in tuner.log.of_type("stage_start")}
    ends = {r["stage"]: r for r in tuner.log.of_type("exploit_end")}
    stalled = [s for s, r in ends.items() if r["actual_train"] >= 0.98 * 2.3 and s + 1 in starts]
    assert stalled, "the plateau should outlast the first stage"
    for s in stalled:
        low, high = starts[s + 1]["lr_bounds"]
        assert low == pytest.approx(ends[s]["lr"]) and high > 2 * ends[s]["lr"]
    assert "kept no gain over the start of training" in caplog.text
    assert min(r["actual_train"] for r in ends.values()) < 1.0  # it left the plateau


def test_a_stage_that_gained_keeps_the_trust_region_around_its_lr(task, caplog):
    with caplog.at_level("WARNING", logger="autolr.controller"):
        tuner, *_ = _run(task, steps=600)
    assert "kept no gain" not in caplog.text
    ends = {r["stage"]: r for r in tuner.log.of_type("exploit_end")}
    for rec in tuner.log.of_type("stage_start"):
        prev = ends.get(rec["stage"] - 1)
        if prev is not None and rec["lr_bounds"] is not None:
            low, high = rec["lr_bounds"]
            assert low < prev["lr"] < high


def _guard_over(losses: list[float], ref: float = 2.30) -> str | None:
    """The exploit guard's verdict fed ``losses`` one by one (stage start loss ``ref``)."""
    spec = StageSpec(index=1, tau=100, tau_probe=10, probes=3, exploit_steps=len(losses))
    stage = StageState(spec=spec, start_step=0, progress=0.1, ref_loss=ref)
    for value in losses:
        stage.exploit_losses.append(value)
        reason = exploit_guard(stage, guard_factor=1.5)
        if reason is not None:
            return reason
    return None


def test_a_small_gain_given_back_is_a_killed_network():
    # A network leaves its plateau at a too-large LR: the loss falls by a fifth (not
    # the third the blow-up factor asks), then dies back to the plateau level.
    gen = torch.Generator().manual_seed(0)
    wiggle = [0.01 * float(v) for v in torch.randn(60, generator=gen)]
    losses = [2.30 + w for w in wiggle[:20]]
    losses += [2.30 - 0.5 * min(i, 10) / 10 + w for i, w in enumerate(wiggle[20:40])]
    losses += [2.31 + w for w in wiggle[40:]]
    assert _guard_over(losses) == "loss fell, then rose back to the stage start loss"


def test_a_plateau_s_noise_is_no_gain_given_back():
    gen = torch.Generator().manual_seed(1)
    losses = [2.30 * (1 + 0.01 * float(v)) for v in torch.randn(400, generator=gen)]
    assert _guard_over(losses) is None


def test_a_rollback_goes_back_to_the_exploits_best_state_also_after_a_resume(task):
    """The guard's rollback restores the exploit's lowest-loss state, not the stage's
    start, so the exploit's good steps are kept; the state survives ``state_dict``."""

    def build(source=None):
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        if source is not None:
            model.load_state_dict(source[0].state_dict())
            opt.load_state_dict(source[1].state_dict())
        tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=800, seed=0)
        if source is not None:
            tuner.load_state_dict(source[2].state_dict())
        return model, opt, tuner

    runs = [build()]
    seen: dict[int, list[torch.Tensor]] = {}  # step -> the first run's weights after it
    exploit = 0
    for batch in task.stream():
        model, opt, tuner = runs[0]
        if tuner.phase is Phase.EXPLOIT and tuner.stage_index == 0:
            exploit += 1
            if exploit == 100:  # mid-exploit, a best state kept: a resumed copy joins
                held_from = tuner.log.of_type("decision")[0]["step"]
                assert tuner.state_dict()["snapshot"]["step"] > held_from
                runs.append(build(runs[0]))
        for model, opt, tuner in runs:
            loss = train_step(model, opt, batch)
            if exploit > 150:
                loss = loss * 0 + 100.0  # a finite loss far above the stage start
            if tuner is runs[0][2]:
                seen[tuner.global_step + 1] = [p.detach().clone() for p in model.parameters()]
            tuner.step(loss)
        if runs[0][2].log.of_type("rollback"):
            break
    rollbacks = [r[2].log.of_type("rollback") for r in runs]
    assert len(runs) == 2 and all(len(r) == 1 for r in rollbacks)
    back = rollbacks[0][0]["back_to"]
    exploit_start = runs[0][2].log.of_type("decision")[0]["step"]
    assert exploit_start + 50 < back < exploit_start + 150
    assert rollbacks[1][0]["back_to"] == back
    for model, _, _ in runs:
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), seen[back]))


def test_the_forecast_strategy_rolls_back_to_the_stage_snapshot(task):
    """Its short stages go back to their start: a best window of an LR picked by a short
    probe's forecast can be a chaotic state (BENCHMARKS.md)."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(
        model, opt, min_lr=1e-3, max_lr=1.0, total_steps=800, seed=0, strategy="forecast"
    )
    blow_up_the_hold(task, model, opt, tuner, after=40)
    start = tuner.log.of_type("stage_start")[0]["step"]
    assert tuner.log.of_type("rollback")[0]["back_to"] == start
