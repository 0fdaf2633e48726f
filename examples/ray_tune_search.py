"""AutoLRS as a Ray Tune search: two trials (two seeds) on a stock ``tune.Tuner``.

    pip install "autolr[ray]" scikit-learn
    python examples/ray_tune_search.py                      # about a minute on 2 CPU cores
    python examples/ray_tune_search.py --resume PATH        # continue an interrupted search

Each trial is a whole training run whose LR autolr tunes while it trains. The
trials report LR, stage, phase and loss every 50 main-trajectory steps to Tune
(probe losses only in ``search_loss``), with a checkpoint every 1000 steps; the
ResultGrid holds the curves. Stop the script with Ctrl-C and run it again with
``--resume`` and the printed path: the trials go on from their last checkpoints.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import ray
import torch
from ray import tune
from sklearn.datasets import load_digits
from torch import nn

from autolr.integrations.ray_tune import autolrs_trainable

BATCH = 128
NOISE = 0.6
digits_x, digits_y = load_digits(return_X_y=True)
X = torch.tensor(digits_x, dtype=torch.float32) / 16.0
Y = torch.tensor(digits_y, dtype=torch.long)
TRAIN = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))[:1500]


def make_model(config) -> nn.Module:
    torch.manual_seed(config["autolrs"]["seed"])
    return nn.Sequential(nn.Linear(64, config["width"]), nn.ReLU(), nn.Linear(config["width"], 10))


def make_optimizer(model, config) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def train_step(model, optimizer, batch) -> torch.Tensor:
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def data(config, start: int):
    """Batches from number ``start`` on (a resumed trial continues its stream)."""
    seed = config["autolrs"]["seed"]
    for i in itertools.count(start):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        idx = TRAIN[torch.randint(0, len(TRAIN), (BATCH,), generator=gen)]
        yield X[idx] + NOISE * torch.randn(BATCH, 64, generator=gen), Y[idx]


TRAINABLE = autolrs_trainable(
    make_model,
    make_optimizer,
    train_step,
    data,
    report_every=50,
    checkpoint_every=1000,
    num_threads=1,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000, help="steps per trial, probes included")
    parser.add_argument("--storage", type=Path, default=Path(tempfile.gettempdir()) / "autolr-tune")
    parser.add_argument("--resume", type=str, default=None, help="experiment path to restore")
    args = parser.parse_args()

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    if args.resume:
        print(f"restoring {args.resume}")
        tuner = tune.Tuner.restore(args.resume, trainable=TRAINABLE, resume_errored=True)
    else:
        tuner = tune.Tuner(
            TRAINABLE,
            param_space={
                "width": 128,
                "autolrs": {
                    "min_lr": 1e-3,
                    "max_lr": 1.0,
                    "total_steps": args.steps,
                    "seed": tune.grid_search([0, 1]),
                },
            },
            run_config=tune.RunConfig(
                storage_path=str(args.storage.resolve()),
                name=f"autolrs-digits-{int(time.time())}",
                failure_config=tune.FailureConfig(max_failures=1),
                verbose=1,
            ),
        )
    results = tuner.fit()
    ray.shutdown()

    print(f"\nexperiment: {results.experiment_path}")
    for result in results:
        if result.error is not None:
            print(f"trial {result.path}: {result.error}")
            continue
        frame = result.metrics_dataframe
        if result.config is None or frame is None or frame.empty:
            print(f"trial {result.path}: stopped before its first report (run with --resume)")
            continue
        seed = result.config["autolrs"]["seed"]
        stages = frame[frame["phase"] == "exploit"].groupby("stage")["lr"].last()
        lrs = ", ".join(f"{lr:.4f}" for lr in stages)
        print(
            f"seed {seed}: final loss {frame['loss'].iloc[-1]:.4f} after {frame['step'].iloc[-1]} "
            f"steps ({frame['search_steps'].iloc[-1]} in probes); stage LRs {lrs}"
        )
    reported = [r for r in results if r.config is not None and r.checkpoint is not None]
    if reported:
        best = results.get_best_result(metric="loss", mode="min")
        print(f"best: seed {best.config['autolrs']['seed']}, checkpoint {best.checkpoint.path}")
    print(f"{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
