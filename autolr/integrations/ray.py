"""Probes on Ray actors: a :class:`autolr.probing.ProbeBackend` that runs ``q`` at once.

Each worker is a Ray actor that builds its own model and optimizer from the
factories it is given. For every round of probes the stage snapshot goes once
into the object store; each actor restores it, trains ``tau_probe`` steps at
its candidate LR through :func:`autolr.probing.run_probe` (the same loop and
stop rule as the in-process :class:`autolr.probing.LocalProber`) and returns the
loss series, plus its end state when the controller keeps the winner's steps.

Usage::

    import ray
    from autolr.integrations.ray import RayProber

    ray.init(num_cpus=4)
    prober = RayProber(make_model, make_optimizer, train_step, batches, num_workers=4)
    tuner = autolr.AutoLRS(model, optimizer, 1e-4, 1e-1, total_steps=20_000,
                           prober=prober, parallel_probes=4)

Install with ``pip install "autolr[ray]"``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from autolr.errors import AutoLRError, ConfigError, InputError, require
from autolr.probing import (
    ProbeOutcome,
    ProbeRequest,
    TrainStep,
    check_outcome,
    check_val_fn,
    group_ratios,
    run_probe,
)
from autolr.snapshot import Snapshot, Stateful, capture, restore

ray: Any = require("ray", "ray")

logger = logging.getLogger(__name__)

__all__ = ["RayProber", "WorkerSpec"]

ModelFactory = Callable[[], nn.Module]
OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
BatchFactory = Callable[[int, int], Iterable[Any]]
ValFn = Callable[[nn.Module], float]
ExtrasFactory = Callable[[nn.Module, torch.optim.Optimizer], Mapping[str, Stateful]]


@dataclass
class WorkerSpec:
    """What a probe worker needs to train; shipped to every actor (must pickle).

    Attributes:
        make_model: ``() -> nn.Module``; builds the model (placing it on the
            device it should train on). Its initial weights do not matter: each
            probe restores the snapshot into it.
        make_optimizer: ``(model) -> Optimizer``; the same optimizer class and
            param groups as the run being tuned.
        train_step: ``(model, optimizer, batch) -> loss``: forward, backward,
            ``optimizer.step()``; moves the batch to the model's device if needed.
        batches: ``(stage, index) -> iterable of batches`` for probe ``index``
            of stage ``stage``; return the same batches for every index of a
            stage so probes differ by their LR only.
        val_fn: optional ``(model) -> float`` validation loss, when the
            controller's objective is the validation loss.
        make_extras: optional ``(model, optimizer) -> {name: stateful}``: other
            objects the snapshot holds (a ``GradScaler``, say), under the same
            names as the controller's ``extra_state``.
        ratios: each param group's LR relative to the first group's (default:
            taken from the groups' LRs of a freshly built optimizer, as the
            controller does).
        num_threads: torch intra-op threads in the worker.
    """

    make_model: ModelFactory
    make_optimizer: OptimizerFactory
    train_step: TrainStep
    batches: BatchFactory
    val_fn: ValFn | None = None
    make_extras: ExtrasFactory | None = None
    ratios: list[float] | None = None
    num_threads: int = 1


class ProbeWorker:
    """The actor body: one model and optimizer, restored from the snapshot for each probe."""

    def __init__(self, spec: WorkerSpec) -> None:
        torch.set_num_threads(max(1, spec.num_threads))
        self.spec = spec
        self.model = spec.make_model()
        self.optimizer = spec.make_optimizer(self.model)
        self.extras = dict(spec.make_extras(self.model, self.optimizer)) if spec.make_extras else {}
        self.ratios = list(spec.ratios) if spec.ratios else group_ratios(self.optimizer)

    def ready(self) -> int:
        """The worker's process id, once the model and optimizer are built."""
        return os.getpid()

    def probe(self, snapshot: Snapshot, request: ProbeRequest) -> ProbeOutcome:
        """Restore ``snapshot``, train ``request.steps`` steps at ``request.lr`` (then
        its cooldown, if any).

        Exceptions propagate: the driver retries the probe on a fresh actor.
        """
        restore(snapshot, self.model, self.optimizer, self.extras)
        val_fn = self.spec.val_fn if request.val_every > 0 else None
        model = self.model
        out = run_probe(
            self.model,
            self.optimizer,
            self.spec.train_step,
            iter(self.spec.batches(request.stage, request.index)),
            request,
            self.ratios,
            (lambda: val_fn(model)) if val_fn is not None else None,
            lambda: capture(self.model, self.optimizer, self.extras),
        )
        last = out.train_losses[-1] if out.train_losses else None
        if request.keep_state and not request.cool and last is not None:
            out.end_state = capture(self.model, self.optimizer, self.extras)
        return out


