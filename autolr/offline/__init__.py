"""The offline wing: tools that work on logs and simulations, never on a live run.

Nothing in the training core imports this package; it imports the core (the
replay drives the real controller).

- :mod:`~autolr.offline.logs`: a run log read and grouped into stages (:func:`load_run`).
- :mod:`~autolr.offline.harness`: the controller driven from a log (shared by replay and what-if).
- :mod:`~autolr.offline.replay`: exact replay of a run log (:func:`replay_run`).
- :mod:`~autolr.offline.whatif`: stages re-decided with other forecaster settings (:func:`what_if`).
- :mod:`~autolr.offline.nqm`: the noisy quadratic model, its exact losses and optimal schedules.
- :mod:`~autolr.offline.simulate`: the controller driven on the NQM (:func:`simulate_nqm`).
- :mod:`~autolr.offline.importers`: loss curves from TensorBoard, Lightning, HF, CSV, JSONL.
- :mod:`~autolr.offline.forecast_eval`: how well short windows of a curve forecast it.
- :mod:`~autolr.offline.report`: PNG and HTML report of a run log.
- :mod:`~autolr.offline.commands`: the offline commands of the ``autolr`` command line.
"""

from __future__ import annotations

from autolr.offline.logs import LoggedRun, LoggedStage, load_run
from autolr.offline.replay import Mismatch, ReplayResult, replay_run
from autolr.offline.simulate import NQMRun, simulate_nqm
from autolr.offline.whatif import StageWhatIf, WhatIfResult, what_if

__all__ = [
    "LoggedRun",
    "LoggedStage",
    "Mismatch",
    "NQMRun",
    "ReplayResult",
    "StageWhatIf",
    "WhatIfResult",
    "load_run",
    "replay_run",
    "simulate_nqm",
    "what_if",
]
