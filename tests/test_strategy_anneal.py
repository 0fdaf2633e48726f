"""The annealed strategy and the LR range test: no range needed, never a dead network."""

from __future__ import annotations

import json
import math
import statistics
import warnings
from pathlib import Path

import pytest
import torch

from autolr import AutoLRS, LocalProber, Phase, rangetest
from autolr.config import RACE_MIN_PROBES, SHORT_ANNEAL_FRACTION, AutoLRSConfig
from autolr.errors import RangeWarning
from autolr.offline.logs import load_run
from autolr.offline.replay import replay_run
from autolr.offline.report import _settings_line, effective_settings
from autolr.plan import StageSpec
from autolr.probing import ProbeRecord
from autolr.rangetest import STILL, RangeTest
from autolr.stage import StageState, climb, robust_sd
from autolr.strategy import AnnealStrategy, cooldown_gain, decay_factor, score_error
from tests.conftest import make_model, train_step


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _run(task, steps=1000, tuner_kw=None, stop=None):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, total_steps=steps, **(tuner_kw or {}))
    for batch in task.stream():
        tuner.step(train_step(model, opt, batch))
        if tuner.finished or (stop is not None and stop(tuner)):
            break
    return model, opt, tuner


def _resumed(model, opt, tuner, steps):
    """A new model, optimizer and annealed controller with the state of ``tuner``'s run."""
    model2 = make_model()
    model2.load_state_dict(model.state_dict())
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05)
    opt2.load_state_dict(opt.state_dict())
    resumed = AutoLRS(model2, opt2, total_steps=steps, strategy="anneal")
    resumed.load_state_dict(tuner.state_dict())
    return model2, opt2, resumed


