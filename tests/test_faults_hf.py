"""Fault injection through the Hugging Face callback: NaN in the final anneal, a bad
``autolr_state.pt`` on resume, a scheduler the user configured. Each test checks bit
for bit that nothing was lost (weights, optimizer state, RNG, the controller's log)."""

from __future__ import annotations

import copy
import math
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback  # noqa: E402

from autolr import AutoLRS, Phase  # noqa: E402
from autolr.errors import AutoLRWarning, SchedulerConflictWarning, StateError  # noqa: E402
from autolr.integrations.hf import STATE_FILE, AutoLRSCallback  # noqa: E402
from autolr.offline.reader import read_run_log  # noqa: E402
from tests.test_faults_lightning import _finite, _same  # noqa: E402
from tests.test_hf import OPTIONS, STEPS, Recorder, Sequences, StopAt, make_args, make_model  # noqa: E402


def _run(out: Path, after: Callable[[AutoLRSCallback], list[Any]] | None = None,
         model: Any = None, optimizers: tuple[Any, Any] = (None, None),
         cb_options: dict[str, Any] | None = None, **args_kw: Any,
         ) -> tuple[Trainer, AutoLRSCallback, Recorder]:  # fmt: skip
    """Train with AutoLRSCallback, a Recorder after it, then ``after(cb)``'s callbacks."""
    cb = AutoLRSCallback(min_lr=1e-4, max_lr=1e-1, **{**OPTIONS, **(cb_options or {})})
    rec = Recorder(cb)
    trainer = Trainer(
        model=model if model is not None else make_model(),
        args=make_args(out, **args_kw),
        train_dataset=Sequences(),
        callbacks=[cb, rec, *(after(cb) if after else [])],
        optimizers=optimizers,
    )
    trainer.train()
    return trainer, cb, rec


# ------------------------------------------------------- NaN in the anneal
class Poison(TrainerCallback):
    """Fills the weights with NaN before the forward of the given optimizer steps."""

    def __init__(self, at: set[int]) -> None:
        self.at = at

    def on_step_begin(self, args, state, control, model=None, **kw):
        if state.global_step in self.at:
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(math.nan)


class AnnealWatch(TrainerCallback):
    """After AutoLRSCallback: the state the anneal started from, and checks that every
    recovery put exactly that state back (weights, AdamW moments, torch RNG)."""

    def __init__(self, cb: AutoLRSCallback) -> None:
        self.cb = cb
        self.start: tuple[Any, Any, torch.Tensor] | None = None
        self.recoveries = 0

    def on_log(self, args, state, control, logs=None, model=None, optimizer=None, **kw):
        tuner = self.cb.tuner
        if tuner is None or "autolr_phase" not in (logs or {}):
            return
        if tuner.phase is not Phase.ANNEAL and not tuner.finished:
            return
        live = (
            copy.deepcopy(model.state_dict()),
            copy.deepcopy(optimizer.state_dict()["state"]),
            torch.get_rng_state(),
        )
        if self.start is None:
            self.start = live  # captured in this step's tuner.step
        elif tuner.restored:
            self.recoveries += 1
            assert _same(live[0], self.start[0])
            assert _same(live[1], self.start[1])
            assert torch.equal(live[2], self.start[2])


def test_nan_in_the_anneal_goes_back_to_its_start_and_the_run_ends_finite(tmp_path):
    # 90 steps with a 10% anneal: the anneal starts after step 81. Poison two anneal
    # steps and the run's very last one.
    log = tmp_path / "run.jsonl"
    watches: list[AnnealWatch] = []

    def after(cb: AutoLRSCallback) -> list[Any]:
        watches.append(AnnealWatch(cb))
        return [Poison({83, 84, 89}), watches[0]]

    trainer, cb, _ = _run(tmp_path, after, cb_options={"log_path": log})
    (watch,) = watches
    assert watch.start is not None and watch.recoveries == 3
    # The run ends on the anneal's finite start state, the optimizer's too.
    assert _same(trainer.model.state_dict(), watch.start[0])
    assert _same(trainer.optimizer.state_dict()["state"], watch.start[1])
    assert cb.tuner is not None and cb.tuner.finished
    rollbacks = [r for r in read_run_log(log) if r["type"] == "rollback"]
    assert [r["step"] for r in rollbacks] == [84, 85, 90]
    assert {r["reason"] for r in rollbacks} == {"non-finite loss in the anneal"}
    assert _finite(trainer.model.state_dict())
    assert _finite(trainer.optimizer.state_dict()["state"])


