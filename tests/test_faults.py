"""Fault injection: the ways a run could lose or corrupt the user's model or the
controller's state. Each test breaks one thing and checks, bit for bit where it
matters, that nothing was lost."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch

from autolr import AutoLRS, ConfigError, InputError, Phase, StateError
from autolr.errors import AutoLRWarning, NonFiniteWarning, SchedulerConflictWarning
from tests.conftest import make_model, train_step


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _finite(model):
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# ------------------------------------------------------ non-finite weights
def test_nan_in_the_final_anneal_never_ends_on_nan_weights(task, tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    log = tmp_path / "run.jsonl"
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=600, seed=0, log_path=log)
    poisoned = 0
    for batch in task.stream():
        loss = train_step(model, opt, batch)
        if tuner.phase is Phase.ANNEAL and poisoned < 3:
            # The anneal's step wrecks the weights, as a diverging LR would.
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(math.nan)
            loss = loss * math.nan
            poisoned += 1
        tuner.step(loss)
        if tuner.finished:
            break
    assert poisoned == 3
    assert _finite(model)
    anneal_rollbacks = [
        r for r in tuner.log.of_type("rollback") if r["reason"] == "non-finite loss in the anneal"
    ]
    assert len(anneal_rollbacks) == 3
    assert tuner._lr_scale == 0.125  # halved once per rollback
    # The anneal's losses are logged, its NaNs as null, and the log replays exactly.
    anneal = tuner.log.of_type("run_end")[0]["anneal_losses"]
    start = tuner.log.of_type("phase")[-2]
    assert start["phase"] == "anneal" and len(anneal) == 600 - start["step"]
    assert anneal[:3] == [None, None, None] and None not in anneal[3:]
    from autolr.offline.replay import replay_run

    assert replay_run(log).matches


def test_a_run_whose_last_step_is_nan_ends_on_the_last_finite_state(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=400, anneal_fraction=0.0)
    for batch in task.stream():
        loss = train_step(model, opt, batch)
        if tuner.global_step == 399:
            with torch.no_grad():
                model[0].weight.fill_(math.inf)
        tuner.step(loss)
        if tuner.finished:
            break
    assert _finite(model)


def _overflow_run(task, overflow_at=None):
    """A run whose update at step ``overflow_at`` leaves non-finite weights (its
    gradient overflowed) after a finite loss: the loss handed to the tuner is taken
    before its update. Returns the model, the tuner and the steps at which the hold
    took its best state."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, total_steps=400)
    capture, held = tuner._capture_live, []

    def watched():
        if tuner.phase is Phase.EXPLOIT:
            held.append(tuner.global_step)
        return capture()

    tuner._capture_live = watched
    for batch in task.stream():
        loss = train_step(model, opt, batch)
        if tuner.global_step + 1 == overflow_at:
            with torch.no_grad():
                model[0].weight.fill_(math.inf)
        tuner.step(loss)
        if tuner.finished:
            break
    return model, tuner, held


@pytest.mark.parametrize("where", ["final decay", "hold's best"])
def test_non_finite_weights_after_a_finite_loss_are_never_kept_as_a_snapshot(task, where):
    # The snapshot a rollback or a recovery goes back to is taken of the live weights:
    # at the start of the final decay, and at the hold's best windowed loss.
    _, clean, held = _overflow_run(task)
    anneal = [r["step"] for r in clean.log.of_type("phase") if r["phase"] == "anneal"]
    at = anneal[0] if where == "final decay" else held[0]
    model, tuner, _ = _overflow_run(task, overflow_at=at)
    assert tuner.finished and _finite(model)


