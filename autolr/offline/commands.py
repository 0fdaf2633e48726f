"""Offline commands: ``replay``, ``forecast-eval``, ``report`` and ``simulate``.

Their arguments are parsed in :mod:`autolr.cli`; each handler here takes the
parsed arguments and returns the exit code. A bad log never ends in a
traceback: the command prints what is wrong (file, line, field) and exits 2.
Warnings about skipped or repaired data go to stderr.
"""

from __future__ import annotations

import argparse
import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

from autolr.console import err, fmt, out, print_json, print_table
from autolr.errors import AutoLRError

EXIT_MISMATCH = 1
EXIT_BAD_INPUT = 2

Handler = Callable[[argparse.Namespace], int]


def _guarded(name: str) -> Callable[[Handler], Handler]:
    """Run a command; turn autolr and file errors into a message and exit code 2."""

    def wrap(func: Handler) -> Handler:
        @functools.wraps(func)
        def run(args: argparse.Namespace) -> int:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    code = func(args)
                except (AutoLRError, OSError) as exc:
                    code = EXIT_BAD_INPUT
                    err(f"autolr {name}: error: {exc}")
                except Exception as exc:  # noqa: BLE001 - a malformed input must not end in a traceback
                    if getattr(args, "verbose", False):
                        raise
                    code = EXIT_BAD_INPUT
                    err(
                        f"autolr {name}: error: {type(exc).__name__}: {exc} "
                        "(run `autolr -v ...` for the traceback)"
                    )
            seen = set()
            for w in caught:
                msg = str(w.message)
                if msg not in seen and issubclass(w.category, UserWarning):
                    seen.add(msg)
                    err(f"autolr {name}: warning: {msg}")
            return code

        return run

    return wrap


# --------------------------------------------------------------------------- replay


def _resumed(run: Any) -> str:
    """A line on a resumed run's segments ('' for an uninterrupted run)."""
    steps = [r["step"] for r in run.resumes]
    if not steps:
        return ""
    return (
        f"(one run across {len(steps) + 1} segments: resumed at step(s) "
        f"{', '.join(map(str, steps))}; {len(run.abandoned)} record(s) of redone work set aside)"
    )


@_guarded("replay")
def cmd_replay(args: argparse.Namespace) -> int:
    from autolr.offline.logs import load_run
    from autolr.offline.replay import replay_run
    from autolr.offline.whatif import what_if

    run = load_run(args.run)
    options = {
        "trim_outliers": args.trim,
        "hampel_window": args.hampel_window,
        "hampel_k": args.hampel_k,
        "min_value": args.min_value,
    }
    if args.forecaster is None and all(v is None for v in options.values()):
        result = replay_run(run)
        if args.json:
            print_json(result.to_dict())
            return 0 if result.matches else EXIT_MISMATCH
        counts = result.counts()
        rows = [
            [
                str(r["stage"]),
                str(r["tau"]),
                str(r["tau_probe"]),
                f"{r['probes']} ({r['diverged']} div.)",
                fmt(r["chosen_lr"]),
                fmt(r["chosen_forecast"]),
                str(r["rollbacks"]),
                fmt(r["final_lr"]),
                fmt(r["actual"]),
                "yes" if r["reproduced"] else "NO",
            ]
            for r in result.stage_rows()
        ]
        print_table(
            [
                "stage",
                "tau",
                "tau_probe",
                "probes",
                "LR chosen",
                "forecast",
                "rollbacks",
                "final LR",
                "actual",
                "reproduced",
            ],
            rows,
        )
        out()
        if result.matches:
            out(
                f"replay reproduces the run exactly: {result.compared} records compared, "
                f"{counts['stages']} stages, {counts['probes']} probes, {counts['decisions']} "
                f"decisions, {counts['rollbacks']} rollbacks, {counts['steps']} steps"
            )
            if result.stopped:
                out(f"(the log ends early: {result.stopped})")
            resumed = _resumed(run)
            if resumed:
                out(resumed)
            return 0
        out(f"replay DIFFERS from the log ({len(result.mismatches)} difference(s) shown):")
        for m in result.mismatches:
            out(f"  {m.describe()}")
        if result.stopped:
            out(f"replay stopped: {result.stopped}")
        return EXIT_MISMATCH
    res = what_if(run, args.forecaster, **options)
    if args.json:
        print_json(res.to_dict())
        return 0
    logged = run.forecaster_config or {"name": run.config.get("forecaster")}
    out(f"logged forecaster: {_describe_fc(logged)}")
    out(f"what-if forecaster: {_describe_fc(res.forecaster)}")
    out()
    rows = []
    for s in res.stages:
        rows.append(
            [
                str(s.stage),
                str(len(s.lrs)),
                fmt(s.logged_lr),
                fmt(_forecast_at(s.logged_forecasts, s.lrs, s.logged_lr)),
                fmt(s.new_lr),
                fmt(s.new_forecast),
                fmt(s.actual),
                "CHANGED" if s.differs else "same",
            ]
        )
    print_table(
        [
            "stage",
            "probes",
            "logged LR",
            "its forecast",
            "what-if LR",
            "its forecast",
            "loss reached",
            "decision",
        ],
        rows,
    )
    out()
    for s in res.stages:
        out(f"stage {s.stage}: {s.note}")
    for stage, why in sorted(res.skipped.items()):
        out(f"stage {stage}: not re-decided: {why}")
    changed = res.changed
    out()
    out(
        f"{len(changed)} of {len(res.stages)} stage(s) would have chosen another LR"
        + (f": {', '.join(map(str, changed))}" if changed else "")
        + ". 'loss reached' is the logged run's, at its final LR of each stage."
    )
    return 0


