"""autolr: tune the learning rate of a PyTorch run while it trains.

Follows AutoLRS (Jin et al., ICLR 2021): stages of probes from an in-memory
snapshot, exponential forecasts of each probe's loss, Gaussian-process Bayesian
optimization over log(lr), then an exploit at the best LR.

Quick use::

    tuner = autolr.AutoLRS(model, optimizer, min_lr=1e-4, max_lr=1e-1, total_steps=20_000)
    for batch in tuner.batches(loader):
        loss = train_step(model, optimizer, batch)
        tuner.step(loss)
"""

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
    StateError,
)
from autolr.probing import LocalProber, ProbeBackend, ProbeOutcome, ProbeRecord, ProbeRequest
from autolr.runlog import SCHEMA_VERSION, RunLog, read_run_log
from autolr.snapshot import Snapshot, capture, restore

__version__ = "0.1.0"

__all__ = [
    "AutoLRS",
    "AutoLRSConfig",
    "AutoLRError",
    "AutoLRWarning",
    "ConfigError",
    "FitError",
    "InputError",
    "LocalProber",
    "LogFormatError",
    "MissingDependencyError",
    "Phase",
    "ProbeBackend",
    "ProbeOutcome",
    "ProbeRecord",
    "ProbeRequest",
    "RunLog",
    "SCHEMA_VERSION",
    "Snapshot",
    "StateError",
    "capture",
    "read_run_log",
    "restore",
    "__version__",
]
