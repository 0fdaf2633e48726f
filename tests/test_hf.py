"""AutoLRSCallback with a real Hugging Face Trainer on a tiny GPT-2 built from config (CPU)."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from autolr import Phase  # noqa: E402
from autolr.errors import ConfigError, SchedulerConflictWarning, StateError  # noqa: E402
from autolr.integrations.hf import STATE_FILE, AutoLRSCallback  # noqa: E402
from autolr.offline.logs import load_run  # noqa: E402
from autolr.offline.replay import replay_run  # noqa: E402

torch.set_num_threads(1)

VOCAB, LENGTH = 64, 16
# Small stages: 3 probes of 5 steps, tau = 20 then 40. With max_steps=90 and a
# 10% anneal: stage 0 is steps 1-30 (probes 1-15), stage 1 steps 31-81 (probes
# 31-45), the anneal steps 82-90.
OPTIONS: dict[str, Any] = {"tau": 20, "tau_probe": 5, "probes": 3, "seed": 0, "gp_device": "cpu"}
STEPS = 90


class Sequences(Dataset):
    """Arithmetic sequences mod ``VOCAB``: a next-token task a tiny model learns fast."""

    def __init__(self, n: int = 1024, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        start = torch.randint(0, VOCAB, (n, 1), generator=gen)
        stride = torch.randint(1, 4, (n, 1), generator=gen)
        self.ids = (start + stride * torch.arange(LENGTH)) % VOCAB

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def make_model(dropout: float = 0.0) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=LENGTH,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def make_args(tmp_path: Any, **kw: Any) -> TrainingArguments:
    base: dict[str, Any] = {
        "output_dir": str(tmp_path),
        "max_steps": STEPS,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "save_strategy": "no",
        "seed": 0,
    }
    base.update(kw)
    return TrainingArguments(**base)


class Recorder(TrainerCallback):
    """Placed after AutoLRSCallback: the LRs each optimizer step used, what the controller
    decided after each step, and checks that every restore put the snapshot back."""

    def __init__(self, cb: AutoLRSCallback) -> None:
        self.cb = cb
        self.used: list[list[float]] = []
        self.decided: list[list[float]] = []
        self.restores_checked = 0
        self.at_save: dict[int, tuple[Any, ...]] = {}
        self.states_at_save: dict[int, dict[str, Any]] = {}
        self.at_begin: tuple[Any, ...] | None = None

    def _decision(self) -> list[float]:
        tuner = self.cb.tuner
        assert tuner is not None
        return [tuner.current_lr * r for r in tuner.ratios]

    def _where(self) -> tuple[Any, ...]:
        tuner = self.cb.tuner
        assert tuner is not None
        probe = tuner.probe
        return (
            tuner.global_step,
            tuner.stage_index,
            tuner.phase,
            len(tuner.stage.probes) if tuner.stage else None,
            probe.steps if probe else None,
            probe.lr if probe else None,
        )

    def on_train_begin(self, args, state, control, **kw):
        self.decided.append(self._decision())
        self.at_begin = self._where()

    def on_optimizer_step(self, args, state, control, optimizer=None, **kw):
        self.used.append([float(g["lr"]) for g in optimizer.param_groups])

    def on_log(self, args, state, control, logs=None, model=None, optimizer=None, **kw):
        if "autolr_phase" not in logs:
            return
        self.decided.append(self._decision())
        tuner = self.cb.tuner
        assert tuner is not None
        if tuner.restored and tuner.phase is Phase.PROBE:
            snap = tuner.state_dict()["snapshot"]
            for name, value in model.state_dict().items():
                assert torch.equal(value, snap["model"][name]), name
            live = optimizer.state_dict()
            assert live["state"].keys() == snap["optimizer"]["state"].keys()
            for key, st in live["state"].items():
                for k, v in st.items():
                    assert torch.equal(
                        torch.as_tensor(v), torch.as_tensor(snap["optimizer"]["state"][key][k])
                    )
            self.restores_checked += 1

    def on_save(self, args, state, control, **kw):
        self.at_save[state.global_step] = self._where()
        assert self.cb.tuner is not None
        self.states_at_save[state.global_step] = copy.deepcopy(self.cb.tuner.state_dict())


class TrainerView(TrainerCallback):
    """Placed before AutoLRSCallback: the rows as the Trainer logged them."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_log(self, args, state, control, logs=None, **kw):
        self.rows.append(dict(logs))