def test_without_a_trainer_to_reach_a_non_finite_loss_is_warned_of_once():
    cb = AutoLRSCallback(min_lr=1e-4, max_lr=1e-1, **OPTIONS)
    with pytest.warns(AutoLRWarning, match=r"running loss sum.*attach\(trainer\)"):
        cb._clear_loss_sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cb._clear_loss_sum()


# --------------------------------------------------- bad state on resume
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A Trainer checkpoint at step 20 (stage 0, its exploit), autolr state included."""
    out = tmp_path_factory.mktemp("hf_ckpt")
    _run(out, lambda cb: [StopAt(20)], save_strategy="steps", save_steps=20)
    folder = out / "checkpoint-20"
    assert (folder / STATE_FILE).is_file()
    return folder


def _other_model_state() -> dict[str, Any]:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tuner = AutoLRS(model, opt, 1e-4, 1e-1, total_steps=STEPS, **OPTIONS)
    tuner.step(1.0)
    return tuner.state_dict()


def _write(folder: Path, kind: str) -> None:
    path = folder / STATE_FILE
    if kind == "truncated file":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return
    saved = torch.load(path, weights_only=True)
    if kind == "other model":
        saved["controller"] = _other_model_state()
    elif kind == "truncated state":
        saved["controller"] = {
            k: v for i, (k, v) in enumerate(saved["controller"].items()) if i < 8
        }
    elif kind == "no controller":
        del saved["controller"]
    elif kind == "not a dict":
        saved = [1, 2]
    torch.save(saved, path)


BROKEN = {
    "truncated file": r"cannot read the autolr state .*autolr_state\.pt",
    "other model": r"does not fit this run.*shape",
    "truncated state": r"missing the key",
    "no controller": r"missing the key\(s\) \['controller'\]",
    "not a dict": r"holds a list, not an autolr state",
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_bad_autolr_state_is_refused_and_nothing_is_touched(tmp_path, checkpoint, kind):
    folder = tmp_path / checkpoint.name
    shutil.copytree(checkpoint, folder)
    _write(folder, kind)
    cb = AutoLRSCallback(min_lr=1e-4, max_lr=1e-1, **OPTIONS)
    trainer = Trainer(
        model=make_model(),
        args=make_args(tmp_path),
        train_dataset=Sequences(),
        callbacks=[cb],
    )
    with pytest.raises(StateError, match=BROKEN[kind]):
        trainer.train(resume_from_checkpoint=str(folder))
    assert cb.tuner is None and trainer.state.global_step == 20
    # Weights and optimizer state are the checkpoint's, bit for bit.
    saved = load_file(str(folder / "model.safetensors"))
    live = trainer.model.state_dict()
    assert saved and all(torch.equal(live[k], v) for k, v in saved.items())
    opt_saved = torch.load(folder / "optimizer.pt", weights_only=True)["state"]
    assert opt_saved and _same(trainer.optimizer.state_dict()["state"], opt_saved)


# ------------------------------------------------------------ schedulers
@pytest.mark.slow
def test_a_configured_scheduler_changes_nothing_of_the_run(tmp_path):
    """A scheduler given to the Trainer, or a cosine one with warmup: a warning each,
    and the very same run as with the Trainer's default."""
    plain, _, rec_plain = _run(tmp_path / "plain")
    runs = {}
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.1)
    with pytest.warns(SchedulerConflictWarning, match=r"its own lr_scheduler \(StepLR\)"):
        runs["StepLR"] = _run(tmp_path / "step", model=model, optimizers=(opt, sched))
    with pytest.warns(SchedulerConflictWarning, match=r"lr_scheduler_type='cosine' with 5 warmup"):
        runs["cosine"] = _run(tmp_path / "cosine", lr_scheduler_type="cosine", warmup_steps=5)
    for name, (_, cb, rec) in runs.items():
        assert cb.tuner is not None and cb.tuner.finished, name
        assert [u[0] for u in rec.used] == [u[0] for u in rec_plain.used], name
    # The cosine run has the Trainer's own optimizer: the same run bit for bit.
    cosine, _, rec_cosine = runs["cosine"]
    assert rec_cosine.used == rec_plain.used  # both groups
    assert _same(cosine.model.state_dict(), plain.model.state_dict())
    assert _same(cosine.optimizer.state_dict()["state"], plain.optimizer.state_dict()["state"])
