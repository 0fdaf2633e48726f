"""Probe candidate LRs two at a time on Ray workers while an MLP trains on digits.

    pip install "autolr[ray]" scikit-learn
    python examples/ray_parallel_probes.py            # about a minute on 2 CPU cores

The training loop runs here; at each stage start ``tuner.step`` hands the
stage snapshot to a ``RayProber``, whose two actors (1 CPU, 1 torch thread
each) restore it and train the GP's candidate LRs side by side. Every probe of
a stage sees the same batches: ``batches(stage, index)`` ignores the index.
"""

from __future__ import annotations

import argparse
import logging
import time

import ray
import torch
from sklearn.datasets import load_digits
from torch import nn

import autolr
from autolr.integrations.ray import RayProber

BATCH = 128
NOISE = 0.6
digits_x, digits_y = load_digits(return_X_y=True)
X = torch.tensor(digits_x, dtype=torch.float32) / 16.0
Y = torch.tensor(digits_y, dtype=torch.long)
perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
TRAIN, TEST = perm[:1500], perm[1500:]


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def train_step(model, optimizer, batch) -> torch.Tensor:
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def batch_at(i: int):
    """Batch number ``i``: random training digits with input noise (so the loss stays above 0)."""
    gen = torch.Generator().manual_seed(i)
    idx = TRAIN[torch.randint(0, len(TRAIN), (BATCH,), generator=gen)]
    return X[idx] + NOISE * torch.randn(BATCH, 64, generator=gen), Y[idx]


def batches(stage: int, index: int):
    """The probes' batches: the same for every probe of a stage."""
    start = 10_000_000 * (stage + 1)
    return (batch_at(start + i) for i in range(10**9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8000, help="step budget, probes included")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(1)
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("autolr").setLevel(logging.INFO)  # one line per stage and per probe

    t0 = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    prober = RayProber(
        make_model, make_optimizer, train_step, batches, num_workers=args.workers, num_cpus=1
    )
    prober.start()
    print(f"Ray up, {args.workers} probe workers ready in {time.perf_counter() - t0:.1f} s")

    model = make_model()
    optimizer = make_optimizer(model)
    with prober:
        tuner = autolr.AutoLRS(
            model,
            optimizer,
            min_lr=1e-3,
            max_lr=1.0,
            total_steps=args.steps,
            prober=prober,
            parallel_probes=args.workers,
            seed=0,
        )
        i, t_train = 0, time.perf_counter()
        while not tuner.finished:
            loss = train_step(model, optimizer, batch_at(i))
            i += 1
            tuner.step(loss)
            if i % 500 == 0:
                print(
                    f"step {tuner.global_step:5d}/{args.steps} (probes {tuner.search_steps:4d}) "
                    f"stage {tuner.stage_index} {tuner.phase.value:7s} lr {tuner.current_lr:.4f} "
                    f"loss {float(loss):.4f}  {time.perf_counter() - t_train:5.1f} s",
                    flush=True,
                )
    ray.shutdown()

    with torch.no_grad():
        logits = model(X[TEST])
        test_loss = nn.functional.cross_entropy(logits, Y[TEST]).item()
        accuracy = (logits.argmax(1) == Y[TEST]).float().mean().item()
    print()
    print(tuner.summary())
    print(
        f"\n{tuner.global_step} steps ({tuner.search_steps} in probes, {prober.failures} failed "
        f"probe attempts); test loss {test_loss:.4f}, accuracy {accuracy:.3f}; "
        f"{time.perf_counter() - t0:.0f} s in all"
    )


if __name__ == "__main__":
    main()
