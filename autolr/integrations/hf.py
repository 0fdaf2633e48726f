"""Hugging Face ``Trainer`` integration: :class:`AutoLRSCallback`.

Usage::

    from autolr.integrations.hf import AutoLRSCallback

    trainer = Trainer(model, args, train_dataset=ds,
                      callbacks=[AutoLRSCallback(min_lr=1e-5, max_lr=1e-2)])
    trainer.train()

With ``report_to`` loggers (TensorBoard, W&B, MLflow, ...) attach it instead, so
it runs before them and they record ``autolr_lr``, ``autolr_stage`` and
``autolr_phase`` too::

    trainer = Trainer(model, args, train_dataset=ds)
    AutoLRSCallback(min_lr=1e-5, max_lr=1e-2).attach(trainer)

Where it acts in one optimizer step of ``Trainer``'s loop (the order of
transformers' ``Trainer._run_epoch``)::

    on_step_begin
    forward + backward            (gradient_accumulation_steps times)
    on_pre_optimizer_step         autolr writes its LR into every param group
    optimizer.step()              ... so this step uses it
    on_optimizer_step
    lr_scheduler.step()           a LambdaLR is made to hold autolr's LR; others are overwritten
    on_step_end                   sets ``control.should_log``: the Trainer logs every step
    log -> on_log                 the step's loss goes to the controller, which sets the
                                  next LR (and may restore the stage snapshot); the row
                                  gets autolr's values for the callbacks after this one
    save -> on_save               the controller's state goes into the checkpoint folder

Install with ``pip install "autolr[hf]"``.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import re
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from autolr.controller import AutoLRS
from autolr.errors import AutoLRWarning, ConfigError, SchedulerConflictWarning, StateError, require

require("transformers", "hf")

from transformers import (  # noqa: E402
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["AutoLRSCallback", "STATE_FILE"]

STATE_FILE = "autolr_state.pt"
"""Name of the controller's state file inside a Trainer checkpoint folder."""

CALLBACK_STATE_VERSION = 1

# Trainer schedulers that change nothing autolr cares about (``linear`` is the default).
_QUIET_SCHEDULERS = ("linear", "constant")


