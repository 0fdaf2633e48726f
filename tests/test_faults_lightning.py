"""Fault injection through the Lightning callback: NaN in the final anneal, a bad
checkpoint state on resume, a scheduler the user configured. Each test checks bit
for bit that nothing was lost (weights, optimizer state, RNG, the controller's log)."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("lightning")

from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402

from autolr import AutoLRS, Phase  # noqa: E402
from autolr.errors import SchedulerConflictWarning, StateError  # noqa: E402
from autolr.integrations.lightning import AutoLRSCallback  # noqa: E402
from autolr.offline.reader import read_run_log  # noqa: E402
from tests.test_lightning import (  # noqa: E402
    BATCHES_PER_EPOCH,
    OPTIONS,
    InterruptAt,
    TinyModule,
    fit,
)


def _tensors(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for k in sorted(tree, key=str) for t in _tensors(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _tensors(v)]
    return []


def _same(a: Any, b: Any) -> bool:
    """Equal nested states, tensors compared bit for bit."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _finite(tree: Any) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in _tensors(tree) if t.is_floating_point())


# ------------------------------------------------------- NaN in the anneal
class PoisonedModule(TinyModule):
    """Fills its weights with NaN before the forward of the given optimizer steps."""

    def __init__(self, poison_at: set[int]) -> None:
        super().__init__()
        self.poison_at = poison_at

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.trainer.global_step in self.poison_at:
            with torch.no_grad():
                for p in self.parameters():
                    p.fill_(math.nan)
        return super().training_step(batch, batch_idx)


