"""Offline commands: ``replay``, ``forecast-eval``, ``report`` and ``simulate``.

A bad log never ends in a traceback: the command prints what is wrong (file,
line, field) and exits 2. Warnings about skipped or repaired data go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

from autolr.cli import print_table
from autolr.errors import AutoLRError
from autolr.runlog import clean

EXIT_MISMATCH = 1
EXIT_BAD_INPUT = 2


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _json(data: Any) -> None:
    _out(json.dumps(clean(data), indent=2, allow_nan=False))


def _guarded(name: str, func: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Run a command; turn autolr and file errors into a message and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                code = func(args)
            except (AutoLRError, OSError) as exc:
                code = EXIT_BAD_INPUT
                _err(f"autolr {name}: error: {exc}")
            except Exception as exc:  # noqa: BLE001 - a malformed input must not end in a traceback
                if getattr(args, "verbose", False):
                    raise
                code = EXIT_BAD_INPUT
                _err(
                    f"autolr {name}: error: {type(exc).__name__}: {exc} "
                    "(run `autolr -v ...` for the traceback)"
                )
        seen = set()
        for w in caught:
            msg = str(w.message)
            if msg not in seen and issubclass(w.category, UserWarning):
                seen.add(msg)
                _err(f"autolr {name}: warning: {msg}")
        return code

    return run


# --------------------------------------------------------------------------- replay


def cmd_replay(args: argparse.Namespace) -> int:
    from autolr.replay import load_run, replay_run, what_if

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
            _json(result.to_dict())
            return 0 if result.matches else EXIT_MISMATCH
        counts = result.counts()
        rows = [
            [
                str(r["stage"]),
                str(r["tau"]),
                str(r["tau_probe"]),
                f"{r['probes']} ({r['diverged']} div.)",
                _fmt(r["chosen_lr"]),
                _fmt(r["chosen_forecast"]),
                str(r["rollbacks"]),
                _fmt(r["final_lr"]),
                _fmt(r["actual"]),
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
        _out()
        if result.matches:
            _out(
                f"replay reproduces the run exactly: {result.compared} records compared, "
                f"{counts['stages']} stages, {counts['probes']} probes, {counts['decisions']} "
                f"decisions, {counts['rollbacks']} rollbacks, {counts['steps']} steps"
            )
            if result.stopped:
                _out(f"(the log ends early: {result.stopped})")
            return 0
        _out(f"replay DIFFERS from the log ({len(result.mismatches)} difference(s) shown):")
        for m in result.mismatches:
            _out(f"  {m.describe()}")
        if result.stopped:
            _out(f"replay stopped: {result.stopped}")
        return EXIT_MISMATCH
    res = what_if(run, args.forecaster, **options)
    if args.json:
        _json(res.to_dict())
        return 0
    logged = run.forecaster_config or {"name": run.config.get("forecaster")}
    _out(f"logged forecaster: {_describe_fc(logged)}")
    _out(f"what-if forecaster: {_describe_fc(res.forecaster)}")
    _out()
    rows = []
    for s in res.stages:
        rows.append(
            [
                str(s.stage),
                str(len(s.lrs)),
                _fmt(s.logged_lr),
                _fmt(_forecast_at(s.logged_forecasts, s.lrs, s.logged_lr)),
                _fmt(s.new_lr),
                _fmt(s.new_forecast),
                _fmt(s.actual),
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
    _out()
    for s in res.stages:
        _out(f"stage {s.stage}: {s.note}")
    for stage, why in sorted(res.skipped.items()):
        _out(f"stage {stage}: not re-decided: {why}")
    changed = res.changed
    _out()
    _out(
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


def _bool_flag(parser: argparse.ArgumentParser, name: str, help_: str) -> None:
    parser.add_argument(
        f"--{name}", dest=name.replace("-", "_"), action="store_true", default=None, help=help_
    )
    parser.add_argument(
        f"--no-{name}", dest=name.replace("-", "_"), action="store_false", help=f"do not {help_}"
    )


# --------------------------------------------------------------------------- forecast-eval


def _ints(text: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return out


def _fraction_or_none(text: str) -> float | None:
    if text.lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def cmd_forecast_eval(args: argparse.Namespace) -> int:
    from autolr.forecast_eval import evaluate_forecasts
    from autolr.importers import load_loss_log

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
        _json(res.to_dict())
        return 0
    _out(
        f"{log.path}: {len(log)} points of {log.name!r} ({log.source}), steps "
        f"{log.steps[0]}..{log.steps[-1]}" + (f", LR from {log.lr_name!r}" if log.lr_name else "")
    )
    _out("error of the loss forecast tau steps after a window of tau_probe steps")
    _out()
    headers, rows = res.table()
    print_table(headers, rows)
    for note in res.notes:
        _out(f"note: {note}")
    _out()
    if res.recommendation is None:
        _out("no recommendation: too few windows")
        return 0
    for rec in res.by_horizon:
        _out(f"tau={rec.tau}: {rec.reason}")
    rec = res.recommendation
    _out()
    _out(
        f"recommended: tau_probe={rec.tau_probe} for tau={rec.tau} "
        f"(probe_fraction={rec.tau_probe / rec.tau:.2g}), forecaster={rec.forecaster}"
    )
    return 0


# --------------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace) -> int:
    from autolr.report import write_report

    files = write_report(args.run, args.out, replay=not args.no_replay)
    _out(f"png:  {files.png}")
    _out(f"html: {files.html}")
    return 0


# --------------------------------------------------------------------------- simulate


def cmd_simulate(args: argparse.Namespace) -> int:
    from autolr.replay import simulate_nqm

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
        _json(res.to_dict())
        return 0
    print_table(
        ["schedule", "expected final loss", "steps"],
        [
            ["autolr", _fmt(res.expected_loss), f"{res.total_steps} ({res.search_steps} probing)"],
            ["optimal (exact)", _fmt(res.optimal_loss), str(res.total_steps)],
            [
                f"best constant lr={res.optimal_constant_lr:.3g}",
                _fmt(res.optimal_constant_loss),
                str(res.total_steps),
            ],
        ],
    )
    _out()
    _out(
        f"regret {res.regret:.4g} ({res.expected_loss / res.optimal_loss:.2f}x the optimum); "
        f"{res.schedule.numel()} of {res.total_steps} steps are in the final parameters' history"
    )
    if res.log_path:
        _out(f"run log: {res.log_path}")
    return 0


# --------------------------------------------------------------------------- parsers


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a run log through the controller; with forecaster options, re-decide",
        description=(
            "Without options: feed the logged losses back through the controller and check "
            "that it takes the logged decisions (exit 1 if not). With forecaster options: "
            "re-decide every stage from its logged probes and show which stages change."
        ),
    )
    p.add_argument("run", help="run log (JSON lines) written by autolr")
    p.add_argument("--forecaster", help="forecaster to re-decide with (exponential, power_law)")
    _bool_flag(p, "trim", "trim outliers before fitting")
    p.add_argument("--hampel-window", type=int, help="Hampel filter window (odd, >= 3)")
    p.add_argument("--hampel-k", type=float, help="Hampel threshold in robust sd")
    p.add_argument("--min-value", type=float, help="floor of the forecasts (e.g. 0)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_guarded("replay", cmd_replay))

    p = sub.add_parser(
        "forecast-eval",
        help="how well short windows of a logged loss curve forecast the loss further on",
    )
    p.add_argument(
        "log",
        help="TensorBoard events, Lightning metrics.csv, HF trainer_state.json, "
        "or a CSV/JSONL with step, loss[, lr]",
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "tensorboard", "lightning", "hf", "csv", "jsonl"],
    )
    p.add_argument("--name", help="loss tag/column/key (default: guessed)")
    p.add_argument("--lr-name", help="LR tag/column/key (default: guessed)")
    p.add_argument("--tau", type=_ints, help="horizons in steps, e.g. 200,500")
    p.add_argument("--tau-probe", type=_ints, help="probe lengths in steps, e.g. 10,20,50")
    p.add_argument("--target-tau", type=int, help="horizon of the main recommendation")
    p.add_argument("--forecasters", default="exponential,power_law")
    p.add_argument("--max-windows", type=int, default=48)
    p.add_argument(
        "--max-lr-change",
        type=_fraction_or_none,
        default=0.1,
        help="leave out windows whose LR changes by more than this fraction ('none': keep all)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_guarded("forecast-eval", cmd_forecast_eval))

    p = sub.add_parser("report", help="PNG and self-contained HTML of a run log")
    p.add_argument("run", help="run log (JSON lines) written by autolr")
    p.add_argument("-o", "--out", help="output folder (default: the log's folder)")
    p.add_argument("--no-replay", action="store_true", help="skip the replay check")
    p.set_defaults(func=_guarded("report", cmd_report))

    p = sub.add_parser(
        "simulate", help="run autolr on the noisy quadratic model and score it exactly"
    )
    p.add_argument("--steps", type=int, default=400, help="step budget, probes included")
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--forecaster", default="exponential")
    p.add_argument("--probes", type=int)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--out", help="run log to write")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_guarded("simulate", cmd_simulate))
