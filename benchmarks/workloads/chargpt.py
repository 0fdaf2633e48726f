"""W3: a 2-layer character-level GPT on CPython's own standard-library sources, AdamW.

The corpus is a pinned list of ``.py`` files that exist in every CPython >= 3.10,
read from ``sysconfig.get_paths()["stdlib"]``. Their text differs a little
between Python versions, so the results record the version and a hash of the
corpus. Whole files go to train, validation or test.
"""

from __future__ import annotations

import functools
import hashlib
import math
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import Instance, Workload, seeded_generator

TRAIN_FILES = (
    "argparse.py",
    "ast.py",
    "bisect.py",
    "calendar.py",
    "colorsys.py",
    "contextlib.py",
    "copy.py",
    "csv.py",
    "dataclasses.py",
    "difflib.py",
    "enum.py",
    "fnmatch.py",
    "fractions.py",
    "functools.py",
    "glob.py",
    "heapq.py",
    "inspect.py",
    "keyword.py",
    "linecache.py",
    "locale.py",
    "operator.py",
    "os.py",
    "pprint.py",
    "queue.py",
    "random.py",
    "shlex.py",
    "shutil.py",
    "statistics.py",
    "textwrap.py",
    "threading.py",
    "tokenize.py",
    "typing.py",
    "weakref.py",
    "tempfile.py",
    "traceback.py",
    "numbers.py",
    "graphlib.py",
    "sched.py",
    "selectors.py",
    "ipaddress.py",
    "json/decoder.py",
    "json/encoder.py",
    "collections/__init__.py",
    "logging/__init__.py",
    "logging/handlers.py",
    "email/message.py",
    "email/utils.py",
    "http/client.py",
    "urllib/parse.py",
    "unittest/case.py",
    "asyncio/tasks.py",
)
VAL_FILES = ("uuid.py", "cmd.py")
TEST_FILES = ("base64.py", "hmac.py")

CONTEXT = 64
BATCH_SIZE = 32
EVAL_WINDOWS = 128
# index 0: any other character; 1: tab; 2: newline; 3..97: printable ASCII 32..126
VOCAB_SIZE = 98


def encode(text: str) -> Tensor:
    """Characters to token ids with the fixed 98-symbol vocabulary: ``(len(text),)`` int64."""
    codes = torch.tensor(list(text.encode("utf-32-le")), dtype=torch.uint8).view(-1, 4)
    cp = codes.to(torch.int64)
    cp = cp[:, 0] + (cp[:, 1] << 8) + (cp[:, 2] << 16) + (cp[:, 3] << 24)
    ids = torch.zeros_like(cp)
    printable = (cp >= 32) & (cp <= 126)
    ids[printable] = cp[printable] - 29
    ids[cp == 9] = 1
    ids[cp == 10] = 2
    return ids


def _read(files: tuple[str, ...]) -> str:
    root = Path(sysconfig.get_paths()["stdlib"])
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"standard-library sources missing under {root}: {missing}")
    return "".join((root / f).read_text(encoding="utf-8") for f in files)


@functools.lru_cache(maxsize=1)
def load_corpus() -> dict[str, Tensor]:
    """Token ids of the train / val / test files, each ``(n_chars,)`` int64."""
    return {
        "train": encode(_read(TRAIN_FILES)),
        "val": encode(_read(VAL_FILES)),
        "test": encode(_read(TEST_FILES)),
    }


def corpus_hash() -> str:
    """sha256 (first 16 hex digits) of all the token ids, to tell corpora apart."""
    h = hashlib.sha256()
    for split in ("train", "val", "test"):
        h.update(load_corpus()[split].numpy().tobytes())
    return h.hexdigest()[:16]


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and a 4x MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        shape = (b, t, self.heads, d // self.heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class CharGPT(nn.Module):
    """Character-level GPT: ``(N, T)`` token ids -> ``(N, T, vocab)`` logits."""

    def __init__(
        self, vocab: int = VOCAB_SIZE, dim: int = 64, layers: int = 2, heads: int = 4
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(CONTEXT, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        nn.init.normal_(self.pos, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for blk in self.blocks.modules():
            if isinstance(blk, Block):
                nn.init.normal_(blk.proj.weight, std=0.02 / math.sqrt(2 * layers))

    def forward(self, idx: Tensor) -> Tensor:
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        return self.head(self.ln(self.blocks(x)))


def random_windows(tokens: Tensor, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """Infinite batches of ``BATCH_SIZE`` random windows: inputs and next-char targets."""
    offsets = torch.arange(CONTEXT + 1)
    while True:
        starts = torch.randint(0, tokens.numel() - CONTEXT - 1, (BATCH_SIZE,), generator=generator)
        w = tokens[starts[:, None] + offsets]
        yield w[:, :-1], w[:, 1:]


def fixed_windows(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """``EVAL_WINDOWS`` evenly spaced windows: the same for every run."""
    starts = torch.linspace(0, tokens.numel() - CONTEXT - 2, EVAL_WINDOWS).long()
    w = tokens[starts[:, None] + torch.arange(CONTEXT + 1)]
    return w[:, :-1], w[:, 1:]


def lm_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[Tensor, Tensor]
) -> float:
    """One next-character training step; returns the minibatch loss (nats per char)."""
    x, y = batch
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def lm_loss(model: nn.Module, windows: tuple[Tensor, Tensor]) -> float:
    """Mean next-character cross-entropy (nats) over fixed windows."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        x, y = windows
        loss = float(F.cross_entropy(model(x).flatten(0, 1), y.flatten()))
    model.train(was_training)
    return loss


def make(seed: int) -> Instance:
    """Seeded model init and window sampling; the corpus is fixed."""
    corpus = load_corpus()
    torch.manual_seed(seed)
    model = CharGPT()
    val, test = fixed_windows(corpus["val"]), fixed_windows(corpus["test"])
    return Instance(
        model=model,
        train_batches=random_windows(corpus["train"], seeded_generator(seed)),
        train_step=lm_step,
        eval_val=lambda: lm_loss(model, val),
        eval_test=lambda: lm_loss(model, test),
        info={
            "train_chars": corpus["train"].numel(),
            "val_chars": corpus["val"].numel(),
            "test_chars": corpus["test"].numel(),
            "corpus_sha256_16": corpus_hash(),
            "python": sys.version.split()[0],
            "context": CONTEXT,
            "batch_size": BATCH_SIZE,
        },
    )


WORKLOAD = Workload(
    id="W3",
    title="2-layer char GPT (d 64, 4 heads, ctx 64) on CPython stdlib sources, AdamW (wd 0.01)",
    optimizer="adamw",
    default_lr=1e-3,
    # two schedules only: a run takes minutes on CPU; up to 0.032 since 0.008 won at first
    grid_exponents=(-2, -1, 0, 1, 2, 3, 4, 5),
    full_steps=1500,
    quick_steps=120,
    make=make,
    weight_decay=0.01,
    grid_schedules=("cosine", "wsd"),
)