def test_no_range_needed_the_range_test_sets_it_and_restores_the_start(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    start = _weights(model)
    tuner = AutoLRS(model, opt, total_steps=800, strategy="forecast")
    assert tuner.phase is Phase.RANGE and tuner.search_range is None
    lrs = []
    stream = task.stream()
    while tuner.phase is Phase.RANGE:
        lrs.append(opt.param_groups[0]["lr"])
        tuner.step(train_step(model, opt, next(stream)))
    # The ramp grows geometrically, its steps count, and the model is back at the start.
    assert all(b > a for a, b in zip(lrs, lrs[1:]))
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    (rec,) = tuner.log.of_type("range_test")
    assert tuner.search_steps == tuner.global_step == len(rec["losses"]) == len(lrs)
    low, high = tuner.search_range
    assert rec["lr_range"] == [low, high] and low < high
    # The forecast strategy searches around the LR at the lowest loss.
    assert low == pytest.approx(rec["best_lr"] / 10) and high == pytest.approx(3 * rec["best_lr"])
    assert tuner.strategy.proposer.to_lr(1.0) == pytest.approx(high)


def test_a_given_range_is_narrowed_by_the_range_test(task):
    _, _, tuner = _run(task, 800, {"min_lr": 1e-3, "max_lr": 0.05, "strategy": "anneal"})
    rec = tuner.log.of_type("range_test")[0]
    low, high = tuner.search_range
    assert 1e-3 <= low < high <= 0.05
    assert high == min(0.05, rec["best_lr"])


def test_a_max_lr_that_cuts_the_ladder_races_each_lr_once_and_is_named(task):
    _, _, free = _run(task, 800)
    best = free.log.of_type("range_test")[0]["best_lr"]
    cap = best / 2.5  # the ladder [best / 8, best] cut at best / 2.5: room for 3 rungs
    with pytest.warns(RangeWarning, match=rf"above max_lr={cap}"):
        _, _, tuner = _run(task, 800, {"min_lr": 1e-4, "max_lr": cap})
    (decision,) = tuner.log.of_type("decision")
    lrs = [c["lr"] for c in decision["candidates"]]
    assert lrs == pytest.approx([cap, cap / 2, best / 8])
    assert len(tuner.log.of_type("probe")) == 3


def test_a_bad_batch_at_the_ramp_s_tiny_lr_is_passed_over_not_read_as_a_blow_up(task):
    def run(nan_at=None, **kw):
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        tuner = AutoLRS(model, opt, total_steps=800, **kw)
        for batch in task.stream():
            loss = train_step(model, opt, batch)
            if tuner.global_step + 1 == nan_at:
                loss = float("nan")
                with torch.no_grad():  # as its update would have left them
                    model[0].weight.fill_(math.nan)
            tuner.step(loss)
            if tuner.phase is not Phase.RANGE:
                return tuner, model

    clean, _ = run()
    tuner, model = run(nan_at=3)
    (test,) = tuner.log.of_type("range_test")
    assert test["losses"][2] is None and test["best_lr"] == pytest.approx(
        clean.log.of_type("range_test")[0]["best_lr"], rel=0.5
    )
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # Past the tiny LRs a non-finite loss ends the ramp; too few losses read: named.
    with pytest.warns(RangeWarning, match="too few to read a range from"):
        run(nan_at=6, range_steps=16)


def test_range_test_stops_when_a_plateau_gives_back_its_gain():
    test = RangeTest(steps=200)
    losses = [2.30] * 8 + [2.2, 2.0, 1.8, 1.7, 1.7, 1.9, 2.1, 2.25] + [2.3] * 30
    reasons = [test.add(test.lr(i), v) for i, v in enumerate(losses)]
    stopped = next(i for i, r in enumerate(reasons) if r is not None)
    # Back at the plateau level, nothing blew up: the no-progress rule sees it.
    assert reasons[stopped].startswith("no progress") and stopped < len(losses) - 1
    assert test.lrs[8] <= test.best_lr <= test.lrs[12]


def test_range_test_without_a_clear_drop_takes_a_tenth_of_the_stop_lr():
    test = RangeTest(steps=30)
    for i in range(30):
        if test.add(test.lr(i), 2.30 + 0.01 * (i % 2)) is not None:
            break
    assert test.best_lr == pytest.approx(test.lrs[-1] / 10)


def _floor_ramp(blow_up: bool) -> RangeTest:
    """A 60-step ramp over a flat floor as noisy as its level (S1-like: the loss
    falls nowhere it can read), with a dip of noise at index 20-22, two decades and
    more below where it ends: in a blow-up or at the ramp's end."""
    gen = torch.Generator().manual_seed(3)
    values = (1.0 + 0.3 * torch.randn(60, generator=gen)).abs().tolist()
    values[19:24] = [0.3, 0.2, 0.1, 0.2, 0.3]
    if blow_up:
        values[55:] = [3.0, 6.0, 12.0, 24.0, 48.0]
    test = RangeTest(steps=60)
    for i, v in enumerate(values):
        if test.add(test.lr(i), v) is not None:
            break
    return test


def test_range_test_reads_a_dip_far_below_its_blow_up_as_noise(monkeypatch):
    test = _floor_ramp(blow_up=True)
    assert test.blew_up and test.lrs[-1] > 1.0
    dip = test.lrs[21]
    assert test.lrs[-1] > rangetest.FAR * dip
    # The loss at the dip never fell again over the two decades below the blow-up:
    # a tenth of the blow-up LR, as without a clear drop...
    assert test.best_lr == pytest.approx(test.lrs[-1] / 10)
    # ...where the lowest loss alone reads the dip.
    monkeypatch.setattr(rangetest, "FAR", math.inf)
    assert test.best_lr == pytest.approx(dip)


def test_blew_up_reads_the_ramp_s_own_stop_reason_also_after_a_resume():
    gen = torch.Generator().manual_seed(1)
    ramps = {
        "non-finite": [1.0] * 12 + [math.nan],
        "blow-up": [1.0] * 12 + [4.0] * 6,
        "give-back": [2.30] * 8 + [2.2, 2.0, 1.8, 1.7, 1.7, 1.9, 2.1, 2.25] + [2.3] * 30,
        "end": (1.0 + 0.05 * torch.randn(30, generator=gen)).tolist(),
    }
    for name, values in ramps.items():
        test, reason = RangeTest(steps=30), None
        for i, v in enumerate(values):
            reason = test.add(test.lr(i), v)
            if reason is not None:
                break
        # The state as a checkpoint holds it (plain data, through JSON).
        again = RangeTest(**json.loads(json.dumps(test.to_dict())))
        assert reason is not None and reason.startswith(
            {"non-finite": "non-finite", "blow-up": "loss above", "give-back": "no progress"}.get(
                name, "end of the ramp"
            )
        ), (name, reason)
        stopped_by_blow_up = reason == "non-finite loss" or reason.startswith("loss above")
        assert test.blew_up == again.blew_up == stopped_by_blow_up, (name, reason)
    assert [RangeTest(steps=30).blew_up] == [False]


def test_range_test_keeps_a_dip_when_the_ramp_ends_without_a_blow_up():
    # A ramp that ran out (a plateau network drifts back instead of blowing up)
    # says nothing of where the loss would blow up: its dip stands.
    test = _floor_ramp(blow_up=False)
    assert not test.blew_up and len(test.lrs) == 60
    assert test.best_lr == pytest.approx(test.lrs[21])


def test_the_range_test_s_start_losses_are_its_first_at_an_lr_still_near_zero():
    # The race's start level and noise: the ramp's first 8 finite losses...
    test = RangeTest(steps=200)
    for i, v in enumerate([1.0, 1.1, math.nan, 0.9, 1.0, 1.2, 0.8, 1.0, 5.0]):
        test.add(test.lr(i), v)
    assert test.start_losses == [1.0, 1.1, 0.9, 1.0, 1.2, 0.8, 1.0]
    # ...but on a ramp of a few steps its 8th LR is far from 0: only those still below
    # STILL count, and fewer than 3 give none (the race then reads its first probe).
    short = RangeTest(steps=8)
    for i in range(8):
        short.add(short.lr(i), 1.0 + i)
    still = [1.0 + i for i in range(8) if short.lrs[i] <= STILL]
    assert len(still) < 8 and short.start_losses == (still if len(still) >= 3 else [])
    tiny = RangeTest(steps=100)
    tiny.add(tiny.lr(0), 1.0)
    assert tiny.start_losses == []


@pytest.mark.parametrize("shape", ["linear", "1-sqrt", "cosine"])
def test_decay_shapes_fall_from_one_towards_the_target(shape):
    f = [decay_factor(shape, j, 50) for j in range(50)]
    assert all(b < a for a, b in zip(f, f[1:]))
    assert 0.8 < f[0] < 1.0 and 0.0 < f[-1] < 0.1
    assert decay_factor(shape, 49, 50, to=0.5) > 0.5


def test_anneal_probes_cool_down_and_the_exploit_keeps_the_pre_cooldown_state(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, total_steps=1000, strategy="anneal")
    stream = task.stream()
    probe_lrs: dict[int, list[float]] = {}
    held: dict[int, dict] = {}
    while tuner.phase is not Phase.EXPLOIT:
        if tuner.phase is Phase.PROBE:
            i = len(tuner.stage.probes)
            probe_lrs.setdefault(i, []).append(opt.param_groups[0]["lr"])
            if tuner.probe.steps == tuner.stage.spec.tau_probe:
                held[i] = _weights(model)
        tuner.step(train_step(model, opt, next(stream)))
    spec = tuner.stage.spec
    assert spec.cool > 0 and len(probe_lrs) == spec.probes
    for lrs in probe_lrs.values():
        hold, cool = lrs[: spec.tau_probe], lrs[spec.tau_probe :]
        assert len(set(hold)) == 1 and len(cool) == spec.cool
        assert all(b < a for a, b in zip(cool, cool[1:])) and cool[-1] < 0.1 * hold[0]
    ladder = [p.lr for p in tuner.stage.probes]
    assert all(b == pytest.approx(a / 2) for a, b in zip(ladder, ladder[1:]))
    (decision,) = tuner.log.of_type("decision")
    if decision["from_probe"]:
        winner = ladder.index(decision["lr"])
        assert all(torch.equal(v, held[winner][k]) for k, v in model.state_dict().items())
    assert opt.param_groups[0]["lr"] == decision["lr"]


def test_a_prober_runs_the_race_s_cooldowns_as_the_inline_probes_do(task):
    # One fixed batch, so that inline probes and the prober's see the same data.
    batch = task.batch_at(0)

    def run(with_prober: bool):
        torch.manual_seed(0)
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        prober = (
            LocalProber(model, opt, train_step, lambda stage, index: iter([batch] * 10**4))
            if with_prober
            else None
        )
        tuner = AutoLRS(model, opt, total_steps=1000, strategy="anneal", prober=prober)
        while tuner.phase is not Phase.EXPLOIT:
            tuner.step(train_step(model, opt, batch))
        return tuner, model

    (inline, inline_model), (backend, backend_model) = run(False), run(True)
    spec = backend.stage.spec
    a, b = inline.log.of_type("probe"), backend.log.of_type("probe")
    # Both end the race at the same candidate (here the third: it scored clearly worse).
    assert spec.cool > 0 and len(b) == len(a) and RACE_MIN_PROBES <= len(b) < spec.probes
    finished = [p for p in b if not p["diverged"]]
    assert finished and all(len(p["train_losses"]) == spec.tau_probe + spec.cool for p in finished)
    for pa, pb in zip(a, b, strict=True):
        assert pa["train_losses"] == pytest.approx(pb["train_losses"])
    assert [p["forecast"] for p in a] == pytest.approx([p["forecast"] for p in b])
    (da,), (db,) = inline.log.of_type("decision"), backend.log.of_type("decision")
    assert da["lr"] == db["lr"] and da["from_probe"] == db["from_probe"]
    # Both exploits go on from the winner's state before its cooldown.
    for k, v in inline_model.state_dict().items():
        assert torch.allclose(v, backend_model.state_dict()[k])
    assert backend.global_step == inline.global_step


def test_anneal_run_holds_then_decays_and_replays_exactly(task, tmp_path):
    path = tmp_path / "anneal.jsonl"
    _, opt, tuner = _run(task, 1000, {"strategy": "anneal", "log_path": path, "warmup_steps": 20})
    assert tuner.finished and len(tuner.log.of_type("stage_start")) == 1
    anneal_start = 1000 - tuner.config.anneal_steps
    lrs = list(tuner.trace_lr)
    assert tuner.config.anneal_steps == 500 and tuner.config.shape == "1-sqrt"
    assert all(b <= a for a, b in zip(lrs[anneal_start:], lrs[anneal_start + 1 :]))
    assert lrs[-1] < 0.2 * lrs[anneal_start]
    result = replay_run(path)
    assert result.matches, [m.describe() for m in result.mismatches]
    # The summary names what chose the LR: the race's score, not a forecast; and
    # which of the search's steps were kept (the winner's probe at its LR).
    summary = str(tuner.summary())
    header = summary.splitlines()[0].split()
    assert "score" in header and "forecast" not in header
    first = tuner.log.of_type("decision")[0]
    rolled_back = bool(tuner.log.of_type("rollback"))
    kept = tuner.stage.spec.tau_probe if first["from_probe"] and not rolled_back else 0
    assert tuner.kept_steps == kept
    assert f"{kept} of them kept" in summary.splitlines()[-1] or not kept
    assert tuner.log.of_type("run_end")[0]["kept_steps"] == tuner.kept_steps


def test_a_dead_network_is_rolled_back_by_the_no_progress_guard(task):
    stream = task.stream()
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, total_steps=1200, strategy="anneal", min_lr=1e-3, max_lr=1.0)
    while tuner.phase is not Phase.EXPLOIT:
        tuner.step(train_step(model, opt, next(stream)))
    ref = tuner.stage.ref_loss
    (decision,) = tuner.log.of_type("decision")
    # The winner's probe steps at its LR are kept, not lost to the search ...
    assert tuner.kept_steps == (tuner.stage.spec.tau_probe if decision["from_probe"] else 0)
    # The exploit sits at its start level, as a killed network does.
    while not tuner.log.of_type("rollback") and not tuner.finished:
        train_step(model, opt, next(stream))
        tuner.step(ref)
    (rb,) = tuner.log.of_type("rollback")
    assert rb["reason"].startswith("no progress")
    # ... until the rollback undoes them with the exploit.
    assert tuner.kept_steps == 0


