"""W5 (confirmation): fine-tuning a pretrained MLP with a new head, AdamW.

Pretraining, done once per process and cached in memory: an MLP body
64-128-128 with a 5-way head, trained with AdamW (lr 1e-3, batch 64,
``PRETRAIN_STEPS`` steps, fixed seed) on every sklearn digit of classes 0-4.
Fine-tuning: the pretrained body, a new seeded 5-way head, on classes 5-9 only
(disjoint from the pretraining data): ``TRAIN_SIZE`` training images, 200
validation, the rest test; every layer trains. The small training set is
memorized quickly (training loss near 0), so what decides the result is how far
the LR moves the pretrained features. No default is chosen on this workload.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import (
    Instance,
    Workload,
    classifier_instance,
    seeded_generator,
)

BATCH_SIZE = 32
HIDDEN = 128
PRETRAIN_STEPS = 300
PRETRAIN_SEED = 1234
TRAIN_SIZE = 250
VAL_SIZE = 200
SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def load_tasks() -> dict[str, tuple[Tensor, Tensor]]:
    """The pretraining set (classes 0-4) and the fine-tuning splits (classes 5-9, as 0-4).

    Returns:
        ``"pretrain"``, ``"train"``, ``"val"``, ``"test"``: ``(x (N, 64) in [0, 1],
        y (N,) int64 in 0..4)``.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    pre = (y < 5).nonzero().squeeze(1)
    fine = (y >= 5).nonzero().squeeze(1)
    fine = fine[torch.randperm(len(fine), generator=seeded_generator(SPLIT_SEED))]
    train, val, test = (
        fine[:TRAIN_SIZE],
        fine[TRAIN_SIZE : TRAIN_SIZE + VAL_SIZE],
        fine[TRAIN_SIZE + VAL_SIZE :],
    )
    return {
        "pretrain": (x[pre], y[pre]),
        "train": (x[train], y[train] - 5),
        "val": (x[val], y[val] - 5),
        "test": (x[test], y[test] - 5),
    }


def _body() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU())


@functools.lru_cache(maxsize=1)
def pretrained_body() -> dict[str, Tensor]:
    """State dict of the body after pretraining (deterministic; the global RNG is untouched)."""
    x, y = load_tasks()["pretrain"]
    with torch.random.fork_rng():
        torch.manual_seed(PRETRAIN_SEED)
        body = _body()
        model = nn.Sequential(body, nn.Linear(HIDDEN, 5))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        gen = seeded_generator(PRETRAIN_SEED)
        for _ in range(PRETRAIN_STEPS):
            idx = torch.randint(len(y), (64,), generator=gen)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return {k: v.detach().clone() for k, v in body.state_dict().items()}


def make(seed: int) -> Instance:
    """The pretrained body (same for every seed), a seeded new head, seeded batch order."""
    tasks = load_tasks()
    body = _body()
    body.load_state_dict(pretrained_body())
    torch.manual_seed(seed)
    model = nn.Sequential(body, nn.Linear(HIDDEN, 5))
    return classifier_instance(model, tasks, BATCH_SIZE, seed, pretrain_steps=PRETRAIN_STEPS)


WORKLOAD = Workload(
    id="W5",
    title=(
        f"fine-tuning: MLP 64-{HIDDEN}-{HIDDEN} pretrained on digits 0-4 ({PRETRAIN_STEPS} "
        f"AdamW steps), new head, tuned on digits 5-9 ({TRAIN_SIZE} images), AdamW "
        "(wd 0.01), batch 32"
    ),
    optimizer="adamw",
    default_lr=1e-3,
    grid_exponents=(-5, -4, -3, -2, -1, 0, 1, 2, 3),
    full_steps=800,
    quick_steps=150,
    make=make,
    weight_decay=0.01,
    grid_schedules=("cosine", "wsd"),
    confirmation=True,
    chance_loss=math.log(5),
)
