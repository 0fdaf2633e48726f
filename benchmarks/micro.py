"""Micro-benchmarks of autolr's own costs, apart from any training.

Usage::

    python -m benchmarks.micro            # all four, writes results/micro.json and the report
    python -m benchmarks.micro --quick    # fewer repeats, smaller sizes: results/micro_quick.json

What is timed:

- **overhead**: a plain training loop on a tiny model, with and without
  ``tuner.step(loss)`` after each step, while the tuner is in its exploit phase
  (outside probes). Both loops are timed in alternating repeats; the median of
  the repeats is reported, as microseconds per step and as a ratio.
- **decision**: ``GPProposer.propose(1)`` after ``k`` observations of the current
  stage (``k = 3..10``): a BoTorch GP fit plus the acquisition, for each
  acquisition function, and with ``warm_start`` (a 2-D GP over (log lr,
  progress) holding two earlier stages as well).
- **forecast**: ``fit_exponential`` (batched, one call for all series) against
  ``fit_exponential_reference`` (one series at a time), and the forecaster the
  controller calls (two Hampel passes and two fits), for n series of T points.
- **snapshot**: ``autolr.snapshot.capture`` / ``restore`` of a model and its AdamW
  state against plain tensor copies of the same bytes (``clone`` of every tensor,
  one ``torch.cat``, and ``copy_`` back in place).

Times are wall-clock on whatever the machine is doing at the time; the results
record the load average. No test asserts a time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.report import (
    MICRO_FILE,
    MICRO_QUICK_FILE,
    REPORT_PATH,
    RESULTS_DIR,
    build_report,
)


def _measure(fn: Callable[[], Any], repeats: int, number: int = 1) -> tuple[float, float]:
    """Median wall and median CPU (this process) seconds per call, over ``repeats``.

    On a shared machine the wall time includes waiting for a core; the CPU time
    does not, and is the steadier measure of the work done.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(number):
            fn()
        wall.append((time.perf_counter() - w0) / number)
        cpu.append((time.process_time() - c0) / number)
    return statistics.median(wall), statistics.median(cpu)


# ---------------------------------------------------------------- overhead
def _tiny_task(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, list[Any]]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    w = torch.randn(8, 1, generator=gen)
    data = []
    for _ in range(64):
        x = torch.randn(16, 8, generator=gen)
        data.append((x, x @ w + 0.1 * torch.randn(16, 1, generator=gen)))
    return model, opt, data


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, batch: Any) -> torch.Tensor:
    x, y = batch
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    return loss.detach()


def bench_overhead(
    steps: int, repeats: int, tau_probes: tuple[int, ...] = (20, 800)
) -> list[dict[str, Any]]:
    """Per-step cost of ``tuner.step`` during the exploit, for each probe length.

    The exploit's guard looks at the last ``tau_probe / 2`` losses each step, so
    the probe length is the setting that can change the per-step cost.
    """
    return [_overhead_case(tau_probe, steps, repeats) for tau_probe in tau_probes]


def _overhead_case(tau_probe: int, steps: int, repeats: int) -> dict[str, Any]:
    from autolr import AutoLRS, Phase

    model, opt, data = _tiny_task()
    tuner = AutoLRS(
        model,
        opt,
        min_lr=1e-3,
        max_lr=1e-1,
        tau=10 * (steps * (repeats + 1) + 4 * tau_probe),
        tau_probe=tau_probe,
        probes=3,
        gp_device="cpu",
    )
    i = 0
    while tuner.phase is not Phase.EXPLOIT:
        tuner.step(_train_step(model, opt, data[i % len(data)]))
        i += 1
    # Past the guard's first full window, so the steady state is timed.
    for _ in range(tau_probe):
        tuner.step(_train_step(model, opt, data[i % len(data)]))
        i += 1
    last = _train_step(model, opt, data[0])
    tuner.step(last)

    def plain() -> None:
        for j in range(steps):
            _train_step(model, opt, data[j % len(data)])

    def tuned() -> None:
        for j in range(steps):
            tuner.step(_train_step(model, opt, data[j % len(data)]))

    def tuner_only() -> None:
        loss = last.clone()
        for _ in range(steps):
            tuner.step(loss)

    timed: dict[str, list[tuple[float, float]]] = {"plain": [], "tuned": [], "alone": []}
    for _ in range(repeats):  # alternate, so load changes hit both loops alike
        timed["plain"].append(_measure(plain, 1))
        timed["tuned"].append(_measure(tuned, 1))
        timed["alone"].append(_measure(tuner_only, 1))
    if tuner.phase is not Phase.EXPLOIT:
        raise RuntimeError(f"the tuner left the exploit while timed: {tuner.phase}")

    def us(key: str, which: int) -> float:
        return statistics.median(v[which] for v in timed[key]) / steps * 1e6

    row: dict[str, Any] = {
        "tau_probe": tau_probe,
        "guard_window": max(3, tau_probe // 2),
        "steps_per_repeat": steps,
        "repeats": repeats,
        "params": sum(q.numel() for q in model.parameters()),
    }
    for which, tag in ((0, ""), (1, "cpu_")):
        p, t, o = us("plain", which), us("tuned", which), us("alone", which)
        row |= {
            f"{tag}plain_us": p,
            f"{tag}with_tuner_us": t,
            f"{tag}overhead_us": t - p,
            f"{tag}ratio": t / p,
            f"{tag}tuner_step_alone_us": o,
        }
    return row


# ---------------------------------------------------------------- decision
def _bowl(x: float) -> float:
    """A forecast-like objective over normalized log-LR: a bowl with a cliff at the top."""
    return 0.3 + 2.0 * (x - 0.55) ** 2 + (3.0 * (x - 0.85) if x > 0.85 else 0.0)


DECISION_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("ei", {"acquisition": "ei"}),
    ("ucb", {"acquisition": "ucb"}),
    ("lcb-autolrs", {"acquisition": "lcb-autolrs"}),
    ("ei + warm_start", {"acquisition": "ei", "warm_start": True}),
]