def test_nan_in_warmup_goes_back_to_the_start_not_into_a_snapshot(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    start = _weights(model)
    tuner = AutoLRS(
        model, opt, min_lr=1e-3, max_lr=1.0, total_steps=800, warmup_steps=50, strategy="forecast"
    )
    for batch in task.stream():
        loss = train_step(model, opt, batch)
        if tuner.phase is Phase.WARMUP and tuner.global_step == 20:
            with torch.no_grad():
                model[0].weight.fill_(math.nan)
            loss = loss * math.nan
            tuner.step(loss)
            assert _same(_weights(model), start)  # back at the finite start
            continue
        tuner.step(loss)
        if tuner.finished:
            break
    assert _finite(model)
    (rb,) = [r for r in tuner.log.of_type("rollback") if "warmup" in r["reason"]]
    assert rb["step"] == 21
    # No stage snapshot holds non-finite weights, so no exploit rollback repeats forever.
    assert len(tuner.log.of_type("rollback")) < 10


def test_when_every_lr_diverges_the_fallback_keeps_going_down(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=600, strategy="forecast")
    for batch in task.stream():
        loss = train_step(model, opt, batch)
        if tuner.phase in (Phase.PROBE, Phase.EXPLOIT) and tuner.stage_index == 0:
            loss = loss * math.nan
        tuner.step(loss)
        if tuner.finished or tuner.stage_index > 0:
            break
    fallbacks = [d["lr"] for d in tuner.log.of_type("decision") if d["reason"] == "fallback"]
    assert fallbacks[0] == 1e-3
    assert all(b == a / 2 for a, b in zip(fallbacks, fallbacks[1:]))


# --------------------------------------------------------- param groups
def test_frozen_group_stays_frozen_in_probes_and_exploits(task):
    model = make_model()
    first, *rest = list(model.parameters())
    opt = torch.optim.SGD([{"params": [first], "lr": 0.0}, {"params": rest, "lr": 0.01}])
    frozen = first.detach().clone()
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=500)
    for batch in task.stream():
        loss = train_step(model, opt, batch)
        tuner.step(loss)
        assert opt.param_groups[0]["lr"] == 0.0
        if tuner.finished:
            break
    assert torch.equal(first.detach(), frozen)


def test_parameters_outside_the_model_are_refused(task):
    net = torch.nn.Sequential(make_model(), torch.nn.Linear(1, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=r"updates 2 parameter tensor\(s\) \(2 values\)"):
        AutoLRS(net[0], opt, min_lr=1e-3, max_lr=1.0)


def test_an_attached_scheduler_is_detected(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.warns(SchedulerConflictWarning, match="LR scheduler attached"):
        tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=400)
    with pytest.warns(SchedulerConflictWarning, match="changed outside autolr"):
        for batch in task.stream():
            loss = train_step(model, opt, batch)
            tuner.step(loss)
            sched.step()  # after tuner.step: it overwrites autolr's LR
            if tuner.global_step == 5:
                break


# --------------------------------------------------------- state loading
def _state_after(task, steps=120, **kw):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=800, seed=1, **kw)
    for i, batch in enumerate(task.stream()):
        tuner.step(train_step(model, opt, batch))
        if i + 1 == steps:
            break
    return model, opt, tuner


def _fresh(task):
    model, opt, tuner = _state_after(task, steps=10)
    return tuner, copy.deepcopy(tuner.state_dict())


def _broken_states(state, task):
    other_model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    same_model = make_model()
    other_opt = torch.optim.Adam(same_model.parameters(), lr=1e-3)
    adam = AutoLRS(same_model, other_opt, min_lr=1e-3, max_lr=1.0, total_steps=800)
    shape = AutoLRS(
        other_model,
        torch.optim.SGD(other_model.parameters(), lr=0.05, momentum=0.9),
        min_lr=1e-3,
        max_lr=1.0,
        total_steps=800,
    )
    truncated = {k: v for i, (k, v) in enumerate(state.items()) if i < 8}
    missing = {k: v for k, v in state.items() if k != "recent"}
    bad_stage = {**state, "stage": {"spec": {"index": "x"}}}
    bad_snapshot = {**state, "snapshot": {"model": 3}}
    rng = {k: v for k, v in state["snapshot"]["rng"].items() if k != "numpy"}
    bad_rng = {**state, "snapshot": {**state["snapshot"], "rng": rng}}
    other = shape.state_dict()["snapshot"]
    bad_precool = {**state, "precool": other}
    return [
        (bad_rng, r"snapshot does not fit this run: its RNG state is malformed"),
        (bad_precool, r"precool does not fit this run: model entry"),
        (truncated, r"missing the key"),
        (missing, r"missing the key 'recent'"),
        (bad_stage, r"malformed"),
        (bad_snapshot, r"malformed"),
        ({**state, "schema_version": 99}, r"schema_version=99"),
        ([1, 2], r"must be a mapping, got list"),
    ], [(adam, r"another optimizer kind"), (shape, r"shape")]