def test_resume_mid_range_test_continues_it_exactly(task):
    _, _, full = _run(task, 600, {"strategy": "anneal"})
    model, opt, half = _run(task, 600, {"strategy": "anneal"}, stop=lambda t: t.global_step == 15)
    assert half.phase is Phase.RANGE
    model2, opt2, resumed = _resumed(model, opt, half, 600)
    for batch in task.stream(15):
        resumed.step(train_step(model2, opt2, batch))
        if resumed.finished:
            break
    assert (
        resumed.log.of_type("range_test")[0]["lr_range"]
        == full.log.of_type("range_test")[0]["lr_range"]
    )
    assert math.isclose(resumed.lr, full.lr)


@pytest.mark.parametrize("saved", ["anneal", "forecast"])
def test_a_state_saved_under_the_other_strategy_resumes_under_its_own(task, saved):
    """A checkpoint of a run made before the default changed (or with the other
    strategy) goes on with the strategy it was saved with, not the constructor's."""
    other = "forecast" if saved == "anneal" else "anneal"
    model, opt, half = _run(task, 600, {"strategy": saved}, stop=lambda t: t.global_step == 70)
    model2 = make_model()
    model2.load_state_dict(model.state_dict())
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05)
    opt2.load_state_dict(opt.state_dict())
    resumed = AutoLRS(model2, opt2, total_steps=600, strategy=other)
    resumed.load_state_dict(half.state_dict())
    assert resumed.config.strategy == resumed.strategy.name == saved
    assert resumed.phase is half.phase and resumed.lr == half.lr


