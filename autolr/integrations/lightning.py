"""Lightning adapter: ``Trainer(callbacks=[AutoLRSCallback(min_lr, max_lr)])`` tunes the LR.

The callback only translates Lightning hooks into :class:`autolr.AutoLRS` calls.
Hooks, in the order Lightning calls them:

- ``__init__``: checks the options (names and values) at once.
- ``setup``: checks that ``max_steps`` leaves room for one stage.
- ``load_state_dict`` (resume): keeps the controller's saved state until the
  optimizer exists.
- ``on_fit_start``: refuses several optimizers and manual optimization;
  disables the trainer's LR schedulers with a :class:`autolr.errors.SchedulerConflictWarning`.
- ``on_train_start``: builds the controller on the LightningModule and the
  trainer's optimizer (after Lightning restored them from a checkpoint).
- ``on_before_optimizer_step``: makes sure the step uses the controller's LR.
- ``on_train_batch_end``: after each optimizer step, feeds the loss (mean over
  the accumulated micro-batches and over ranks) to ``tuner.step`` and logs the
  LR, stage and phase to the trainer's loggers (LR and phase in the progress bar).
- ``state_dict``: the controller's state goes into every Lightning checkpoint.
- ``on_exception``: an exception in the middle of a probe puts the stage
  snapshot back, so the model is never left in a probe's state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch

from autolr.config import AutoLRSConfig
from autolr.controller import PHASE_CODES, AutoLRS, Phase
from autolr.errors import ConfigError, SchedulerConflictWarning, StateError, require
from autolr.plan import StagePlan

require("lightning.pytorch", "lightning")

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from lightning.pytorch.utilities import rank_zero_warn  # noqa: E402

logger = logging.getLogger(__name__)

STATE_SCHEMA_VERSION = 1

# A prober runs probes outside the trainer's loop, which Lightning owns here.
_UNSUPPORTED = {"prober": "the callback runs probes in the trainer's own loop"}

METRIC_LR = "autolr/lr"
METRIC_STAGE = "autolr/stage"
METRIC_PHASE = "autolr/phase"
PROGRESS_BAR_METRICS = frozenset({METRIC_LR, METRIC_PHASE})
"""The metrics also shown in the progress bar (``trainer.progress_bar_metrics``)."""


class AutoLRSCallback(Callback):
    """Tunes the LR of a Lightning run while it trains (AutoLRS, ICLR 2021).

    Add it to the trainer; nothing else changes::

        trainer = Trainer(max_steps=20_000, callbacks=[AutoLRSCallback(min_lr=1e-4, max_lr=1e-1)])

    After every optimizer step the training loss (the mean over accumulated
    micro-batches and over data-parallel ranks) goes to :meth:`autolr.AutoLRS.step`,
    which sets the next step's LR and may restore the stage snapshot of the
    LightningModule and the optimizer. Every step, probes included, counts in
    the budget.

    The LR, stage and phase of each step go to the trainer's loggers as
    ``autolr/lr`` (LR of the first param group), ``autolr/stage`` and
    ``autolr/phase`` (0 warmup, 1 probe, 2 exploit, 3 anneal, 4 done, 5 range test), every
    ``log_every_n_steps`` like any metric; ``autolr/lr`` and ``autolr/phase``
    are in the progress bar too.

    LR schedulers returned by ``configure_optimizers`` would overwrite the LR
    autolr sets: the callback removes them from the trainer at the start of
    ``fit`` and warns with :class:`autolr.errors.SchedulerConflictWarning`. An LR
    changed by other code between two steps is set back before the optimizer
    step (with the same warning, once).

    Its state (the controller's, snapshots included) is saved in every Lightning
    checkpoint, so ``trainer.fit(model, ckpt_path=...)`` continues the search in
    the middle of a stage.

    Args:
        min_lr: lower bound of the LR search (first param group's LR, linear
            scale); None (the default): found by an LR range test at the start.
        max_lr: upper bound of the LR search; None: found by the range test.
        total_steps: the budget in optimizer steps, probes included. None: the
            trainer's ``estimated_stepping_batches`` (``max_steps`` when set) less
            the steps already taken; without any limit, AutoLRS stage sizes and
            no end. After ``total_steps`` the LR stays at its last value.
        **autolr_options: any keyword option of :class:`autolr.AutoLRS` (``tau``,
            ``tau_probe``, ``probes``, ``warmup_steps``, ``seed``, ``log_path``,
            ``extra_state``, ...), except ``prober``. A mixed-precision grad
            scaler of the trainer is snapshotted with the model automatically.
            Under DDP only global rank 0 writes the ``log_path`` run log.

    Attributes:
        tuner: the :class:`autolr.AutoLRS` controller once training started, else None.

    Raises:
        ConfigError: an option is unknown or out of range (names the value given);
            at ``fit``: manual optimization, several optimizers, or a budget
            (``max_steps``) too small for one stage.
    """

    def __init__(
        self,
        min_lr: float | None = None,
        max_lr: float | None = None,
        total_steps: int | None = None,
        **autolr_options: Any,
    ) -> None:
        for name, why in _UNSUPPORTED.items():
            if autolr_options.get(name) is not None:
                raise ConfigError(f"AutoLRSCallback does not take {name}=...: {why}")
        self.min_lr = min_lr
        self.max_lr = max_lr
        self.total_steps = total_steps
        self.options = dict(autolr_options)
        if total_steps is None:
            # The plan needs the budget, which the Trainer gives at setup: the options now.
            self._config(None)
        else:
            self._check_budget(total_steps)
        self.tuner: AutoLRS | None = None
        self._budget: int | None = total_steps
        self._pending: dict[str, Any] | None = None
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        self._last_step = 0
        self._warned_lr = False

    # ------------------------------------------------------------ checks
    def _config(self, total_steps: int | None) -> AutoLRSConfig:
        """The controller's config for these options (validates every name and value)."""
        return AutoLRS.check_options(
            self.min_lr, self.max_lr, total_steps, self.options, owner="AutoLRSCallback"
        )

    def _check_budget(self, total_steps: int | None, source: str = "") -> None:
        try:
            StagePlan(self._config(total_steps))
        except ConfigError as exc:
            if not source:
                raise
            raise ConfigError(_budget_message(exc, source)) from exc

    # ------------------------------------------------------------- hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.total_steps is None and trainer.max_steps != -1:
            self._check_budget(trainer.max_steps, f"Trainer(max_steps={trainer.max_steps})")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizers = trainer.optimizers
        if len(optimizers) != 1:
            names = [type(o).__name__ for o in optimizers]
            raise ConfigError(
                f"AutoLRSCallback tunes the LR of exactly one optimizer, got {len(optimizers)}: "
                f"{names}"
            )
        if not pl_module.automatic_optimization:
            raise ConfigError(
                "AutoLRSCallback needs automatic optimization, got "
                f"{type(pl_module).__name__}.automatic_optimization=False; with manual "
                "optimization call autolr.AutoLRS(...).step(loss) after each optimizer step"
            )
        configs = trainer.lr_scheduler_configs
        if configs:
            names = [type(c.scheduler).__name__ for c in configs]
            rank_zero_warn(
                f"AutoLRSCallback owns the LR: disabled the LR scheduler(s) {names} returned by "
                "configure_optimizers; return only the optimizer to silence this warning",
                category=SchedulerConflictWarning,
            )
            trainer.strategy.lr_scheduler_configs = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pending, self._pending = self._pending, None
        source = ""
        if pending is not None:
            self._budget = pending["total_steps"]
        elif self.total_steps is None:
            estimate = trainer.estimated_stepping_batches
            if math.isinf(estimate):
                self._budget = None
            else:
                self._budget = int(estimate) - trainer.global_step
                source = (
                    f"Trainer(max_steps={trainer.max_steps})"
                    if trainer.max_steps != -1 and estimate == trainer.max_steps
                    else f"the trainer's estimated_stepping_batches={int(estimate)}"
                )
                if trainer.global_step:
                    source += f" less the {trainer.global_step} steps already taken"
        options = dict(self.options)
        if not trainer.is_global_zero:
            options["log_path"] = None  # one run log, written by global rank 0
        extra = dict(options.pop("extra_state", None) or {})
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None and hasattr(scaler, "state_dict"):
            extra.setdefault("grad_scaler", scaler)
        try:
            tuner = AutoLRS(
                pl_module,
                trainer.optimizers[0],
                self.min_lr,
                self.max_lr,
                self._budget,
                extra_state=extra,
                **{"watch_lr": False, **options},  # the callback handles schedulers itself
            )
        except ConfigError as exc:
            if not source:
                raise
            raise ConfigError(_budget_message(exc, source)) from exc
        if pending is not None:
            # Kept off self.tuner until the state loaded: on a refused state no
            # hook (on_exception among them) acts on a controller that never ran.
            tuner.load_state_dict(pending["tuner"])
            loss_sum = pending["loss_sum"]
            self._loss_count = int(pending["loss_count"])
            self._loss_sum = (
                None if loss_sum is None else torch.tensor(loss_sum, device=pl_module.device)
            )
            logger.info(
                "AutoLRSCallback resumed at step %d (stage %d, %s)",
                tuner.global_step,
                tuner.stage_index,
                tuner.phase.value,
            )
        else:
            self._loss_sum, self._loss_count = None, 0
        self.tuner = tuner
        self._last_step = trainer.global_step

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        tuner = self.tuner
        if tuner is None:
            return
        opt = trainer.optimizers[0]
        lr = opt.param_groups[0]["lr"]
        expected = tuner.current_lr * tuner.ratios[0]
        if not math.isclose(float(lr), expected, rel_tol=1e-9, abs_tol=0.0):
            if not self._warned_lr:
                rank_zero_warn(
                    f"the LR was changed outside autolr (to {float(lr):g}, autolr set "
                    f"{expected:g}); autolr sets it back before every optimizer step",
                    category=SchedulerConflictWarning,
                )
                self._warned_lr = True
            tuner.apply_lr(opt)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        tuner = self.tuner
        if tuner is None:
            return
        loss = _loss_of(outputs)
        if loss is not None:
            # Lightning divides the returned loss by accumulate_grad_batches.
            raw = loss.detach().float() * trainer.accumulate_grad_batches
            self._loss_sum = raw if self._loss_sum is None else self._loss_sum + raw
            self._loss_count += 1
        if trainer.global_step == self._last_step:
            return  # accumulating: no optimizer step yet
        self._last_step = trainer.global_step
        used_lr, stage, phase = tuner.current_lr, tuner.stage_index, tuner.phase
        device = pl_module.device
        dtype = torch.float32 if device.type == "mps" else torch.float64
        loss_sum = torch.zeros((), device=device) if self._loss_sum is None else self._loss_sum
        local = torch.stack(
            [
                loss_sum.to(device=device, dtype=dtype),
                torch.tensor(float(self._loss_count), device=device, dtype=dtype),
                torch.tensor(used_lr, device=device, dtype=dtype),
            ]
        )
        # Every rank takes part, even one whose batch gave no loss; the LR sum
        # checks that all ranks trained this step at the same LR.
        total = trainer.strategy.reduce(local, reduce_op="sum").tolist()
        self._loss_sum, self._loss_count = None, 0
        world = trainer.world_size
        if world > 1 and not math.isclose(total[2] / world, used_lr, rel_tol=1e-6):
            raise StateError(
                f"ranks disagree on the LR at step {trainer.global_step}: this rank "
                f"(global_rank={trainer.global_rank}) used {used_lr:g}, the mean over "
                f"{world} ranks is {total[2] / world:g}"
            )
        if total[1] == 0:
            return  # training_step returned None on every rank: nothing was trained
        tuner.step(total[0] / total[1])
        for name, value in (
            (METRIC_LR, used_lr),
            (METRIC_STAGE, float(stage)),
            (METRIC_PHASE, float(PHASE_CODES[phase])),
        ):
            pl_module.log(
                name,
                value,
                prog_bar=name in PROGRESS_BAR_METRICS,
                on_step=True,
                on_epoch=False,
                batch_size=1,
            )

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        tuner = self.tuner
        if tuner is not None and tuner.in_search and tuner.restore_snapshot():
            logger.warning(
                "exception during the %s at step %d: the model and optimizer were put back "
                "to the snapshot",
                "range test" if tuner.phase is Phase.RANGE else "probe",
                tuner.global_step,
            )

    # ------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The callback's state for a Lightning checkpoint: plain data and snapshot tensors."""
        if self.tuner is None:
            return dict(self._pending) if self._pending is not None else {}
        return {
            "schema_version": STATE_SCHEMA_VERSION,
            "total_steps": self._budget,
            "tuner": self.tuner.state_dict(),
            "loss_sum": None if self._loss_sum is None else float(self._loss_sum),
            "loss_count": self._loss_count,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Keep a checkpoint's state; the controller loads it when training starts.

        Raises:
            StateError: the state has an unknown schema version, misses a key or
                has an entry of the wrong type. The controller's own state is
                checked when training starts (:meth:`autolr.AutoLRS.load_state_dict`).
        """
        if not state_dict:
            return
        version = state_dict.get("schema_version")
        if version != STATE_SCHEMA_VERSION:
            raise StateError(
                f"cannot load AutoLRSCallback state of schema_version={version!r}; "
                f"this version reads {STATE_SCHEMA_VERSION}"
            )
        missing = sorted({"total_steps", "tuner", "loss_sum", "loss_count"} - set(state_dict))
        if missing:
            raise StateError(f"AutoLRSCallback state is missing the key(s) {missing}")
        checks = {
            "total_steps": _is_int(state_dict["total_steps"]) or state_dict["total_steps"] is None,
            "tuner": isinstance(state_dict["tuner"], Mapping),
            "loss_sum": state_dict["loss_sum"] is None or _is_number(state_dict["loss_sum"]),
            "loss_count": _is_int(state_dict["loss_count"]),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            got = ", ".join(f"{name}={type(state_dict[name]).__name__}" for name in bad)
            raise StateError(f"AutoLRSCallback state has entries of the wrong type: {got}")
        self._pending = dict(state_dict)


def _budget_message(exc: ConfigError, source: str) -> str:
    return (
        f"AutoLRSCallback: {exc} (total_steps taken from {source}; train longer, or pass "
        "fewer probes or a smaller min_probe_steps)"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _loss_of(outputs: Any) -> torch.Tensor | None:
    """The loss in ``training_step``'s output as Lightning hands it to ``on_train_batch_end``."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        loss = outputs.get("loss")
        if isinstance(loss, torch.Tensor):
            return loss
    return None
