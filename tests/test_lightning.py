"""AutoLRSCallback with a real Lightning Trainer on a tiny regression model (CPU).

Run as a script (``python tests/test_lightning.py --ddp-worker OUT``) it is the
DDP worker of :func:`test_ddp_ranks_take_the_same_decisions`: Lightning's ``ddp``
strategy starts the second rank by running the same command again.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("lightning")

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from lightning.pytorch.strategies import SingleDeviceStrategy  # noqa: E402

from autolr import Phase  # noqa: E402
from autolr.cli import main  # noqa: E402
from autolr.controller import PHASE_CODES  # noqa: E402
from autolr.errors import ConfigError, SchedulerConflictWarning, StateError  # noqa: E402
from autolr.integrations.lightning import AutoLRSCallback  # noqa: E402
from autolr.offline.logs import load_run  # noqa: E402
from autolr.offline.reader import read_run_log  # noqa: E402
from autolr.offline.replay import replay_run  # noqa: E402

torch.set_num_threads(1)

# Small stages: 4 probes of 5 steps, tau = 20 then 40. With max_steps=100 and a
# 10% anneal: stage 0 is steps 0-35 (probes 0-20), stage 1 steps 35-90 (probes
# 35-55), anneal 90-100.
OPTIONS: dict[str, Any] = {"tau": 20, "tau_probe": 5, "probes": 4, "seed": 0, "gp_device": "cpu"}
BATCHES_PER_EPOCH = 7


def make_loader(n_batches: int = BATCHES_PER_EPOCH, batch: int = 16) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n_batches * batch, 8, generator=gen)
    w = torch.randn(8, 1, generator=gen)
    y = torch.tanh(x @ w) + 0.1 * torch.randn(len(x), 1, generator=gen)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


class TinyModule(pl.LightningModule):
    """An MLP; records the LR of every optimizer step and every micro-batch's loss."""

    def __init__(
        self,
        optimizer: str = "sgd",
        scheduler: bool = False,
        optimizers: int = 1,
        manual: bool = False,
        meddle_lr: bool = False,
    ) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        self.optimizer_name, self.scheduler, self.n_optimizers = optimizer, scheduler, optimizers
        self.automatic_optimization = not manual
        self.meddle_lr = meddle_lr
        self.used_lrs: list[float] = []
        self.losses: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.losses.append(float(loss.detach()))
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Runs after the callbacks' hook: the LR the step is about to use.
        self.used_lrs.append(float(optimizer.param_groups[0]["lr"]))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.meddle_lr:
            for group in self.trainer.optimizers[0].param_groups:
                group["lr"] = 123.0

    def configure_optimizers(self) -> Any:
        def make() -> torch.optim.Optimizer:
            if self.optimizer_name == "adam":
                return torch.optim.Adam(self.parameters(), lr=1e-2)
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

        opts = [make() for _ in range(self.n_optimizers)]
        if self.scheduler:
            return [opts[0]], [torch.optim.lr_scheduler.StepLR(opts[0], step_size=1, gamma=0.5)]
        return opts if len(opts) > 1 else opts[0]


def make_trainer(tmp_path: Path, callbacks: list[Callback], **kwargs: Any) -> pl.Trainer:
    settings: dict[str, Any] = dict(
        max_steps=100,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    settings.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **settings)


def fit(tmp_path: Path, module: TinyModule | None = None, ckpt_path: str | None = None,
        cb: AutoLRSCallback | None = None, extra: list[Callback] | None = None,
        **kwargs: Any) -> tuple[AutoLRSCallback, TinyModule, pl.Trainer]:  # fmt: skip
    cb = cb or AutoLRSCallback(min_lr=1e-3, max_lr=1.0, **OPTIONS)
    module = module or TinyModule()
    trainer = make_trainer(tmp_path, [cb, *(extra or [])], **kwargs)
    trainer.fit(module, train_dataloaders=make_loader(), ckpt_path=ckpt_path)
    return cb, module, trainer


