"""Fault injection through RayProber: a worker killed in the middle of a probe, a worker
answering with garbage. Each probe is recorded failed, the controller goes on, nothing
raises out of ``step()``, and the run is bit for bit the run in which the same probes
failed in-process (weights, optimizer state, RNG, probes and decisions in the log)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import Regression, make_model, train_step

import autolr
from autolr.probing import LocalProber, ProbeOutcome, ProbeRequest
from autolr.snapshot import Snapshot, capture

ray = pytest.importorskip("ray")
import autolr.integrations.ray as ray_integration  # noqa: E402
from autolr.integrations.ray import ProbeWorker, RayProber  # noqa: E402

TESTS_DIR = str(Path(__file__).resolve().parent)
TASK = Regression()

# (stage, index) -> the fault a worker injects into that probe.
FAULTS: dict[tuple[int, int], str] = {
    (0, 1): "too many losses",
    (1, 0): "kill",  # every attempt: the probe fails after its retry
    (100, 0): "too many losses",
    (100, 1): "not a number",
    (100, 2): "not an outcome",
    (100, 3): "other model",
    (100, 4): "val without objective",
    (101, 0): "kill once",  # the retry on a new worker succeeds
    (102, 0): "nan",  # not garbage: NaN is a non-finite loss, kept as None
}


def make_sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def batches(stage: int, index: int):
    return (TASK.batch_at(10_000 * (stage + 1) + i) for i in range(10_000))


class FaultyWorker(ProbeWorker):
    """A probe worker that dies mid-probe or answers with garbage, as FAULTS says."""

    def probe(self, snapshot: Snapshot, request: ProbeRequest) -> Any:
        fault = FAULTS.get((request.stage, request.index))
        flag = os.path.join(os.environ["AUTOLR_FAULT_FLAGS"], f"{request.stage}")
        if fault == "kill" or (fault == "kill once" and not os.path.exists(flag)):
            Path(flag).touch()
            real_step, taken = self.spec.train_step, [0]

            def dying_step(model, optimizer, batch):
                taken[0] += 1
                if taken[0] == 3:  # in the middle of the probe
                    os._exit(1)
                return real_step(model, optimizer, batch)

            self.spec.train_step = dying_step
        out = super().probe(snapshot, request)
        if fault == "too many losses":
            out.train_losses = out.train_losses + [0.5] * 4
        elif fault == "not a number":
            out.train_losses = out.train_losses[:-1] + ["0.3"]
        elif fault == "not an outcome":
            return {"train_losses": out.train_losses}
        elif fault == "other model":
            other = make_model(0, dim=4)
            out.end_state = capture(other, make_sgd(other))
        elif fault == "val without objective":
            out.val = [(1.0, 0.2)]
        elif fault == "nan":
            out.train_losses = out.train_losses[:-1] + [float("nan")]
        return out


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    flags = tmp_path_factory.mktemp("flags")
    os.environ["AUTOLR_FAULT_FLAGS"] = str(flags)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        job_config=ray.job_config.JobConfig(code_search_path=[TESTS_DIR]),
        runtime_env={"env_vars": {"AUTOLR_FAULT_FLAGS": str(flags)}},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(ray_session):
    """Two started faulty workers shared by the tests (a worker start takes seconds)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(ray_integration, "_RemoteWorker", ray.remote(FaultyWorker))
    with RayProber(make_model, make_sgd, train_step, batches, num_workers=2) as prober:
        yield prober.start()
    patch.undo()


def make_requests(stage: int, n: int, **kw: Any) -> list[ProbeRequest]:
    base: dict[str, Any] = dict(steps=8, ref_loss=None, blowup_factor=2.0, early_abort=True)
    base.update(kw)
    return [ProbeRequest(lr=0.01 * (i + 1), stage=stage, index=i, **base) for i in range(n)]


def start_snapshot() -> Snapshot:
    model = make_model(0)
    opt = make_sgd(model)
    for i in range(5):
        train_step(model, opt, TASK.batch_at(i))
    return capture(model, opt)


def local_outcomes(snapshot: Snapshot, reqs: list[ProbeRequest]) -> list[ProbeOutcome]:
    model = make_model(0)
    return LocalProber(model, make_sgd(model), train_step, batches).run(snapshot, reqs)


