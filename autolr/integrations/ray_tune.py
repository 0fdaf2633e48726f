"""AutoLRS inside Ray Tune: standard function trainables whose LR autolr tunes as they train.

Each Tune trial is one training run with an :class:`autolr.AutoLRS` controller
in its loop. The trial reports, every ``report_every`` steps, the LR, stage,
phase and loss to Tune (``ray.tune.report``), so they land in the
``ResultGrid``; it saves ``tune.Checkpoint`` s holding the model, optimizer,
controller and RNG state, so a failed trial restarts where it stopped
(``FailureConfig(max_failures=...)``) and an interrupted experiment resumes
with ``Tuner.restore(path, trainable=...)``. Only public Tune APIs are used.

Two ways in:

- :func:`autolrs_trainable` builds the whole trainable from factories;
  ``config["autolrs"]`` holds AutoLRS's options (``total_steps``, ``seed``,
  ``min_lr``/``max_lr`` if you have a range...; Tune search spaces work there too) and the
  rest of ``config`` is the user's, handed to the factories::

      trainable = autolrs_trainable(make_model, make_optimizer, train_step, data)
      tuner = tune.Tuner(trainable, param_space={"autolrs": {"min_lr": 1e-4,
                         "max_lr": 1e-1, "total_steps": 5000, "seed": tune.grid_search([0, 1])}})
      results = tuner.fit()

- :class:`TuneReporter` adapts an existing function trainable: construct it
  beside the controller, call :meth:`TuneReporter.resume` once, then
  ``reporter.step(loss)`` in place of ``tuner.step(loss)``.

Install with ``pip install "autolr[ray]"``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from autolr.controller import AutoLRS, Phase
from autolr.errors import ConfigError, InputError, StateError, require
from autolr.snapshot import Stateful, get_rng_state, set_rng_state

tune: Any = require("ray.tune", "ray")

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FILE",
    "TuneReporter",
    "autolrs_metrics",
    "autolrs_trainable",
    "can_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FILE = "autolr_trial.pt"
CHECKPOINT_SCHEMA_VERSION = 1
AUTOLRS_KEY = "autolrs"


def autolrs_metrics(tuner: AutoLRS) -> dict[str, Any]:
    """The controller's progress as Tune metrics: step counts, stage and the LR set now."""
    return {
        "step": tuner.global_step,
        "stage": tuner.stage_index,
        "search_steps": tuner.search_steps,
        "exploit_steps": tuner.exploit_steps,
        "next_lr": tuner.current_lr,
    }


def save_checkpoint(
    directory: str | os.PathLike[str],
    tuner: AutoLRS,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extras: Mapping[str, Stateful] | None = None,
    user: Mapping[str, Any] | None = None,
) -> None:
    """Write the training state into ``directory`` (one ``torch.save`` file).

    Holds the model, optimizer, extras, the controller's ``state_dict`` (stage
    snapshot included), the process RNG states and ``user`` (plain data: the
    data position, say). Save outside a probe (:func:`can_checkpoint`): the
    controller does not keep the batches a stage's probes share.
    """
    state = {
        "schema_version": CHECKPOINT_SCHEMA_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "extras": {name: obj.state_dict() for name, obj in (extras or {}).items()},
        "autolrs": tuner.state_dict(),
        "rng": get_rng_state(),
        "user": dict(user or {}),
    }
    torch.save(state, os.path.join(os.fspath(directory), CHECKPOINT_FILE))


