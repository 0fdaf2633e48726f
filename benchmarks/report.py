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
WORKLOAD_ORDER = ("W1", "W2", "W3", "S0")


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
    labels = LR_FREE_LABELS | {v.name: v.label for v in autolr_hook.VARIANTS.values()}
    for method, label in labels.items():
        mine = [r for r in runs if r["method"] == method]
        if mine:
            rows.append(
                {
                    "label": label,
                    "method": method,
                    "kind": "autolr" if method in autolr_hook.VARIANTS else "lr-free",
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
        if row["kind"] in ("autolr", "lr-free"):
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

Generated by `python -m benchmarks.run` (tables and plots from the JSON files in
`benchmarks/results/`; `python -m benchmarks.report` rebuilds this page from them).
Do not edit by hand.

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
  the grid gets.
- **target**: the lowest final validation loss of any grid run of the same seed.
  "steps to target" is the first evaluation at or below it (evaluations are spaced
  T / evaluations apart); "(k/n)" counts the seeds that reached it. Train time
  excludes evaluation.
- Validation decides (grid selection, autolr's objective is the training loss);
  test loss is reported only. S0 has no data: its val and test loss are the exact
  noise-free loss 0.5 * sum(h * theta^2); the "exact E[loss]" column is the
  expectation over gradient noise of a fixed SGD schedule, so its regret against
  the optimal schedule is exact.
- "div." = the run diverged (non-finite loss or parameters). "(grid edge)" marks a
  tuned peak LR at the end of the grid: the grid may not contain the best LR.
"""


def build_report(results_dir: Path = RESULTS_DIR, report_path: Path = REPORT_PATH) -> str:
    """Summarize every ``*.json`` in ``results_dir``, save the plots, write ``report_path``."""
    files = sorted(results_dir.glob("*.json"))
    loaded = [json.loads(f.read_text()) for f in files]

    def order(res: dict[str, Any]) -> tuple[int, int, str]:
        wid = res["meta"]["workload"]
        idx = WORKLOAD_ORDER.index(wid) if wid in WORKLOAD_ORDER else len(WORKLOAD_ORDER)
        return (0 if res["meta"]["mode"] == "full" else 1, idx, res["meta"]["mode"])

    parts = [HEADER]
    if not loaded:
        parts.append("\nNo results yet: run `python -m benchmarks.run --quick`.\n")
    current_mode = None
    for res in sorted(loaded, key=order):
        meta = res["meta"]
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
    text = "".join(parts)
    report_path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--report", type=Path, default=REPORT_PATH)
    args = parser.parse_args(argv)
    build_report(args.results, args.report)
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