# ------------------------------------------------------------------ garbage
@pytest.mark.slow
def test_garbage_answers_fail_their_probe_and_nothing_else(pool):
    snap = start_snapshot()
    reqs = make_requests(100, 5, keep_state=True)
    failures = pool.failures
    pool.retries = 0  # garbage is garbage again on a new worker: spare the restarts
    try:
        got = pool.run(snap, reqs)
    finally:
        pool.retries = 1
    assert pool.failures == failures + 5
    errors = [o.error for o in got]
    assert errors[0] is not None and "12 losses for a probe of 8 steps" in errors[0]
    assert errors[1] is not None and "train_losses[7] must be a number, got '0.3'" in errors[1]
    assert errors[2] is not None and "expected a ProbeOutcome, got dict" in errors[2]
    assert errors[3] is not None and "end_state entry '0.weight' differs in shape" in errors[3]
    assert errors[4] is not None and "validation values for a training-loss objective" in errors[4]
    assert all(e.startswith("malformed probe outcome") for e in errors)
    assert [o.train_losses for o in got] == [[]] * 5  # a failed probe reports no steps
    # The pool still works, and gives what an in-process probe gives.
    clean = make_requests(7, 2)
    assert [o.train_losses for o in pool.run(snap, clean)] == [
        o.train_losses for o in local_outcomes(snap, clean)
    ]


@pytest.mark.slow
def test_a_nan_loss_from_a_worker_is_a_non_finite_loss_not_garbage(pool):
    snap = start_snapshot()
    (got,) = pool.run(snap, make_requests(102, 1))
    (ref,) = local_outcomes(snap, make_requests(102, 1))
    assert got.error is None
    assert got.train_losses == ref.train_losses[:-1] + [None]


# ------------------------------------------------------ killed mid-probe
@pytest.mark.slow
def test_a_worker_killed_mid_probe_is_retried_and_gives_the_same_probe(pool):
    snap = start_snapshot()
    reqs = make_requests(101, 2)
    failures = pool.failures
    got = pool.run(snap, reqs)
    assert pool.failures == failures + 1
    assert [o.error for o in got] == [None, None]
    assert [o.train_losses for o in got] == [o.train_losses for o in local_outcomes(snap, reqs)]


# ------------------------------------------------ through the controller
class FailingBatches:
    """The probes FAULTS breaks in a run fail in-process too (their batches raise)."""

    def __call__(self, stage: int, index: int):
        if (stage, index) in ((0, 1), (1, 0)):
            raise RuntimeError("fails here too")
        return batches(stage, index)


def run_autolrs(prober_for: Any, total: int = 240) -> tuple[autolr.AutoLRS, torch.nn.Module, Any]:
    model = make_model(0)
    opt = make_sgd(model)
    tuner = autolr.AutoLRS(
        model,
        opt,
        1e-3,
        1.0,
        total_steps=total,
        prober=prober_for(model, opt),
        seed=3,
        strategy="forecast",  # two stages of probes to break
    )
    i = 0
    while not tuner.finished:
        tuner.step(train_step(model, opt, TASK.batch_at(i)))  # never raises
        i += 1
    return tuner, model, opt


@pytest.mark.slow
def test_a_run_with_a_killed_and_a_garbage_worker_loses_nothing(pool):
    remote, r_model, r_opt = run_autolrs(lambda m, o: pool)
    rng_remote = torch.get_rng_state()
    local, l_model, l_opt = run_autolrs(
        lambda m, o: LocalProber(m, o, train_step, FailingBatches())
    )
    rng_local = torch.get_rng_state()

    def probes(t: autolr.AutoLRS) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in r.items() if k not in ("time", "reason")}
            for r in t.log.of_type("probe")
        ]

    by_key = {(r["stage"], r["index"]): r for r in remote.log.of_type("probe")}
    reason = by_key[(0, 1)]["reason"]
    assert reason.startswith("probe failed: malformed probe outcome:") and "losses for a" in reason
    assert by_key[(1, 0)]["reason"].startswith("probe failed: worker died")
    assert by_key[(0, 1)]["train_losses"] == by_key[(1, 0)]["train_losses"] == []
    assert probes(remote) == probes(local)
    for kind in ("decision", "exploit_end", "rollback"):
        strip = [{k: v for k, v in r.items() if k != "time"} for r in remote.log.of_type(kind)]
        assert strip == [
            {k: v for k, v in r.items() if k != "time"} for r in local.log.of_type(kind)
        ]
    assert remote.global_step == local.global_step == 240
    assert remote.search_steps == sum(len(r["train_losses"]) for r in remote.log.of_type("probe"))
    for key, tensor in l_model.state_dict().items():
        assert torch.equal(r_model.state_dict()[key], tensor), key
    for index, state in l_opt.state_dict()["state"].items():
        assert torch.equal(
            r_opt.state_dict()["state"][index]["momentum_buffer"], state["momentum_buffer"]
        )
    assert torch.equal(rng_remote, rng_local)