def test_a_bad_state_is_refused_whole_and_leaves_the_tuner_as_it_was(task):
    _, _, good = _state_after(task)
    state = good.state_dict()
    target_model, target_opt, target = _state_after(task, steps=60)
    before = copy.deepcopy(target.state_dict())
    weights = _weights(target_model)
    bad, _ = _broken_states(state, task)
    for broken, pattern in bad:
        with pytest.raises(StateError, match=pattern):
            target.load_state_dict(broken)
        after = target.state_dict()
        assert after.keys() == before.keys()
        for key in before:
            if key in ("snapshot", "winner", "precool"):  # tensors
                assert (after[key] is None) == (before[key] is None)
                if before[key] is not None:
                    assert _same(after[key]["model"], before[key]["model"])
            else:
                assert after[key] == before[key], key
        assert _same(_weights(target_model), weights)
    # The tuner goes on along its own trajectory.
    assert target.global_step == 60


def test_a_state_from_another_model_or_optimizer_kind_is_refused(task):
    _, _, good = _state_after(task)
    state = good.state_dict()
    _, mismatched = _broken_states(state, task)
    for tuner, pattern in mismatched:
        step = tuner.global_step
        with pytest.raises(StateError, match=pattern):
            tuner.load_state_dict(state)
        assert tuner.global_step == step


def test_resume_into_another_range_uses_the_saved_range_everywhere(task):
    _, _, good = _state_after(task, strategy="forecast")  # its GP has the range
    state = good.state_dict()
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    other = AutoLRS(
        model, opt, min_lr=1e-5, max_lr=10.0, total_steps=800, seed=7, strategy="forecast"
    )
    other.load_state_dict(state)
    assert other.config.min_lr == 1e-3 and other.config.seed == 1
    prop = other.strategy.proposer
    assert prop.to_lr(0.0) == pytest.approx(1e-3) and prop.to_lr(1.0) == pytest.approx(1.0)


# ---------------------------------------------------- exceptions mid-probe
def test_exception_before_a_probes_first_step_restores_the_snapshot(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    stream = task.stream()
    with pytest.raises(RuntimeError, match="boom"):
        with AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=400):
            snap = _weights(model)  # stage 0 was snapshotted at construction
            train_step(model, opt, next(stream))  # a probe step at the probe's LR
            raise RuntimeError("boom")
    assert _same(_weights(model), snap)


def test_an_exception_between_two_probes_leaves_a_tuner_that_searches_on(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, total_steps=400)
    propose, calls = tuner.strategy.propose, []

    def interrupted(q):
        calls.append(q)
        if len(calls) == 2:  # as a Ctrl-C while the second candidate is chosen
            raise KeyboardInterrupt
        return propose(q)

    tuner.strategy.propose = interrupted
    stream = task.stream()
    with pytest.raises(KeyboardInterrupt), tuner:
        for batch in stream:
            tuner.step(train_step(model, opt, batch))
    assert tuner.phase is Phase.PROBE and tuner.probe is not None
    for batch in stream:
        tuner.step(train_step(model, opt, batch))
        if tuner.finished:
            break
    assert tuner.finished and _finite(model)
    (decision,) = tuner.log.of_type("decision")
    assert len(decision["candidates"]) == len({c["lr"] for c in decision["candidates"]}) >= 3


def test_a_tuner_reused_after_a_with_block_starts_the_probe_over(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    stream = task.stream()
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=400, strategy="forecast")
    with pytest.raises(RuntimeError):
        with tuner:
            for _ in range(3):
                tuner.step(train_step(model, opt, next(stream)))
            raise RuntimeError("boom")
    assert tuner.probe is not None and tuner.probe.steps == 0
    while tuner.stage_index == 0 and tuner.phase is Phase.PROBE:
        tuner.step(train_step(model, opt, next(stream)))
    first = tuner.log.of_type("probe")[0]
    assert first["steps"] == tuner.stage.spec.tau_probe  # no old losses mixed in


