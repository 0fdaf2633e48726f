"""Probe bookkeeping shared by every way of running probes.

A probe trains ``tau_probe`` steps at one candidate LR from the stage snapshot
and records its loss series. The same :class:`ProbeRecord` and the same
:func:`stop_reason` rule serve probes run inline (the user's own loop), by a
:class:`ProbeBackend` in this process, or on Ray workers, so every backend
takes the same decisions.
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from autolr.errors import ConfigError, InputError
from autolr.snapshot import Snapshot, Stateful, capture, restore


@dataclass
class ProbeRecord:
    """One probe's data.

    Attributes:
        lr: base LR probed, linear scale.
        train_losses: training loss of every probe step (None where non-finite).
        t: probe-local step of each objective value (steps trained at ``lr``).
        losses: objective values (training or validation loss; None where non-finite).
        diverged: the probe was stopped as diverged (or failed).
        reason: why it stopped early or was rejected ('' when it ran fully).
        forecast: forecast loss at ``t = tau``; None when diverged.
        fit: fitted curve parameters (``a``, ``b``, ``c``, ``sse``, ``n_used``).
        rolled_back: the exploit at this LR was rolled back by the guard.
    """

    lr: float
    train_losses: list[float | None] = field(default_factory=list)
    t: list[float] = field(default_factory=list)
    losses: list[float | None] = field(default_factory=list)
    diverged: bool = False
    reason: str = ""
    forecast: float | None = None
    fit: dict[str, float] | None = None
    rolled_back: bool = False

    @property
    def steps(self) -> int:
        return len(self.train_losses)


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def stop_reason(
    train_losses: list[float | None],
    ref_loss: float | None,
    blowup_factor: float,
    early_abort: bool,
    noise: float = 0.0,
) -> str | None:
    """Why a probe must stop now, or None to go on.

    A non-finite loss always stops it. With ``early_abort``, so does a loss
    whose median over the last 3 steps exceeds both ``blowup_factor`` times the
    loss at the snapshot and that loss plus 8 times the per-step ``noise``
    (robust sd of recent losses; per-batch losses near zero are heavy-tailed).
    The loss at the snapshot is the larger of ``ref_loss`` (the stage's recent
    loss level) and the probe's own first loss (measured at the snapshot).
    """
    last = train_losses[-1]
    if last is None:
        return "non-finite loss"
    if not early_abort or len(train_losses) < 3:
        return None
    known = [v for v in (ref_loss, train_losses[0]) if v is not None]
    ref = max(known) if known else 0.0
    if ref <= 0:
        return None
    window = [v for v in train_losses[-3:] if v is not None]
    if len(window) == 3 and statistics.median(window) > max(blowup_factor * ref, ref + 8 * noise):
        return f"loss above {blowup_factor:g}x the start loss"
    return None


@dataclass
class ProbeRequest:
    """What a backend needs to run one probe.

    Attributes:
        lr: base LR to probe (param groups keep their ratios).
        steps: probe length, tau_probe.
        stage: stage index; index: probe index in the stage.
        ref_loss: loss at the snapshot, for the blow-up rule (None: unknown).
        blowup_factor, early_abort, noise: the stop rule (see :func:`stop_reason`).
        val_every: with a validation objective, evaluate every this many steps.
        keep_state: return the probe's end state (for keep-the-winner).
        cool: steps after ``steps`` whose LR falls linearly to 0 (the annealed
            strategy's cooldown branch, :func:`cooldown_lr`); with one, validation
            is evaluated once, at its end, and the end state returned is the
            state before the cooldown.
    """

    lr: float
    steps: int
    stage: int
    index: int
    ref_loss: float | None
    blowup_factor: float
    early_abort: bool
    noise: float = 0.0
    val_every: int = 0
    keep_state: bool = False
    cool: int = 0


@dataclass
class ProbeOutcome:
    """A backend's answer for one probe.

    Attributes:
        train_losses: every step's training loss (None where non-finite).
        val: ``(t, loss)`` pairs of the validation objective, if any.
        end_state: the probe's end state when requested and the probe did not diverge.
        error: a message when the probe failed (worker died, raised, timed out).
    """

    train_losses: list[float | None]
    val: list[tuple[float, float | None]] | None = None
    end_state: Snapshot | None = None
    error: str | None = None


def check_outcome(
    out: Any, request: ProbeRequest, snapshot: Snapshot | None = None
) -> ProbeOutcome:
    """A backend's answer to ``request``, checked and cleaned for the controller.

    What a backend returns crossed a process boundary (a Ray worker of another
    version, a custom backend with a bug): checked here, a bad answer fails one
    probe instead of crashing the controller or counting steps never taken.

    Args:
        out: what the backend returned for ``request``.
        request: the probe asked for (its ``steps`` bound the losses returned).
        snapshot: the snapshot the probe started from; an ``end_state`` must
            have its model's keys, shapes and dtypes and its number of param groups.

    Returns:
        A new :class:`ProbeOutcome`: losses as floats, non-finite ones as None;
        no ``end_state`` unless ``request.keep_state``.

    Raises:
        InputError: ``out`` is not a ProbeOutcome, has more losses than
            ``request.steps``, a loss or validation value that is not a number,
            validation values out of order or missing for a validation objective,
            or an end state that does not fit the snapshot (named in the message).
    """
    if not isinstance(out, ProbeOutcome):
        raise InputError(f"malformed probe outcome: expected a ProbeOutcome, got {_kind(out)}")
    if out.error is not None and not isinstance(out.error, str):
        raise InputError(f"malformed probe outcome: error must be a str, got {_kind(out.error)}")
    if not isinstance(out.train_losses, (list, tuple)):
        raise InputError(
            f"malformed probe outcome: train_losses must be a list, got {_kind(out.train_losses)}"
        )
    if len(out.train_losses) > request.steps + request.cool:
        raise InputError(
            f"malformed probe outcome: {len(out.train_losses)} losses for a probe of "
            f"{request.steps + request.cool} steps"
        )
    losses = [_loss_or_none(v, f"train_losses[{i}]") for i, v in enumerate(out.train_losses)]
    val: list[tuple[float, float | None]] | None = None
    if request.val_every > 0 and out.val is None and out.error is None and losses:
        raise InputError("malformed probe outcome: no validation values for a validation objective")
    if out.val is not None:
        if request.val_every <= 0:
            raise InputError(
                "malformed probe outcome: validation values for a training-loss objective"
            )
        if not isinstance(out.val, (list, tuple)):
            raise InputError(f"malformed probe outcome: val must be a list, got {_kind(out.val)}")
        val = []
        last = 0.0
        for i, pair in enumerate(out.val):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise InputError(f"malformed probe outcome: val[{i}] must be a (t, loss) pair")
            t = _loss_or_none(pair[0], f"val[{i}] step")
            if t is None or not last < t <= len(losses):
                raise InputError(
                    f"malformed probe outcome: val[{i}] is at step {pair[0]!r}; steps must "
                    f"increase within the {len(losses)} steps trained"
                )
            last = t
            val.append((t, _loss_or_none(pair[1], f"val[{i}] loss")))
    end_state = out.end_state if request.keep_state else None
    if end_state is not None:
        if not isinstance(end_state, Snapshot):
            raise InputError(
                f"malformed probe outcome: end_state must be a Snapshot, got {_kind(end_state)}"
            )
        if snapshot is not None:
            why = _fits(end_state, snapshot)
            if why is not None:
                raise InputError(f"malformed probe outcome: end_state {why}")
    return ProbeOutcome(train_losses=losses, val=val, end_state=end_state, error=out.error)


def _kind(value: Any) -> str:
    return type(value).__name__


def _loss_or_none(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"malformed probe outcome: {where} must be a number, got {value!r}")
    return finite_or_none(float(value))


def _fits(state: Snapshot, snapshot: Snapshot) -> str | None:
    """Why an end state cannot be the same run's state as ``snapshot``, or None."""
    if not isinstance(state.model, dict) or state.model.keys() != snapshot.model.keys():
        return "has other model keys than the snapshot"
    for key, ref in snapshot.model.items():
        got = state.model[key]
        if isinstance(ref, torch.Tensor) and not (
            isinstance(got, torch.Tensor) and got.shape == ref.shape and got.dtype == ref.dtype
        ):
            return f"entry {key!r} differs in shape or dtype from the snapshot's"
    groups = state.optimizer.get("param_groups") if isinstance(state.optimizer, dict) else None
    if not isinstance(groups, list) or len(groups) != len(snapshot.optimizer["param_groups"]):
        return "has another number of optimizer param groups than the snapshot"
    return None


class ProbeBackend(Protocol):
    """Runs probes out of the user's loop, ``parallelism`` at a time."""

    parallelism: int

    def run(self, snapshot: Snapshot, requests: list[ProbeRequest]) -> list[ProbeOutcome]: ...

    def reset(self) -> None: ...


TrainStep = Callable[[nn.Module, torch.optim.Optimizer, Any], Any]


def group_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each param group's LR over the first positive one's.

    A group at LR 0 (frozen) keeps ratio 0, so it stays frozen whichever group
    is first. All 1.0 when no group has a positive finite LR.
    """
    lrs = [float(g["lr"]) for g in optimizer.param_groups]
    base = next((lr for lr in lrs if lr > 0 and math.isfinite(lr)), None)
    if base is None:
        return [1.0] * len(lrs)
    return [lr / base if math.isfinite(lr) and lr > 0 else 0.0 for lr in lrs]


def set_group_lrs(optimizer: torch.optim.Optimizer, lr: float, ratios: list[float]) -> None:
    """Set every param group's LR to ``lr * ratio`` (tensor LRs are filled in place)."""
    for group, ratio in zip(optimizer.param_groups, ratios):
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr * ratio)
        else:
            group["lr"] = lr * ratio