class AutoLRSCallback(TrainerCallback):
    """Lets :class:`autolr.AutoLRS` set the LR of a ``transformers.Trainer`` run.

    The controller is built at ``on_train_begin`` from the Trainer's model and
    optimizer (the Trainer creates them lazily); its budget is the Trainer's
    ``max_steps`` (optimizer steps: with gradient accumulation, one controller
    step per optimizer step). Every param group keeps its ratio to the first
    group's LR (the Trainer's decay/no-decay groups, or your own).

    What it changes in the Trainer's behaviour:

    - The Trainer logs every optimizer step (the per-step training loss is the
      controller's input), whatever ``logging_steps`` says. Each row of
      ``state.log_history`` then holds that step's ``loss``, the
      ``learning_rate`` the step used and ``autolr_lr`` (the stage's tuned LR,
      before warmup or anneal scaling), ``autolr_stage`` and ``autolr_phase``
      (``"warmup"``, ``"probe"``, ``"exploit"``, ``"anneal"``, ``"done"``).
      Callbacks run in list order, and the Trainer puts its ``report_to``
      loggers ahead of the callbacks it is given: :meth:`attach` puts this one
      first, so every logger (TensorBoard, W&B, your own ``on_log``) gets the
      same row; passed in ``callbacks=[...]`` only those after it do.
    - The Trainer's LR scheduler no longer sets the LR. A ``LambdaLR`` (what
      ``lr_scheduler_type`` builds) is made to hold autolr's LR, so the
      ``learning_rate`` the Trainer reports is autolr's; any other scheduler is
      overwritten before every optimizer step. A scheduler passed to the
      Trainer, or an ``lr_scheduler_type`` other than ``linear``/``constant`` or
      with warmup, raises a :class:`autolr.errors.SchedulerConflictWarning`.
    - ``logging_nan_inf_filter`` is turned off: with it, a non-finite loss is
      logged as a finite one and a diverged probe would look like a good one.
    - Each checkpoint folder gets ``autolr_state.pt`` (the controller's state,
      snapshots included); ``trainer.train(resume_from_checkpoint=...)``
      continues the stage, probe and search where they stopped.

    Evaluation and checkpoints during a probe see the probe's weights.

    Args:
        min_lr: lower bound of the LR search (first param group's LR, linear
            scale); None (the default): found by an LR range test at the start.
        max_lr: upper bound of the LR search; None: found by the range test.
        total_steps: the controller's budget in optimizer steps, probes included
            (default: the Trainer's ``max_steps``; give it only to tune part of a run).
        **options: any keyword option of :class:`autolr.AutoLRS` (``tau``,
            ``probes``, ``warmup_steps``, ``seed``, ``log_path``, ...), except
            ``prober``.

    Attributes:
        tuner: the :class:`autolr.AutoLRS` controller (None before training starts).

    Raises:
        ConfigError: an option is unknown or out of range (named in the message);
            at ``trainer.train()``: ``max_steps`` too small for one stage, or a
            DeepSpeed/FSDP run (not supported).
        StateError: at ``trainer.train(resume_from_checkpoint=...)``: the
            checkpoint's ``autolr_state.pt`` cannot be read or does not fit this
            run (another model or optimizer, a truncated file); the weights and
            the optimizer state stay as the Trainer loaded them.
    """

    def __init__(
        self,
        min_lr: float | None = None,
        max_lr: float | None = None,
        total_steps: int | None = None,
        **options: Any,
    ) -> None:
        if "prober" in options:
            raise ConfigError(
                "prober is not supported with the Trainer: the Trainer runs every training "
                "step, so probes run inline; remove prober="
            )
        # Validate now (the controller itself is built when training starts); the
        # Trainer runs every training step itself, so probes run inline: no prober.
        AutoLRS.check_options(
            min_lr,
            max_lr,
            total_steps,
            options,
            owner="AutoLRSCallback",
            without=frozenset({"prober"}),
        )
        self.min_lr = min_lr
        self.max_lr = max_lr
        self.total_steps = total_steps
        self.options = dict(options)
        self.tuner: AutoLRS | None = None
        self._given_scheduler: str | None = None
        self._held_scheduler: Any = None
        self._pending: int | None = None
        self._row: dict[str, Any] = {}
        self._first = False
        self._trainer: Any = None
        self._warned_nan = False

    # ------------------------------------------------------------ set up
    def attach(self, trainer: Any) -> AutoLRSCallback:
        """Put this callback first among ``trainer``'s callbacks (adding it if absent).

        The Trainer calls its callbacks in list order and places the ``report_to``
        loggers before the callbacks it was given. Run first, this callback adds
        ``autolr_lr``, ``autolr_stage``, ``autolr_phase`` (and the step's
        ``learning_rate``) to each step's logs before any logger reads them. Call
        it before ``trainer.train()``.

        Args:
            trainer: a ``transformers.Trainer``.

        Returns:
            This callback.
        """
        callbacks = trainer.callback_handler.callbacks
        if any(cb is self for cb in callbacks):
            callbacks.remove(self)
        else:
            # Trainer(callbacks=...) would have called on_init_end with this scheduler.
            self.on_init_end(
                trainer.args, trainer.state, trainer.control, lr_scheduler=trainer.lr_scheduler
            )
        callbacks.insert(0, self)
        self._first = True
        self._trainer = trainer
        return self

    def on_init_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        # Here the handler's scheduler is the one passed as Trainer(optimizers=(opt, sched)).
        scheduler = kwargs.get("lr_scheduler")
        self._given_scheduler = type(scheduler).__name__ if scheduler is not None else None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        scheduler = kwargs.get("lr_scheduler")
        if model is None or optimizer is None:
            raise StateError(
                "AutoLRSCallback needs the Trainer's model and optimizer at on_train_begin; "
                f"got model={type(model).__name__}, optimizer={type(optimizer).__name__}"
            )
        if getattr(args, "deepspeed", None) or getattr(args, "fsdp", None):
            raise ConfigError(
                "AutoLRSCallback does not support DeepSpeed or FSDP runs: the stage snapshot "
                "needs the whole model and optimizer state in one process"
            )
        if args.logging_nan_inf_filter:
            logger.info("AutoLRSCallback: turning off logging_nan_inf_filter")
            args.logging_nan_inf_filter = False
        if args.report_to and not self._first:
            warnings.warn(
                f"report_to={list(args.report_to)} loggers run before AutoLRSCallback and "
                "miss autolr_lr, autolr_stage and autolr_phase; use "
                "AutoLRSCallback(...).attach(trainer) instead of Trainer(callbacks=[...]) "
                "to give them these values",
                AutoLRWarning,
                stacklevel=2,
            )
        if self._trainer is None:
            self._trainer = _calling_trainer()
        self._check_scheduler(args, state, scheduler)
        # A warmup scheduler has already set the groups' LRs to 0; the ratios
        # between groups come from the LRs they were configured with.
        for group in optimizer.param_groups:
            if "initial_lr" in group:
                group["lr"] = group["initial_lr"]

        saved = self._find_state(args, state) if state.global_step > 0 else None
        if state.global_step > 0 and saved is None:
            logger.warning(
                "AutoLRSCallback: resumed at step %d without autolr state in the checkpoint; "
                "starting a new search for the %d steps left",
                state.global_step,
                state.max_steps - state.global_step,
            )
        total = self.total_steps
        if total is None:
            total = state.max_steps if saved is not None else state.max_steps - state.global_step
        elif total != state.max_steps:
            logger.warning(
                "AutoLRSCallback: total_steps=%d but the Trainer runs max_steps=%d; %s",
                total,
                state.max_steps,
                "the LR stays at its last value once the budget is spent"
                if total < state.max_steps
                else "training stops before autolr's final anneal",
            )
        try:
            # The callback holds the Trainer's scheduler itself (watch_lr off).
            tuner = AutoLRS(
                model,
                optimizer,
                self.min_lr,
                self.max_lr,
                total_steps=total,
                **{"watch_lr": False, **self.options},
            )
        except ConfigError as exc:
            if self.total_steps is None and ("too small" in str(exc) or "not fit" in str(exc)):
                budget = f"the Trainer's max_steps={state.max_steps}"
                if total < state.max_steps:  # a resume with no autolr state: what is left
                    budget = f"the {total} steps left of {budget} after step {state.global_step}"
                raise ConfigError(
                    f"{exc}; total_steps is {budget}: "
                    "train longer, or pass smaller tau/probes to AutoLRSCallback"
                ) from exc
            raise
        if saved is not None:
            # Kept off self.tuner until the state loaded: a refused state leaves no
            # controller behind that never ran.
            tuner.load_state_dict(saved["controller"])
            logger.info(
                "AutoLRSCallback: resumed stage %d (%s) at step %d",
                tuner.stage_index,
                tuner.phase.value,
                state.global_step,
            )
        self.tuner = tuner
        self._pending = None
        self._hold_scheduler(scheduler)
        self._apply(optimizer)

    def _check_scheduler(
        self, args: TrainingArguments, state: TrainerState, scheduler: Any
    ) -> None:
        if self._given_scheduler is not None:
            warnings.warn(
                f"the Trainer was given its own lr_scheduler ({self._given_scheduler}); "
                "AutoLRSCallback owns the LR and overrides it at every step",
                SchedulerConflictWarning,
                stacklevel=2,
            )
            return
        kind = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
        warmup = args.get_warmup_steps(state.max_steps)
        if kind not in _QUIET_SCHEDULERS or warmup > 0:
            with_warmup = f" with {warmup} warmup steps" if warmup else ""
            warnings.warn(
                f"the Trainer's lr_scheduler_type={kind!r}{with_warmup} would overwrite the "
                "LR autolr sets; AutoLRSCallback overrides it at every step "
                "(for a warmup use AutoLRSCallback(warmup_steps=...))",
                SchedulerConflictWarning,
                stacklevel=2,
            )
        elif scheduler is not None:
            logger.info(
                "AutoLRSCallback: the Trainer's %s scheduler is replaced by autolr's LR", kind
            )

    def _hold_scheduler(self, scheduler: Any) -> None:
        """Make a ``LambdaLR`` return autolr's LR, so what the Trainer reports is autolr's.

        Its lambdas are plain functions, which ``LambdaLR.state_dict`` leaves out
        of checkpoints. Other schedulers are left alone: their writes are
        overwritten before every optimizer step.
        """
        self._held_scheduler = None
        if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            return
        bases = [float(b) for b in scheduler.base_lrs]
        if not all(b > 0 and math.isfinite(b) for b in bases):
            return
        tuner = self.tuner
        assert tuner is not None

        def hold(i: int) -> Any:
            def factor(_: int) -> float:
                return tuner.current_lr * tuner.ratios[i] / bases[i]

            return factor

        scheduler.lr_lambdas = [hold(i) for i in range(len(bases))]
        self._held_scheduler = scheduler
        with warnings.catch_warnings():
            # Before the first optimizer step torch warns that a schedule's first
            # value would be skipped; a held LR has none to skip.
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
            self._sync_scheduler()

    def _sync_scheduler(self) -> None:
        """Step the held scheduler so its last LR, which the Trainer logs, is the next one."""
        if self._held_scheduler is not None:
            self._held_scheduler.step()

    # ----------------------------------------------------------- the loop
    def on_step_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if self._pending is not None:
            raise StateError(
                f"AutoLRSCallback got no training loss for step {self._pending}: "
                "another callback turned off control.should_log after it"
            )
        # Also here for transformers versions without on_pre_optimizer_step.
        self._prepare_step(kwargs.get("optimizer"))

    def on_pre_optimizer_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self._prepare_step(kwargs.get("optimizer"))

    def _prepare_step(self, optimizer: Any) -> None:
        """Write autolr's LR into the optimizer and note what this step runs at."""
        tuner = self.tuner
        if tuner is None or optimizer is None:
            return
        self._apply(optimizer)
        self._row = {
            "learning_rate": float(optimizer.param_groups[0]["lr"]),
            "autolr_lr": tuner.lr,
            "autolr_stage": tuner.stage_index,
            "autolr_phase": tuner.phase.value,
        }

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> TrainerControl:
        if self.tuner is not None:
            self._pending = state.global_step
            control.should_log = True
        return control

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        tuner = self.tuner
        if tuner is None or logs is None or "loss" not in logs:
            return
        if self._pending is None or state.global_step != self._pending:
            return
        self._pending = None
        tuner.step(logs["loss"])
        if not _finite_number(logs["loss"]):
            self._clear_loss_sum()
        optimizer = kwargs.get("optimizer")
        if optimizer is not None:
            self._sync_scheduler()
            self._apply(optimizer)
        # Callbacks after this one (all of them once attached) get the row; the
        # Trainer's copy, made before any on_log, is in log_history.
        logs.update(self._row)
        row = state.log_history[-1] if state.log_history else None
        if row is not None and row.get("step") == state.global_step and "loss" in row:
            row.update(self._row)

    def _clear_loss_sum(self) -> None:
        """Zero the Trainer's running loss sum after a non-finite step.

        The Trainer resets that sum by subtracting it from itself, which leaves
        a NaN in place: every later step would log NaN, and the controller would
        roll back at every step to the end. ``logging_nan_inf_filter`` (which
        hides the NaN, and with it the divergence) is off, so this is the one
        place to clear it.
        """
        total = getattr(self._trainer, "_tr_loss", None)
        if isinstance(total, torch.Tensor) and total.numel() == 1:
            if not bool(torch.isfinite(total)):
                total.zero_()
            return
        if not self._warned_nan:
            fix = (
                "attach the callback with AutoLRSCallback(...).attach(trainer)"
                if self._trainer is None
                else "this transformers version keeps the sum where the callback cannot reach it"
            )
            warnings.warn(
                "a non-finite training loss stays in the Trainer's running loss sum, so later "
                f"logged losses may stay non-finite: {fix}",
                AutoLRWarning,
                stacklevel=2,
            )
            self._warned_nan = True

    def _apply(self, optimizer: Any) -> None:
        tuner = self.tuner
        assert tuner is not None
        tuner.apply_lr(optimizer)

    # ------------------------------------------------------------- state
    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if self.tuner is None or not args.should_save:
            return
        folder = _checkpoint_dir(args.output_dir, state.global_step)
        if not os.path.isdir(folder):
            logger.warning(
                "AutoLRSCallback: checkpoint folder %s not found; autolr state not saved", folder
            )
            return
        path = os.path.join(folder, STATE_FILE)
        tmp = path + ".tmp"
        torch.save(
            {
                "schema_version": CALLBACK_STATE_VERSION,
                "trainer_step": state.global_step,
                "controller": self.tuner.state_dict(),
            },
            tmp,
        )
        os.replace(tmp, path)

    def _find_state(self, args: TrainingArguments, state: TrainerState) -> dict[str, Any] | None:
        """The saved state for the step the Trainer resumes at, or None."""
        candidates = [_checkpoint_dir(args.output_dir, state.global_step)]
        for given in (getattr(args, "resume_from_checkpoint", None), _resumed_from()):
            if isinstance(given, str):
                candidates.insert(0, given)
        for folder in candidates:
            path = os.path.join(folder, STATE_FILE)
            if not os.path.isfile(path):
                continue
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, unsafe pickle
                raise StateError(
                    f"cannot read the autolr state {path}: {type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                ) from exc
            if not isinstance(saved, dict):
                raise StateError(f"{path} holds a {type(saved).__name__}, not an autolr state")
            if saved.get("schema_version") != CALLBACK_STATE_VERSION:
                raise StateError(
                    f"{path} has schema_version={saved.get('schema_version')!r}; "
                    f"this version reads {CALLBACK_STATE_VERSION}"
                )
            missing = sorted({"trainer_step", "controller"} - set(saved))
            if missing:
                raise StateError(f"{path} is missing the key(s) {missing}")
            if saved["trainer_step"] == state.global_step:
                return saved
        return None

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        tuner = self.tuner
        if tuner is None:
            return
        logger.info(
            "AutoLRSCallback: %d steps, %d of them probes; stages: %s",
            tuner.global_step,
            tuner.search_steps,
            tuner.summary(),
        )


def _finite_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _trainer_frames() -> Iterator[dict[str, Any]]:
    """The locals of the ``transformers.Trainer`` methods up the call stack (the
    callback's caller's callers), nearest first."""
    frame = inspect.currentframe()
    for _ in range(12):
        frame = frame.f_back if frame is not None else None
        if frame is None:
            return
        if isinstance(frame.f_locals.get("self"), Trainer):
            yield frame.f_locals


def _calling_trainer() -> Any:
    """The ``transformers.Trainer`` whose hook is running, found up the call stack, or None.

    Callbacks given as ``Trainer(callbacks=[...])`` get no reference to it; the
    one use is :meth:`AutoLRSCallback._clear_loss_sum`.
    """
    return next((local["self"] for local in _trainer_frames()), None)


def _resumed_from() -> str | None:
    """The checkpoint given to ``trainer.train(resume_from_checkpoint=...)``: a local of
    the Trainer's training loop up the call stack (it reaches no callback), or None."""
    found = (local.get("resume_from_checkpoint") for local in _trainer_frames())
    return next((path for path in found if isinstance(path, str)), None)


def _checkpoint_dir(output_dir: str | None, step: int) -> str:
    return os.path.join(output_dir or ".", f"{PREFIX_CHECKPOINT_DIR}-{step}")
