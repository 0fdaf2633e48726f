"""The ``autolr`` command line.

This module only parses arguments and dispatches: each command names its handler
as ``"module:function"``, imported when the command runs (the offline handlers
live in :mod:`autolr.offline.commands`, the demo's in :mod:`autolr.demo`). A
handler takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

DESCRIPTION = (
    "autolr: tune the learning rate of a PyTorch run while it trains (AutoLRS), "
    "and read, replay and report its run logs."
)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, flags)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or isinstance(action.default, bool) or "%(default)" in text:
            return text
        return super()._get_help_string(action) or text


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


def _bool_flag(parser: argparse.ArgumentParser, name: str, help_: str) -> None:
    parser.add_argument(
        f"--{name}", dest=name.replace("-", "_"), action="store_true", default=None, help=help_
    )
    parser.add_argument(
        f"--no-{name}", dest=name.replace("-", "_"), action="store_false", help=f"do not {help_}"
    )


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="train an MLP on scikit-learn's digits with autolr")
    p.add_argument("--steps", type=int, default=3000, help="training steps per run")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the data split, the models and autolr"
    )
    p.add_argument(
        "--strategy",
        choices=("anneal", "forecast"),
        help="autolr's decision rule (default: autolr's default, anneal with a budget)",
    )
    p.add_argument("--out", default="autolr_runs/demo", help="output folder")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.set_defaults(handler="autolr.demo:demo_command")


def _add_replay(sub: Any) -> None:
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
    p.set_defaults(handler="autolr.offline.commands:cmd_replay")


def _add_forecast_eval(sub: Any) -> None:
    p = sub.add_parser(
        "forecast-eval",
        help="how well short windows of a logged loss curve forecast the loss further on",
    )
    p.add_argument(
        "log",
        help="TensorBoard events, Lightning metrics.csv, HF trainer_state.json, "
        "a CSV/JSONL with step, loss[, lr], or an autolr run log",
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "tensorboard", "lightning", "hf", "csv", "jsonl", "autolr"],
        help="format of the log ('auto': guessed from the name and the first line; "
        "'autolr': an autolr run log, read as the kept model's training curve)",
    )
    p.add_argument("--name", help="loss tag/column/key (default: guessed)")
    p.add_argument("--lr-name", help="LR tag/column/key (default: guessed)")
    p.add_argument("--tau", type=_ints, help="horizons in steps, e.g. 200,500")
    p.add_argument("--tau-probe", type=_ints, help="probe lengths in steps, e.g. 10,20,50")
    p.add_argument("--target-tau", type=int, help="horizon of the main recommendation")
    p.add_argument(
        "--forecasters",
        default="exponential,power_law",
        help="forecasters to compare, separated by commas",
    )
    p.add_argument(
        "--max-windows",
        type=int,
        default=48,
        help="most windows tested per (tau_probe, tau), spread evenly over the log",
    )
    p.add_argument(
        "--max-lr-change",
        type=_fraction_or_none,
        default=0.1,
        help="leave out windows whose LR changes by more than this fraction ('none': keep all)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler="autolr.offline.commands:cmd_forecast_eval")


def _add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="PNG and self-contained HTML of a run log")
    p.add_argument("run", help="run log (JSON lines) written by autolr")
    p.add_argument("-o", "--out", help="output folder (default: the log's folder)")
    p.add_argument("--no-replay", action="store_true", help="skip the replay check")
    p.set_defaults(handler="autolr.offline.commands:cmd_report")


def _add_simulate(sub: Any) -> None:
    p = sub.add_parser(
        "simulate", help="run autolr on the noisy quadratic model and score it exactly"
    )
    p.add_argument("--steps", type=int, default=400, help="step budget, probes included")
    p.add_argument("--dim", type=int, default=50, help="coordinates of the problem (curvature 1/i)")
    p.add_argument(
        "--batch-size", type=int, default=8, help="minibatch size (gradient noise variance c/B)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the gradient noise and the controller"
    )
    p.add_argument("--forecaster", default="exponential", help="autolr's forecaster")
    p.add_argument("--probes", type=int, help="probes per stage (default: autolr's plan)")
    p.add_argument("--warmup-steps", type=int, default=0, help="autolr's warmup_steps")
    p.add_argument("--out", help="run log to write (default: none)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler="autolr.offline.commands:cmd_simulate")


COMMANDS = [_add_demo, _add_replay, _add_forecast_eval, _add_report, _add_simulate]


def build_parser() -> argparse.ArgumentParser:
    from autolr import __version__

    parser = argparse.ArgumentParser(
        prog="autolr", description=DESCRIPTION, formatter_class=_Formatter
    )
    parser.add_argument(
        "--version", action="version", version=f"autolr {__version__}", help="print the version"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log autolr's decisions")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for command in sub.choices.values():
        command.formatter_class = _Formatter
    return parser


def _handler(spec: str) -> Callable[[argparse.Namespace], int]:
    module, name = spec.split(":")
    func: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    return func


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return int(_handler(args.handler)(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