def load_checkpoint(
    directory: str | os.PathLike[str],
    tuner: AutoLRS,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extras: Mapping[str, Stateful] | None = None,
) -> dict[str, Any]:
    """Load what :func:`save_checkpoint` wrote into the live objects; returns ``user``.

    Raises:
        StateError: the file is missing or of another schema version.
    """
    path = os.path.join(os.fspath(directory), CHECKPOINT_FILE)
    if not os.path.exists(path):
        raise StateError(f"no autolr checkpoint in {os.fspath(directory)!r} (expected {path!r})")
    state = torch.load(path, weights_only=True)
    version = state.get("schema_version")
    if version != CHECKPOINT_SCHEMA_VERSION:
        raise StateError(
            f"cannot load an autolr trial checkpoint of schema_version={version!r}; "
            f"this version reads {CHECKPOINT_SCHEMA_VERSION}"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for name, obj in (extras or {}).items():
        if name in state["extras"]:
            obj.load_state_dict(state["extras"][name])
    tuner.load_state_dict(state["autolrs"])
    set_rng_state(state["rng"])
    return dict(state["user"])


SEARCH_PHASES = (Phase.PROBE, Phase.RANGE)
"""Phases whose steps are search (probes, cooldown branches, the range test): their
losses never reach the reported ``loss``."""


def _finite_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def can_checkpoint(tuner: AutoLRS) -> bool:
    """True outside a probe, where a saved state resumes exactly."""
    return tuner.phase is not Phase.PROBE


class TuneReporter:
    """Reports an AutoLRS run to Ray Tune from inside a function trainable.

    Call :meth:`step` with each step's loss instead of ``tuner.step``. Every
    ``report_every`` steps of the main trajectory (warmup, exploit, anneal:
    the steps whose state the run keeps) it calls ``tune.report`` with:

    - ``loss``: mean of the interval's finite main-trajectory training losses
      (nan if none): never a probe's, a cooldown branch's or the range test's,
      so ASHA, PBT and early stopping on ``loss`` never act on a search step,
    - ``search_loss``: mean of the finite losses of the search steps (probes,
      cooldown branches, range test) since the last report (nan if none),
    - ``lr``, ``phase``, ``stage``: of the interval's last main-trajectory step,
    - ``step``, ``search_steps``, ``exploit_steps``, ``next_lr``: see
      :func:`autolrs_metrics`,
    - whatever keyword metrics :meth:`step` was given last.

    Search steps do not count towards ``report_every``: a stage's search makes
    no report of its own, its losses reach the next report's ``search_loss``,
    and Tune's ``training_iteration`` counts main-trajectory intervals.

    Once ``checkpoint_every`` steps have passed since the last checkpoint, the
    next report outside a probe carries a ``tune.Checkpoint``
    (:func:`save_checkpoint`); the end of the run always does.

    Args:
        tuner, model, optimizer: the run's controller and live objects.
        extras: other stateful objects to checkpoint (as the controller's ``extra_state``).
        report_every: steps per report (1 reports every step).
        checkpoint_every: steps between checkpoints (None: only at the end).
        state_fn: ``() -> dict`` of plain data saved with each checkpoint and
            returned by :meth:`resume` (the data position, say).

    Raises:
        ConfigError: ``report_every`` or ``checkpoint_every`` is not a positive integer.
    """

    def __init__(
        self,
        tuner: AutoLRS,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        extras: Mapping[str, Stateful] | None = None,
        report_every: int = 10,
        checkpoint_every: int | None = 100,
        state_fn: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        _check_every("report_every", report_every, allow_none=False)
        _check_every("checkpoint_every", checkpoint_every, allow_none=True)
        self.tuner = tuner
        self.model = model
        self.optimizer = optimizer
        self.extras = dict(extras or {})
        self.report_every = report_every
        self.checkpoint_every = checkpoint_every
        self.state_fn = state_fn
        self._losses: list[float] = []
        self._search: list[float] = []
        self._last: dict[str, Any] = {}
        self._last_checkpoint = 0

    def resume(self) -> dict[str, Any] | None:
        """Load Tune's latest checkpoint of this trial, if any; returns its ``state_fn`` data."""
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            user = load_checkpoint(directory, self.tuner, self.model, self.optimizer, self.extras)
        self._last_checkpoint = self.tuner.global_step
        logger.info("resumed the AutoLRS trial at step %d", self.tuner.global_step)
        return user

    def step(self, loss: Any, **metrics: Any) -> float:
        """``tuner.step(loss)``, then report when the interval is full; returns the next LR."""
        tuner = self.tuner
        searching = tuner.phase in SEARCH_PHASES
        if not searching:
            self._last = {
                "lr": tuner.current_lr,
                "phase": tuner.phase.value,
                "stage": tuner.stage_index,
            }
        self._last.update(metrics)
        lr = tuner.step(loss)
        value = float(loss.detach().float().item()) if isinstance(loss, torch.Tensor) else loss
        (self._search if searching else self._losses).append(float(value))
        if len(self._losses) >= self.report_every or tuner.finished:
            self._report(final=tuner.finished)
        return lr

    def finish(self, **metrics: Any) -> None:
        """Report what is pending with a final checkpoint (call once after the loop).

        A loop that ends in the search (its data ran out) puts the snapshot back
        first: the model is the run's, not a probe's branch.
        """
        tuner = self.tuner
        if tuner.in_search:
            tuner.restore_snapshot()
        if self._losses or self._search or tuner.global_step != self._last_checkpoint:
            self._last.update(
                {"lr": tuner.current_lr, "phase": tuner.phase.value, "stage": tuner.stage_index}
            )
            self._last.update(metrics)
            self._report(final=True)

    def _report(self, final: bool) -> None:
        tuner = self.tuner
        metrics = {
            **self._last,
            **autolrs_metrics(tuner),
            "loss": _finite_mean(self._losses),
            "search_loss": _finite_mean(self._search),
        }
        self._losses, self._search = [], []
        due = (
            self.checkpoint_every is not None
            and tuner.global_step - self._last_checkpoint >= self.checkpoint_every
        )
        if not (final or (due and can_checkpoint(tuner))):  # the last always carries one
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="autolr-ckpt-") as directory:
            user = self.state_fn() if self.state_fn is not None else None
            save_checkpoint(directory, tuner, self.model, self.optimizer, self.extras, user)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        self._last_checkpoint = tuner.global_step


class _Counted:
    """Counts the batches drawn from an iterable (the data position to resume from)."""

    def __init__(self, iterable: Iterable[Any], start: int) -> None:
        self.iterator = iter(iterable)
        self.n = start

    def __iter__(self) -> Iterator[Any]:
        for batch in self.iterator:
            self.n += 1
            yield batch


def autolrs_trainable(
    make_model: Callable[[dict[str, Any]], nn.Module],
    make_optimizer: Callable[[nn.Module, dict[str, Any]], torch.optim.Optimizer],
    train_step: Callable[[nn.Module, torch.optim.Optimizer, Any], Any],
    data: Callable[[dict[str, Any], int], Iterable[Any]],
    *,
    val_fn: Callable[[nn.Module, dict[str, Any]], float] | None = None,
    make_extras: Callable[
        [nn.Module, torch.optim.Optimizer, dict[str, Any]], Mapping[str, Stateful]
    ]
    | None = None,
    report_every: int = 10,
    checkpoint_every: int | None = 100,
    num_threads: int | None = None,
    name: str = "autolrs",
) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable: one AutoLRS-tuned training run per trial.

    The trial builds its model and optimizer, resumes from Tune's checkpoint
    when there is one, trains through ``tuner.batches`` (so a stage's probes
    share batches) and reports through :class:`TuneReporter`. It ends when
    ``config["autolrs"]["total_steps"]`` steps (probes included) are done or
    the data runs out. Give the same arguments to ``Tuner.restore(...,
    trainable=autolrs_trainable(...))``.

    Args:
        make_model: ``(config) -> nn.Module``; seed it from ``config`` for
            reproducible trials.
        make_optimizer: ``(model, config) -> Optimizer``.
        train_step: ``(model, optimizer, batch) -> loss``: forward, backward, step.
        data: ``(config, start) -> iterable of batches`` from batch number
            ``start`` (0 for a new trial; the count drawn so far on resume).
        val_fn: ``(model, config) -> float``: makes the validation loss the
            controller's objective (see AutoLRS ``val_fn``).
        make_extras: ``(model, optimizer, config) -> {name: stateful}`` also
            snapshotted and checkpointed (a ``GradScaler``, say).
        report_every, checkpoint_every: see :class:`TuneReporter`.
        num_threads: torch threads in the trial (None: leave as set).
        name: the trainable's name in Tune (trial names, result folders).

    Raises:
        InputError: a factory or function is not callable.
        ConfigError: a setting is out of range; in the trial, when
            ``config["autolrs"]`` is not a dict of AutoLRS options (``min_lr``
            and ``max_lr`` may be left out: a range test finds the range).
    """
    for arg, fn in (
        ("make_model", make_model),
        ("make_optimizer", make_optimizer),
        ("train_step", train_step),
        ("data", data),
    ):
        if not callable(fn):
            raise InputError(f"{arg} must be callable, got {type(fn).__name__}")
    for arg, opt in (("val_fn", val_fn), ("make_extras", make_extras)):
        if opt is not None and not callable(opt):
            raise InputError(f"{arg} must be callable or None, got {type(opt).__name__}")
    _check_every("report_every", report_every, allow_none=False)
    _check_every("checkpoint_every", checkpoint_every, allow_none=True)
    _check_every("num_threads", num_threads, allow_none=True)

    def trainable(config: dict[str, Any]) -> None:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        options = config.get(AUTOLRS_KEY) or {}
        if not isinstance(options, Mapping):
            raise ConfigError(
                f"config[{AUTOLRS_KEY!r}] must be a dict of AutoLRS options, "
                f"got {type(options).__name__}"
            )
        options = dict(options)
        model = make_model(config)
        optimizer = make_optimizer(model, config)
        extras = dict(make_extras(model, optimizer, config)) if make_extras is not None else {}
        if val_fn is not None:
            options["val_fn"] = lambda: val_fn(model, config)
        tuner = AutoLRS(model, optimizer, extra_state=extras, **options)
        position = {"consumed": 0}
        reporter = TuneReporter(
            tuner,
            model,
            optimizer,
            extras=extras,
            report_every=report_every,
            checkpoint_every=checkpoint_every,
            state_fn=lambda: dict(position),
        )
        saved = reporter.resume()
        start = int(saved["consumed"]) if saved else 0
        counted = _Counted(data(config, start), start)
        for batch in tuner.batches(counted):
            loss = train_step(model, optimizer, batch)
            position["consumed"] = counted.n
            reporter.step(loss)
        position["consumed"] = counted.n
        reporter.finish()

    trainable.__name__ = trainable.__qualname__ = name
    return trainable


def _check_every(name: str, value: Any, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        extra = " or None" if allow_none else ""
        raise ConfigError(f"{name} must be a positive integer{extra}, got {value!r}")
