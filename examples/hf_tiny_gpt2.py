"""autolr with the Hugging Face Trainer: a tiny GPT-2 learns Python source, one character a token.

The model is built from a config (2 layers, 64-wide) and the text is the source
of a few standard-library modules, so nothing is downloaded. One Trainer call
with ``callbacks=[AutoLRSCallback(...)]``; autolr probes LRs between ``min_lr``
and ``max_lr``, picks one per stage and anneals at the end. About a minute on
2 CPU cores (``--baseline`` adds a run of AdamW at a fixed 1e-3 with cosine
decay on the same budget, for comparison).

    python examples/hf_tiny_gpt2.py [--steps 600] [--baseline] [--out hf_tiny_gpt2_out]
"""

from __future__ import annotations

import argparse
import math
import os
import sysconfig
import time

import torch
from torch.utils.data import Dataset
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from autolr.integrations.hf import AutoLRSCallback

MODULES = ["argparse.py", "textwrap.py", "difflib.py", "pprint.py", "heapq.py", "fractions.py"]
BLOCK = 64


def load_text() -> str:
    stdlib = sysconfig.get_paths()["stdlib"]
    parts = []
    for name in MODULES:
        with open(os.path.join(stdlib, name), encoding="utf-8") as fh:
            parts.append(fh.read())
    return "\n".join(parts)


class Chars(Dataset):
    """Windows of ``BLOCK`` characters starting every ``stride`` characters."""

    def __init__(self, ids: torch.Tensor, stride: int) -> None:
        self.ids, self.stride = ids, stride

    def __len__(self) -> int:
        return (len(self.ids) - BLOCK) // self.stride

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        window = self.ids[i * self.stride : i * self.stride + BLOCK]
        return {"input_ids": window, "labels": window}


class Every(TrainerCallback):
    """Prints one line every ``n`` steps (the Trainer now logs every step)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "autolr_phase" in logs and state.global_step % self.n == 0:
            print(
                f"step {state.global_step:5d}  loss {logs['loss']:.3f}  "
                f"lr {logs['learning_rate']:.2e}  stage {logs['autolr_stage']}  "
                f"{logs['autolr_phase']}"
            )


def make_model(vocab: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=BLOCK,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def run(
    name: str, train: Dataset, test: Dataset, vocab: int, steps: int, out: str, autolr: bool
) -> tuple[Trainer, AutoLRSCallback | None, float]:
    args = TrainingArguments(
        output_dir=os.path.join(out, name),
        max_steps=steps,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        learning_rate=1e-3,
        lr_scheduler_type="linear" if autolr else "cosine",
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        seed=0,
    )
    callback = None
    callbacks: list[TrainerCallback] = [Every(100)]
    if autolr:
        # Fewer, longer probes than the defaults (which give 3 stages of 5 probes of
        # 5-20 steps here, 29% of the budget): 4 probes of 8 steps, tau = 80 then 160.
        callback = AutoLRSCallback(
            min_lr=1e-4, max_lr=3e-2, tau=80, tau_probe=8, probes=4, seed=0, gp_device="cpu"
        )
        callbacks.insert(0, callback)
    trainer = Trainer(
        model=make_model(vocab),
        args=args,
        train_dataset=train,
        eval_dataset=test,
        callbacks=callbacks,
    )
    # The Trainer now logs every step; keep the console to the lines of ``Every``.
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    print(f"--- {name}: {steps} steps")
    trainer.train()
    return trainer, callback, trainer.evaluate()["eval_loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--out", default="hf_tiny_gpt2_out")
    opts = parser.parse_args()
    torch.set_num_threads(1)

    text = load_text()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    split = int(0.9 * len(ids))
    train, test = Chars(ids[:split], stride=7), Chars(ids[split:], stride=BLOCK * 4)
    print(f"{len(text):,} characters, {len(chars)} distinct; {len(train):,} training windows")

    start = time.time()
    trainer, callback, loss = run("autolr", train, test, len(chars), opts.steps, opts.out, True)
    assert callback is not None and callback.tuner is not None
    tuner = callback.tuner
    print(
        f"\nautolr: {time.time() - start:.0f} s, {tuner.search_steps} of {tuner.global_step} "
        "steps spent on probes"
    )
    print(tuner.summary())
    print(f"held-out loss {loss:.3f} (bits per character {loss / math.log(2):.2f})")

    if opts.baseline:
        _, _, base = run("baseline", train, test, len(chars), opts.steps, opts.out, False)
        print(f"baseline AdamW lr=1e-3 cosine: held-out loss {base:.3f}")


if __name__ == "__main__":
    main()