class InterruptAt(Callback):
    """Raises ``RuntimeError("interrupted")`` when training reaches ``step``: a crash."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("interrupted")


def without_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


# ---------------------------------------------------------------- basic run
def test_lr_used_each_step_is_the_controllers_and_is_logged(tmp_path):
    loggers = [CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")]
    cb, module, trainer = fit(tmp_path, logger=loggers, log_every_n_steps=1)
    tuner = cb.tuner
    assert tuner is not None and tuner.finished
    assert trainer.global_step == tuner.global_step == 100
    assert module.used_lrs == list(tuner.trace_lr)
    phases = set(tuner.trace_phase)
    assert {
        PHASE_CODES[Phase.PROBE],
        PHASE_CODES[Phase.EXPLOIT],
        PHASE_CODES[Phase.ANNEAL],
    } <= phases
    assert len(tuner.log.of_type("decision")) == 2

    with open(Path(loggers[0].log_dir) / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("autolr/lr")]
    assert [float(r["autolr/lr"]) for r in rows] == pytest.approx(module.used_lrs, rel=1e-6)
    assert [int(float(r["autolr/phase"])) for r in rows] == list(tuner.trace_phase)
    stages = [int(float(r["autolr/stage"])) for r in rows]
    assert stages == sorted(stages) and {0, 1} <= set(stages)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(loggers[1].log_dir))
    events.Reload()
    assert {"autolr/lr", "autolr/stage", "autolr/phase"} <= set(events.Tags()["scalars"])
    tb_lrs = [e.value for e in events.Scalars("autolr/lr")]
    assert tb_lrs == pytest.approx(module.used_lrs, rel=1e-6)


def test_every_probe_starts_from_the_stage_snapshot(tmp_path):
    """Model and optimizer (Adam moments) at each probe's first step equal the snapshot."""

    class Check(Callback):
        def __init__(self) -> None:
            self.starts: list[tuple[int, dict[str, torch.Tensor], dict[str, Any]]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            tuner = cb.tuner
            if tuner is not None and tuner.in_probe and tuner.probe.steps == 0:
                params = {k: v.clone() for k, v in pl_module.state_dict().items()}
                snap = tuner.state_dict()["snapshot"]
                for k, v in params.items():
                    assert torch.equal(v, snap["model"][k]), k
                opt = trainer.optimizers[0].state_dict()["state"]
                for i, st in snap["optimizer"]["state"].items():
                    assert torch.equal(opt[i]["exp_avg"], st["exp_avg"])
                self.starts.append((tuner.stage_index, params, opt))

    cb = AutoLRSCallback(min_lr=1e-4, max_lr=0.3, **OPTIONS)
    check = Check()
    fit(tmp_path, module=TinyModule(optimizer="adam"), cb=cb, extra=[check])
    assert [s for s, *_ in check.starts] == [0] * 4 + [1] * 4
    # Stage 1's snapshot was trained from stage 0's: the probes did move the model.
    assert not torch.equal(check.starts[0][1]["net.0.weight"], check.starts[4][1]["net.0.weight"])


def test_exception_mid_probe_puts_the_snapshot_back(tmp_path):
    class Boom(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            tuner = cb.tuner
            if tuner is not None and tuner.in_probe and tuner.probe.steps == 3:
                raise RuntimeError("boom")

    cb = AutoLRSCallback(min_lr=1e-3, max_lr=1.0, **OPTIONS)
    module = TinyModule()
    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path, module=module, cb=cb, extra=[Boom()])
    snap = cb.tuner.state_dict()["snapshot"]["model"]
    for k, v in module.state_dict().items():
        assert torch.equal(v, snap[k]), k


# ------------------------------------------------------------------- resume
def test_resume_mid_probe_continues_the_search(tmp_path):
    """Interrupted at step 42 (mid probe 1 of stage 1), resumed: same decisions as one run."""
    full_log, split_log = tmp_path / "full.jsonl", tmp_path / "split.jsonl"
    cb_full, full, _ = fit(
        tmp_path / "full", cb=AutoLRSCallback(1e-3, 1.0, log_path=full_log, **OPTIONS)
    )

    stop_at = 6 * BATCHES_PER_EPOCH  # an epoch boundary, so the data order resumes exactly

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=stop_at, save_top_k=-1)
    cb_a = AutoLRSCallback(1e-3, 1.0, log_path=split_log, **OPTIONS)
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(tmp_path / "a", cb=cb_a, extra=[InterruptAt(stop_at), ckpt], enable_checkpointing=True)
    path = next((tmp_path / "ckpt").glob("*.ckpt"))
    assert torch.load(path, weights_only=True)["callbacks"]["AutoLRSCallback"]["tuner"]

    cb_b = AutoLRSCallback(1e-3, 1.0, log_path=split_log, **OPTIONS)

    class AtResume(Callback):
        def on_train_start(self, trainer, pl_module):
            tuner = cb_b.tuner
            self.where = (tuner.global_step, tuner.stage_index, tuner.phase, tuner.probe.steps)
            self.probes_done = len(tuner.stage.probes)

    at = AtResume()
    _, resumed, trainer = fit(tmp_path / "b", cb=cb_b, extra=[at], ckpt_path=str(path))
    assert at.where == (stop_at, 1, Phase.PROBE, 2) and at.probes_done == 1
    assert trainer.global_step == 100 and cb_b.tuner.finished
    # Same LR and the same losses at every step after the resume, same end model.
    assert resumed.used_lrs == full.used_lrs[stop_at:]
    assert resumed.losses == full.losses[stop_at:]
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    # Same probes and decisions, read from the run logs.
    for kind in ("probe", "decision", "exploit_end"):
        want = without_time([r for r in read_run_log(full_log) if r["type"] == kind])
        got = without_time([r for r in read_run_log(split_log) if r["type"] == kind])
        assert got == want and want, kind
    # The log holds both segments; it reads, replays and reports as one run.
    run = load_run(split_log)
    assert [r["step"] for r in run.resumes] == [stop_at] and not run.abandoned
    result = replay_run(run)
    assert result.matches and result.stopped is None, [m.describe() for m in result.mismatches]
    assert main(["report", str(split_log), "-o", str(tmp_path / "report")]) == 0


