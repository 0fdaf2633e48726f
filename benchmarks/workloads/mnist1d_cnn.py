"""W2: a small 1-D CNN on MNIST-1D, generated locally by the ``mnist1d`` package, AdamW."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.common import (
    Instance,
    Workload,
    classifier_instance,
    split_indices,
)

BATCH_SIZE = 64
SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def load_splits() -> dict[str, tuple[Tensor, Tensor]]:
    """The canonical MNIST-1D (5000 signals of length 40, data seed 42), built in memory.

    ``make_dataset`` generates the data; ``get_dataset`` (which downloads) is never
    called. Its 4000 training signals are split 3500 train / 500 validation; its
    1000 test signals are the test set. ``make_dataset`` reseeds numpy's global
    RNG, so the caller's numpy state is saved and restored around it.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    state = np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    x = torch.tensor(data["x"], dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data["y"], dtype=torch.int64)
    train, val, _ = split_indices(len(y), (500 / len(y), 0.0), SPLIT_SEED)
    x_test = torch.tensor(data["x_test"], dtype=torch.float32).unsqueeze(1)
    y_test = torch.tensor(data["y_test"], dtype=torch.int64)
    return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x_test, y_test)}


class ConvNet1D(nn.Module):
    """Three strided 1-D convolutions (32 channels) and a linear head: ``(N, 1, 40) -> (N, 10)``."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(channels * 5, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


def make(seed: int) -> Instance:
    """Seeded model init and batch order; the data is fixed across seeds."""
    splits = load_splits()
    torch.manual_seed(seed)
    model = ConvNet1D()
    return classifier_instance(model, splits, BATCH_SIZE, seed)


WORKLOAD = Workload(
    id="W2",
    title="1-D CNN (3 conv, 32 ch) on MNIST-1D (generated), AdamW (wd 0.01), batch 64",
    optimizer="adamw",
    default_lr=1e-3,
    # up to 0.064: at 4,000 steps the tuned peak LR was 0.016, the old grid's edge
    grid_exponents=(-3, -2, -1, 0, 1, 2, 3, 4, 5, 6),
    full_steps=4000,
    quick_steps=300,
    make=make,
    weight_decay=0.01,
)