def cooldown_lr(lr: float, done: int, cool: int) -> float:
    """LR of step ``done`` (from 0) of a probe's ``cool``-step cooldown from ``lr``:
    linear towards 0, neither end exactly ``lr`` or 0."""
    return lr * max(0.0, (cool - done) / (cool + 1))


def run_probe(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_step: TrainStep,
    batches: Iterator[Any],
    request: ProbeRequest,
    ratios: list[float],
    val_fn: Callable[[], float] | None = None,
    capture_state: Callable[[], Snapshot] | None = None,
) -> ProbeOutcome:
    """Train one probe from the current state; the caller restores afterwards.

    Args:
        train_step: ``train_step(model, optimizer, batch) -> loss`` doing
            forward, backward and ``optimizer.step()``.
        batches: an iterator of batches; the probe takes ``request.steps`` (and
            ``request.cool``) of them.
        ratios: each param group's LR relative to the first group's.
        capture_state: takes a snapshot of the live state; with a cooldown and
            ``request.keep_state``, called before the cooldown for ``end_state``
            (without a cooldown the caller captures the end state itself).
    """
    set_group_lrs(optimizer, request.lr, ratios)
    losses: list[float | None] = []
    val: list[tuple[float, float | None]] | None = [] if val_fn is not None else None
    total = request.steps + request.cool
    end_state = None
    for k in range(1, total + 1):
        if k > request.steps:
            set_group_lrs(
                optimizer, cooldown_lr(request.lr, k - 1 - request.steps, request.cool), ratios
            )
        loss = float(train_step(model, optimizer, next(batches)))
        losses.append(finite_or_none(loss))
        if val is not None and val_fn is not None:
            if k == total or (not request.cool and k % request.val_every == 0):
                val.append((float(k), finite_or_none(float(val_fn()))))
        if stop_reason(
            losses, request.ref_loss, request.blowup_factor, request.early_abort, request.noise
        ):
            break
        if k == request.steps and request.cool and request.keep_state and capture_state:
            end_state = capture_state()
    return ProbeOutcome(train_losses=losses, val=val, end_state=end_state)