def test_state_dict_schema_is_checked():
    cb = AutoLRSCallback(1e-3, 1.0)
    with pytest.raises(StateError, match="schema_version=99"):
        cb.load_state_dict({"schema_version": 99})
    with pytest.raises(StateError, match="tuner"):
        cb.load_state_dict({"schema_version": 1, "total_steps": 10})
    assert cb.state_dict() == {}


# ------------------------------------------------------ gradient accumulation
def test_grad_accumulation_one_controller_step_per_optimizer_step(tmp_path):
    # 7 batches an epoch, 3 per step: steps of 3, 3 and (at the epoch end) 1 micro-batch.
    cb, module, trainer = fit(tmp_path, max_steps=60, accumulate_grad_batches=3)
    tuner = cb.tuner
    assert trainer.global_step == tuner.global_step == 60
    assert module.used_lrs == list(tuner.trace_lr)
    sizes = [3, 3, 1] * 20
    want, i = [], 0
    for n in sizes:
        want.append(sum(module.losses[i : i + n]) / n)
        i += n
    assert list(tuner.trace_loss) == pytest.approx(want, rel=1e-5)


# ------------------------------------------------------------- schedulers
def test_lightning_scheduler_is_disabled_with_a_warning(tmp_path):
    with pytest.warns(
        SchedulerConflictWarning, match=r"disabled the LR scheduler\(s\) \['StepLR'\]"
    ):
        cb, module, trainer = fit(tmp_path, module=TinyModule(scheduler=True), max_steps=40)
    assert trainer.lr_scheduler_configs == []
    assert module.used_lrs == list(cb.tuner.trace_lr)


def test_lr_changed_outside_is_set_back_with_a_warning(tmp_path):
    with pytest.warns(SchedulerConflictWarning, match="changed outside autolr"):
        cb, module, _ = fit(tmp_path, module=TinyModule(meddle_lr=True), max_steps=40)
    assert module.used_lrs == list(cb.tuner.trace_lr)
    assert 123.0 not in module.used_lrs


# -------------------------------------------------------------- bad setups
def test_unknown_or_bad_options_fail_at_construction():
    unknown = r"unknown AutoLRSCallback options \['tau_probes'\]; allowed: \[.*'tau_probe'"
    with pytest.raises(ConfigError, match=unknown):
        AutoLRSCallback(1e-3, 1.0, tau_probes=5)
    with pytest.raises(ConfigError, match="min_lr must be below max_lr"):
        AutoLRSCallback(1.0, 1e-3)
    with pytest.raises(ConfigError, match="prober"):
        AutoLRSCallback(1e-3, 1.0, prober=object())
    with pytest.raises(ConfigError, match="total_steps=20 is too small"):
        AutoLRSCallback(1e-3, 1.0, total_steps=20)


def test_max_steps_too_small_names_the_value(tmp_path):
    with pytest.raises(ConfigError, match=r"total_steps=30 is too small.*max_steps=30"):
        fit(tmp_path, max_steps=30, cb=AutoLRSCallback(1e-3, 1.0))


def test_estimated_steps_too_small_names_the_value(tmp_path):
    with pytest.raises(ConfigError, match=r"estimated_stepping_batches=14"):
        fit(tmp_path, max_steps=-1, max_epochs=2, cb=AutoLRSCallback(1e-3, 1.0))


def test_several_optimizers_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="exactly one optimizer, got 2"):
        fit(tmp_path, module=TinyModule(optimizers=2, manual=True))


def test_manual_optimization_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="automatic_optimization=False"):
        fit(tmp_path, module=TinyModule(manual=True))


# --------------------------------------------------------------------- DDP
class TwoRanks(SingleDeviceStrategy):
    """One process whose reductions add what a second rank reports: ``other(local)``."""

    def __init__(self, other: Any) -> None:
        super().__init__(device=torch.device("cpu"))
        self.world_size = 2
        self.other = other

    def reduce(self, tensor: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(tensor, torch.Tensor) and tensor.shape == (3,):  # the callback's
            return tensor + self.other(tensor)
        return tensor


def test_loss_fed_to_the_controller_is_the_mean_over_ranks(tmp_path):
    shift = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)  # other rank: loss + 1
    cb, module, _ = fit(tmp_path, max_steps=40, strategy=TwoRanks(lambda t: t + shift))
    assert list(cb.tuner.trace_loss) == pytest.approx([v + 0.5 for v in module.losses], rel=1e-6)


