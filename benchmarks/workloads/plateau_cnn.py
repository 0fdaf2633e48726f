"""W4 (confirmation): a narrow ReLU conv net on sklearn digits that starts on a loss plateau.

Five 3x3 convolutions (16 channels, the first with stride 2: 8x8 -> 4x4), no
normalization, He-normal weights scaled by ``INIT_SCALE`` and zero biases. The
small init shrinks the signal at every layer, so the logits start near 0 and the
loss sits at chance level, ln 10, for tens to hundreds of steps depending on the
LR; an LR a few times the tuned one kills the ReLUs and leaves the network dead
at that level for good. No default is chosen on this workload.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from benchmarks.common import (
    Instance,
    Workload,
    classifier_instance,
)
from benchmarks.workloads.digits import load_splits

BATCH_SIZE = 32
CHANNELS = 16
DEPTH = 5
INIT_SCALE = 0.4


def image_splits() -> dict[str, tuple[Tensor, Tensor]]:
    """W1's fixed 60/20/20 split of the digits, as ``(N, 1, 8, 8)`` images in [0, 1]."""
    return {k: (x.view(-1, 1, 8, 8), y) for k, (x, y) in load_splits().items()}


class PlateauConvNet(nn.Module):
    """``DEPTH`` 3x3 ReLU convolutions and a linear head: ``(N, 1, 8, 8) -> (N, 10)``.

    Args:
        channels: width of every convolution.
        depth: number of convolutions (the first has stride 2).
        init_scale: multiplier of the He-normal weights (1.0: signal-preserving).
    """

    def __init__(
        self, channels: int = CHANNELS, depth: int = DEPTH, init_scale: float = INIT_SCALE
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * 16, 10)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    m.weight.mul_(init_scale)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


def make(seed: int) -> Instance:
    """Seeded model init and batch order; the data split is fixed across seeds."""
    splits = image_splits()
    torch.manual_seed(seed)
    model = PlateauConvNet()
    return classifier_instance(model, splits, BATCH_SIZE, seed)


WORKLOAD = Workload(
    id="W4",
    title=(
        f"plateau-starting ReLU CNN ({DEPTH} conv, {CHANNELS} ch, no norm, He init x "
        f"{INIT_SCALE}) on sklearn digits 8x8, SGD (momentum 0.9), batch 32"
    ),
    optimizer="sgd",
    default_lr=0.1,
    grid_exponents=(-5, -4, -3, -2, -1, 0, 1),
    full_steps=1000,
    quick_steps=200,
    make=make,
    momentum=0.9,
    weight_decay=5e-4,
    grid_schedules=("cosine", "wsd"),
    confirmation=True,
    chance_loss=math.log(10),
)
