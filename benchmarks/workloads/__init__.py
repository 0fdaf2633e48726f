"""The benchmark workloads, by id."""

from __future__ import annotations

from benchmarks.common import Workload
from benchmarks.workloads import (
    chargpt,
    digits,
    finetune,
    mnist1d_cnn,
    nqm,
    plateau_cnn,
    regression,
)

WORKLOADS: dict[str, Workload] = {
    w.id: w
    for w in (
        digits.WORKLOAD,
        mnist1d_cnn.WORKLOAD,
        chargpt.WORKLOAD,
        nqm.WORKLOAD,
        plateau_cnn.WORKLOAD,
        finetune.WORKLOAD,
        regression.WORKLOAD,
        nqm.STEEP_WORKLOAD,
    )
}

__all__ = ["WORKLOADS"]
