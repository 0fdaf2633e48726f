"""autolr: tune the learning rate of a PyTorch run while it trains.

Builds on AutoLRS (Jin et al., ICLR 2021): probes of candidate LRs from an
in-memory snapshot, then an exploit at the best one. With a step budget the
default strategy (``anneal``) finds the range by an LR range test, scores each
candidate by its loss after a short cooldown branch, holds the winner and decays
it at the end; ``strategy="forecast"`` is AutoLRS's rule (exponential forecasts
of each probe's loss, Gaussian-process Bayesian optimization over log(lr)).

Quick use::

    tuner = autolr.AutoLRS(model, optimizer, total_steps=20_000)
    for batch in loader:
        loss = train_step(model, optimizer, batch)
        tuner.step(loss)

The names below load on first use (PEP 562), so ``import autolr`` and importing a
subpackage such as ``autolr.kernels`` do not import the controller or BoTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; a test keeps it equal to _EXPORTS
    from autolr.config import AutoLRSConfig
    from autolr.controller import AutoLRS, Phase
    from autolr.errors import (
        AutoLRError,
        AutoLRWarning,
        ConfigError,
        FitError,
        InputError,
        LogFormatError,
        MissingDependencyError,
        NonFiniteWarning,
        RangeWarning,
        StateError,
    )
    from autolr.offline.reader import read_run_log
    from autolr.probing import LocalProber, ProbeBackend, ProbeOutcome, ProbeRecord, ProbeRequest
    from autolr.runlog import SCHEMA_VERSION, RunLog
    from autolr.snapshot import Snapshot, capture, restore
    from autolr.strategy import ForecastStrategy, Strategy

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "AutoLRS": "autolr.controller",
    "AutoLRSConfig": "autolr.config",
    "AutoLRError": "autolr.errors",
    "AutoLRWarning": "autolr.errors",
    "ConfigError": "autolr.errors",
    "FitError": "autolr.errors",
    "InputError": "autolr.errors",
    "LocalProber": "autolr.probing",
    "LogFormatError": "autolr.errors",
    "MissingDependencyError": "autolr.errors",
    "NonFiniteWarning": "autolr.errors",
    "RangeWarning": "autolr.errors",
    "Phase": "autolr.controller",
    "ProbeBackend": "autolr.probing",
    "ProbeOutcome": "autolr.probing",
    "ProbeRecord": "autolr.probing",
    "ProbeRequest": "autolr.probing",
    "RunLog": "autolr.runlog",
    "SCHEMA_VERSION": "autolr.runlog",
    "Snapshot": "autolr.snapshot",
    "StateError": "autolr.errors",
    "ForecastStrategy": "autolr.strategy",
    "Strategy": "autolr.strategy",
    "capture": "autolr.snapshot",
    "read_run_log": "autolr.offline.reader",
    "restore": "autolr.snapshot",
}
"""Public name -> the module that defines it; the one list of autolr's top-level API."""

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    """Import the module that defines a public name on first access, and cache the name."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'autolr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