def test_resume_mid_race_races_the_same_candidates(task):
    _, _, full = _run(task, 1000, {"strategy": "anneal"})
    probes = full.log.of_type("probe")
    assert len(probes) == 4
    stop = probes[2]["step"] - 3  # inside the ladder's last probe
    model, opt, half = _run(
        task, 1000, {"strategy": "anneal"}, stop=lambda t: t.global_step == stop
    )
    assert half.phase is Phase.PROBE and len(half.stage.probes) == 2
    model2, opt2, resumed = _resumed(model, opt, half, 1000)
    for batch in task.stream(stop):
        resumed.step(train_step(model2, opt2, batch))
        if resumed.phase is Phase.EXPLOIT:
            break
    got = [p["lr"] for p in resumed.log.of_type("probe")]
    assert got == [p["lr"] for p in probes[2:]]


def test_range_test_then_warmup_then_the_race(task):
    _, _, tuner = _run(task, 800, {"strategy": "anneal", "warmup_steps": 30})
    phases = [r["phase"] for r in tuner.log.of_type("phase")]
    assert phases[:2] == ["range", "warmup"] and tuner.finished
    ramp = len(tuner.log.of_type("range_test")[0]["losses"])
    assert tuner.log.of_type("stage_start")[0]["step"] == ramp + 30
    lrs = list(tuner.trace_lr)[ramp : ramp + 30]
    assert all(b > a for a, b in zip(lrs, lrs[1:]))  # the warmup ramps up after the test


