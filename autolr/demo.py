"""The ``autolr demo``: an MLP on scikit-learn's digits, tuned by autolr.

Trains the same model twice on the same budget and data order: once with autolr
choosing the LR (probe steps counted in the budget), once with a default
schedule (SGD with momentum, cosine decay from 0.1). Writes the run log and a
plot of the LR per step over the loss curve.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autolr.console import err, fmt, out, print_table
from autolr.controller import AutoLRS, Phase
from autolr.errors import AutoLRError, require
from autolr.runlog import EXPLOIT_END, PROBE, RANGE_TEST, ROLLBACK, STAGE_START

logger = logging.getLogger(__name__)


@dataclass
class DigitsData:
    """Digits split into train/validation/test tensors (features standardized)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_data(seed: int = 0) -> DigitsData:
    """scikit-learn's 8x8 digits (ships with scikit-learn): 60% / 20% / 20% split."""
    datasets = require("sklearn.datasets", "demo")
    bunch = datasets.load_digits()  # type: ignore[attr-defined]
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=gen)
    x, y = x[perm], y[perm]
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    mean, std = x[:n_train].mean(0), x[:n_train].std(0) + 1e-3
    x = (x - mean) / std
    a, b = n_train, n_train + n_val
    return DigitsData(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])


def make_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )


def batch_stream(
    data: DigitsData, batch_size: int, seed: int
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless shuffled minibatches of the training split."""
    gen = torch.Generator().manual_seed(seed)
    n = len(data.x_train)
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size]
            yield data.x_train[idx], data.y_train[idx]


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy."""
    model.eval()
    logits = model(x)
    model.train()
    loss = float(nn.functional.cross_entropy(logits, y))
    acc = float((logits.argmax(1) == y).float().mean())
    return loss, acc


@dataclass
class DemoResult:
    tuner: AutoLRS
    autolr_val: tuple[float, float]
    autolr_test: tuple[float, float]
    baseline_val: tuple[float, float]
    baseline_test: tuple[float, float]
    baseline_losses: list[float]
    log_path: Path
    plot_path: Path | None


def run_demo(
    steps: int = 3000,
    seed: int = 0,
    out_dir: str | Path = "autolr_runs/demo",
    batch_size: int = 32,
    plot: bool = True,
    progress: Callable[[int], Any] | None = None,
    options: dict[str, Any] | None = None,
) -> DemoResult:
    """Train with autolr and with the default schedule; return both results.

    Args:
        steps: training steps of each run (autolr's probe steps included).
        seed: seeds the model init, the data order and autolr.
        out_dir: folder for ``run.jsonl`` and ``lr_loss.png``.
        progress: called with the number of steps just done (for a progress bar).
        options: extra keyword arguments for :class:`autolr.AutoLRS`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "run.jsonl"
    if log_path.exists():
        log_path.unlink()
    data = load_digits_data(seed)

    model = make_mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def val_loss() -> float:
        return evaluate(model, data.x_val, data.y_val)[0]

    settings: dict[str, Any] = {
        "min_lr": 1e-3,
        "max_lr": 3.0,
        "total_steps": steps,
        "seed": seed,
        "val_fn": val_loss,
        "val_every": 2,
        "log_path": log_path,
    }
    settings.update(options or {})
    tuner = AutoLRS(model, opt, **settings)
    for batch in tuner.batches(batch_stream(data, batch_size, seed)):
        tuner.step(train_step(model, opt, batch))
        if progress is not None:
            progress(1)
    autolr_val = evaluate(model, data.x_val, data.y_val)
    autolr_test = evaluate(model, data.x_test, data.y_test)

    base = make_mlp(seed)
    base_opt = torch.optim.SGD(base.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(base_opt, T_max=steps)
    base_losses = []
    stream = batch_stream(data, batch_size, seed)
    for _ in range(steps):
        base_losses.append(float(train_step(base, base_opt, next(stream))))
        sched.step()
        if progress is not None:
            progress(1)
    baseline_val = evaluate(base, data.x_val, data.y_val)
    baseline_test = evaluate(base, data.x_test, data.y_test)

    plot_path = None
    if plot:
        plot_path = plot_lr_and_loss(tuner, out / "lr_loss.png", baseline_losses=base_losses)
    return DemoResult(
        tuner,
        autolr_val,
        autolr_test,
        baseline_val,
        baseline_test,
        base_losses,
        log_path,
        plot_path,
    )


def plot_lr_and_loss(
    tuner: AutoLRS, path: Path, baseline_losses: list[float] | None = None
) -> Path | None:
    """PNG of the LR per step (probe steps marked) over the training loss."""
    try:
        import matplotlib
    except ImportError:
        logger.warning('matplotlib is missing, no plot; run: pip install "autolr[plot]"')
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = range(1, len(tuner.trace_lr) + 1)
    fig, ax_loss = plt.subplots(figsize=(10, 5))
    loss = [v if math.isfinite(v) else float("nan") for v in tuner.trace_loss]
    ax_loss.plot(steps, _smooth(loss), color="tab:blue", lw=1, label="autolr training loss")
    if baseline_losses:
        ax_loss.plot(
            range(1, len(baseline_losses) + 1),
            _smooth(baseline_losses),
            color="tab:gray",
            lw=1,
            alpha=0.8,
            label="cosine from 0.1 (default)",
        )
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("training step (probe steps included)")
    ax_loss.set_ylabel("training loss (smoothed)")
    ax_lr = ax_loss.twinx()
    probe_code = list(Phase).index(Phase.PROBE)
    lrs = list(tuner.trace_lr)
    probe_steps = [s for s, c in zip(steps, tuner.trace_phase) if c == probe_code]
    ax_lr.scatter(
        probe_steps,
        [lrs[s - 1] for s in probe_steps],
        s=2,
        color="tab:orange",
        alpha=0.5,
        label="LR during probes",
    )
    other = [lr if c != probe_code else float("nan") for lr, c in zip(lrs, tuner.trace_phase)]
    ax_lr.plot(steps, other, color="tab:red", lw=1.5, label="LR used (exploit, anneal)")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    lines = ax_loss.get_legend_handles_labels()
    lines2 = ax_lr.get_legend_handles_labels()
    ax_loss.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=8)
    ax_loss.set_title("autolr: LR chosen per stage over the training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _smooth(values: list[float], width: int = 25) -> list[float]:
    smoothed, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > width:
            acc.pop(0)
        finite = [a for a in acc if math.isfinite(a)]
        smoothed.append(sum(finite) / len(finite) if finite else float("nan"))
    return smoothed


def demo_command(args: argparse.Namespace) -> int:
    """The ``autolr demo`` command: run the demo with a progress bar, print its stages."""
    from tqdm import tqdm

    try:
        with tqdm(total=2 * args.steps, desc="autolr run + default run", unit="step") as bar:
            res = run_demo(
                steps=args.steps,
                seed=args.seed,
                out_dir=args.out,
                plot=not args.no_plot,
                progress=bar.update,
                options={} if args.strategy is None else {"strategy": args.strategy},
            )
    except (AutoLRError, OSError) as exc:  # a bad --steps or --out: a line, not a traceback
        err(f"autolr demo: error: {exc}")
        return 2
    tuner = res.tuner
    records = tuner.log.records
    stages = {r["stage"]: r for r in records if r["type"] == STAGE_START}
    rollbacks: dict[int, int] = {}
    for r in records:
        if r["type"] == ROLLBACK:
            rollbacks[r["stage"]] = rollbacks.get(r["stage"], 0) + 1
    annealed = tuner.config.strategy == "anneal"
    for r in records:
        if r["type"] == RANGE_TEST:
            out(
                f"\nRange test: {len(r['lrs'])} steps of an LR ramp from {fmt(r['lrs'][0])}, "
                f"stopped at {fmt(r['lrs'][-1])} ({r['reason'] or 'end of the ramp'}); "
                f"search range {fmt(r['lr_range'][0])} to {fmt(r['lr_range'][1])}"
            )
    score = "score" if annealed else "forecast"
    rows = []
    for r in records:
        if r["type"] != EXPLOIT_END:
            continue
        st = stages.get(r["stage"], {})
        probes = [p for p in records if p["type"] == PROBE and p["stage"] == r["stage"]]
        diverged = sum(1 for p in probes if p["diverged"])
        rows.append(
            [
                str(r["stage"]),
                str(st.get("tau", "-")),
                f"{len(probes)} ({diverged} div.)",
                fmt(r["lr"]),
                fmt(r["forecast"]),
                fmt(r["actual"]),
                str(rollbacks.get(r["stage"], 0)),
            ]
        )
    if annealed:
        out(
            "\nStages (score: the validation loss the winning candidate reached after a "
            "cooldown of its LR to 0, a branch restored afterwards; actual: the validation "
            "loss at the end of the hold, before the final decay)"
        )
    else:
        out(
            "\nStages (forecast: the validation loss each stage's probes extrapolate to at its "
            "end, t=tau; actual: the validation loss the stage reached)"
        )
    print_table(["stage", "tau", "probes", "LR chosen", score, "actual", "rollbacks"], rows)
    out(f"\nWhy: each stage's candidates ({score}, or why it was out), the chosen one marked *")
    for line in _why_lines(records):
        out(line)
    climbs = [c for r in records if r["type"] == EXPLOIT_END for c in r.get("climbs") or []]
    if climbs:
        out(f"No candidate made progress: the hold climbed {len(climbs)} times off the plateau")
    if annealed:
        out(
            "A score is the loss a candidate reaches once its LR is annealed: much of a large "
            "LR's gain shows only then, which a constant-LR probe misses (the forecast "
            "strategy's bias to small LRs); a short branch still sees only part of it."
        )
    else:
        misses = [
            max(r["forecast"] / r["actual"], r["actual"] / r["forecast"])
            for r in records
            if r["type"] == EXPLOIT_END
            and (r.get("forecast") or 0) > 0
            and (r.get("actual") or 0) > 0
        ]
        miss = f" (here they differ by up to {max(misses):.0f}x)" if misses else ""
        out(
            "A forecast extrapolates a probe of a few dozen steps to the stage's end: it ranks "
            f"the candidates, it is no prediction of the loss{miss}."
        )
    total = tuner.global_step
    if annealed:
        short = tuner.decay_steps < tuner.config.anneal_steps
        why = ", shortened by the race: its cooldown gained little" if short else ""
        share = 100 * tuner.decay_steps / max(total, 1)
        out(
            f"The final decay took the last {tuner.decay_steps} steps "
            f"({share:.0f}% of the budget{why})"
        )
    out(
        f"\nsteps: {total} in all, {tuner.search_steps} on the search, range test, probes "
        f"and cooldowns ({100 * tuner.search_steps / max(total, 1):.0f}%; "
        f"{tuner.kept_steps} of them kept: the winner's steps at its LR), the rest exploit "
        "and anneal"
    )
    out("\nFinal results (same model, same budget, same data order)")
    print_table(
        ["run", "val loss", "val acc", "test loss", "test acc"],
        [
            [
                "autolr",
                fmt(res.autolr_val[0]),
                fmt(res.autolr_val[1], ".3f"),
                fmt(res.autolr_test[0]),
                fmt(res.autolr_test[1], ".3f"),
            ],
            [
                "SGD cosine from lr=0.1",
                fmt(res.baseline_val[0]),
                fmt(res.baseline_val[1], ".3f"),
                fmt(res.baseline_test[0]),
                fmt(res.baseline_test[1], ".3f"),
            ],
        ],
    )
    out(_verdict(res))
    out(f"\nrun log: {res.log_path}")
    if res.plot_path is not None:
        out(f"plot:    {res.plot_path}")
    return 0


def _why_lines(records: list[dict[str, Any]]) -> list[str]:
    """One line per stage: its candidates in probe order, forecast or why each was out."""
    chosen = {r["stage"]: r["lr"] for r in records if r["type"] == EXPLOIT_END}
    lines = []
    for stage, lr in chosen.items():
        probes = [p for p in records if p["type"] == PROBE and p["stage"] == stage]
        parts = []
        for p in probes:
            mark = "*" if lr is not None and math.isclose(p["lr"], lr, rel_tol=1e-9) else ""
            said = f"out: {p['reason']}" if p["diverged"] else fmt(p["forecast"])
            parts.append(f"{mark}{fmt(p['lr'])} ({said})")
        lines.append(f"  stage {stage}: " + ", ".join(parts) if parts else f"  stage {stage}: -")
    return lines


def _verdict(res: DemoResult) -> str:
    """Who won on this seed, on the held-out test split and on validation, said plainly."""

    def word(mine: float, theirs: float) -> str:
        return "below" if mine < theirs else "above"

    return (
        f"\nOn this seed autolr ends {word(res.autolr_test[0], res.baseline_test[0])} the baseline "
        f"on test loss and {word(res.autolr_val[0], res.baseline_val[0])} it on validation loss "
        "(its objective). The splits hold about 360 digits each, so one seed's losses are "
        "noisy: run --seed 1..4 as well (README: the 5-seed figures)."
    )
