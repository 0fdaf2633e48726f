"""RayProber: probes on real Ray actors, checked against the in-process LocalProber."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from conftest import Regression, make_model, train_step

import autolr
from autolr.errors import AutoLRError, ConfigError, InputError
from autolr.probing import LocalProber, ProbeRequest
from autolr.snapshot import capture

ray = pytest.importorskip("ray")
from autolr.integrations.ray import RayProber  # noqa: E402

TESTS_DIR = str(Path(__file__).resolve().parent)
TASK = Regression()
POISON_LR = 0.0123


@pytest.fixture(scope="module")
def ray_session():
    # Workers import this module's helpers (and conftest) from the tests folder.
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        job_config=ray.job_config.JobConfig(code_search_path=[TESTS_DIR]),
    )
    yield
    ray.shutdown()


def make_sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def batches(stage: int, index: int):
    """The same batches for every probe of a stage, other batches for each stage."""
    return (TASK.batch_at(10_000 * (stage + 1) + i) for i in range(10_000))


def val_loss(model: torch.nn.Module) -> float:
    x, y = TASK.batch_at(-1)
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model(x), y))


def chaos_step(model, optimizer, batch):
    """The test train step; it hangs at the poison LR."""
    if optimizer.param_groups[0]["lr"] == POISON_LR:
        time.sleep(120)
    return train_step(model, optimizer, batch)


class Chaos:
    """The test batches, with faults keyed on the probe and on flag files.

    Stage ``DIE_STAGE``, probe 0: the first use kills the worker process.
    Stage 0, probe 1: raises while the file ``raise`` exists.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, stage: int, index: int):
        died = os.path.join(self.folder, "died")
        if stage == DIE_STAGE and index == 0 and not os.path.exists(died):
            Path(died).touch()
            os._exit(1)
        if (stage, index) == (0, 1) and os.path.exists(os.path.join(self.folder, "raise")):
            raise RuntimeError("bad batch")
        return batches(stage, index)


DIE_STAGE = 100


@pytest.fixture(scope="module")
def chaos_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chaos")


@pytest.fixture(scope="module")
def pool(ray_session, chaos_dir):
    """Two started workers shared by the tests (each worker start imports torch: seconds)."""
    with RayProber(
        make_model, make_sgd, chaos_step, Chaos(str(chaos_dir)), num_workers=2, val_fn=val_loss
    ) as prober:
        yield prober.start()


def failing_model() -> torch.nn.Module:
    raise RuntimeError("no model today")


def make_requests(lrs, **kw) -> list[ProbeRequest]:
    base = dict(steps=8, stage=0, ref_loss=None, blowup_factor=2.0, early_abort=True)
    base.update(kw)
    return [ProbeRequest(lr=lr, index=i, **base) for i, lr in enumerate(lrs)]  # type: ignore[arg-type]


def local_outcomes(snapshot, reqs, val_fn=None):
    model = make_model(0)
    opt = make_sgd(model)
    local = LocalProber(
        model, opt, train_step, batches, val_fn=(lambda: val_fn(model)) if val_fn else None
    )
    return local.run(snapshot, reqs)


def start_snapshot():
    model = make_model(0)
    opt = make_sgd(model)
    for i in range(5):  # momentum buffers in the optimizer state
        train_step(model, opt, TASK.batch_at(i))
    return capture(model, opt)


def run_autolrs(prober_for, seed: int = 3, parallel: int = 1, total: int = 240):
    """A run of the forecast strategy (stages of probes; the annealed race has its own test)."""
    model = make_model(0)
    opt = make_sgd(model)
    prober = prober_for(model, opt)
    tuner = autolr.AutoLRS(
        model,
        opt,
        1e-3,
        1.0,
        total_steps=total,
        prober=prober,
        parallel_probes=parallel,
        seed=seed,
        strategy="forecast",
    )
    i = 0
    while not tuner.finished:
        tuner.step(train_step(model, opt, TASK.batch_at(i)))
        i += 1
    return tuner, model


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_workers": 0}, r"num_workers must be an integer >= 1, got 0"),
        ({"num_cpus": -1}, r"num_cpus must be a finite number >= 0, got -1"),
        ({"num_gpus": float("nan")}, r"num_gpus must be a finite number >= 0, got nan"),
        ({"timeout_s": 0}, r"timeout_s must be a positive number of seconds or None, got 0"),
        ({"start_timeout_s": -2.0}, r"start_timeout_s must be .* or None, got -2.0"),
        ({"retries": -1}, r"retries must be an integer >= 0, got -1"),
        ({"ratios": [1.0, 0.0]}, r"ratios must be positive finite numbers, got \[1.0, 0.0\]"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RayProber(make_model, make_sgd, train_step, batches, **kwargs)


def test_factories_must_be_callable():
    with pytest.raises(InputError, match="make_optimizer must be callable, got str"):
        RayProber(make_model, "sgd", train_step, batches)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="val_fn must be callable or None, got int"):
        RayProber(make_model, make_sgd, train_step, batches, val_fn=3)  # type: ignore[arg-type]