def test_a_val_fn_that_raises_mid_probe_leaves_the_probe_consistent(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    calls = {"n": 0}

    def val_fn():
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("validation down")
        return 1.0 / calls["n"]

    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=600, val_fn=val_fn)
    raised = 0
    for batch in task.stream():
        loss = train_step(model, opt, batch)
        try:
            tuner.step(loss)
        except RuntimeError:
            raised += 1
        if tuner.probe is not None:
            assert len(tuner.probe.t) == len(tuner.probe.losses)
        if tuner.finished or len(tuner.log.of_type("decision")) > 0:
            break
    assert raised == 1
    assert tuner.log.of_type("decision")  # the stage was decided, no crash


# ----------------------------------------------------------- clear errors
@pytest.mark.parametrize(
    ("kw", "error", "pattern"),
    [
        ({"log_path": 123}, ConfigError, r"log_path must be a path .* got 123"),
        ({"val_fn": 0.5}, ConfigError, r"val_fn must be a callable .* got 0\.5"),
        ({"extra_state": {"s": 3}}, ConfigError, r"extra_state\['s'\] needs state_dict"),
        ({"extra_state": 3}, ConfigError, r"extra_state must map names .* got int"),
        ({"prober": object()}, ConfigError, r"prober must be a ProbeBackend .* got object"),
        ({"total_steps": 10**400}, ConfigError, r"total_steps must be at most"),
        ({"warmup_lr": 2.0}, ConfigError, r"warmup_lr must be at most max_lr"),
        ({"snapshot_device": "meta"}, ConfigError, r"snapshot_device must be .* got 'meta'"),
        pytest.param(
            {"snapshot_device": "cuda"},
            ConfigError,
            r"snapshot_device='cuda', but CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here"),
        ),
    ],
)
def test_bad_parts_get_named_errors(kw, error, pattern, tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(error, match=pattern):
        AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, **kw)


def test_an_optimizer_group_without_lr_is_named():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    del opt.param_groups[0]["lr"]
    with pytest.raises(InputError, match=r"param group 0 has no 'lr' entry"):
        AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0)


def test_numpy_numbers_are_accepted():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, min_lr=np.float64(1e-3), max_lr=1.0, total_steps=np.int64(400))
    assert tuner.config.total_steps == 400
    tuner.step(np.array([0.5]))
    tuner.step(np.float32(0.5))
    assert tuner.global_step == 2


@pytest.mark.parametrize(
    "loss",
    [np.array(["0.5"]), torch.tensor([1 + 2j]), torch.tensor(True), np.array([True]), "0.5"],
)
def test_a_loss_that_is_no_real_number_is_named(loss):
    model = make_model()
    tuner = AutoLRS(model, torch.optim.SGD(model.parameters(), lr=0.05), total_steps=400)
    with pytest.raises(InputError, match="loss must be a number or a one-element"):
        tuner.step(loss)
    assert tuner.global_step == 0


def test_an_integer_loss_beyond_a_float_is_an_infinite_loss(task):
    model = make_model()
    tuner = AutoLRS(model, torch.optim.SGD(model.parameters(), lr=0.05), total_steps=400)
    tuner.step(10**400)  # as any infinite loss: the range test goes on or stops, no crash
    assert tuner.global_step == 1 and tuner.log.of_type("range_test") == []


def test_negative_losses_with_the_default_floor_give_a_hint():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=400)
    with pytest.warns(AutoLRWarning, match=r"below loss_floor=0.*loss_floor=None"):
        tuner.step(-0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tuner.step(-0.3)  # once is enough


def test_no_nonfinite_warning_on_a_healthy_run(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=0.3, total_steps=300)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteWarning)
        for batch in task.stream():
            tuner.step(train_step(model, opt, batch))
            if tuner.finished:
                break


def test_a_deeply_nested_log_line_is_a_named_format_error(tmp_path):
    from autolr import LogFormatError
    from autolr.offline.reader import read_records

    path = tmp_path / "deep.jsonl"
    path.write_text('{"type": "run_start", "config": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    for strict in (True, False):
        with pytest.raises(LogFormatError, match=r"deep\.jsonl, line 1: nested too deeply"):
            read_records(path, strict=strict)
