"""Wall time of one stage's LR search on Ray: 1 probe worker against 2.

Standalone: ``python benchmarks/ray_search_timing.py [--quick]``. Writes
``benchmarks/results/ray_search_timing.json``.

What is timed:

- ``fixed``: the same ``k`` probes (fixed LRs, log-spaced) from the same
  snapshot, through ``RayProber.run`` with 1 and with 2 workers (each worker 1
  CPU, 1 torch thread), and through the in-process ``LocalProber`` for
  reference. Actor start-up is excluded (timed on its own); each timing is
  repeated and the median, min and max are kept. The loss series of every
  backend are compared: they must be identical.
- ``controller``: a whole stage-0 search inside ``AutoLRS`` (GP proposals
  included) with ``parallel_probes`` equal to the number of workers. The GP
  picks other LRs in batches of 2 than one at a time, so these probes differ;
  diverged probes stop early, so probe steps differ too (both are recorded).
- ``idle_step_control``: the fixed schedule (100 steps a probe) with a train
  step that sleeps 5 ms and computes nothing: the speed-up the prober gives
  when each worker has a free core, apart from CPU contention.

Workload: an MLP (64-256-256-10) on scikit-learn's ``load_digits`` (synthetic
data of the same shape when scikit-learn is missing), SGD with momentum,
batches of 128.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import ray
import torch
from torch import nn

import autolr
from autolr.integrations.ray import RayProber
from autolr.probing import LocalProber, ProbeRequest
from autolr.runlog import PROBE
from autolr.snapshot import capture

RESULTS = Path(__file__).resolve().parent / "results" / "ray_search_timing.json"
BATCH = 128
IDLE_STEP_S = 0.005


def load_data() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        xt = torch.tensor(x, dtype=torch.float32) / 16.0
        return xt, torch.tensor(y, dtype=torch.long)
    except ImportError:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1797, 64, generator=gen)
        return x, (x[:, :10].argmax(dim=1))


X, Y = load_data()


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any) -> torch.Tensor:
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def idle_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any) -> float:
    """A step that waits instead of computing: isolates the prober from CPU contention."""
    time.sleep(IDLE_STEP_S)
    return 1.0


def batch_at(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(i)
    idx = torch.randint(0, X.shape[0], (BATCH,), generator=gen)
    return X[idx], Y[idx]


def batches(stage: int, index: int):
    """Every probe of a stage sees the same batches."""
    start = 1_000_000 * (stage + 1)
    return (batch_at(start + i) for i in range(10**9))


def summary(times: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "runs": len(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=8, help="probes per stage (k)")
    parser.add_argument("--tau-probe", type=int, default=300, help="steps per probe")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 probes of 40 steps, 2 repeats")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.probes, args.tau_probe, args.repeats = 4, 40, 2

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    model = make_model()
    opt = make_optimizer(model)
    for i in range(20):
        train_step(model, opt, batch_at(i))
    snapshot = capture(model, opt)
    lrs = [10 ** (-3 + 3 * j / (args.probes - 1)) for j in range(args.probes)]
    requests = [
        ProbeRequest(
            lr=lr,
            steps=args.tau_probe,
            stage=0,
            index=j,
            ref_loss=None,
            blowup_factor=2.0,
            early_abort=False,  # every probe runs its full length: same work for every backend
            keep_state=True,
        )
        for j, lr in enumerate(lrs)
    ]
    total_steps = args.probes * args.tau_probe
    print(f"{args.probes} probes x {args.tau_probe} steps, {args.repeats} repeats", flush=True)

    fixed: dict[str, Any] = {}
    reference = None

    local = LocalProber(model, opt, train_step, batches)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        outcomes = local.run(snapshot, requests)
        times.append(time.perf_counter() - t0)
    reference = [o.train_losses for o in outcomes]
    fixed["local_in_process"] = summary(times)
    print(f"  local (in process): median {statistics.median(times):.2f} s", flush=True)

    controller: dict[str, Any] = {}
    for workers in (1, 2):
        prober = RayProber(
            make_model, make_optimizer, train_step, batches, num_workers=workers, num_cpus=1
        )
        t0 = time.perf_counter()
        prober.start()
        startup = time.perf_counter() - t0
        prober.run(snapshot, requests[:workers])  # warm: first snapshot shipped, code paths hot
        times = []
        same = True
        for _ in range(args.repeats):
            prober.reset()  # ship the snapshot again, as at a new stage
            t0 = time.perf_counter()
            outcomes = prober.run(snapshot, requests)
            times.append(time.perf_counter() - t0)
            same = same and [o.train_losses for o in outcomes] == reference
        fixed[f"ray_{workers}_workers"] = {
            **summary(times),
            "actor_startup_s": startup,
            "same_losses_as_local": same,
        }
        print(
            f"  ray, {workers} worker(s): median {statistics.median(times):.2f} s "
            f"(start-up {startup:.1f} s, same losses as local: {same})",
            flush=True,
        )

        # One stage-0 search inside the controller (its constructor runs it with a prober).
        runs = []
        for rep in range(args.repeats):
            m = make_model()
            o = make_optimizer(m)
            t0 = time.perf_counter()
            tuner = autolr.AutoLRS(
                m,
                o,
                1e-3,
                1.0,
                tau=10 * args.tau_probe,
                tau_probe=args.tau_probe,
                probes=args.probes,
                parallel_probes=workers,
                prober=prober,
                seed=rep,
            )
            elapsed = time.perf_counter() - t0
            probes = tuner.log.of_type(PROBE)
            runs.append(
                {
                    "wall_s": elapsed,
                    "probe_steps": tuner.search_steps,
                    "diverged": sum(p["diverged"] for p in probes),
                    "chosen_lr": tuner.lr,
                }
            )
        controller[f"parallel_probes_{workers}"] = {
            **summary([r["wall_s"] for r in runs]),
            "runs_detail": runs,
        }
        print(
            f"  controller stage-0 search, q={workers}: median "
            f"{statistics.median(r['wall_s'] for r in runs):.2f} s",
            flush=True,
        )
        prober.close()

    # Control: the same probe schedule with steps that sleep (no CPU use). The speed-up
    # here is what the prober gives when every worker has a free core.
    idle: dict[str, Any] = {}
    idle_requests = [
        ProbeRequest(
            lr=r.lr,
            steps=100,
            stage=0,
            index=r.index,
            ref_loss=None,
            blowup_factor=2.0,
            early_abort=False,
        )
        for r in requests
    ]
    for workers in (1, 2):
        with RayProber(
            make_model, make_optimizer, idle_step, batches, num_workers=workers
        ) as prober:
            prober.start()
            prober.run(snapshot, idle_requests[:workers])
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                prober.run(snapshot, idle_requests)
                times.append(time.perf_counter() - t0)
        idle[f"ray_{workers}_workers"] = summary(times)
        print(f"  idle-step control, {workers} worker(s): median {statistics.median(times):.2f} s")
    idle["sequential_sleep_s"] = len(idle_requests) * 100 * IDLE_STEP_S

    ray.shutdown()
    one, two = fixed["ray_1_workers"]["median_s"], fixed["ray_2_workers"]["median_s"]
    result = {
        "benchmark": "ray_search_timing",
        "workload": "MLP 64-256-256-10 on load_digits, SGD momentum, batch 128",
        "probes": args.probes,
        "tau_probe": args.tau_probe,
        "probe_steps_per_search": total_steps,
        "repeats": args.repeats,
        "fixed_probes": fixed,
        "speedup_2_vs_1_workers": one / two if two > 0 else math.nan,
        "ideal_speedup": args.probes / math.ceil(args.probes / 2),
        "controller_stage0_search": controller,
        "idle_step_control": idle,
        "idle_step_speedup_2_vs_1_workers": idle["ray_1_workers"]["median_s"]
        / idle["ray_2_workers"]["median_s"],
        "machine": {
            "cpu_count": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "torch": torch.__version__,
            "ray": ray.__version__,
            "torch_threads_per_worker": 1,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"speed-up 2 vs 1 workers: {result['speedup_2_vs_1_workers']:.2f}x; wrote {args.out}")


if __name__ == "__main__":
    main()