def test_validation_objective_needs_val_fn():
    prober = RayProber(make_model, make_sgd, train_step, batches)
    with pytest.raises(ConfigError, match=r"validation loss \(val_every=3\) but .* no val_fn"):
        prober.run(start_snapshot(), make_requests([0.01], val_every=3))


# ------------------------------------------------------------------- behaviour
@pytest.mark.slow
def test_outcomes_match_local_prober_in_parallel(pool):
    """Three probes on two actors: each equals the in-process probe, in request order."""
    assert len(set(pool.worker_pids)) == 2
    snap = start_snapshot()
    reqs = make_requests([0.003, 0.03, 0.3], keep_state=True, val_every=3)
    expected = local_outcomes(snap, reqs, val_fn=val_loss)
    got = pool.run(snap, reqs)
    shipped = pool._snapshot_ref
    pool.run(snap, reqs[:1])
    assert pool._snapshot_ref is shipped  # a snapshot goes to the object store once
    assert [o.error for o in got] == [None, None, None]
    for mine, ref in zip(got, expected):
        assert mine.train_losses == ref.train_losses
        assert mine.val == ref.val
        assert mine.end_state is not None and ref.end_state is not None
        for key, tensor in ref.end_state.model.items():
            assert torch.equal(mine.end_state.model[key], tensor)


def test_cooldown_probes_match_local_prober_and_keep_the_state_before_the_cooldown(pool):
    """The annealed race's probes on actors: the same losses as in process, and the
    end state returned is the one before the cooldown (where the exploit goes on)."""
    snap = start_snapshot()
    cooled = make_requests([0.003, 0.03], keep_state=True, cool=4)
    got = pool.run(snap, cooled)
    ref = local_outcomes(snap, cooled)
    held = local_outcomes(snap, make_requests([0.003, 0.03], keep_state=True))
    for mine, r, h in zip(got, ref, held, strict=True):
        assert mine.error is None and len(mine.train_losses) == 12
        assert mine.train_losses == r.train_losses and mine.train_losses[:8] == h.train_losses
        assert mine.end_state is not None and h.end_state is not None
        for key, tensor in h.end_state.model.items():
            assert torch.equal(mine.end_state.model[key], tensor)


@pytest.mark.slow
def test_same_decisions_as_local_prober_with_q1(pool):
    local, local_model = run_autolrs(lambda m, o: LocalProber(m, o, train_step, batches))
    remote, remote_model = run_autolrs(lambda m, o: pool)

    def probes(t):
        return [
            (r["stage"], r["lr"], r["train_losses"], r["forecast"]) for r in t.log.of_type("probe")
        ]

    def decisions(t):
        return [(r["lr"], r["from_probe"]) for r in t.log.of_type("decision")]

    assert len(probes(local)) >= 6
    assert probes(remote) == probes(local)
    assert decisions(remote) == decisions(local)
    assert any(from_probe for _, from_probe in decisions(local))  # the winner's state came back
    assert remote.global_step == local.global_step == 240
    for key, tensor in local_model.state_dict().items():
        assert torch.equal(remote_model.state_dict()[key], tensor)


@pytest.mark.slow
def test_parallel_probes_run_a_whole_search(pool):
    tuner, _ = run_autolrs(lambda m, o: pool, parallel=2)
    probes = tuner.log.of_type("probe")
    assert len({r["stage"] for r in tuner.log.of_type("decision")}) >= 2
    assert tuner.global_step == 240
    assert tuner.search_steps == sum(len(r["train_losses"]) for r in probes)
    assert all(r["reason"] == "" or r["diverged"] for r in probes)


@pytest.mark.slow
def test_dead_worker_is_retried_on_a_new_actor(pool, chaos_dir):
    snap = start_snapshot()
    reqs = make_requests([0.01, 0.1], stage=DIE_STAGE)
    pids, failures = set(pool.worker_pids), pool.failures
    got = pool.run(snap, reqs)
    assert (chaos_dir / "died").exists()
    assert pool.failures == failures + 1
    assert set(pool.worker_pids) != pids  # one worker was replaced
    assert [o.error for o in got] == [None, None]
    assert [o.train_losses for o in got] == [o.train_losses for o in local_outcomes(snap, reqs)]


