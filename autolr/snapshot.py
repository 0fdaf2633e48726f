"""In-memory snapshots of a training state, and their restore.

A snapshot holds the model's parameters and buffers, the optimizer's state and
hyperparameters, the state of any extra stateful objects (a ``GradScaler``, say)
and the RNG states (torch CPU, CUDA, numpy, python). Tensors are cloned, by
default to the CPU, so the live model can be trained freely and put back
bit-identical.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...


def clone_tree(obj: Any, device: torch.device | str | None = None) -> Any:
    """Deep-copy nested dicts/lists/tuples, cloning every tensor (optionally to ``device``)."""
    if isinstance(obj, torch.Tensor):
        out = obj.detach()
        if device is not None and out.device != torch.device(device):
            return out.to(device, copy=True)
        return out.clone()
    if isinstance(obj, Mapping):
        return {k: clone_tree(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone_tree(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(clone_tree(v, device) for v in obj)
    return obj


def tree_nbytes(obj: Any) -> int:
    """Bytes held by all tensors in a nested structure."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(tree_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tree_nbytes(v) for v in obj)
    return 0


def get_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and every CUDA device), numpy and python, as plain data.

    Stored as tensors and lists so ``torch.load(weights_only=True)`` can read them.
    """
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Snapshot:
    """A captured training state.

    Attributes:
        model: ``model.state_dict()`` with cloned tensors.
        optimizer: ``optimizer.state_dict()`` with cloned tensors.
        extras: ``name -> obj.state_dict()`` for each extra stateful object.
        rng: see :func:`get_rng_state`.
        step: the controller's global step when captured.
    """

    model: dict[str, Any]
    optimizer: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    step: int = 0

    @property
    def nbytes(self) -> int:
        return tree_nbytes(self.model) + tree_nbytes(self.optimizer) + tree_nbytes(self.extras)

    def to_state(self) -> dict[str, Any]:
        """Plain nested data (tensors, numbers, lists) for ``torch.save``."""
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "extras": self.extras,
            "rng": self.rng,
            "step": self.step,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Snapshot:
        return cls(
            model=dict(state["model"]),
            optimizer=dict(state["optimizer"]),
            extras=dict(state.get("extras", {})),
            rng=dict(state.get("rng", {})),
            step=int(state.get("step", 0)),
        )


def incompatibility(
    snapshot: Snapshot,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extras: Mapping[str, Stateful] | None = None,
) -> str | None:
    """Why ``snapshot`` cannot be restored into these objects, or None.

    Checked before anything is loaded: the model's keys, shapes and dtypes; the
    optimizer's kind (its param groups' settings) and parameter counts, and that
    per-parameter state tensors have their parameter's shape; the extras' names.
    """
    live = model.state_dict()
    if set(live) != set(snapshot.model):
        missing = sorted(set(live) - set(snapshot.model))[:3]
        unknown = sorted(set(snapshot.model) - set(live))[:3]
        return f"the model's keys differ (missing {missing}, unknown {unknown})"
    for key, tensor in live.items():
        saved = snapshot.model[key]
        if not isinstance(saved, torch.Tensor) or saved.shape != tensor.shape:
            shape = tuple(saved.shape) if isinstance(saved, torch.Tensor) else type(saved).__name__
            return f"model entry {key!r} has shape {shape}, the model has {tuple(tensor.shape)}"
        if saved.dtype != tensor.dtype:
            return f"model entry {key!r} has dtype {saved.dtype}, the model has {tensor.dtype}"
    groups = snapshot.optimizer.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        n = len(groups) if isinstance(groups, list) else None
        return f"the optimizer state has {n} param groups, the optimizer has " + str(
            len(optimizer.param_groups)
        )
    params: list[torch.Tensor] = []
    for i, (saved_g, live_g) in enumerate(zip(groups, optimizer.param_groups)):
        saved_keys, live_keys = set(saved_g) - {"params"}, set(live_g) - {"params"}
        if saved_keys != live_keys:
            return (
                f"optimizer param group {i} has settings {sorted(saved_keys)}, the optimizer "
                f"({type(optimizer).__name__}) has {sorted(live_keys)}: another optimizer kind"
            )
        if len(saved_g["params"]) != len(live_g["params"]):
            return (
                f"optimizer param group {i} has {len(saved_g['params'])} parameters, the "
                f"optimizer has {len(live_g['params'])}"
            )
        params.extend(live_g["params"])
    for index, entry in (snapshot.optimizer.get("state") or {}).items():
        if not isinstance(index, int) or not 0 <= index < len(params):
            return f"optimizer state names parameter {index!r} of {len(params)}"
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                if value.shape != params[index].shape:
                    return (
                        f"optimizer state {name!r} of parameter {index} has shape "
                        f"{tuple(value.shape)}, the parameter {tuple(params[index].shape)}"
                    )
    if set(extras or {}) - set(snapshot.extras):
        return f"extra state {sorted(set(extras or {}) - set(snapshot.extras))} is not saved"
    if snapshot.rng:
        now = get_rng_state()
        try:  # the setters are the check: tried, then the states as they were put back
            set_rng_state(snapshot.rng)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            return f"its RNG state is malformed ({type(exc).__name__}: {exc})"
        finally:
            set_rng_state(now)
    return None


def resolve_snapshot_device(model: nn.Module, snapshot_device: str) -> torch.device:
    """``"same"``: the device of the model's first parameter; else the named device."""
    if snapshot_device == "same":
        for p in model.parameters():
            return p.device
        return torch.device("cpu")
    return torch.device(snapshot_device)


def capture(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extras: Mapping[str, Stateful] | None = None,
    *,
    device: torch.device | str = "cpu",
    step: int = 0,
) -> Snapshot:
    """Copy the training state into a new :class:`Snapshot` on ``device``."""
    return Snapshot(
        model=clone_tree(model.state_dict(), device),
        optimizer=clone_tree(optimizer.state_dict(), device),
        extras={name: clone_tree(obj.state_dict(), device) for name, obj in (extras or {}).items()},
        rng=clone_tree(get_rng_state()),
        step=step,
    )


def restore(
    snapshot: Snapshot,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extras: Mapping[str, Stateful] | None = None,
) -> None:
    """Put a snapshot back into the live objects; the snapshot stays intact.

    Parameters are copied in place (their identity, and so the optimizer's
    references to them, is kept); gradients are cleared to ``None``. The
    optimizer gets a fresh clone of its state, since ``load_state_dict`` may keep
    the given tensors and later updates would otherwise write into the snapshot.
    """
    with torch.no_grad():
        model.load_state_dict(snapshot.model)
    for p in model.parameters():
        p.grad = None
    optimizer.load_state_dict(clone_tree(snapshot.optimizer))
    for name, obj in (extras or {}).items():
        if name in snapshot.extras:
            obj.load_state_dict(clone_tree(snapshot.extras[name]))
    if snapshot.rng:
        set_rng_state(snapshot.rng)