def _forecast_at(values: list[float | None], lrs: list[float], lr: float | None) -> float | None:
    if lr is None:
        return None
    for v, x in zip(values, lrs):
        if math.isclose(x, lr, rel_tol=1e-9):
            return v
    return None


def _describe_fc(cfg: dict[str, Any]) -> str:
    keys = ("trim_outliers", "hampel_window", "hampel_k", "min_value")
    extra = ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg)
    return f"{cfg.get('name')} ({extra})" if extra else str(cfg.get("name"))


# --------------------------------------------------------------------------- forecast-eval


@_guarded("forecast-eval")
def cmd_forecast_eval(args: argparse.Namespace) -> int:
    from autolr.offline.forecast_eval import evaluate_forecasts
    from autolr.offline.importers import load_loss_log

    log = load_loss_log(args.log, format=args.format, name=args.name, lr_name=args.lr_name)
    res = evaluate_forecasts(
        log,
        taus=args.tau,
        tau_probes=args.tau_probe,
        forecasters=[f.strip() for f in args.forecasters.split(",") if f.strip()],
        target_tau=args.target_tau,
        max_windows=args.max_windows,
        max_lr_change=args.max_lr_change,
    )
    if args.json:
        print_json(res.to_dict())
        return 0
    out(
        f"{log.path}: {len(log)} points of {log.name!r} ({log.source}), steps "
        f"{log.steps[0]}..{log.steps[-1]}" + (f", LR from {log.lr_name!r}" if log.lr_name else "")
    )
    out("error of the loss forecast tau steps after a window of tau_probe steps")
    out()
    headers, rows = res.table()
    print_table(headers, rows)
    for note in res.notes:
        out(f"note: {note}")
    out()
    if res.recommendation is None:
        out("no recommendation: too few windows")
        return 0
    for rec in res.by_horizon:
        out(f"tau={rec.tau}: {rec.reason}")
    rec = res.recommendation
    out()
    out(
        f"recommended: tau_probe={rec.tau_probe} for tau={rec.tau} "
        f"(probe_fraction={rec.tau_probe / rec.tau:.2g}), forecaster={rec.forecaster}"
    )
    return 0


# --------------------------------------------------------------------------- report


@_guarded("report")
def cmd_report(args: argparse.Namespace) -> int:
    from autolr.offline.report import write_report

    files = write_report(args.run, args.out, replay=not args.no_replay)
    out(f"png:  {files.png}")
    out(f"html: {files.html}")
    return 0


# --------------------------------------------------------------------------- simulate


@_guarded("simulate")
def cmd_simulate(args: argparse.Namespace) -> int:
    from autolr.offline.simulate import simulate_nqm

    options: dict[str, Any] = {"forecaster": args.forecaster}
    if args.probes is not None:
        options["probes"] = args.probes
    if args.warmup_steps:
        options["warmup_steps"] = args.warmup_steps
    res = simulate_nqm(
        args.steps,
        dim=args.dim,
        batch_size=args.batch_size,
        seed=args.seed,
        log_path=args.out,
        **options,
    )
    if args.json:
        print_json(res.to_dict())
        return 0
    print_table(
        ["schedule", "expected final loss", "steps"],
        [
            ["autolr", fmt(res.expected_loss), f"{res.total_steps} ({res.search_steps} probing)"],
            ["optimal (exact)", fmt(res.optimal_loss), str(res.total_steps)],
            [
                f"best constant lr={res.optimal_constant_lr:.3g}",
                fmt(res.optimal_constant_loss),
                str(res.total_steps),
            ],
        ],
    )
    out()
    out(
        f"regret {res.regret:.4g} ({res.expected_loss / res.optimal_loss:.2f}x the optimum); "
        f"{res.schedule.numel()} of {res.total_steps} steps are in the final parameters' history"
    )
    if res.log_path:
        out(f"run log: {res.log_path}")
    return 0
