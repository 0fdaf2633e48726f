"""Tune the LR of a Lightning run with AutoLRSCallback: an MLP on scikit-learn's digits.

The only autolr line is the callback in ``Trainer(callbacks=[...])``. The budget
(probes included) is the trainer's ``max_steps``. About a minute on a CPU::

    pip install "autolr[lightning,demo]"
    python examples/lightning_mlp.py --max-steps 3000

The LR, stage and phase of every step go to the trainer's loggers (CSV here, and
TensorBoard when it is installed) under ``autolr/``; the controller's run log
(every probe and decision, JSON lines) is written beside them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autolr.integrations.lightning import AutoLRSCallback


class DigitsMLP(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        # The LR given here only sets the ratio between param groups: autolr owns the LR.
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def loaders(batch_size: int, seed: int) -> tuple[DataLoader, DataLoader]:
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_val = len(y) // 5
    val, train = order[:n_val], order[n_val:]
    train_loader = DataLoader(
        TensorDataset(x[train], y[train]),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    val_loader = DataLoader(TensorDataset(x[val], y[val]), batch_size=len(val))
    return train_loader, val_loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=3000, help="budget, probes included")
    parser.add_argument("--min-lr", type=float, default=1e-3)
    parser.add_argument("--max-lr", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/lightning_mlp"))
    args = parser.parse_args()

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    pl.seed_everything(args.seed, workers=True)
    train_loader, val_loader = loaders(args.batch_size, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    autolrs = AutoLRSCallback(
        min_lr=args.min_lr,
        max_lr=args.max_lr,
        seed=args.seed,
        gp_device="cpu",
        log_path=args.out / "autolr_run.jsonl",
    )
    loggers: list = [CSVLogger(args.out, name="csv")]
    try:
        loggers.append(TensorBoardLogger(args.out, name="tensorboard"))
    except ModuleNotFoundError:
        pass
    trainer = pl.Trainer(
        max_steps=args.max_steps,
        accelerator="cpu",
        devices=1,
        callbacks=[autolrs],
        logger=loggers,
        log_every_n_steps=10,
        check_val_every_n_epoch=10,
        default_root_dir=args.out,
        enable_model_summary=False,
    )
    model = DigitsMLP()
    trainer.fit(model, train_loader, val_loader)
    metrics = trainer.validate(model, val_loader, verbose=False)[0]

    tuner = autolrs.tuner
    assert tuner is not None
    print()
    print(tuner.summary())
    print(
        f"\n{tuner.global_step} steps, {tuner.search_steps} of them probes "
        f"({tuner.search_steps / max(tuner.global_step, 1):.0%}); "
        f"val_loss={metrics['val_loss']:.4f} val_acc={metrics['val_acc']:.3f}"
    )
    print(f"logs: {loggers[0].log_dir}, run log: {args.out / 'autolr_run.jsonl'}")


if __name__ == "__main__":
    main()
