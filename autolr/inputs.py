"""Checks of what users hand the controller: its parts, and each step's loss.

Each refusal is an autolr error that names the value and says what to pass
instead; nothing here changes the model or the optimizer.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autolr.errors import ConfigError, InputError, SchedulerConflictWarning


def check_parts(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    val_fn: Any,
    extra_state: Any,
    log_path: Any,
    prober: Any,
    watch_lr: bool = True,
) -> None:
    """Refuse, with a message naming the value, objects the controller cannot work with."""
    for i, group in enumerate(optimizer.param_groups):
        if "lr" not in group:
            raise InputError(
                f"optimizer param group {i} has no 'lr' entry; autolr sets each group's 'lr' "
                f"(keys: {sorted(k for k in group if k != 'params')})"
            )
    in_model = {id(p) for p in model.parameters()}
    outside = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in in_model]
    if outside:
        raise ConfigError(
            f"the optimizer updates {len(outside)} parameter tensor(s) "
            f"({sum(p.numel() for p in outside)} values) that are not parameters of `model`: "
            "snapshots hold the model, so probe updates to them could not be undone; pass "
            "the module that holds every parameter the optimizer updates"
        )
    if val_fn is not None and not callable(val_fn):
        raise ConfigError(f"val_fn must be a callable returning a float, got {val_fn!r}")
    if log_path is not None and not isinstance(log_path, (str, Path)):
        raise ConfigError(f"log_path must be a path (str or Path) or None, got {log_path!r}")
    if extra_state is not None:
        if not isinstance(extra_state, Mapping):
            raise ConfigError(
                f"extra_state must map names to objects with state_dict/load_state_dict, "
                f"got {type(extra_state).__name__}"
            )
        for name, obj in extra_state.items():
            if not (
                callable(getattr(obj, "state_dict", None))
                and callable(getattr(obj, "load_state_dict", None))
            ):
                raise ConfigError(
                    f"extra_state[{name!r}] needs state_dict() and load_state_dict(), got "
                    f"{type(obj).__name__}"
                )
    if prober is not None and not (
        callable(getattr(prober, "run", None)) and callable(getattr(prober, "reset", None))
    ):
        raise ConfigError(
            f"prober must be a ProbeBackend (run(snapshot, requests) and reset()), got "
            f"{type(prober).__name__}"
        )
    if watch_lr and any("initial_lr" in g for g in optimizer.param_groups):
        warnings.warn(
            "the optimizer has an LR scheduler attached (its param groups have 'initial_lr'); "
            "autolr owns the LR: stop calling scheduler.step(), or autolr's LR is overwritten",
            SchedulerConflictWarning,
            stacklevel=3,
        )


def finite_weights(model: nn.Module) -> bool:
    """Every parameter and floating-point buffer is finite."""
    with torch.no_grad():
        for t in itertools.chain(model.parameters(), model.buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return False
    return True


def loss_value(loss: Any) -> float:
    """The loss handed to ``step()`` as a float.

    Raises:
        InputError: not a number, a one-element tensor or a one-element array.
    """
    if isinstance(loss, (bool, np.bool_)):
        raise InputError(f"loss must be a number or a one-element tensor, got {loss!r}")
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise InputError(
                f"loss must be a number or a one-element tensor, got a tensor of shape "
                f"{tuple(loss.shape)}"
            )
        if loss.dtype == torch.bool or loss.is_complex():
            raise InputError(f"loss must be a number or a one-element tensor, got {loss!r}")
        return float(loss.detach().float().item())
    if isinstance(loss, numbers.Real):
        try:
            return float(loss)
        except OverflowError:  # an int beyond a float: as a float, it is infinite
            big: Any = loss
            return math.inf if big > 0 else -math.inf
    if isinstance(loss, np.ndarray) and loss.size == 1 and loss.dtype.kind in "iuf":
        return float(loss.reshape(-1)[0])
    raise InputError(
        f"loss must be a number or a one-element tensor, got {type(loss).__name__}: {loss!r}"
    )