@pytest.mark.slow
def test_probe_that_keeps_failing_is_recorded_and_the_run_goes_on(pool, chaos_dir):
    failures = pool.failures
    (chaos_dir / "raise").touch()
    try:
        tuner, _ = run_autolrs(lambda m, o: pool, parallel=2, total=160)
    finally:
        (chaos_dir / "raise").unlink()
    assert pool.failures == failures + 2  # the first attempt and its one retry
    probes = tuner.log.of_type("probe")
    failed = [p for p in probes if p["stage"] == 0 and p["index"] == 1][0]
    assert failed["diverged"] and failed["reason"] == "probe failed: RuntimeError: bad batch"
    assert failed["train_losses"] == []
    assert sum(not p["diverged"] for p in probes if p["stage"] == 0) >= 2
    assert tuner.finished and tuner.log.of_type("decision")


@pytest.mark.slow
def test_probe_past_its_time_limit_is_killed_and_failed(pool):
    snap = start_snapshot()
    reqs = make_requests([POISON_LR, 0.05])
    pool.timeout_s = 4.0
    try:
        got = pool.run(snap, reqs)
    finally:
        pool.timeout_s = None
    assert got[0].error is not None and got[0].error.startswith("timed out after")
    assert got[0].train_losses == []
    assert got[1].error is None and len(got[1].train_losses) == 8
    again = pool.run(snap, make_requests([0.05, 0.05]))  # both workers take probes again
    assert [o.train_losses for o in again] == [got[1].train_losses] * 2


@pytest.mark.slow
def test_worker_that_cannot_start_raises(ray_session):
    # num_cpus=0: schedulable while the shared pool holds both CPUs.
    with RayProber(failing_model, make_sgd, train_step, batches, num_workers=1, num_cpus=0) as rp:
        with pytest.raises(AutoLRError, match="Ray probe worker failed to start: .*no model today"):
            rp.run(start_snapshot(), make_requests([0.01]))


def lr_as_loss(model, optimizer, batch):
    time.sleep(0.2)
    return torch.tensor(optimizer.param_groups[0]["lr"])


@pytest.mark.slow
def test_a_run_cut_short_leaves_no_probe_to_answer_the_next(ray_session, monkeypatch):
    import ray

    rp = RayProber(make_model, make_sgd, lr_as_loss, batches, num_workers=2, num_cpus=0)
    rp.start()
    wait, calls = ray.wait, []

    def cut(*args, **kw):  # a Ctrl-C while the first run's probes are out
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return wait(*args, **kw)

    monkeypatch.setattr(ray, "wait", cut)
    with pytest.raises(KeyboardInterrupt):
        rp.run(start_snapshot(), make_requests([0.5, 0.25], steps=3))
    outs = rp.run(start_snapshot(), make_requests([0.01, 0.02], steps=3))
    rp.close()
    assert [o.train_losses for o in outs] == [pytest.approx([lr] * 3) for lr in (0.01, 0.02)]


@pytest.mark.slow
def test_a_worker_that_replaces_a_failed_one_has_the_start_timeout_too(ray_session, tmp_path):
    import threading

    starts, failed, driver = tmp_path / "starts", tmp_path / "failed", os.getpid()
    starts.mkdir()

    def first_starts_then_stuck() -> torch.nn.Module:
        if os.getpid() != driver:
            n = len(os.listdir(starts))
            (starts / str(n)).touch()
            if n >= 1:  # the replacement never gets ready
                time.sleep(3600)
        return make_model()

    def fails_once(model, optimizer, batch):
        if os.getpid() != driver and not failed.exists():
            failed.touch()
            raise RuntimeError("a transient error")
        return train_step(model, optimizer, batch)

    rp = RayProber(
        first_starts_then_stuck, make_sgd, fails_once, batches, num_workers=1, num_cpus=0,
        start_timeout_s=10, retries=1,
    )  # fmt: skip
    done: list[object] = []

    def search() -> None:
        try:
            done.append(rp.run(start_snapshot(), make_requests([0.01, 0.02, 0.04])))
        except AutoLRError as exc:
            done.append(exc)

    worker = threading.Thread(target=search, daemon=True)
    worker.start()
    worker.join(timeout=90)
    rp.close()
    assert done, "the search waited on the replacement worker past its start timeout"


@pytest.mark.slow
def test_worker_that_cannot_be_scheduled_raises(ray_session):
    rp = RayProber(make_model, make_sgd, train_step, batches, num_gpus=1, start_timeout_s=2)
    with pytest.raises(AutoLRError, match=r"not ready within start_timeout_s=2s .*num_gpus=1"):
        rp.start()