def bench_decision(ks: list[int], repeats: int) -> list[dict[str, Any]]:
    """Seconds per ``propose(1)`` after ``k`` observations, per acquisition.

    With ``warm_start`` the proposer also holds two earlier stages of ``k``
    observations each, so its GP (over log lr and progress) sees ``3 k`` points.
    """
    return [_decision_case(name, kw, k, repeats) for name, kw in DECISION_SETTINGS for k in ks]


def _decision_case(name: str, settings: dict[str, Any], k: int, repeats: int) -> dict[str, Any]:
    from autolr.proposer import GPProposer

    gen = torch.Generator().manual_seed(0)
    xs = torch.rand(k + 20, generator=gen, dtype=torch.float64).tolist()
    prop = GPProposer(1e-4, 1e-1, seed=0, device="cpu", **settings)
    for stage in [0, 1, 2] if settings.get("warm_start") else [0]:
        prop.reset(stage, stage / 4)
        for j in range(k):
            x = xs[(j + 7 * stage) % len(xs)]
            noise = 0.01 * math.sin(13.0 * x + stage)
            prop.observe(prop.to_lr(x), _bowl(x) / (1 + stage) + noise)
    prop.propose(1)  # imports and first-call costs out of the timing
    timed = [_measure(lambda: prop.propose(1), 1) for _ in range(repeats)]
    wall, cpu = [w for w, _ in timed], [c for _, c in timed]
    return {
        "acquisition": name,
        "k": k,
        "gp_points": len(prop.training_data()[0]),
        "median_s": statistics.median(wall),
        "min_s": min(wall),
        "max_s": max(wall),
        "cpu_median_s": statistics.median(cpu),
    }


