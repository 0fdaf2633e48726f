"""autolr from a plain PyTorch loop: an MLP on scikit-learn's digits.

Run: python examples/plain_loop.py   (about a minute on CPU)
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

import autolr
from autolr.demo import batch_stream, evaluate, load_digits_data, make_mlp

STEPS = 4000


def main() -> None:
    torch.set_num_threads(1)
    data = load_digits_data(seed=0)
    model = make_mlp(seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    tuner = autolr.AutoLRS(
        model,
        optimizer,
        min_lr=1e-5,
        max_lr=1e-1,
        total_steps=STEPS,
        seed=0,
        log_path="autolr_runs/plain_loop/run.jsonl",
    )
    with tuner, tqdm(total=STEPS, unit="step") as bar:
        for x, y in tuner.batches(batch_stream(data, batch_size=32, seed=0)):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            tuner.step(loss)
            bar.update(1)
            bar.set_postfix(
                stage=tuner.stage_index, phase=tuner.phase.value, lr=f"{tuner.current_lr:.2e}"
            )
    print(tuner.summary())
    val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
    print(f"steps on probes: {tuner.search_steps} of {tuner.global_step}")
    print(f"validation loss {val_loss:.4f}, accuracy {val_acc:.3f}")


if __name__ == "__main__":
    main()