def train(
    tmp_path, callback_options=None, resume=None, optimizers=(None, None), model=None, **args_kw
):
    cb = AutoLRSCallback(min_lr=1e-4, max_lr=1e-1, **{**OPTIONS, **(callback_options or {})})
    rec, view = Recorder(cb), TrainerView()
    trainer = Trainer(
        model=model if model is not None else make_model(args_kw.pop("dropout", 0.0)),
        args=make_args(tmp_path, **args_kw),
        train_dataset=Sequences(),
        callbacks=[view, cb, rec],
        optimizers=optimizers,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, cb, rec, view


def assert_used_is_decided(rec: Recorder, steps: int) -> None:
    assert len(rec.used) == steps
    # decided[i]: set after step i (decided[0] at on_train_begin), used by step i + 1.
    for i, used in enumerate(rec.used):
        assert used == rec.decided[i], f"step {i + 1}"


def test_lr_used_is_what_autolr_decided_and_log_history_shows_it(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, cb, rec, view = train(tmp_path)
    assert not [w for w in caught if issubclass(w.category, SchedulerConflictWarning)]
    tuner = cb.tuner
    assert tuner is not None and tuner.finished
    assert tuner.global_step == trainer.state.global_step == STEPS
    assert tuner.search_steps == 30 and len(tuner.summary()) == 2
    assert_used_is_decided(rec, STEPS)
    # The Trainer's decay / no-decay groups share one LR.
    assert all(u[0] == u[1] for u in rec.used) and tuner.ratios == [1.0, 1.0]
    # Probes really explore: several LRs in stage 0.
    assert len({round(u[0], 12) for u in rec.used[:15]}) == 3
    # The loss is the per-step loss although logging_steps is the default 500.
    rows = [r for r in trainer.state.log_history if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert list(tuner.trace_loss) == [r["loss"] for r in rows]
    for row, used in zip(rows, rec.used):
        assert row["learning_rate"] == used[0]
        assert row["autolr_phase"] in {p.value for p in Phase}
        # The anneal comes after the last stage (index 1): its index is 2.
        assert row["autolr_stage"] in (0, 1, 2) and 1e-4 <= row["autolr_lr"] <= 1e-1
    phases = [r["autolr_phase"] for r in rows]
    assert phases[:15] == ["probe"] * 15 and phases[-1] == "anneal" and "exploit" in phases
    # Loggers placed before the callback see the Trainer's own learning_rate: autolr's too.
    seen = [r for r in view.rows if "loss" in r]
    assert [r["learning_rate"] for r in seen] == pytest.approx([u[0] for u in rec.used], rel=1e-12)
    assert trainer.state.log_history[-1]["train_loss"] == pytest.approx(
        sum(r["loss"] for r in rows) / STEPS
    )
    assert trainer.args.logging_nan_inf_filter is False


def test_each_probe_starts_from_the_snapshot(tmp_path):
    _, cb, rec, _ = train(tmp_path, dropout=0.1)
    # Two restores into a probe per stage (before probes 2 and 3), two stages.
    assert rec.restores_checked == 4


def test_gradient_accumulation_steps_once_per_optimizer_step(tmp_path):
    steps = 30
    opts = {"tau": 10, "tau_probe": 3, "probes": 2, "min_probe_steps": 3}
    full, cb_full, _, _ = train(tmp_path / "full", opts, max_steps=steps)
    accum, cb, rec, _ = train(
        tmp_path / "accum",
        opts,
        max_steps=steps,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
    )
    assert cb.tuner is not None and cb.tuner.global_step == accum.state.global_step == steps
    assert_used_is_decided(rec, steps)
    rows = [r for r in accum.state.log_history if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    # Two micro-batches of 4 make the same first step as one batch of 8.
    assert cb_full.tuner is not None
    assert cb.tuner.trace_loss[0] == pytest.approx(cb_full.tuner.trace_loss[0], rel=1e-5)


def test_param_groups_keep_their_ratio(tmp_path):
    model = make_model()
    emb = [p for n, p in model.named_parameters() if "wte" in n or "wpe" in n]
    rest = [p for n, p in model.named_parameters() if not ("wte" in n or "wpe" in n)]
    opt = torch.optim.AdamW([{"params": rest, "lr": 1e-3}, {"params": emb, "lr": 2.5e-4}])
    cb = AutoLRSCallback(min_lr=1e-4, max_lr=1e-1, **OPTIONS)
    rec = Recorder(cb)
    trainer = Trainer(
        model=model,
        args=make_args(tmp_path),
        train_dataset=Sequences(),
        callbacks=[cb, rec],
        optimizers=(opt, None),
    )
    trainer.train()
    assert cb.tuner is not None and cb.tuner.ratios == [1.0, 0.25]
    assert_used_is_decided(rec, STEPS)
    for used in rec.used:
        assert used[1] == pytest.approx(0.25 * used[0], rel=1e-12)


@pytest.mark.slow
def test_resume_mid_probe_continues_the_same_search(tmp_path):
    # Checkpoint at step 7: stage 0, the second probe has taken 2 of its 5 steps.
    log = {"log_path": tmp_path / "run.jsonl"}
    full, cb, rec, _ = train(tmp_path, log, save_strategy="steps", save_steps=7, dropout=0.1)
    where = rec.at_save[7]
    assert where[1:] == (0, Phase.PROBE, 1, 2, rec.used[6][0])
    assert (tmp_path / "checkpoint-7" / STATE_FILE).is_file()
    decisions = [
        {k: v for k, v in r.items() if k != "time"}
        for r in cb.tuner.log.of_type("decision")  # type: ignore[union-attr]
    ]

    again, cb2, rec2, _ = train(
        tmp_path,
        log,
        save_strategy="steps",
        save_steps=7,
        dropout=0.1,
        resume=str(tmp_path / "checkpoint-7"),
    )
    assert rec2.at_begin == where
    assert len(rec2.used) == STEPS - 7
    assert rec2.used == rec.used[7:]
    assert list(cb2.tuner.trace_loss) == list(cb.tuner.trace_loss)[7:]  # type: ignore[union-attr]
    assert [
        {k: v for k, v in r.items() if k != "time"}
        for r in cb2.tuner.log.of_type("decision")  # type: ignore[union-attr]
    ] == decisions
    for (name, a), b in zip(full.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
    # One log: the whole first run, then the resumed one from step 7; read as one run,
    # the first run's steps after 7 set aside, it replays exactly.
    run = load_run(log["log_path"])
    assert [r["step"] for r in run.resumes] == [7] and run.abandoned
    assert all(r["step"] > 7 for r in run.abandoned)
    result = replay_run(run)
    assert result.matches and result.stopped is None, [m.describe() for m in result.mismatches]


def test_resume_from_a_checkpoint_outside_the_output_dir_continues_the_search(tmp_path):
    # The path given to trainer.train reaches no callback: it is found on the stack.
    _, _, rec, _ = train(tmp_path, save_strategy="steps", save_steps=7, dropout=0.1)
    other = tmp_path / "elsewhere"
    _, _, rec2, _ = train(
        other, dropout=0.1, save_strategy="no", resume=str(tmp_path / "checkpoint-7")
    )
    assert rec2.at_begin == rec.at_save[7]
    assert rec2.used == rec.used[7:]


def test_max_steps_too_small_for_one_stage(tmp_path):
    cb = AutoLRSCallback(min_lr=1e-4, max_lr=1e-1)
    trainer = Trainer(
        model=make_model(),
        args=make_args(tmp_path, max_steps=40),
        train_dataset=Sequences(),
        callbacks=[cb],
    )
    with pytest.raises(ConfigError, match=r"too small for strategy='anneal'.*max_steps=40"):
        trainer.train()


def test_a_scheduler_given_to_the_trainer_warns_and_is_overridden(tmp_path):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.1)
    with pytest.warns(SchedulerConflictWarning, match=r"its own lr_scheduler \(StepLR\)"):
        trainer, cb, rec, _ = train(tmp_path, optimizers=(opt, sched), model=model)
    assert_used_is_decided(rec, STEPS)
    rows = [r for r in trainer.state.log_history if "loss" in r]
    assert [r["learning_rate"] for r in rows] == [u[0] for u in rec.used]


def test_a_scheduler_type_with_warmup_warns_and_is_overridden(tmp_path):
    with pytest.warns(SchedulerConflictWarning, match=r"lr_scheduler_type='cosine' with 5 warmup"):
        _, cb, rec, _ = train(tmp_path, lr_scheduler_type="cosine", warmup_steps=5)
    # The warmup had set the LRs to 0: the ratios come from the configured LRs.
    assert cb.tuner is not None and cb.tuner.ratios == [1.0, 1.0]
    assert_used_is_decided(rec, STEPS)


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match=r"min_lr must be below max_lr"):
        AutoLRSCallback(min_lr=0.1, max_lr=0.01)
    with pytest.raises(ConfigError, match=r"unknown AutoLRSCallback options \['taus'\]"):
        AutoLRSCallback(min_lr=1e-4, max_lr=0.1, taus=3)
    with pytest.raises(ConfigError, match=r"tau_probe must be <= tau"):
        AutoLRSCallback(min_lr=1e-4, max_lr=0.1, tau=5, tau_probe=10)
    with pytest.raises(ConfigError, match=r"prober is not supported"):
        AutoLRSCallback(min_lr=1e-4, max_lr=0.1, prober=object())


class QuietLogs(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        control.should_log = False
        return control


def test_a_callback_that_silences_the_log_is_an_error(tmp_path):
    cb = AutoLRSCallback(min_lr=1e-4, max_lr=1e-1, **OPTIONS)
    trainer = Trainer(
        model=make_model(),
        args=make_args(tmp_path),
        train_dataset=Sequences(),
        callbacks=[cb, QuietLogs()],
    )
    with pytest.raises(StateError, match=r"no training loss for step 1"):
        trainer.train()


def _plain_and_equal(a: Any, b: Any, where: str = "state") -> None:
    """``a`` holds only tensors and JSON-like data, and equals ``b`` (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _plain_and_equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _plain_and_equal(x, y, f"{where}[{i}]")
    else:
        assert a is None or isinstance(a, (bool, int, float, str)), (where, type(a))
        assert a == b or (a != a and b != b), where  # NaN equals NaN here


def test_checkpoint_state_is_plain_tensors_and_the_controllers_at_that_step(tmp_path):
    _, cb, rec, _ = train(tmp_path, save_strategy="steps", save_steps=45)
    saved = torch.load(tmp_path / "checkpoint-45" / STATE_FILE, weights_only=True)
    assert saved["trainer_step"] == 45
    # What the checkpoint holds is the controller's state when it was written, not a
    # later one (the run went on to step 90) nor a partial one.
    assert cb.tuner is not None and cb.tuner.global_step == STEPS
    _plain_and_equal(saved["controller"], rec.states_at_save[45], "controller")


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def test_resume_from_a_checkpoint_without_autolr_state_starts_a_new_search(tmp_path, caplog):
    args = make_args(tmp_path, max_steps=STEPS + 20, save_strategy="steps", save_steps=20)
    plain = Trainer(
        model=make_model(), args=args, train_dataset=Sequences(), callbacks=[StopAt(20)]
    )
    plain.train()
    assert not (tmp_path / "checkpoint-20" / STATE_FILE).exists()
    with caplog.at_level("WARNING", logger="autolr.integrations.hf"):
        trainer, cb, rec, _ = train(
            tmp_path, max_steps=STEPS + 20, resume=str(tmp_path / "checkpoint-20")
        )
    assert "resumed at step 20 without autolr state" in caplog.text
    assert cb.tuner is not None and cb.tuner.config.total_steps == STEPS
    assert cb.tuner.finished and trainer.state.global_step == STEPS + 20
    assert_used_is_decided(rec, STEPS)


def test_a_resume_without_autolr_state_names_the_steps_left_when_they_are_too_few(tmp_path):
    args = make_args(tmp_path, max_steps=30, save_strategy="steps", save_steps=20)
    Trainer(model=make_model(), args=args, train_dataset=Sequences()).train()
    with pytest.raises(ConfigError, match=r"the 10 steps left of the Trainer's max_steps=30"):
        train(tmp_path, max_steps=30, resume=str(tmp_path / "checkpoint-20"))


@pytest.mark.slow
def test_the_annealed_strategy_needs_no_range_and_resumes_mid_race(tmp_path):
    # No min_lr/max_lr: the range test (at most 40 steps), a race of 3 probes of 5 steps
    # plus a 5-step cooldown each, the hold, then the decay over the second half.
    steps = 200
    save = 49
    opts = {"strategy": "anneal", "probes": 3, "tau_probe": 5, "seed": 0, "gp_device": "cpu"}

    def run(resume=None):
        cb = AutoLRSCallback(**opts)
        rec = Recorder(cb)
        trainer = Trainer(
            model=make_model(),
            args=make_args(tmp_path, max_steps=steps, save_strategy="steps", save_steps=save),
            train_dataset=Sequences(),
            callbacks=[cb, rec],
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer, cb, rec

    full, cb, rec = run()
    tuner = cb.tuner
    assert tuner is not None and tuner.finished and tuner.global_step == steps
    (test,) = tuner.log.of_type("range_test")
    ramp = len(test["losses"])
    assert 8 < ramp <= 40 and tuner.search_range is not None
    probes = tuner.log.of_type("probe")
    assert len(probes) == 3 and all(len(p["train_losses"]) == 10 for p in probes)
    assert_used_is_decided(rec, steps)
    # The checkpoint falls in the race's second probe, in its cooldown.
    where = rec.at_save[save]
    done, into = divmod(save - ramp, 10)
    assert where[1:5] == (0, Phase.PROBE, done, into) and done == 1 and into > 5
    again, cb2, rec2 = run(resume=str(tmp_path / f"checkpoint-{save}"))
    assert rec2.at_begin == where and rec2.used == rec.used[save:]
    assert cb2.tuner is not None
    assert cb2.tuner.log.of_type("decision")[-1]["lr"] == tuner.log.of_type("decision")[-1]["lr"]
    for (name, a), b in zip(full.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
