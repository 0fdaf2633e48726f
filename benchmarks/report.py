"""Summaries, tables and plots from the results JSON; writes ``BENCHMARKS.md``.

``python -m benchmarks.report`` regenerates the report from the files already in
``benchmarks/results/`` without training anything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks import autolr_hook
from benchmarks.schedules import SCHEDULES

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPORT_PATH = REPO_ROOT / "BENCHMARKS.md"

LR_FREE_LABELS = {
    "schedulefree": "schedule-free (package default LR)",
    "prodigy": "Prodigy (lr=1, cosine)",
}
POPULATION_LABELS = {"pb2": "PB2 (Ray Tune, population 4, budget shared)"}
MICRO_FILE = "micro.json"
MICRO_QUICK_FILE = "micro_quick.json"  # quick runs never overwrite the full figures
ABLATION_DIR = "ablations"
RANGES_DIR = "ranges"
FINDINGS_PATH = Path(__file__).resolve().parent / "findings.md"
WORKLOAD_ORDER = ("W1", "W2", "W3", "S0", "W4", "W5", "W6", "S1")
# a final val loss at or above (1 - DEAD_TOLERANCE) x min(initial val loss, chance
# loss) is a dead network: the run learnt nothing it kept
DEAD_TOLERANCE = 0.05


def _inf(x: float | None) -> float:
    return math.inf if x is None else float(x)


def _steps_to_target(run: dict[str, Any], target: float) -> tuple[int | None, float | None]:
    """First evaluation at which the run's val loss is at or below ``target``."""
    tol = 1e-9 * abs(target)
    for step, val, train_time in run["val_curve"]:
        if val is not None and val <= target + tol:
            return step, train_time
    return None, None


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the comparison table, each with per-seed values and the row's compute.

    The target of a seed is the lowest final validation loss of any grid run of
    that seed (the tuned baseline). A "tuned" row takes, per seed, the grid run
    with the lowest final validation loss; a "default" row the run at the
    workload's default LR.
    """
    meta = results["meta"]
    runs = results["runs"]
    total, default_lr = meta["total_steps"], meta["default_lr"]
    grid = meta["lr_grid"]
    seeds = sorted({r["seed"] for r in runs})
    grid_runs = [r for r in runs if r["method"] in SCHEDULES]
    target = {
        s: min((_inf(r["final_val"]) for r in grid_runs if r["seed"] == s), default=math.inf)
        for s in seeds
    }

    def entry(run: dict[str, Any]) -> dict[str, Any]:
        steps, secs = _steps_to_target(run, target[run["seed"]])
        out = {
            "val": run["final_val"],
            "test": run["final_test"],
            "steps_to_target": steps,
            "time_to_target_s": secs,
            "train_time_s": run["train_time_s"],
            "steps": run["steps"],
            "peak_lr": run["peak_lr"],
        }
        if "expected_final_loss" in run:
            out["expected_final_loss"] = run["expected_final_loss"]
        if "autolr" in run:
            out["search_steps"] = run["autolr"].get("search_steps")
        if "error" in run:
            out["error"] = run["error"]
        return out

    rows: list[dict[str, Any]] = []
    for sched in SCHEDULES:
        mine = [r for r in grid_runs if r["method"] == sched]
        if not mine:
            continue
        tuned = {}
        for s in seeds:
            cands = [r for r in mine if r["seed"] == s]
            if cands:
                tuned[s] = entry(min(cands, key=lambda r: _inf(r["final_val"])))
        rows.append(
            {
                "label": f"{sched} (tuned, grid of {len(grid)})",
                "method": sched,
                "kind": "tuned",
                # steps actually run by the grid (diverged runs stop early), median over seeds
                "compute_steps": int(
                    statistics.median(
                        sum(r["steps"] for r in mine if r["seed"] == s) for s in tuned
                    )
                ),
                "per_seed": tuned,
            }
        )
        defaults = {
            r["seed"]: entry(r)
            for r in mine
            if math.isclose(r["peak_lr"], default_lr, rel_tol=1e-9)
        }
        if defaults:
            rows.append(
                {
                    "label": f"{sched} (default LR {default_lr:g})",
                    "method": sched,
                    "kind": "default",
                    "compute_steps": total,
                    "per_seed": defaults,
                }
            )
    labels = (
        LR_FREE_LABELS
        | POPULATION_LABELS
        | {v.name: v.label for v in autolr_hook.VARIANTS.values()}
    )
    for method, label in labels.items():
        mine = [r for r in runs if r["method"] == method]
        if mine:
            kind = "lr-free"
            if method in autolr_hook.VARIANTS:
                kind = "autolr"
            elif method in POPULATION_LABELS:
                kind = "pb2"
            rows.append(
                {
                    "label": label,
                    "method": method,
                    "kind": kind,
                    "compute_steps": max(r["steps"] for r in mine),
                    "per_seed": {r["seed"]: entry(r) for r in mine},
                }
            )
    return rows


def _stats(values: Iterable[float | None]) -> tuple[float, float, float, int] | None:
    vals = [_inf(v) for v in values]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals), sum(math.isinf(v) for v in vals)


def _fmt(x: float, digits: int = 4) -> str:
    if math.isinf(x):
        return "div."
    if x == 0:
        return "0"
    if abs(x) >= 1000 or abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def _cell(values: Iterable[float | None], digits: int = 4) -> str:
    st = _stats(values)
    if st is None:
        return "–"
    med, lo, hi, bad = st
    if lo == hi:
        text = _fmt(med, digits)
    else:
        text = f"{_fmt(med, digits)} ({_fmt(lo, digits)}–{_fmt(hi, digits)})"
    return text


def _reach_cell(per_seed: dict[Any, dict[str, Any]], key: str, digits: int = 3) -> str:
    reached = [e[key] for e in per_seed.values() if e[key] is not None]
    n = len(per_seed)
    if not reached:
        return f"never (0/{n})"
    return f"{_fmt(statistics.median(reached), digits)} ({len(reached)}/{n})"


def markdown_table(results: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The per-workload table: median (min–max) over seeds."""
    s0 = any("expected_final_loss" in e for r in rows for e in r["per_seed"].values())
    head = [
        "method",
        "final val loss",
        "final test loss",
        "steps to target (reached)",
        "train s to target",
        "train time s",
        "compute (steps)",
        "search steps",
    ]
    if s0:
        head.insert(3, "exact E[loss] of schedule")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        ps = row["per_seed"]
        search = [e.get("search_steps") for e in ps.values() if e.get("search_steps") is not None]
        ok = {k: e for k, e in ps.items() if not e.get("error")}
        if not ok:
            lines.append(f"| {row['label']} | failed (see below) |" + " – |" * (len(head) - 2))
            continue
        ps = ok
        cells = [
            row["label"],
            _cell(e["val"] for e in ps.values()),
            _cell(e["test"] for e in ps.values()),
            _reach_cell(ps, "steps_to_target"),
            _reach_cell(ps, "time_to_target_s"),
            _cell((e["train_time_s"] for e in ps.values()), 3),
            f"{row['compute_steps']:,}",
            _cell(search, 4) if search else ("0" if row["kind"] != "autolr" else "n/a"),
        ]
        if s0:
            exp = [e.get("expected_final_loss") for e in ps.values()]
            cells.insert(3, _cell(exp) if any(v is not None for v in exp) else "–")
        if row["kind"] == "tuned":
            grid = results["meta"]["lr_grid"]
            lrs = sorted({e["peak_lr"] for e in ps.values()})
            cells[0] += " → peak LR " + ", ".join(
                f"{lr:.3g}" + (" (grid edge)" if lr in (grid[0], grid[-1]) else "") for lr in lrs
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """Plain sentences: where autolr wins and loses against the best tuned baseline."""
    tuned = [r for r in rows if r["kind"] == "tuned"]
    autolr_rows = [r for r in rows if r["kind"] == "autolr"]
    if not autolr_rows:
        reason = meta.get("autolr_error") or "not selected"
        return [f"autolr was not run on this workload ({reason})."]
    if not tuned:
        return []

    def med(row: dict[str, Any], key: str) -> float:
        st = _stats(e[key] for e in row["per_seed"].values())
        return math.inf if st is None else st[0]

    best = min(tuned, key=lambda r: med(r, "test"))
    out = []
    for row in autolr_rows:
        errors = [e["error"] for e in row["per_seed"].values() if e.get("error")]
        if errors:
            out.append(f"{row['label']}: failed in {len(errors)} seed(s): {errors[0]}")
            continue
        a, b = med(row, "test"), med(best, "test")
        word = "loses to" if a > b else "beats"
        rel = "" if math.isinf(a) or b == 0 else f" ({(a - b) / abs(b):+.1%})"
        ratio = best["compute_steps"] / max(1, row["compute_steps"])
        out.append(
            f"{row['label']} {word} the best tuned schedule ({best['label']}) on median "
            f"test loss: {_fmt(a)} vs {_fmt(b)}{rel}, using {_fmt(ratio, 3)}x less compute "
            "than that schedule's grid."
        )
        # Same compute: what a user gets without tuning, and the other one-run tuners.
        same = [r for r in rows if r["kind"] in ("default", "lr-free", "pb2")]
        if same:
            beaten = [r for r in same if med(r, "test") < a]
            if beaten:
                names = ", ".join(f"{r['label']} {_fmt(med(r, 'test'))}" for r in beaten)
                out.append(
                    f"{row['label']} (median test {_fmt(a)}) also loses, at the same "
                    f"budget T, to: {names}."
                )
            else:
                out.append(
                    f"{row['label']} beats every untuned schedule, LR-free optimizer and "
                    "population method run at the same budget T on median test loss."
                )
    return out


def plot(results: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    """Three panels: median val loss vs step, LR vs step (seed of lowest id), LR sensitivity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta, runs = results["meta"], results["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    shown = [r for r in rows if r["kind"] != "default" or r["method"] == "cosine"]
    colors = {row["label"]: f"C{i % 10}" for i, row in enumerate(shown)}
    sched_colors = {r["method"]: colors[r["label"]] for r in shown if r["kind"] == "tuned"}
    for row in shown:
        style = "-" if row["kind"] in ("autolr", "tuned") else "--"
        width = 2.2 if row["kind"] == "autolr" else 1.2
        color = colors[row["label"]]
        curves = []
        for seed, e in row["per_seed"].items():
            run = _find_run(runs, row["method"], seed, e["peak_lr"])
            if run is not None:
                curves.append(run)
        if not curves:
            continue
        ref = curves[0]
        steps = [p[0] for p in ref["val_curve"]]
        med = []
        for j in range(len(steps)):
            vals = [_inf(c["val_curve"][j][1]) for c in curves if j < len(c["val_curve"])]
            med.append(statistics.median(vals) if vals else math.inf)
        finite = [(s, v) for s, v in zip(steps, med) if math.isfinite(v)]
        if finite:
            axes[0].plot(*zip(*finite), style, color=color, lw=width, label=row["label"])
        lc = ref["lr_curve"]
        pts = [(s, v) for s, v in zip(lc["steps"], lc["values"]) if v is not None and v > 0]
        if pts:
            axes[1].plot(*zip(*pts), style, color=color, lw=width, label=row["label"])
    axes[0].set(xlabel="step", ylabel="validation loss (median over seeds)", yscale="log")
    axes[0].set_title(f"{meta['workload']} ({meta['mode']}, T={meta['total_steps']})")
    axes[1].set(xlabel="step", ylabel="LR applied (first seed)", yscale="log")
    axes[1].set_title("learning rate")
    ref = meta.get("reference") or {}
    if "optimal_lr_curve" in ref:
        c = ref["optimal_lr_curve"]
        axes[1].plot(c["steps"], c["lrs"], ":", color="k", lw=1.5, label="optimal (exact)")
        axes[0].axhline(
            ref["optimal_expected_loss"], color="k", ls=":", lw=1.5, label="optimal SGD (exact E)"
        )
    diverged = set()
    for k, sched in enumerate(SCHEDULES):
        pts = []
        for lr in meta["lr_grid"]:
            vals = [
                _inf(r["final_val"])
                for r in runs
                if r["method"] == sched and math.isclose(r["peak_lr"], lr, rel_tol=1e-9)
            ]
            if vals and math.isfinite(statistics.median(vals)):
                pts.append((lr, statistics.median(vals)))
            elif vals:
                diverged.add(lr)
        if pts:
            axes[2].plot(*zip(*pts), "o-", color=sched_colors.get(sched, f"C{k}"), label=sched)
    if diverged:
        top = axes[2].get_ylim()[1]
        axes[2].plot(sorted(diverged), [top] * len(diverged), "kx", ms=9, label="diverged")
    for row in rows:
        if row["kind"] in ("autolr", "lr-free", "pb2"):
            st = _stats(e["val"] for e in row["per_seed"].values())
            if st is not None and math.isfinite(st[0]):
                color = colors[row["label"]]
                axes[2].axhline(st[0], ls="--", lw=1.2, label=row["label"], color=color)
    axes[2].set(xscale="log", yscale="log", xlabel="peak LR", ylabel="final val loss (median)")
    axes[2].set_title("sensitivity to the peak LR")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _find_run(
    runs: list[dict[str, Any]], method: str, seed: Any, peak_lr: float | None
) -> dict[str, Any] | None:
    for r in runs:
        if r["method"] != method or r["seed"] != seed:
            continue
        if peak_lr is None or (r["peak_lr"] is not None and math.isclose(r["peak_lr"], peak_lr)):
            return r
    return None


def _meta_line(meta: dict[str, Any]) -> str:
    grid = ", ".join(f"{x:.3g}" for x in meta["lr_grid"])
    return (
        f"T = {meta['total_steps']:,} steps per run, seeds {meta['seeds']}, "
        f"{meta['optimizer']} default LR {meta['default_lr']:g}, peak-LR grid "
        f"{grid}; {meta['eval_points']} evaluations per run. "
        f"Python {meta['python']}, torch {meta['torch']}, {meta['threads']} thread(s), "
        f"{meta['platform']}; run {meta['date']} at commit {meta.get('git_commit') or '?'}, "
        f"{meta['wall_time_s'] / 60:.1f} min in all."
    )


HEADER = """# autolr benchmarks

Generated from the JSON files in `benchmarks/results/`: `python -m benchmarks.all`
reruns everything (micro-benchmarks, the comparison on every workload, the
ablations) and writes this page; `python -m benchmarks.run`, `benchmarks.micro` and
`benchmarks.ablate` rerun one part; `python -m benchmarks.report` rebuilds the page
without training. Do not edit by hand: the findings come from
`benchmarks/findings.md`, everything else from the results.

Budgets (full mode; 1 torch thread per process on a shared 2-core CPU):

| workload | T (steps per run) | grid | seeds | about one run |
|---|---|---|---|---|
| W1 digits MLP | 3,000 | 7 peak LRs x 4 schedules | 3 | 5-10 s |
| W2 MNIST-1D CNN | 4,000 | 10 x 4 | 3 | 15-60 s |
| W3 char GPT | 1,500 | 8 x 2 (cosine, WSD only) | 3 | 1-3 min |
| S0 noisy quadratic | 5,000 | 9 x 4 | 3 | 3-6 s |
| W4 plateau CNN (confirmation) | 1,000 | 7 x 2 (cosine, WSD only) | 5 | 4-25 s |
| W5 fine-tuning (confirmation) | 800 | 9 x 2 (cosine, WSD only) | 5 | 2-9 s |
| W6 regression, Adam (confirmation) | 1,500 | 8 x 2 (cosine, WSD only) | 5 | 2-4 s |
| S1 noisy quadratic unlike S0 (confirmation) | 3,000 | 9 x 2 (cosine, WSD only) | 5 | 1-2 s |

W2 runs 4,000 steps (about 73 epochs of its 3,500 signals) rather than more, and W3
1,500 steps, and two schedules, so that a full pass fits in a few hours
here. Both grids were widened upwards after a first pass put the tuned LR at the
grid's top (W2 0.016, W3 0.008); autolr's and PB2's search range is the grid's range.
Quick mode (`--quick`) is a smoke run (T = 120-500, one seed, ablations on W1
only; `python -m benchmarks.all --quick` took 8.5 minutes here from empty results, and
its confirmation step 5.3 minutes more: 4.8 for W4 and W5, 30 s for W6 and S1)
where the stage-based methods have too few steps to mean anything.

How to read the tables:

- Every method trains for the same budget of T steps per run; autolr's probe steps
  count inside T. Numbers are the median over seeds, with (min–max).
- **tuned**: for each seed, the run with the lowest final *validation* loss among a
  grid of peak LRs spaced x2; its compute is the whole grid (about grid size x T;
  diverged runs stop early and count only the steps they ran). The
  **default LR** rows are the same schedules at SGD 0.1 / AdamW 1e-3, without tuning.
- Schedules: cosine and linear decay with 5% linear warmup; WSD with 5% warmup and
  a linear cooldown over the last 20%; constant without warmup. Schedule-free runs
  at the package's default LR with 5% warmup; Prodigy at lr=1 under the cosine schedule.
- autolr searches the LR in [smallest, largest] grid LR: the same prior knowledge
  the grid gets. Its rows: `autolr`, the default settings (with a budget
  `strategy="anneal"`: range test, a race scored after cooldowns, hold, decay);
  `autolr-forecast`, `strategy="forecast"` (AutoLRS's rule with this project's
  trust region and guards, the default until `anneal`); `autolr-paper`, AutoLRS's
  paper settings; `autolr-anneal-val`, the default on the validation objective.
- **target**: the lowest final validation loss of any grid run of the same seed.
  "steps to target" is the first evaluation at or below it (evaluations are spaced
  T / evaluations apart); "(k/n)" counts the seeds that reached it. Train time
  excludes evaluation.
- **PB2** (Ray Tune's `PB2` scheduler, which needs only Ray Tune and scikit-learn): a
  population of 4 members, each training T / 4 steps, so the population spends the
  same budget T as one run of the other methods. LR is its only hyperparameter,
  searched in log space over the grid's range; members report validation loss 10
  times, the worst quarter copies the best quarter's weights and gets a new LR from
  PB2's GP bandit (`synch=True`). Reported: the member with the lowest final
  validation loss. Its curves are placed at population steps (4x member steps), so
  "steps to target" counts the whole population's compute; its train time sums the
  members' training time (Ray's own overhead, minutes here, is not counted).
- Validation decides (grid selection, autolr's objective is the training loss);
  test loss is reported only. S0 has no data: its val and test loss are the exact
  noise-free loss 0.5 * sum(h * theta^2); the "exact E[loss]" column is the
  expectation over gradient noise of a fixed SGD schedule, so its regret against
  the optimal schedule is exact.
- "div." = the run diverged (non-finite loss or parameters). "(grid edge)" marks a
  tuned peak LR at the end of the grid: the grid may not contain the best LR.
"""


def _load_workload_results(results_dir: Path) -> list[dict[str, Any]]:
    """The per-workload results files (``<workload>_<mode>.json``) in ``results_dir``."""
    loaded = []
    for f in sorted(results_dir.glob("*.json")):
        data = json.loads(f.read_text())
        if isinstance(data, dict) and "runs" in data and "workload" in data.get("meta", {}):
            loaded.append(data)
    return loaded


def build_report(results_dir: Path = RESULTS_DIR, report_path: Path = REPORT_PATH) -> str:
    """Summarize the results in ``results_dir``, save the plots, write ``report_path``.

    Sections: the hand-written findings (``benchmarks/findings.md``, when the
    report goes to its usual place), one table per workload results file, the
    micro-benchmarks (``micro.json``) and the ablations (``ablations/*.json``).
    """
    loaded = _load_workload_results(results_dir)

    def order(res: dict[str, Any]) -> tuple[int, int, str]:
        wid = res["meta"]["workload"]
        idx = WORKLOAD_ORDER.index(wid) if wid in WORKLOAD_ORDER else len(WORKLOAD_ORDER)
        return (0 if res["meta"]["mode"] == "full" else 1, idx, res["meta"]["mode"])

    parts = [HEADER]
    summary = summary_markdown(loaded)
    if summary:
        parts.append(summary)
    if results_dir.resolve() == RESULTS_DIR.resolve() and FINDINGS_PATH.is_file():
        parts.append("\n" + FINDINGS_PATH.read_text())
    if not loaded:
        parts.append("\nNo results yet: run `python -m benchmarks.run --quick`.\n")
    # Each sweep goes under its workload's section; those left, with the confirmation ones.
    sweeps = {
        _sweep_key(sweep): sweep
        for sweep in (
            json.loads(f.read_text()) for f in sorted((results_dir / RANGES_DIR).glob("*.json"))
        )
    }
    current_mode = None
    for res in sorted(loaded, key=order):
        meta = res["meta"]
        if meta.get("confirmation"):
            continue  # in their own section below
        if meta["mode"] != current_mode:
            current_mode = meta["mode"]
            title = {
                "full": "Full budget",
                "quick": "Quick mode (small budgets: a smoke run, not for conclusions)",
            }.get(current_mode, f"Custom budget ({current_mode})")
            parts.append(f"\n## {title}\n")
        rows = summarize(res)
        res["summary"] = rows
        name = f"{meta['workload']}_{meta['mode']}"
        png = results_dir / f"{name}.png"
        plot(res, rows, png)
        parts.append(f"\n### {meta['workload']}: {meta['title']}\n")
        parts.append(_meta_line(meta) + "\n")
        ref = meta.get("reference")
        if ref:
            parts.append(
                f"\nExact reference for T = {meta['total_steps']}: initial loss "
                f"{_fmt(ref['initial_loss'])}; optimal SGD schedule E[loss] = "
                f"{_fmt(ref['optimal_expected_loss'])}; best constant LR "
                f"{ref['best_constant_lr']:.3g} gives E[loss] = "
                f"{_fmt(ref['best_constant_expected_loss'])} (SGD is stable below LR "
                f"{ref['max_stable_lr']:.3g}). The optimum is over plain-SGD LR schedules; "
                "Prodigy (Adam-type, per-coordinate steps) and schedule-free SGD (momentum "
                "and averaging) are other optimizers and are not bound by it.\n"
            )
        parts.append("\n" + markdown_table(res, rows) + "\n")
        verdict = _verdict(rows, meta)
        if verdict:
            parts.append("\n" + "\n".join(f"- {v}" for v in verdict) + "\n")
        rel = os.path.relpath(png.resolve(), report_path.resolve().parent)
        parts.append(f"\n![{name}]({Path(rel).as_posix()})\n")
        sweep = sweeps.pop(_sweep_key(res), None)
        if sweep is not None:
            parts.append(range_sweep_markdown(sweep, rows))
    confirmation = confirmation_markdown(
        sorted((r for r in loaded if r["meta"].get("confirmation")), key=order),
        list(sweeps.values()),
        results_dir,
        report_path,
    )
    if confirmation:
        parts.append(confirmation)
    micro = results_dir / MICRO_FILE
    if not micro.is_file():  # the quick figures only when there are no full ones
        micro = results_dir / MICRO_QUICK_FILE
    if micro.is_file():
        parts.append(micro_markdown(json.loads(micro.read_text())))
    ablations = sorted((results_dir / ABLATION_DIR).glob("*.json"))
    if ablations:
        parts.append(ablation_markdown([json.loads(f.read_text()) for f in ablations], loaded))
    text = "".join(parts)
    report_path.write_text(text)
    return text


def _median_test(row: dict[str, Any]) -> float:
    ok = [e for e in row["per_seed"].values() if not e.get("error")]
    st = _stats(e["test"] for e in ok)
    return math.inf if st is None else st[0]


def summary_markdown(loaded: list[dict[str, Any]]) -> str:
    """One line per full-budget workload: autolr beside the baselines, median test loss."""
    lines = []
    for res in sorted(loaded, key=lambda r: _w_order(r["meta"]["workload"])):
        meta = res["meta"]
        if meta["mode"] != "full" or meta.get("confirmation"):
            continue
        rows = summarize(res)
        med = _median_test

        def best(kind: str, rows: list[dict[str, Any]] = rows) -> str:
            cands = [r for r in rows if r["kind"] == kind]
            if not cands:
                return "–"
            r = min(cands, key=_median_test)
            return f"{_fmt(_median_test(r))} ({r['label'].split(' (')[0]})"

        auto = {r["method"]: r for r in rows if r["kind"] == "autolr"}
        if "autolr" not in auto:
            continue
        a = med(auto["autolr"])
        same = [r for r in rows if r["kind"] in ("default", "lr-free", "pb2", "autolr")]
        rank = 1 + sum(med(r) < a for r in same if r is not auto["autolr"])
        pb2 = [r for r in rows if r["kind"] == "pb2"]

        other = {
            n: _fmt(med(auto[f"autolr-{n}"])) if f"autolr-{n}" in auto else "–"
            for n in ("forecast", "paper")
        }
        lines.append(
            f"| {meta['workload']} | {len(meta['seeds'])} | {_fmt(a)} | "
            f"{other['forecast']} | {other['paper']} | "
            f"{best('tuned')} | {best('default')} | {best('lr-free')} | "
            f"{_fmt(med(pb2[0])) if pb2 else '–'} | {rank} of {len(same)} |"
        )
    if not lines:
        return ""
    return (
        "\n## Summary (full budgets, median final test loss over seeds)\n\n"
        "autolr with default settings (`strategy='anneal'` with a budget) beside: the "
        "forecast strategy (the default before); the AutoLRS-paper settings; the best tuned "
        "schedule (whose grid costs 6-10x the budget); the best schedule at the default "
        "LR; the best LR-free optimizer; PB2. The rank counts the methods that train "
        "with the same budget T (default-LR schedules, LR-free optimizers, PB2, the "
        "autolr settings); 1 is best.\n\n"
        "| workload | seeds | autolr | autolr, forecast strategy | autolr, paper settings | "
        "best tuned (grid) | best at default LR | best LR-free | PB2 | "
        "autolr's rank at budget T |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n"
    )


# ------------------------------------------------------------------ micro
def micro_markdown(res: dict[str, Any]) -> str:
    """The micro-benchmark section from ``micro.json``."""
    meta = res["meta"]
    load = meta.get("load_average_start") or []
    out = [
        "\n## Micro-benchmarks\n",
        f"\n`python -m benchmarks.micro{' --quick' if meta.get('quick') else ''}`: "
        f"Python {meta['python']}, torch {meta['torch']}, {meta['threads']} thread(s), "
        f"{meta['cpus']} CPU(s) shared with other work (load average "
        f"{', '.join(f'{x:.1f}' for x in load[:3])} at the start), run {meta['date']}, "
        f"{meta['wall_time_s'] / 60:.1f} min. Medians over repeats. CPU time (this "
        "process) is the main measure: on a loaded machine the wall time also counts "
        "the wait for a core.\n",
    ]
    if res.get("overhead"):
        out.append(
            "\n### Controller overhead per training step, outside probes\n\n"
            "A tiny model (8-16-1 MLP, batch 16, SGD) trained in a plain loop, with and "
            "without `tuner.step(loss)` after each step, while the tuner is in its exploit "
            "phase. The exploit guard takes the median of the last `tau_probe / 2` losses "
            "every step, so two probe lengths are shown.\n\n"
            "| tau_probe (guard window) | step without tuner, µs | with `tuner.step`, µs "
            "| overhead µs/step | ratio | `tuner.step` alone, µs | wall-clock ratio |\n"
            "|---|---|---|---|---|---|---|\n"
        )
        for r in res["overhead"]:
            out.append(
                f"| {r['tau_probe']} ({r['guard_window']}) | {r['cpu_plain_us']:.0f} | "
                f"{r['cpu_with_tuner_us']:.0f} | {r['cpu_overhead_us']:.0f} | "
                f"{r['cpu_ratio']:.2f} | {r['cpu_tuner_step_alone_us']:.1f} | "
                f"{r['ratio']:.2f} |\n"
            )
    if res.get("decision"):
        names = list(dict.fromkeys(r["acquisition"] for r in res["decision"]))
        ks = sorted({r["k"] for r in res["decision"]})
        cell = {(r["acquisition"], r["k"]): r for r in res["decision"]}
        out.append(
            "\n### Decision latency: `GPProposer.propose(1)` after k observations\n\n"
            "GP fit (BoTorch `SingleTaskGP`, `fit_gpytorch_mll`) plus the acquisition over "
            "a 257-point grid of log(lr), CPU seconds (wall seconds in brackets). With "
            "`warm_start` the GP also holds two earlier stages of k points each (3k "
            "points, 2-D inputs).\n\n"
            "| k | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
        )
        for k in ks:
            cells = []
            for n in names:
                r = cell.get((n, k))
                cells.append("–" if r is None else f"{r['cpu_median_s']:.3f} ({r['median_s']:.3f})")
            out.append(f"| {k} | " + " | ".join(cells) + " |\n")
    if res.get("forecast"):
        out.append(
            "\n### Forecaster fit: batched vs one series at a time\n\n"
            "`autolr.kernels.fit_exponential` (all series in one batched call) against "
            "`fit_exponential_reference` (a Python/numpy loop over series), on noisy "
            "exponential series; CPU milliseconds. The last columns: the forecaster the "
            "controller calls (two Hampel passes and two fits, floor 0), and the largest "
            "relative gap between the two fits' values at 10x the series length.\n\n"
            "| series x points | batched ms | one at a time ms | speedup | "
            "forecaster ms | max rel. gap |\n|---|---|---|---|---|---|\n"
        )
        for r in res["forecast"]:
            out.append(
                f"| {r['series']} x {r['points']} | {1e3 * r['batched_cpu_s']:.2f} | "
                f"{1e3 * r['reference_cpu_s']:.2f} | {r['cpu_speedup']:.1f}x | "
                f"{1e3 * r['forecaster_cpu_s']:.1f} | {r['max_rel_gap_at_10T']:.1e} |\n"
            )
    if res.get("snapshot"):
        out.append(
            "\n### Snapshot and restore vs a plain tensor copy\n\n"
            "A 4-layer square MLP with its AdamW state (parameters + 2 moments: 3x the "
            "parameter bytes). `capture` (to CPU, RNG states included) against `clone` of "
            "every tensor and one `torch.cat` of them; `restore` (in place, optimizer "
            "state cloned) against `copy_` of every tensor back into place. Wall "
            "milliseconds.\n\n"
            "| params | MB | capture | clone each | cat | capture / clone | restore | "
            "copy_ back | restore / copy_ | capture GB/s | restore GB/s |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n"
        )
        for r in res["snapshot"]:
            out.append(
                f"| {r['params'] / 1e6:.1f}M | {r['bytes'] / 1e6:.0f} | "
                f"{1e3 * r['capture_s']:.2f} | {1e3 * r['clone_s']:.2f} | "
                f"{1e3 * r['cat_s']:.2f} | {r['capture_vs_clone']:.2f} | "
                f"{1e3 * r['restore_s']:.2f} | {1e3 * r['copy_back_s']:.2f} | "
                f"{r['restore_vs_copy']:.2f} | {r['capture_gb_s']:.2f} | "
                f"{r['restore_gb_s']:.2f} |\n"
            )
    return "".join(out)


# -------------------------------------------------------------- ablations
def _pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:+.1f}%"


def ablation_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant: per-seed values, and per-seed relative change against the default."""
    runs = res["runs"]
    variants = res["meta"]["variants"]
    default = {r["seed"]: r for r in runs if r["method"] == "default"}
    rows = []
    for name, v in variants.items():
        mine = {r["seed"]: r for r in runs if r["method"] == name}
        if not mine:
            continue
        deltas = []
        for seed, r in mine.items():
            d = default.get(seed)
            if d is not None and d.get("final_val") and r.get("final_val") is not None:
                deltas.append((r["final_val"] - d["final_val"]) / d["final_val"])
            elif d is not None and d.get("final_val") and r.get("final_val") is None:
                deltas.append(math.inf)
        diag = [r.get("autolr", {}).get("diagnostics", {}) for r in mine.values()]
        ferr = [abs(e) for d in diag for e in d.get("forecast_rel_error", [])]
        rows.append(
            {
                "name": name,
                "option": v["option"],
                "value": v["value"],
                "val": [r.get("final_val") for r in mine.values()],
                "test": [r.get("final_test") for r in mine.values()],
                "delta": deltas,
                "search": [r.get("autolr", {}).get("search_steps") for r in mine.values()],
                "rollbacks": sum(d.get("rollbacks", 0) for d in diag),
                "diverged_probes": sum(d.get("diverged_probes", 0) for d in diag),
                "probes": sum(d.get("probes", 0) for d in diag),
                "forecast_abs_err": statistics.median(ferr) if ferr else math.nan,
                "train_time": [r.get("train_time_s") for r in mine.values()],
                "errors": [r["error"] for r in mine.values() if r.get("error")],
                "seeds": len(mine),
            }
        )
    return rows


def _default_value(res: dict[str, Any], option: str) -> str:
    if "+" in option:  # a change of several options at once
        return ", ".join(_default_value(res, part) for part in option.split("+"))
    for r in res["runs"]:
        if r["method"] == "default":
            cfg = r.get("autolr", {}).get("config", {})
            if option == "probes":
                return str(cfg.get("probes_per_stage"))
            if option == "objective":
                return str(cfg.get("objective", "train_loss"))
            if option == "common_batches":
                return "False"
            if option == "anneal_fraction" and cfg.get(option) is None:
                steps, total = cfg.get("anneal_steps"), cfg.get("total_steps")
                return f"{steps / total:g} (from the budget)" if steps and total else "None"
            if option in cfg:
                return str(cfg[option])
    return "?"


def ablation_markdown(results: list[dict[str, Any]], workload_results: list[dict[str, Any]]) -> str:
    """The ablation section: one table per workload, then what the numbers suggest."""
    out = [
        "\n## Ablations of the forecast strategy's options\n\n"
        "`python -m benchmarks.ablate`: the `autolr` run with `strategy='forecast'` (the "
        "default before `anneal`) with one option changed at "
        "a time, same seeds, budget and LR range as the comparison above. Final validation "
        "and test loss: median (min–max) over seeds. **Δ val**: per seed, the relative "
        "change of the final validation loss against the default run of the same seed; "
        "median (min–max) — negative is better. Rollbacks, diverged probes and probes are "
        "summed over seeds. **forecast error (abs.)**: median over all stages and seeds of "
        "|forecast − reached| / reached, the objective's forecast at the end of a stage "
        "against the value the exploit actually reached there.\n"
    ]
    best_by_option: dict[str, dict[str, tuple[str, float, bool]]] = {}
    defaults: dict[str, str] = {}
    for res in sorted(results, key=lambda r: WORKLOAD_ORDER.index(r["meta"]["workload"])):
        meta = res["meta"]
        wid = meta["workload"]
        rows = ablation_rows(res)
        out.append(f"\n### {wid} ({meta['mode']}, T = {meta['total_steps']:,})\n\n")
        out.append(
            f"Seeds {meta['seeds']}; run {meta['date']} at commit "
            f"{meta.get('git_commit') or '?'} (autolr sources "
            f"{meta.get('autolr_source_sha256_16')}), {meta['wall_time_s'] / 60:.1f} min.\n"
        )
        ref = _reference_line(wid, meta["mode"], workload_results)
        if ref:
            out.append(ref)
        if meta.get("skipped"):
            out.append(
                "Not run (the installed `AutoLRS` lacks the option): "
                + ", ".join(meta["skipped"])
                + ".\n"
            )
        out.append(
            "\n| option | value | final val loss | final test loss | Δ val | search steps | "
            "rollbacks | diverged / probes | forecast error (abs.) | train s |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n"
        )
        for r in rows:
            if r["errors"]:
                out.append(f"| {r['option']} | {r['value']} | failed: {r['errors'][0]} |\n")
                continue
            value = r["value"]
            if r["option"] == DEFAULT_OPTION:
                value = "(all defaults)"
            d = [x for x in r["delta"]]
            dcell = "–"
            if d and r["option"] != DEFAULT_OPTION:
                med, lo, hi = statistics.median(d), min(d), max(d)
                better = sum(x < 0 for x in d)
                dcell = f"{_pct(med)} ({_pct(lo)} to {_pct(hi)}; {better}/{len(d)} better)"
            out.append(
                f"| {r['option']} | {value} | {_cell(r['val'])} | {_cell(r['test'])} | "
                f"{dcell} | {_cell(r['search'], 4)} | {r['rollbacks']} | "
                f"{r['diverged_probes']} / {r['probes']} | "
                f"{_pct(r['forecast_abs_err']).lstrip('+')} | {_cell(r['train_time'], 3)} |\n"
            )
            if r["option"] != DEFAULT_OPTION and d:
                defaults[r["option"]] = _default_value(res, r["option"])
                med = statistics.median(d)
                consistent = all(x < 0 for x in d)
                cur = best_by_option.setdefault(r["option"], {})
                if wid not in cur or med < cur[wid][1]:
                    cur[wid] = (str(r["value"]), med, consistent)
        out.append(_ablation_diagnostics(res))
    if best_by_option:
        out.append(
            "\n### What the ablations suggest\n\n"
            "Per option, the best changed value on each workload by median Δ val (all "
            "seeds better: ✓). A change is only worth making where it helps on every "
            "workload; one workload and 3 seeds are weak evidence.\n\n"
            "| option | current default | "
            + " | ".join(sorted({w for v in best_by_option.values() for w in v}, key=_w_order))
            + " |\n"
        )
        wids = sorted({w for v in best_by_option.values() for w in v}, key=_w_order)
        out.append("|---|---|" + "---|" * len(wids) + "\n")
        for option, per in best_by_option.items():
            cells = []
            for w in wids:
                if w not in per:
                    cells.append("–")
                    continue
                value, med, consistent = per[w]
                mark = " ✓" if consistent else ""
                cells.append(f"{value}: {_pct(med)}{mark}")
            out.append(f"| {option} | {defaults.get(option, '?')} | " + " | ".join(cells) + " |\n")
    return "".join(out)


DEFAULT_OPTION = "default"


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (ties get their mean rank); NaN under 3 pairs."""
    if len(x) < 3:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var > 0 else math.nan


def _ablation_diagnostics(res: dict[str, Any]) -> str:
    """What the run logs of all the workload's ablation runs say, pooled."""
    runs = [r for r in res["runs"] if r.get("final_val") is not None and "autolr" in r]
    if not runs:
        return ""
    by_stage: dict[int, list[float]] = {}
    for r in runs:
        for st in r["autolr"].get("diagnostics", {}).get("stages", []):
            if st.get("forecast") is not None and st.get("actual"):
                err = (st["forecast"] - st["actual"]) / abs(st["actual"])
                by_stage.setdefault(int(st["stage"]), []).append(err)
    parts = []
    for k in sorted(by_stage):
        errs = by_stage[k]
        low = sum(e < 0 for e in errs)
        parts.append(
            f"stage {k}: {_pct(statistics.median(errs))} ({low}/{len(errs)} below the loss reached)"
        )
    rho = spearman(
        [float(r["autolr"].get("search_steps") or 0) for r in runs],
        [float(r["final_val"]) for r in runs],
    )
    text = (
        f"\nPooled over the {len(runs)} runs above: median signed forecast error "
        "(forecast − reached) / reached by stage: " + "; ".join(parts) + ". "
        f"Rank correlation of search steps with final val loss: {rho:+.2f}.\n"
    )
    return text


def _w_order(wid: str) -> int:
    return WORKLOAD_ORDER.index(wid) if wid in WORKLOAD_ORDER else len(WORKLOAD_ORDER)


def _reference_line(wid: str, mode: str, workload_results: list[dict[str, Any]]) -> str:
    """The best tuned schedule and the default-LR cosine of the main comparison, if run."""
    for res in workload_results:
        meta = res["meta"]
        if meta["workload"] != wid or meta["mode"] != mode:
            continue
        rows = summarize(res)
        tuned = [r for r in rows if r["kind"] == "tuned"]
        if not tuned:
            return ""

        def med(row: dict[str, Any]) -> float:
            st = _stats(e["val"] for e in row["per_seed"].values())
            return math.inf if st is None else st[0]

        best = min(tuned, key=med)
        parts = [f"best tuned schedule ({best['label']}) {_fmt(med(best))}"]
        for r in rows:
            if r["kind"] == "default" and r["method"] == "cosine":
                parts.append(f"{r['label']} {_fmt(med(r))}")
        return (
            "For reference, median final val loss in the main comparison: "
            + "; ".join(parts)
            + ".\n"
        )
    return ""


# ------------------------------------------------------ confirmation workloads
def run_status(run: dict[str, Any], chance_loss: float | None) -> str:
    """``"failed"``, ``"non-finite"``, ``"dead"`` or ``"ok"`` for one run's results.

    Dead: the final validation loss is at or above ``1 - DEAD_TOLERANCE`` times the
    lower of the run's initial validation loss and ``chance_loss`` (the loss of a
    model that learnt nothing): the run ended where it started, or worse.
    """
    if run.get("error"):
        return "failed"
    val = run.get("final_val")
    if val is None or run.get("diverged"):
        return "non-finite"
    curve = run.get("val_curve") or []
    start = curve[0][1] if curve and curve[0][0] == 0 else None
    refs = [x for x in (start, chance_loss) if x is not None]
    if refs and val >= (1 - DEAD_TOLERANCE) * min(refs):
        return "dead"
    return "ok"


def _held_lr(run: dict[str, Any]) -> float | None:
    """The LR a run's longest exploit ended at (None: no exploit logged)."""
    stages = [
        s
        for s in run.get("autolr", {}).get("diagnostics", {}).get("stages", [])
        if s.get("lr") is not None and s.get("steps")
    ]
    return max(stages, key=lambda s: s["steps"])["lr"] if stages else None


def _median_val(row: dict[str, Any]) -> float:
    st = _stats(e["val"] for e in row["per_seed"].values() if not e.get("error"))
    return math.inf if st is None else st[0]


def _worst(values: dict[Any, float | None]) -> str:
    if not values:
        return "–"
    seed, worst = max(values.items(), key=lambda kv: _inf(kv[1]))
    return f"{_fmt(_inf(worst))} (seed {seed})"


def _ratio(value: float, best: float) -> str:
    if not math.isfinite(value) or not math.isfinite(best) or best <= 0:
        return "–"
    return f"{value / best:.2f}x"


def _status_cell(statuses: list[str]) -> str:
    dead, bad = statuses.count("dead"), statuses.count("non-finite")
    failed = statuses.count("failed")
    text = f"{dead} / {bad}"
    return text + (f" ({failed} failed)" if failed else "")


def confirmation_table(results: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """A confirmation workload's table: median, worst seed, ratio to the best tuned, dead runs."""
    meta, runs = results["meta"], results["runs"]
    chance = meta.get("chance_loss")
    tuned = [r for r in rows if r["kind"] == "tuned"]
    best = min((_median_val(r) for r in tuned), default=math.inf)
    head = [
        "method",
        "final val loss",
        "worst seed (val)",
        "median val / best tuned",
        "final test loss",
        "dead / non-finite",
        "train time s",
        "search steps",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        ps = row["per_seed"]
        statuses = []
        for seed, e in ps.items():
            run = _find_run(runs, row["method"], seed, e["peak_lr"])
            statuses.append(run_status(run, chance) if run is not None else "failed")
        ok = {k: e for k, e in ps.items() if not e.get("error")}
        label = row["label"]
        if row["kind"] == "tuned":
            grid = meta["lr_grid"]
            lrs = sorted({e["peak_lr"] for e in ok.values()})
            label += " → peak LR " + ", ".join(
                f"{lr:.3g}" + (" (grid edge)" if lr in (grid[0], grid[-1]) else "") for lr in lrs
            )
        search = [e.get("search_steps") for e in ok.values() if e.get("search_steps") is not None]
        cells = [
            label,
            _cell(e["val"] for e in ok.values()),
            _worst({k: e["val"] for k, e in ok.items()}),
            _ratio(_median_val(row), best),
            _cell(e["test"] for e in ok.values()),
            _status_cell(statuses),
            _cell((e["train_time_s"] for e in ok.values()), 3),
            _cell(search, 4) if search else ("0" if row["kind"] != "autolr" else "n/a"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def range_sweep_markdown(sweep: dict[str, Any], rows: list[dict[str, Any]] | None) -> str:
    """The search-range sweep table of one workload (``ranges/<workload>_<mode>.json``).

    Args:
        sweep: the sweep's results.
        rows: :func:`summarize` rows of the same workload and budget, for the ratio to
            the best tuned schedule (None: not run).
    """
    meta, runs = sweep["meta"], sweep["runs"]
    chance = meta.get("chance_loss")
    center = meta["center_lr"]
    tuned = [r for r in rows or [] if r["kind"] == "tuned"]
    best = min((_median_val(r) for r in tuned), default=math.inf)
    out = [
        f"\n#### {meta['workload']}: search-range sweep (T = {meta['total_steps']:,})\n\n"
        f"autolr with search ranges centred in log space on LR {center:.3g} "
        f"({meta['center_source']}). Seeds {meta['seeds']}; run {meta['date']} at commit "
        f"{meta.get('git_commit') or '?'} (autolr sources "
        f"{meta.get('autolr_source_sha256_16')}), {meta['wall_time_s'] / 60:.1f} min. "
        "**median LR / tuned**: per run, the median LR applied over the run "
        "(probes included) divided by the centre LR; median (min–max) over seeds; "
        "**dead runs' LR / tuned**: the same ratio for each dead run (well below 1: "
        "held too small an LR to leave the initial plateau; above 1: a too-large LR "
        "killed it). **held LR / tuned**: per run, the LR of its longest exploit (the "
        "annealed strategy's hold, where a climb off a plateau ended) divided by the "
        "centre LR: the one to set beside the tuned schedules' peak, as the median LR "
        "also counts the search and the final decay.\n\n"
    ]
    head = [
        "method",
        "search range",
        "final val loss",
        "worst seed (val)",
        "median val / best tuned",
        "dead / non-finite",
        "median LR / tuned",
        "held LR / tuned",
        "dead runs' LR / tuned",
        "search steps",
    ]
    out.append("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
    methods = list(dict.fromkeys(r["method"] for r in runs)) or ["autolr"]
    titles = meta.get("range_titles", {})
    for method in methods:
        for label in meta["ranges"]:
            title = titles.get(label, label)
            if label in meta.get("unsupported", []):
                out.append(
                    f"| {method} | {title} | not run: this `AutoLRS` requires min_lr/max_lr |"
                    + " – |" * (len(head) - 3)
                    + "\n"
                )
                continue
            mine = {r["seed"]: r for r in runs if r["method"] == method and r["range"] == label}
            if not mine:
                continue
            ok = {s: r for s, r in mine.items() if not r.get("error")}
            vals = [r["final_val"] for r in ok.values()]
            st = _stats(vals)
            med = math.inf if st is None else st[0]
            lrs = [r["median_lr"] / center for r in ok.values() if r.get("median_lr")]
            held = [lr / center for lr in map(_held_lr, ok.values()) if lr is not None]
            search = [
                r["autolr"].get("search_steps")
                for r in ok.values()
                if r.get("autolr", {}).get("search_steps") is not None
            ]
            dead_lrs = [
                f"{r['median_lr'] / center:.2g}"
                for r in ok.values()
                if run_status(r, chance) == "dead" and r.get("median_lr")
            ]
            cells = [
                method,
                title,
                _cell(vals),
                _worst({s: r["final_val"] for s, r in ok.items()}),
                _ratio(med, best),
                _status_cell([run_status(r, chance) for r in mine.values()]),
                _cell(lrs, 3) if lrs else "–",
                _cell(held, 3) if held else "–",
                ", ".join(dead_lrs) or "–",
                _cell(search, 4) if search else "n/a",
            ]
            out.append("| " + " | ".join(cells) + " |\n")
    return "".join(out)


def confirmation_markdown(
    loaded: list[dict[str, Any]],
    sweeps: list[dict[str, Any]],
    results_dir: Path,
    report_path: Path,
) -> str:
    """The confirmation section: W4-W6 and S1's tables and plots, and the range sweeps.

    Args:
        loaded: the confirmation workloads' results files, in report order.
        sweeps: every range-sweep results file (``ranges/*.json``).
        results_dir: where the plots are saved.
        report_path: the report, for the plots' relative paths.
    """
    if not loaded and not sweeps:
        return ""
    out = [
        "\n## Confirmation workloads (W4, W5, W6, S1): no default is chosen on these\n\n"
        "Workloads no setting of autolr was chosen on: they check that what was chosen "
        "on W1-W3 and S0 carries. Same rules as above (budget T, probe steps inside it, "
        "validation decides). **worst seed**: the highest final validation loss over "
        "seeds. **median val / best tuned**: the row's median final validation loss "
        "over the best tuned schedule's. **dead / non-finite**: runs whose final "
        f"validation loss is at or above {1 - DEAD_TOLERANCE:.0%} of the lower of their "
        "initial validation loss and the chance-level loss (a dead network), and runs "
        "that ended non-finite. Search-range sweeps (these, and those under W1-W3 and S0 "
        "above): `python -m benchmarks.run --workloads W4 --range-decades 1,2,3,4,none "
        "--seeds 5`; `none` gives autolr no range (its range test finds one), `wide` is "
        "[1e-6, 10].\n"
    ]
    left = {_sweep_key(sweep): sweep for sweep in sweeps}
    for res in loaded:
        meta = res["meta"]
        wid, mode = meta["workload"], meta["mode"]
        rows = summarize(res)
        res["summary"] = rows
        name = f"{wid}_{mode}"
        png = results_dir / f"{name}.png"
        plot(res, rows, png)
        out.append(f"\n### {wid} ({mode}): {meta['title']}\n\n" + _meta_line(meta) + "\n")
        out.append("\n" + confirmation_table(res, rows) + "\n")
        verdict = _verdict(rows, meta)
        if verdict:
            out.append("\n" + "\n".join(f"- {v}" for v in verdict) + "\n")
        rel = os.path.relpath(png.resolve(), report_path.resolve().parent)
        out.append(f"\n![{name}]({Path(rel).as_posix()})\n")
        sweep = left.pop(_sweep_key(res), None)
        if sweep is not None:
            out.append(range_sweep_markdown(sweep, rows))
    for sweep in left.values():
        out.append(range_sweep_markdown(sweep, None))
    return "".join(out)


def _sweep_key(results: dict[str, Any]) -> tuple[str, str]:
    """A results file's workload and mode: how a range sweep finds its workload's results."""
    return results["meta"]["workload"], results["meta"]["mode"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--report", type=Path, default=REPORT_PATH)
    args = parser.parse_args(argv)
    build_report(args.results, args.report)
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
