"""Snapshots restore every tensor bit-identically and never alias live state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from autolr import AutoLRS, Phase
from autolr.snapshot import capture, resolve_snapshot_device, restore
from tests.conftest import Regression, make_model, train_step


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(16, 1)

    def forward(self, x):
        return self.out(self.drop(torch.relu(self.bn(self.fc(x)))))


def _state(model, opt):
    tensors = {f"m.{k}": v.clone() for k, v in model.state_dict().items()}
    for pid, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"o.{pid}.{k}"] = v.clone()
    return tensors


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("opt_cls", [torch.optim.AdamW, torch.optim.SGD])
def test_restore_is_bit_identical_and_training_after_matches(opt_cls):
    task = Regression()
    torch.manual_seed(0)
    model = BNNet()
    kwargs = {"momentum": 0.9} if opt_cls is torch.optim.SGD else {}
    opt = opt_cls(model.parameters(), lr=0.01, **kwargs)
    for i in range(5):
        train_step(model, opt, task.batch_at(i))
    snap = capture(model, opt)
    before = _state(model, opt)
    # Reference: 5 more steps straight from the snapshot, with dropout drawing on the RNG.
    ref_losses = [float(train_step(model, opt, task.batch_at(100 + i))) for i in range(5)]
    ref_after = _state(model, opt)
    # A "probe" at another LR moves everything, then restore.
    restore(snap, model, opt)
    opt.param_groups[0]["lr"] = 0.5
    for i in range(7):
        train_step(model, opt, task.batch_at(50 + i))
    random.random(), np.random.rand(), torch.rand(3)
    restore(snap, model, opt)
    _assert_identical(before, _state(model, opt))
    assert opt.param_groups[0]["lr"] == 0.01
    losses = [float(train_step(model, opt, task.batch_at(100 + i))) for i in range(5)]
    assert losses == ref_losses
    _assert_identical(ref_after, _state(model, opt))


def test_snapshot_is_not_aliased_by_later_training():
    task = Regression()
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    train_step(model, opt, task.batch_at(0))
    snap = capture(model, opt)
    frozen = {k: v.clone() for k, v in snap.model.items()}
    restore(snap, model, opt)
    for i in range(3):
        train_step(model, opt, task.batch_at(i))
    _assert_identical(frozen, snap.model)
    # Optimizer state in the snapshot is untouched too (restore hands out clones).
    step_before = snap.optimizer["state"][0]["step"].clone()
    restore(snap, model, opt)
    train_step(model, opt, task.batch_at(9))
    assert torch.equal(snap.optimizer["state"][0]["step"], step_before)


def test_rng_states_restored():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = capture(model, opt)
    expected = (torch.rand(2), np.random.rand(), random.random())
    restore(snap, model, opt)
    got = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]


def test_extra_state_is_snapshotted():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    snap = capture(model, opt, {"sched": sched})
    sched.step()
    sched.step()
    restore(snap, model, opt, {"sched": sched})
    assert sched.last_epoch == 0


@pytest.mark.parametrize(
    ("strategy", "phase"), [("forecast", Phase.PROBE), ("anneal", Phase.RANGE)]
)
def test_exception_inside_probe_leaves_model_restored(task, strategy, phase):
    # A probe of the forecast strategy, the range test of the annealed one: both from a snapshot.
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    start = _state(model, opt)
    with pytest.raises(RuntimeError, match="data loader broke"):
        with AutoLRS(
            model, opt, min_lr=1e-3, max_lr=1.0, total_steps=2000, strategy=strategy
        ) as tuner:
            for i, batch in enumerate(task.stream()):
                tuner.step(train_step(model, opt, batch))
                assert tuner.phase is phase
                if i == 3:
                    raise RuntimeError("data loader broke")
    _assert_identical(start, _state(model, opt))
    assert opt.param_groups[0]["lr"] == tuner.current_lr  # the restarted probe or ramp


def test_restore_snapshot_method(task):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    start = _state(model, opt)
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=2000)
    for i in range(4):
        tuner.step(train_step(model, opt, task.batch_at(i)))
    assert tuner.restore_snapshot()
    _assert_identical(start, _state(model, opt))


def test_snapshot_device_same_follows_the_model_and_a_name_is_taken_as_given():
    # On the CPU "same" and the default ("cpu") agree for a CPU model; a model on
    # the meta device (no data, no accelerator needed) tells them apart.
    model = make_model().to("meta")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert resolve_snapshot_device(model, "same") == torch.device("meta")
    assert resolve_snapshot_device(model, "cpu") == torch.device("cpu")
    assert resolve_snapshot_device(model, "cuda:1") == torch.device("cuda", 1)
    assert resolve_snapshot_device(torch.nn.Module(), "same") == torch.device("cpu")
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=2000, snapshot_device="same")
    snap = tuner._snapshot
    assert snap is not None and tuner._snapshot_device == torch.device("meta")
    assert {v.device.type for v in snap.model.values()} == {"meta"}
    moments = [t for st in snap.optimizer["state"].values() for t in st.values()]
    assert all(t.device.type == "meta" for t in moments if isinstance(t, torch.Tensor))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: a GPU model's snapshot")
def test_snapshot_of_a_gpu_model_is_on_the_gpu_with_same_and_on_the_cpu_by_default(task):
    model = make_model().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = (t.cuda() for t in task.batch_at(0))
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()  # momentum buffers in the snapshot too
    same = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=2000, snapshot_device="same")
    default = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=2000)
    assert same._snapshot is not None and default._snapshot is not None
    assert {v.device.type for v in same._snapshot.model.values()} == {"cuda"}
    assert {v.device.type for v in default._snapshot.model.values()} == {"cpu"}
    for key, value in model.state_dict().items():
        assert torch.equal(same._snapshot.model[key], value)
        assert torch.equal(default._snapshot.model[key].cuda(), value)