class AnnealWatch(Callback):
    """After AutoLRSCallback: the state the anneal started from, and checks that every
    recovery put exactly that state back (weights, momentum buffers, torch RNG)."""

    def __init__(self, cb: AutoLRSCallback) -> None:
        self.cb = cb
        self.start: tuple[Any, Any, torch.Tensor] | None = None
        self.recoveries = 0

    def _live(self, trainer: Any, pl_module: Any) -> tuple[Any, Any, torch.Tensor]:
        return (
            copy.deepcopy(pl_module.state_dict()),
            copy.deepcopy(trainer.optimizers[0].state_dict()["state"]),
            torch.get_rng_state(),
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        tuner = self.cb.tuner
        if tuner is None or tuner.phase is not Phase.ANNEAL and not tuner.finished:
            return
        if self.start is None:
            self.start = self._live(trainer, pl_module)  # captured in this step's tuner.step
        elif tuner.restored:
            self.recoveries += 1
            weights, opt_state, rng = self._live(trainer, pl_module)
            assert _same(weights, self.start[0])
            assert _same(opt_state, self.start[1])
            assert torch.equal(rng, self.start[2])


def test_nan_in_the_anneal_goes_back_to_its_start_and_the_run_ends_finite(tmp_path):
    # max_steps=100 with a 10% anneal: the anneal starts after step 90. Poison two
    # anneal steps and the run's very last one.
    log = tmp_path / "run.jsonl"
    cb = AutoLRSCallback(min_lr=1e-3, max_lr=1.0, log_path=log, **OPTIONS)
    watch = AnnealWatch(cb)
    module = PoisonedModule(poison_at={92, 93, 99})
    _, module, trainer = fit(tmp_path, module=module, cb=cb, extra=[watch])
    tuner = cb.tuner
    assert tuner is not None and tuner.finished and trainer.global_step == 100
    assert watch.start is not None and watch.recoveries == 3
    # The run ends on the anneal's finite start state, the optimizer's too.
    assert _same(copy.deepcopy(module.state_dict()), watch.start[0])
    assert _same(copy.deepcopy(trainer.optimizers[0].state_dict()["state"]), watch.start[1])
    assert _finite(module.state_dict()) and _finite(trainer.optimizers[0].state_dict())
    records = read_run_log(log)
    rollbacks = [r for r in records if r["type"] == "rollback"]
    assert [r["step"] for r in rollbacks] == [93, 94, 100]
    assert {r["reason"] for r in rollbacks} == {"non-finite loss in the anneal"}
    assert records[-1]["type"] == "run_end" and records[-1]["total"] == 100


# --------------------------------------------------- bad state on resume
def _checkpoint_mid_run(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A Lightning checkpoint at step 42 (stage 1, in a probe) and its contents."""
    stop_at = 6 * BATCHES_PER_EPOCH

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=stop_at, save_top_k=-1)
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(
            tmp_path / "a",
            cb=AutoLRSCallback(1e-3, 1.0, **OPTIONS),
            extra=[InterruptAt(stop_at), ckpt],
            enable_checkpointing=True,
        )
    path = next((tmp_path / "ckpt").glob("*.ckpt"))
    return path, torch.load(path, weights_only=True)


def _other_model_tuner_state() -> dict[str, Any]:
    net = torch.nn.Module()  # the same keys as TinyModule's, other shapes
    net.net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    tuner = AutoLRS(net, opt, 1e-3, 1.0, total_steps=100, **OPTIONS)
    for _ in range(3):
        tuner.step(1.0)
    return tuner.state_dict()


def _adam_snapshot(state: dict[str, Any]) -> dict[str, Any]:
    """The tuner state with its snapshot's optimizer state taken from an Adam run."""
    module = TinyModule()
    adam = torch.optim.Adam(module.parameters(), lr=1e-2)
    module.net(torch.zeros(2, 8)).sum().backward()
    adam.step()
    snap = {**state["snapshot"], "optimizer": adam.state_dict()}
    return {**state, "snapshot": snap}


BROKEN = {
    "truncated": (lambda s: {k: v for i, (k, v) in enumerate(s.items()) if i < 8}, "missing"),
    "other model": (lambda s: _other_model_tuner_state(), r"does not fit this run.*shape"),
    "other optimizer kind": (_adam_snapshot, r"another optimizer kind"),
    "bad snapshot": (lambda s: {**s, "snapshot": {"model": 3}}, r"malformed"),
    "schema": (lambda s: {**s, "schema_version": 99}, r"schema_version=99"),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    return _checkpoint_mid_run(tmp_path_factory.mktemp("lightning_ckpt"))


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_bad_tuner_state_in_the_checkpoint_is_refused_and_nothing_is_touched(
    tmp_path, checkpoint, kind
):
    path, ckpt = checkpoint
    break_state, pattern = BROKEN[kind]
    bad = copy.deepcopy(ckpt)
    cb_state = bad["callbacks"]["AutoLRSCallback"]
    cb_state["tuner"] = break_state(copy.deepcopy(cb_state["tuner"]))
    bad_path = tmp_path / "bad.ckpt"
    torch.save(bad, bad_path)
    log = tmp_path / "resumed.jsonl"
    cb = AutoLRSCallback(1e-3, 1.0, log_path=log, **OPTIONS)
    module = TinyModule()
    trained: list[int] = []

    class Steps(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            trained.append(trainer.global_step)

    with pytest.raises(StateError, match=pattern):
        fit(tmp_path, module=module, cb=cb, extra=[Steps()], ckpt_path=str(bad_path))
    assert cb.tuner is None and trained == []  # no controller, no training step
    # The weights are the checkpoint's, bit for bit: autolr wrote nothing into them.
    assert _same(copy.deepcopy(module.state_dict()), ckpt["state_dict"])


def test_a_bad_callback_state_is_refused_before_training(tmp_path, checkpoint):
    path, ckpt = checkpoint
    for entry, value, pattern in (
        ("loss_count", "3", r"wrong type: loss_count=str"),
        ("tuner", 7, r"wrong type: tuner=int"),
        ("total_steps", 1.5, r"wrong type: total_steps=float"),
    ):
        bad = copy.deepcopy(ckpt)
        bad["callbacks"]["AutoLRSCallback"][entry] = value
        bad_path = tmp_path / f"bad_{entry}.ckpt"
        torch.save(bad, bad_path)
        cb = AutoLRSCallback(1e-3, 1.0, **OPTIONS)
        module = TinyModule()
        with pytest.raises(StateError, match=pattern):
            fit(tmp_path, module=module, cb=cb, ckpt_path=str(bad_path))
        assert cb.tuner is None
        assert _same(copy.deepcopy(module.state_dict()), ckpt["state_dict"])


# ------------------------------------------------------------ schedulers
def test_a_configured_scheduler_changes_nothing_of_the_run(tmp_path):
    """With a StepLR from configure_optimizers: a warning, and the very same run as without."""
    log_plain, log_sched = tmp_path / "plain.jsonl", tmp_path / "sched.jsonl"
    cb_plain = AutoLRSCallback(1e-3, 1.0, log_path=log_plain, **OPTIONS)
    _, plain, _ = fit(tmp_path / "plain", cb=cb_plain)
    cb = AutoLRSCallback(1e-3, 1.0, log_path=log_sched, **OPTIONS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, module, trainer = fit(tmp_path / "sched", module=TinyModule(scheduler=True), cb=cb)
    conflicts = [str(w.message) for w in caught if w.category is SchedulerConflictWarning]
    assert len(conflicts) == 1 and "disabled the LR scheduler(s) ['StepLR']" in conflicts[0]
    assert trainer.lr_scheduler_configs == []
    assert module.used_lrs == plain.used_lrs and module.losses == plain.losses
    assert _same(copy.deepcopy(module.state_dict()), copy.deepcopy(plain.state_dict()))

    def decisions(path: Path) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in r.items() if k != "time"}
            for r in read_run_log(path)
            if r["type"] in ("probe", "decision", "exploit_end")
        ]

    assert decisions(log_sched) == decisions(log_plain) and decisions(log_plain)