@dataclass
class _Job:
    position: int
    request: ProbeRequest
    attempts: int = 0


@dataclass
class _Slot:
    """One actor and what it is doing."""

    actor: Any
    ready_ref: Any = None
    job: _Job | None = None
    ref: Any = None
    deadline: float = math.inf
    started: float = 0.0
    dead: bool = field(default=False)


class RayProber:
    """Runs a stage's probes on a pool of Ray actors, ``num_workers`` at a time.

    Implements :class:`autolr.probing.ProbeBackend`. Pass it as
    ``AutoLRS(..., prober=RayProber(...), parallel_probes=q)``; the controller
    then asks the GP for ``q`` candidates per round and this backend runs them
    at once (more requests than workers queue). With ``q = 1`` and the same
    seed, it takes the same decisions as :class:`autolr.probing.LocalProber`.

    Faults: a probe whose actor dies, raises or answers with a malformed
    outcome (see :func:`autolr.probing.check_outcome`) is retried ``retries`` times,
    each time on a new actor; after that it is returned as a failed probe
    (``ProbeOutcome.error``) and the search goes on. A probe that runs longer
    than ``timeout_s`` is stopped (its actor killed and replaced) and returned
    as failed, without a retry. A failed probe reports no steps: the steps a
    dead worker took are not known.

    Ray must be initialized (``ray.init``) or will be, with its defaults, at
    the first probe. Actors start at :meth:`start` or the first :meth:`run`, and live until
    :meth:`close` (also on ``with RayProber(...) as prober:`` exit).

    Args:
        make_model, make_optimizer, train_step, batches, val_fn, make_extras,
            ratios: see :class:`WorkerSpec`. All must pickle (closures and
            lambdas do, through Ray's cloudpickle).
        num_workers: actors in the pool (its ``parallelism``).
        num_cpus: CPUs reserved per actor; the worker runs torch on
            ``max(1, int(num_cpus))`` threads.
        num_gpus: GPUs reserved per actor (its model factory puts the model there).
        timeout_s: wall-clock limit of one probe in seconds, counted from its
            start on a ready actor (None: no limit).
        start_timeout_s: wall-clock limit for an actor to be scheduled and
            build its model (300; None: no limit). Ray waits for free
            resources without end; past this limit the worker counts as
            failed to start.
        retries: new attempts after an actor dies or raises (1).
        actor_options: extra keyword arguments of Ray's ``.options()`` for the
            actors (``runtime_env``, ``scheduling_strategy``, ``memory``...).

    Raises:
        ConfigError: a setting is out of range; names the value given.
        InputError: a factory or function is not callable.
    """

    def __init__(
        self,
        make_model: ModelFactory,
        make_optimizer: OptimizerFactory,
        train_step: TrainStep,
        batches: BatchFactory,
        *,
        num_workers: int = 2,
        num_cpus: float = 1,
        num_gpus: float = 0,
        val_fn: ValFn | None = None,
        make_extras: ExtrasFactory | None = None,
        ratios: Sequence[float] | None = None,
        timeout_s: float | None = None,
        start_timeout_s: float | None = 300.0,
        retries: int = 1,
        actor_options: Mapping[str, Any] | None = None,
    ) -> None:
        for name, fn in (
            ("make_model", make_model),
            ("make_optimizer", make_optimizer),
            ("train_step", train_step),
            ("batches", batches),
        ):
            if not callable(fn):
                raise InputError(f"{name} must be callable, got {type(fn).__name__}")
        for name, opt in (("val_fn", val_fn), ("make_extras", make_extras)):
            if opt is not None and not callable(opt):
                raise InputError(f"{name} must be callable or None, got {type(opt).__name__}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ConfigError(f"num_workers must be an integer >= 1, got {num_workers!r}")
        for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        for name, limit in (("timeout_s", timeout_s), ("start_timeout_s", start_timeout_s)):
            if limit is not None and (
                isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0
            ):
                raise ConfigError(
                    f"{name} must be a positive number of seconds or None, got {limit!r}"
                )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be an integer >= 0, got {retries!r}")
        if ratios is not None and (
            len(ratios) == 0 or any(not (math.isfinite(r) and r > 0) for r in ratios)
        ):
            raise ConfigError(f"ratios must be positive finite numbers, got {list(ratios)!r}")
        self.spec = WorkerSpec(
            make_model=make_model,
            make_optimizer=make_optimizer,
            train_step=train_step,
            batches=batches,
            val_fn=val_fn,
            make_extras=make_extras,
            ratios=list(ratios) if ratios is not None else None,
            num_threads=max(1, int(num_cpus)),
        )
        self.parallelism = num_workers
        self.num_cpus = float(num_cpus)
        self.num_gpus = float(num_gpus)
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.start_timeout_s = None if start_timeout_s is None else float(start_timeout_s)
        self.retries = retries
        self.actor_options = dict(actor_options or {})
        self.failures = 0
        self._slots: list[_Slot] = []
        self._spec_ref: Any = None
        self._snapshot: Snapshot | None = None
        self._snapshot_ref: Any = None
        self._ever_ready = False

    # ------------------------------------------------------------- protocol
    def reset(self) -> None:
        """Forget the shipped snapshot (the actors stay up)."""
        self._snapshot, self._snapshot_ref = None, None

    def run(self, snapshot: Snapshot, requests: list[ProbeRequest]) -> list[ProbeOutcome]:
        """Run ``requests`` from ``snapshot`` on the pool; outcomes in request order.

        Raises:
            AutoLRError: no worker could start (a factory raised, say).
            ConfigError: the requests ask for a validation objective and no
                ``val_fn`` was given.
        """
        if not requests:
            return []
        check_val_fn("RayProber", self.spec.val_fn, requests)
        self._ensure_pool()
        snap_ref = self._ship(snapshot)
        results: list[ProbeOutcome | None] = [None] * len(requests)
        queue = deque(_Job(i, req) for i, req in enumerate(requests))
        try:
            self._run_queue(queue, results, snap_ref)
        except BaseException:
            # Cut short (a Ctrl-C): a probe still running would answer the next run.
            for slot in self._slots:
                if slot.job is not None:
                    self._replace(slot)
            raise
        return [r for r in results if r is not None]

    def _run_queue(
        self, queue: deque[_Job], results: list[ProbeOutcome | None], snap_ref: Any
    ) -> None:
        """Dispatch ``queue`` to the ready actors until every result is in."""
        while any(r is None for r in results):
            for slot in self._slots:
                if queue and not slot.dead and slot.ready_ref is None and slot.job is None:
                    self._dispatch(slot, queue.popleft(), snap_ref)
            waiting = {
                ref: slot
                for slot in self._slots
                for ref in (slot.ready_ref, slot.ref)
                if ref is not None
            }
            if not waiting:
                # Every worker failed to start: fail what is left.
                for job in queue:
                    results[job.position] = ProbeOutcome(
                        train_losses=[], error="no Ray worker could start"
                    )
                break
            deadline = min((s.deadline for s in self._slots), default=math.inf)
            timeout = None if deadline == math.inf else max(0.0, deadline - time.monotonic())
            done, _ = ray.wait(list(waiting), num_returns=1, timeout=timeout)
            for ref in done:
                slot = waiting[ref]
                if slot.ready_ref is not None and ref == slot.ready_ref:
                    self._on_ready(slot)
                else:
                    self._on_result(slot, queue, results)
            now = time.monotonic()
            for slot in self._slots:
                if now < slot.deadline:
                    continue
                if slot.ready_ref is not None:
                    self._start_failed(slot, self._start_timeout_message())
                elif slot.job is not None:
                    self._on_timeout(slot, results)

    # -------------------------------------------------------------- lifecycle
    def start(self) -> RayProber:
        """Start the actors now and wait until each has built its model (else: at the first run).

        Raises:
            AutoLRError: no worker could start.
        """
        self._ensure_pool()
        for slot in self._slots:
            if slot.ready_ref is None:
                continue
            left = slot.deadline - time.monotonic()
            done, _ = ray.wait([slot.ready_ref], timeout=None if left == math.inf else max(0, left))
            if done:
                self._on_ready(slot)
            else:
                self._start_failed(slot, self._start_timeout_message())
        return self

    def close(self) -> None:
        """Kill the actors; the next :meth:`run` starts new ones."""
        for slot in self._slots:
            _kill(slot.actor)
        self._slots = []
        self.reset()

    def __enter__(self) -> RayProber:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live, started actors (for monitoring and tests)."""
        live = [s for s in self._slots if not s.dead and s.ready_ref is None]
        return list(ray.get([s.actor.ready.remote() for s in live]))

    # ---------------------------------------------------------------- helpers
    def _ensure_pool(self) -> None:
        if self._spec_ref is None:
            self._spec_ref = ray.put(self.spec)
        self._slots = [s for s in self._slots if not s.dead]
        while len(self._slots) < self.parallelism:
            self._slots.append(self._new_slot())

    def _new_slot(self) -> _Slot:
        options = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "max_restarts": 0,
            "max_task_retries": 0,
            **self.actor_options,
        }
        actor = _RemoteWorker.options(**options).remote(self._spec_ref)
        limit = self.start_timeout_s
        deadline = math.inf if limit is None else time.monotonic() + limit
        return _Slot(actor=actor, ready_ref=actor.ready.remote(), deadline=deadline)

    def _ship(self, snapshot: Snapshot) -> Any:
        # The controller hands the same snapshot object to every round of a stage.
        if snapshot is not self._snapshot:
            self._snapshot, self._snapshot_ref = snapshot, ray.put(snapshot)
        return self._snapshot_ref

    def _dispatch(self, slot: _Slot, job: _Job, snap_ref: Any) -> None:
        job.attempts += 1
        slot.job = job
        slot.ref = slot.actor.probe.remote(snap_ref, job.request)
        slot.started = time.monotonic()
        slot.deadline = math.inf if self.timeout_s is None else slot.started + self.timeout_s

    def _on_ready(self, slot: _Slot) -> None:
        try:
            ray.get(slot.ready_ref)
        except Exception as exc:  # noqa: BLE001 - reported below
            self._start_failed(slot, _describe(exc), exc)
            return
        slot.ready_ref, slot.deadline = None, math.inf
        self._ever_ready = True

    def _start_failed(self, slot: _Slot, message: str, exc: BaseException | None = None) -> None:
        """A worker that cannot start: an error before any worker ran, else a lost slot."""
        slot.dead, slot.ready_ref, slot.deadline = True, None, math.inf
        _kill(slot.actor)
        if not self._ever_ready:
            self.close()
            raise AutoLRError(f"Ray probe worker failed to start: {message}") from exc
        logger.warning("a Ray probe worker failed to start: %s", message)

    def _start_timeout_message(self) -> str:
        return (
            f"not ready within start_timeout_s={self.start_timeout_s:g}s "
            f"(are num_cpus={self.num_cpus:g} and num_gpus={self.num_gpus:g} free in the cluster?)"
        )

    def _on_result(
        self, slot: _Slot, queue: deque[_Job], results: list[ProbeOutcome | None]
    ) -> None:
        job = slot.job
        assert job is not None
        try:
            out = check_outcome(ray.get(slot.ref), job.request, self._snapshot)
        except Exception as exc:  # noqa: BLE001 - a failed probe is data, not a crash
            message = _describe(exc)
            self.failures += 1
            self._replace(slot)
            if job.attempts <= self.retries:
                logger.warning(
                    "probe %d.%d (lr=%.3g) failed on attempt %d, retrying on a new worker: %s",
                    job.request.stage,
                    job.request.index,
                    job.request.lr,
                    job.attempts,
                    message,
                )
                queue.appendleft(job)
            else:
                logger.warning(
                    "probe %d.%d (lr=%.3g) failed after %d attempts: %s",
                    job.request.stage,
                    job.request.index,
                    job.request.lr,
                    job.attempts,
                    message,
                )
                results[job.position] = ProbeOutcome(train_losses=[], error=message)
            return
        results[job.position] = out
        slot.job, slot.ref, slot.deadline = None, None, math.inf

    def _on_timeout(self, slot: _Slot, results: list[ProbeOutcome | None]) -> None:
        job = slot.job
        assert job is not None
        elapsed = time.monotonic() - slot.started
        message = f"timed out after {elapsed:.1f}s (timeout_s={self.timeout_s:g})"
        logger.warning(
            "probe %d.%d (lr=%.3g) %s; its worker is replaced",
            job.request.stage,
            job.request.index,
            job.request.lr,
            message,
        )
        self.failures += 1
        self._replace(slot)
        results[job.position] = ProbeOutcome(train_losses=[], error=message)

    def _replace(self, slot: _Slot) -> None:
        """Kill the slot's actor and start a fresh one in its place."""
        _kill(slot.actor)
        fresh = self._new_slot()
        slot.actor, slot.ready_ref = fresh.actor, fresh.ready_ref
        # The fresh actor's start timeout holds as the first one's did.
        slot.job, slot.ref, slot.deadline = None, None, fresh.deadline


_RemoteWorker: Any = ray.remote(ProbeWorker)


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def _describe(exc: BaseException) -> str:
    """A one-line message: the user's exception for a task error, else Ray's own."""
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
    if isinstance(exc, InputError) and not isinstance(exc, ray.exceptions.RayTaskError):
        # A malformed outcome, named by check_outcome.
        text = str(exc)
    elif isinstance(cause, BaseException):
        lines = str(cause).strip().splitlines()
        text = f"{type(cause).__name__}: {lines[0] if lines else ''}"
    elif isinstance(exc, ray.exceptions.RayActorError):
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        # A failed constructor ends with the user's exception; a crash starts with Ray's reason.
        creation = bool(lines) and "creation task" in lines[0]
        text = (
            f"worker died: {(lines[-1] if creation else lines[0]) if lines else type(exc).__name__}"
        )
    else:
        lines = str(exc).strip().splitlines()
        text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text[:300]