def test_a_race_on_a_plateau_climbs_until_the_loss_falls_and_replays_exactly(tmp_path):
    # Every LR of the race looks alike on a plateau (none moves the loss within a
    # probe); holding the ladder's floor would never leave it within the budget.
    from tests.test_controller import Plateau

    model = Plateau(escape=150.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "plateau.jsonl"
    tuner = AutoLRS(model, opt, total_steps=1000, strategy="anneal", log_path=path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RangeWarning)  # a plateau is no wrong range
        while not tuner.finished:
            tuner.step(model.train_step(opt.param_groups[0]["lr"]))
    probes = tuner.log.of_type("probe")
    assert probes and all(p["reason"].startswith("no progress") for p in probes)
    (end,) = tuner.log.of_type("exploit_end")
    floor = tuner.search_range[0]  # the fallback LR the climb starts from
    climbed = [lr for _, lr in end["climbs"]]
    assert climbed[0] == pytest.approx(2 * floor)
    assert all(b == pytest.approx(2 * a) for a, b in zip(climbed, climbed[1:]))
    assert end["lr"] == climbed[-1] and end["actual_train"] < 1.0  # it left the plateau
    assert tuner.trace_loss[-1] < 0.1
    result = replay_run(path)
    assert result.matches, [m.describe() for m in result.mismatches]
    # The report draws the climb from the records alone as the replay does.
    from autolr.offline.report import step_series

    exact, alone = step_series(path), step_series(path, replay=False)
    first = end["step"] - len(end["losses"])
    span = slice(first, end["step"])
    assert exact["lr"][span] == pytest.approx(alone["lr"][span])
    assert len(set(alone["lr"][span].tolist())) == len(climbed) + 1


def test_a_run_resumed_mid_climb_climbs_on_exactly():
    from tests.test_controller import Plateau

    def run(stop_at=None, resume=None):
        model = Plateau(escape=150.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        if resume is not None:
            model.load_state_dict(resume["model"])
            model.gen.set_state(resume["gen"])
        tuner = AutoLRS(model, opt, total_steps=1000, strategy="anneal")
        if resume is not None:
            tuner.load_state_dict(resume["tuner"])
        lrs = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while not tuner.finished and tuner.global_step != stop_at:
                lrs.append(opt.param_groups[0]["lr"])
                tuner.step(model.train_step(lrs[-1]))
        saved = {
            "model": model.state_dict(),
            "gen": model.gen.get_state(),
            "tuner": tuner.state_dict(),
        }
        return tuner, lrs, saved

    full, full_lrs, _ = run()
    (end,) = full.log.of_type("exploit_end")
    first_climb = int(end["climbs"][0][0])
    half, half_lrs, saved = run(stop_at=first_climb + 3)
    assert half.stage is not None and half.stage.climb_cap is not None  # mid-climb
    resumed, rest, _ = run(resume=saved)
    assert half_lrs + rest == pytest.approx(full_lrs)
    assert resumed.log.of_type("exploit_end")[0]["climbs"] == end["climbs"]


def test_a_climb_stops_at_a_clear_gain_and_at_its_cap():
    spec = StageSpec(index=0, tau=100, tau_probe=10, probes=4, exploit_steps=300, cool=10)
    stage = StageState(spec=spec, start_step=0, progress=0.0, ref_loss=2.30, noise=0.01)
    stage.chosen_lr, stage.climb_cap = 0.01, 0.05
    stage.exploit_best = 2.29  # within 2% of the start: still on the plateau
    assert climb(stage) == pytest.approx(0.02)
    stage.chosen_lr = 0.04
    assert climb(stage) is None  # 0.08 would pass the cap
    stage.chosen_lr, stage.exploit_best = 0.01, 2.10
    assert climb(stage) is None  # the loss clearly fell: hold


def _race_probe(held: float, cooled: float, spec: StageSpec) -> ProbeRecord:
    """A race probe whose training loss sits at ``held``, then at ``cooled`` after cooling."""
    losses = [held] * spec.tau_probe + [cooled] * spec.cool
    return ProbeRecord(lr=0.1, train_losses=list(losses), losses=list(losses))


def test_the_race_decides_a_short_decay_when_cooling_gains_little():
    spec = StageSpec(0, 900, 20, 4, 600, True, 20)
    stage = StageState(spec=spec, start_step=0, progress=0.0)
    assert cooldown_gain(_race_probe(2.0, 1.5, spec), spec) == pytest.approx(0.25)
    strategy = AnnealStrategy(AutoLRSConfig(total_steps=1000))
    # A cooldown that takes little off (an LM far from its noise floor): short decay.
    assert strategy.decay_fraction(stage, _race_probe(2.0, 1.9, spec)) == SHORT_ANNEAL_FRACTION
    # One that takes much off (the noise a large LR keeps): the planned decay.
    assert strategy.decay_fraction(stage, _race_probe(2.0, 1.0, spec)) is None
    # No winner (a plateau's fallback): the candidates' best cooldown decides; none
    # to read, or a decay the user fixed: the planned one.
    assert strategy.decay_fraction(stage, None) is None
    stage.probes = [_race_probe(2.0, 1.99, spec), _race_probe(2.0, 1.98, spec)]
    assert strategy.decay_fraction(stage, None) == SHORT_ANNEAL_FRACTION
    stage.probes.append(_race_probe(2.0, 1.0, spec))
    assert strategy.decay_fraction(stage, None) is None
    fixed = AnnealStrategy(AutoLRSConfig(total_steps=1000, anneal_fraction=0.5))
    assert fixed.decay_fraction(stage, _race_probe(2.0, 1.9, spec)) is None
    # Too few losses to read a gain: nothing decided.
    assert cooldown_gain(ProbeRecord(lr=0.1, train_losses=[2.0] * 25), spec) is None


def _scored(lr: float, level: float, spec: StageSpec) -> ProbeRecord:
    """A race probe scored ``level`` (its losses scattered around it, sd 0.1)."""
    gen = torch.Generator().manual_seed(0)
    tail = (level + 0.1 * torch.randn(spec.probe_steps, generator=gen)).tolist()
    return ProbeRecord(lr=lr, train_losses=tail, losses=list(tail), forecast=level)


def test_the_race_ends_early_when_a_smaller_lr_scores_clearly_worse():
    spec = StageSpec(0, 900, 30, 4, 600, True, 30)
    stage = StageState(spec=spec, start_step=0, progress=0.0)
    strategy = AnnealStrategy(AutoLRSConfig(total_steps=1000))
    # The score's standard error, from the window's step-to-step spread.
    window = _scored(0.1, 1.0, spec).train_losses[-10:]  # a third of the cooldown
    steps = [b - a for a, b in zip(window, window[1:])]
    error = score_error(_scored(0.1, 1.0, spec), spec)
    assert error == pytest.approx(robust_sd(steps) / 2**0.5 * 1.25 / 10**0.5) and error > 0
    stage.probes = [_scored(0.4, 1.2, spec), _scored(0.2, 1.0, spec)]
    assert not strategy.searched_enough(stage)  # never after two
    stage.probes.append(_scored(0.1, 1.0 + 3 * 2**0.5 * error, spec))
    assert strategy.searched_enough(stage)  # 3 errors worse than the best, at a larger LR
    stage.probes[-1] = _scored(0.1, 1.0 + 1 * 2**0.5 * error, spec)
    assert not strategy.searched_enough(stage)  # within its noise: the floor runs
    stage.probes[-1] = _scored(0.1, 0.9, spec)
    assert not strategy.searched_enough(stage)  # the latest is the best: go on down
    stage.probes[-1] = ProbeRecord(lr=0.1, diverged=True, reason="no progress")
    assert strategy.searched_enough(stage)  # no progress below a scored LR
    # Out for another reason (a blow-up on noise, a worker that failed): go on.
    for reason in ("loss above 2x the start loss", "probe failed: worker died"):
        stage.probes[-1] = ProbeRecord(lr=0.1, diverged=True, reason=reason)
        assert not strategy.searched_enough(stage)
    # No spread to read (losses on a coarse grid): no error, so no clear gap.
    coarse = [2.0] * 56 + [2.0078, 2.0, 2.0, 2.0]
    stage.probes[-1] = ProbeRecord(lr=0.1, train_losses=coarse, losses=coarse, forecast=2.0)
    assert score_error(stage.probes[-1], spec) is None
    assert not strategy.searched_enough(stage)
    stage.probes[-1] = _scored(0.1, 1.0 + 3 * 2**0.5 * error, spec)
    # Every planned candidate run, or a validation score (no error to read): no.
    stage.probes.append(_scored(0.05, 2.0, spec))
    assert not strategy.searched_enough(stage)
    stage.probes.pop()
    val = AnnealStrategy(AutoLRSConfig(total_steps=1000, objective="val_loss"))
    assert not val.searched_enough(stage)


def _fixed_batch_run(task, **tuner_kw):
    """A whole annealed run of 1,000 steps on one fixed batch (its race is clear)."""
    batch = task.batch_at(0)
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, total_steps=1000, strategy="anneal", **tuner_kw)
    while not tuner.finished:
        tuner.step(train_step(model, opt, batch))
    return tuner


def test_a_race_that_ends_early_holds_its_winner_longer_and_replays(task, tmp_path):
    path = tmp_path / "early.jsonl"
    # One fixed batch: a clear race, whose third rung scores far worse than the second.
    tuner = _fixed_batch_run(task, log_path=path)
    spec = tuner.stage.spec
    probes = tuner.log.of_type("probe")
    (decision,) = tuner.log.of_type("decision")
    assert RACE_MIN_PROBES <= len(probes) < spec.probes
    assert len(decision["candidates"]) == len(probes)
    # The skipped candidates' steps are held at the winner: the budget is spent.
    assert tuner.finished and tuner.global_step == 1000
    ran = sum(len(p["train_losses"]) for p in probes)
    (ramp,) = tuner.log.of_type("range_test")
    assert tuner.search_steps == len(ramp["losses"]) + ran
    (end,) = tuner.log.of_type("exploit_end")
    assert not tuner.log.of_type("rollback")
    assert end["steps"] == 1000 - decision["decay_steps"] - decision["step"]
    result = replay_run(path)
    assert result.matches, [m.describe() for m in result.mismatches]
    logged = load_run(path)
    assert logged.stages[0].searched
    # The report says how many candidates ran, of how many planned.
    assert effective_settings(logged)["stages"]["probes"] == [len(probes)]
    assert f"race: {len(probes)} of {spec.probes} LRs" in _settings_line(logged)


def test_the_hold_takes_the_steps_of_the_skipped_candidates(task, monkeypatch):
    def hold(min_probes: int) -> tuple[int, float]:
        monkeypatch.setattr("autolr.config.RACE_MIN_PROBES", min_probes)
        (end,) = _fixed_batch_run(task).log.of_type("exploit_end")
        return int(end["steps"]), float(end["lr"])

    early, every = hold(3), hold(99)
    spec_steps = 2 * 20  # this budget's race probes: 20 steps held, 20 cooling down
    assert early == (every[0] + spec_steps, every[1])


def test_an_older_log_whose_race_would_now_end_early_says_so(tmp_path):
    # Logged by an autolr that ran every rung: its third probe made clearly worse than
    # the second, the race now ends there, and the replay says why it differs.
    fixture = Path(__file__).parent / "fixtures" / "runlogs" / "noisy_anneal.jsonl"
    records = [json.loads(line) for line in fixture.read_text().splitlines()]
    third = next(r for r in records if r["type"] == "probe" and r["index"] == 2)
    cool = third["train_losses"][-30:]  # its cooldown (30 steps), 1.0 higher
    third["train_losses"] = third["losses"] = third["train_losses"][:-30] + [v + 1 for v in cool]
    edited = tmp_path / "older.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in records))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = replay_run(edited)
    assert not result.matches
    assert any("fewer candidates than logged (3 of 4)" in w for w in result.run.warnings)
    # The fixture as logged replays exactly, with no such note.
    assert replay_run(fixture).matches and not load_run(fixture).warnings


def _short_decay_run(task, monkeypatch, path, stop=None):
    # Every race gains less than this: the race decides the short decay.
    monkeypatch.setattr("autolr.config.SHORT_DECAY_GAIN", 1.0)
    return _run(task, 1000, {"log_path": path}, stop=stop)


def test_a_decided_decay_starts_late_is_logged_replays_and_resumes(task, tmp_path, monkeypatch):
    path = tmp_path / "short.jsonl"
    model, opt, tuner = _short_decay_run(task, monkeypatch, path)
    short = round(SHORT_ANNEAL_FRACTION * 1000)
    assert tuner.config.anneal_steps == 500 and tuner.decay_steps == short
    (decision,) = tuner.log.of_type("decision")
    assert decision["decay_steps"] == short
    (anneal,) = [r for r in tuner.log.of_type("phase") if r["phase"] == "anneal"]
    assert anneal["step"] == 1000 - short
    lrs = list(tuner.trace_lr)
    assert lrs[1000 - short - 1] == decision["lr"] and lrs[-1] < 0.2 * decision["lr"]
    result = replay_run(path)
    assert result.matches, [m.describe() for m in result.mismatches]
    # Resumed in the hold, the run keeps the decided decay.
    model, opt, tuner = _short_decay_run(
        task, monkeypatch, None, stop=lambda t: t.phase is Phase.EXPLOIT
    )
    _, _, resumed = _resumed(model, opt, tuner, 1000)
    assert resumed.decay_steps == short


def test_an_annealed_log_from_before_the_decided_decay_replays_with_the_planned_one(
    task, tmp_path, monkeypatch
):
    path = tmp_path / "old.jsonl"
    monkeypatch.setattr("autolr.config.SHORT_DECAY_GAIN", 0.0)  # the planned decay, as then
    _run(task, 1000, {"log_path": path})
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:
        r.pop("decay_steps", None)  # as logs written before the field were (version 1)
        r["schema_version"] = 1
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    # This version would decide a short decay for it; the replay keeps the planned one.
    monkeypatch.setattr("autolr.config.SHORT_DECAY_GAIN", 1.0)
    result = replay_run(path)
    assert result.matches, [m.describe() for m in result.mismatches]


def test_a_race_on_losses_as_noisy_as_their_level_judges_from_the_range_test(tmp_path):
    # A noisy quadratic with batch 16 whose one-step loss has a noise as large as the
    # loss itself (the noisy_anneal fixture's run). Judged from its probes' first losses
    # (one each, no noise level), the race read that noise as blow-ups and as "no
    # progress" and fell back to its floor.
    from tests.fixtures.runlogs.make_fixtures import noisy_anneal

    path = tmp_path / "noisy.jsonl"
    noisy_anneal(path)
    run = load_run(path)
    # The start level and noise come from the range test's first steps, at the snapshot.
    first = run.of_type("range_test")[0]["losses"][:8]
    (start,) = run.of_type("stage_start")
    assert start["level"] == pytest.approx([statistics.median(first), robust_sd(first)])
    assert start["level"][1] > 0.5 * start["level"][0]  # as noisy as that
    assert all(p["reason"] == "" for p in run.of_type("probe"))
    assert run.of_type("decision")[0]["reason"] == "best_forecast"
    result = replay_run(path)
    assert result.matches, [m.describe() for m in result.mismatches]


def test_a_race_after_a_warmup_judges_progress_from_its_snapshot(task):
    # The warmup's losses fall steeply: read as the stage's start level and noise,
    # they made every exploit look like "no progress" and rolled it back.
    _, _, tuner = _run(task, 1000, {"warmup_steps": 20})
    stage = tuner.stage
    assert stage.ref_loss == stage.probes[0].train_losses[0]  # the loss at the snapshot
    assert stage.noise == 0.0 and stage.recent_max is None
    assert not tuner.log.of_type("rollback")
    (decision,) = tuner.log.of_type("decision")
    assert decision["reason"] == "best_forecast"