# ---------------------------------------------------------------- forecast
def _series(n: int, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n noisy decaying series of t points: rates spread over two decades."""
    gen = torch.Generator().manual_seed(seed)
    steps = torch.arange(t, dtype=torch.float64)
    a = 0.5 + torch.rand(n, 1, generator=gen, dtype=torch.float64)
    b = 10 ** (-3 + 2 * torch.rand(n, 1, generator=gen, dtype=torch.float64)) * 100 / t
    c = 0.1 + 0.5 * torch.rand(n, 1, generator=gen, dtype=torch.float64)
    y = a * torch.exp(-b * steps) + c
    y = y + 0.02 * torch.randn(n, t, generator=gen, dtype=torch.float64)
    return steps, y


def bench_forecast(sizes: list[tuple[int, int]], repeats: int) -> list[dict[str, Any]]:
    """Seconds per fit of n series of T points: batched, reference loop, forecaster."""
    return [_forecast_case(n, t, repeats) for n, t in sizes]


def _forecast_case(n: int, t: int, repeats: int) -> dict[str, Any]:
    from autolr.forecast import make_forecaster
    from autolr.kernels import fit_exponential
    from autolr.kernels._reference import fit_exponential_reference

    forecaster = make_forecaster({"name": "exponential", "min_value": 0.0})
    steps, y = _series(n, t)
    fit_exponential(steps, y)
    batched = _measure(lambda: fit_exponential(steps, y), repeats)
    ref_repeats = max(1, repeats // 2) if n * t > 20_000 else repeats
    reference = _measure(lambda: fit_exponential_reference(steps, y), ref_repeats)
    fc = _measure(lambda: forecaster.forecast(steps, y, 10.0 * t), 3)
    fb, fr = fit_exponential(steps, y), fit_exponential_reference(steps, y)
    at = 10.0 * t
    gap = (fb.evaluate(at) - fr.evaluate(at)).abs() / fr.evaluate(at).abs().clamp_min(1e-12)
    return {
        "series": n,
        "points": t,
        "batched_s": batched[0],
        "reference_s": reference[0],
        "speedup": reference[0] / batched[0],
        "batched_cpu_s": batched[1],
        "reference_cpu_s": reference[1],
        "cpu_speedup": reference[1] / max(batched[1], 1e-9),
        "forecaster_s": fc[0],
        "forecaster_cpu_s": fc[1],
        "max_rel_gap_at_10T": float(gap.max()),
    }


# ---------------------------------------------------------------- snapshot
def _mlp(params: int, seed: int = 0) -> nn.Sequential:
    """A square MLP of about ``params`` parameters (4 linear layers)."""
    width = int(math.sqrt(params / 4))
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(4):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def bench_snapshot(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    """capture/restore against clone / cat / copy_ of the same tensors."""
    return [_snapshot_case(size, repeats) for size in sizes]


def _snapshot_case(size: int, repeats: int) -> dict[str, Any]:
    from autolr.snapshot import capture, restore

    model = _mlp(size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = model[0]
    assert isinstance(first, nn.Linear)
    width = first.in_features
    model(torch.randn(4, width)).square().mean().backward()
    opt.step()  # AdamW state exists: 2 more tensors per parameter
    tensors = list(model.state_dict().values())
    for st in opt.state.values():
        tensors += [v for v in st.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
    nbytes = sum(t.numel() * t.element_size() for t in tensors)

    snap = capture(model, opt)
    saved = [t.clone() for t in tensors]
    flat = torch.cat([t.flatten() for t in tensors])
    timings = {
        "capture_s": lambda: capture(model, opt),
        "restore_s": lambda: restore(snap, model, opt),
        "clone_s": lambda: [t.clone() for t in tensors],
        "cat_s": lambda: torch.cat([t.flatten() for t in tensors]),
        "copy_back_s": lambda: [t.copy_(s) for t, s in zip(tensors, saved)],
        "flat_clone_s": lambda: flat.clone(),
    }
    res: dict[str, list[float]] = {k: [] for k in timings}
    for _ in range(repeats):  # alternate the methods, so load changes hit all alike
        for key, fn in timings.items():
            with torch.no_grad():
                res[key].append(_measure(fn, 1)[0])
    row: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "bytes": nbytes,
        "snapshot_bytes": snap.nbytes,
    }
    for key, vals in res.items():
        row[key] = statistics.median(vals)
    row["capture_vs_clone"] = row["capture_s"] / row["clone_s"]
    row["restore_vs_copy"] = row["restore_s"] / row["copy_back_s"]
    row["capture_gb_s"] = nbytes / row["capture_s"] / 1e9
    row["restore_gb_s"] = nbytes / row["restore_s"] / 1e9
    row["clone_gb_s"] = nbytes / row["clone_s"] / 1e9
    return row


# ---------------------------------------------------------------- driver
def run_all(quick: bool) -> dict[str, Any]:
    """Run the four micro-benchmarks and return the results (JSON-ready)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "meta": {
            "quick": quick,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "platform": f"{platform.system()} {platform.machine()}",
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "load_average_start": list(load),
        }
    }
    out["overhead"] = bench_overhead(steps=300 if quick else 500, repeats=3 if quick else 21)
    out["decision"] = bench_decision([3, 5, 10] if quick else list(range(3, 11)), 3 if quick else 5)
    sizes = [(1, 100), (16, 100)] if quick else [(n, t) for n in (1, 16, 64) for t in (100, 1000)]
    out["forecast"] = bench_forecast(sizes, 3 if quick else 5)
    snap_sizes = [100_000] if quick else [1_000_000, 10_000_000]
    out["snapshot"] = bench_snapshot(snap_sizes, 3 if quick else 7)
    out["meta"]["wall_time_s"] = time.perf_counter() - t0
    out["meta"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.micro", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--report", type=Path, default=REPORT_PATH, help="markdown report path")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite the report")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.results.mkdir(parents=True, exist_ok=True)
    from autolr import __version__

    results = run_all(args.quick)
    results["meta"]["autolr"] = __version__
    path = args.results / (MICRO_QUICK_FILE if args.quick else MICRO_FILE)
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")
    if not args.no_report:
        build_report(args.results, args.report)
        print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