def test_ranks_that_disagree_on_the_lr_stop_the_run(tmp_path):
    def other(t: torch.Tensor) -> torch.Tensor:
        return t * torch.tensor(
            [1.0, 1.0, 1.5 if cb.tuner.global_step == 9 else 1.0], dtype=t.dtype
        )

    cb = AutoLRSCallback(1e-3, 1.0, **OPTIONS)
    with pytest.raises(StateError, match=r"ranks disagree on the LR at step 10: .* used 0\.\d+"):
        fit(tmp_path, max_steps=40, cb=cb, strategy=TwoRanks(other))


@pytest.mark.slow
def test_ddp_ranks_take_the_same_decisions(tmp_path):
    """Real DDP (2 CPU processes, gloo): each rank writes its trace; they must agree."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--ddp-worker", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert len(r0["trace_lr"]) == 60
    # Each rank saw its own data, yet fed the controller the same (averaged) losses.
    assert r0["local_losses"] != r1["local_losses"]
    for key in ("trace_lr", "trace_loss", "trace_phase", "used_lrs", "decisions", "params"):
        assert r0[key] == r1[key], key
    assert r0["used_lrs"] == r0["trace_lr"]
    # One run log, written by rank 0 only.
    records = read_run_log(tmp_path / "run.jsonl")
    assert [r["type"] for r in records].count("run_start") == 1
    assert without_time([r for r in records if r["type"] == "decision"]) == r0["decisions"]
    assert PHASE_CODES[Phase.PROBE] in r0["trace_phase"]
    mean = [(a + b) / 2 for a, b in zip(r0["local_losses"], r1["local_losses"])]
    assert r0["trace_loss"] == pytest.approx(mean, rel=1e-5)


def _ddp_worker(out: Path) -> None:
    options = dict(OPTIONS, tau=10, probes=3, log_path=out / "run.jsonl")
    cb = AutoLRSCallback(1e-3, 1.0, **options)
    module = TinyModule()
    trainer = pl.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_steps=60,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=out,
        callbacks=[cb],
    )
    trainer.fit(module, train_dataloaders=make_loader(n_batches=2 * BATCHES_PER_EPOCH))
    tuner = cb.tuner
    assert tuner is not None
    result = {
        "world_size": trainer.world_size,
        "trace_lr": list(tuner.trace_lr),
        "trace_loss": list(tuner.trace_loss),
        "trace_phase": list(tuner.trace_phase),
        "used_lrs": module.used_lrs,
        "local_losses": module.losses,
        "decisions": without_time(tuner.log.of_type("decision")),
        "params": [p.detach().flatten().tolist() for p in module.parameters()],
    }
    for v in result["trace_loss"]:
        assert math.isfinite(v)
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--ddp-worker":
    _ddp_worker(Path(sys.argv[2]))


@pytest.mark.slow
def test_the_annealed_strategy_needs_no_range_and_resumes_mid_race(tmp_path):
    opts = {"strategy": "anneal", "probes": 3, "tau_probe": 5, "seed": 0, "gp_device": "cpu"}
    cb, full, _ = fit(tmp_path / "full", cb=AutoLRSCallback(**opts), max_steps=200)
    tuner = cb.tuner
    assert tuner is not None and tuner.finished and tuner.search_range is not None
    ramp = len(tuner.log.of_type("range_test")[0]["losses"])
    probes = tuner.log.of_type("probe")
    assert len(probes) == 3 and all(len(p["train_losses"]) == 10 for p in probes)
    assert full.used_lrs == list(tuner.trace_lr)
    # Stop at an epoch boundary (the data order resumes exactly) inside the race.
    stop_at = next(s for s in range(ramp + 1, ramp + 30) if s % BATCHES_PER_EPOCH == 0)

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=stop_at, save_top_k=-1)
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(tmp_path / "a", cb=AutoLRSCallback(**opts), extra=[InterruptAt(stop_at), ckpt],
            enable_checkpointing=True, max_steps=200)  # fmt: skip
    path = next((tmp_path / "ckpt").glob("*.ckpt"))
    cb_b = AutoLRSCallback(**opts)
    _, resumed, trainer = fit(tmp_path / "b", cb=cb_b, ckpt_path=str(path), max_steps=200)
    assert trainer.global_step == 200 and cb_b.tuner is not None and cb_b.tuner.finished
    assert resumed.used_lrs == full.used_lrs[stop_at:]
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