def check_val_fn(backend: str, val_fn: Any, requests: list[ProbeRequest]) -> None:
    """Refuse requests for a validation objective on a backend given no ``val_fn``.

    Raises:
        ConfigError: naming the backend and the requests' ``val_every``.
    """
    if val_fn is None and any(r.val_every > 0 for r in requests):
        raise ConfigError(
            f"the objective is the validation loss (val_every={requests[0].val_every}) "
            f"but {backend} was given no val_fn"
        )


class LocalProber:
    """Runs probes in this process, one after another, each from the snapshot.

    Args:
        model, optimizer: the live objects (probes train them; they are restored
            to the snapshot after every probe, also when a probe raises).
        train_step: ``train_step(model, optimizer, batch) -> loss``.
        batches: a callable returning a fresh iterator of batches for a probe
            (``batches(stage, index)``); give the same batches to every probe
            of a stage to compare LRs on equal data.
        val_fn: validation loss, when the objective is the validation loss.
        extras: extra stateful objects restored with the model.
        ratios: each param group's LR over the first's (default: as the optimizer's
            groups are set when the prober is built, as :class:`autolr.AutoLRS` takes
            them).
    """

    parallelism = 1

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_step: TrainStep,
        batches: Callable[[int, int], Iterable[Any]],
        *,
        val_fn: Callable[[], float] | None = None,
        extras: dict[str, Stateful] | None = None,
        ratios: list[float] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.train_step = train_step
        self.batches = batches
        self.val_fn = val_fn
        self.extras = extras
        self.ratios = ratios if ratios is not None else group_ratios(optimizer)

    def reset(self) -> None:
        """Nothing to reset: the prober keeps no state between stages."""

    def run(self, snapshot: Snapshot, requests: list[ProbeRequest]) -> list[ProbeOutcome]:
        """Run ``requests`` one after another from ``snapshot``; outcomes in order.

        Raises:
            ConfigError: the requests ask for a validation objective and no
                ``val_fn`` was given (as :class:`autolr.integrations.ray.RayProber`).
        """
        check_val_fn("LocalProber", self.val_fn, requests)
        ratios = self.ratios
        outcomes = []
        for req in requests:
            try:
                restore(snapshot, self.model, self.optimizer, self.extras)
                out = run_probe(
                    self.model,
                    self.optimizer,
                    self.train_step,
                    iter(self.batches(req.stage, req.index)),
                    req,
                    ratios,
                    self.val_fn,
                    lambda: capture(self.model, self.optimizer, self.extras),
                )
                last = out.train_losses[-1] if out.train_losses else None
                if req.keep_state and not req.cool and last is not None:
                    out.end_state = capture(self.model, self.optimizer, self.extras)
            except Exception as exc:  # noqa: BLE001 - a failed probe is data, not a crash
                out = ProbeOutcome(train_losses=[], error=f"{type(exc).__name__}: {exc}")
            finally:
                restore(snapshot, self.model, self.optimizer, self.extras)
            outcomes.append(out)
        return outcomes
