"""W1: an MLP on scikit-learn's ``load_digits`` (8x8 digits, ships with sklearn), SGD + momentum."""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from benchmarks.common import (
    Instance,
    Workload,
    classifier_instance,
    split_indices,
)

BATCH_SIZE = 32
SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def load_splits() -> dict[str, tuple[Tensor, Tensor]]:
    """Fixed 60/20/20 train/val/test split of the 1797 digits; pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    train, val, test = split_indices(len(y), (0.2, 0.2), SPLIT_SEED)
    return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])}


def make(seed: int) -> Instance:
    """Seeded model init and batch order; the data split is fixed across seeds."""
    splits = load_splits()
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    return classifier_instance(model, splits, BATCH_SIZE, seed)


WORKLOAD = Workload(
    id="W1",
    title="MLP 64-128-128-10 on sklearn digits, SGD (momentum 0.9), batch 32",
    optimizer="sgd",
    default_lr=0.1,
    grid_exponents=(-4, -3, -2, -1, 0, 1, 2),
    full_steps=3000,
    quick_steps=300,
    make=make,
    momentum=0.9,
    weight_decay=5e-4,
)
