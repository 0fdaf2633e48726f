"""The benchmark workloads, by id."""

from __future__ import annotations

from benchmarks.common import Workload
from benchmarks.workloads import chargpt, digits, mnist1d_cnn, nqm

WORKLOADS: dict[str, Workload] = {
    w.id: w for w in (digits.WORKLOAD, mnist1d_cnn.WORKLOAD, chargpt.WORKLOAD, nqm.WORKLOAD)
}

__all__ = ["WORKLOADS"]
