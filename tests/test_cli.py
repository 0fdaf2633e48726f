"""The CLI: the demo end to end at a small budget; version and help of every option."""

from __future__ import annotations

import argparse
import json

import pytest

import autolr
from autolr.cli import build_parser, main


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [None, "forecast"])
def test_demo_prints_stages_and_writes_log_and_plot(tmp_path, capsys, strategy):
    chosen = [] if strategy is None else ["--strategy", strategy]
    assert main(["demo", "--steps", "800", "--out", str(tmp_path), *chosen]) == 0
    out = capsys.readouterr().out
    assert "LR chosen" in out and "actual" in out
    if strategy is None:  # the default with a budget: range test, race scored after cooldowns
        assert "Range test:" in out and "score" in out and "forecast" not in out.split("Why")[0]
    else:
        assert "Range test:" not in out and "forecast" in out
    assert "autolr" in out and "SGD cosine from lr=0.1" in out
    records = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    # Why: one line per exploited stage, each candidate with its forecast, the chosen one marked.
    why = [line for line in out.splitlines() if line.startswith("  stage ")]
    stages = [r for r in records if r["type"] == "exploit_end"]
    assert len(why) == len(stages) > 0 and all(line.count("*") <= 1 for line in why)
    assert any("*" in line for line in why)
    assert "On this seed autolr ends" in out
    assert records[0]["type"] == "run_start" and records[-1]["type"] == "run_end"
    png = (tmp_path / "lr_loss.png").read_bytes()
    assert png.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("steps", "message"), [("100", "total_steps=100 is too small"), ("0", "got 0")]
)
def test_a_demo_budget_it_cannot_run_is_one_line_and_exit_2(tmp_path, capsys, steps, message):
    assert main(["demo", "--steps", steps, "--out", str(tmp_path), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert "autolr demo: error: " in err and message in err and "Traceback" not in err


def test_cli_requires_a_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2  # argparse's usage error
    err = capsys.readouterr().err
    assert "usage: autolr" in err and "required: COMMAND" in err


def test_version_is_printed(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"autolr {autolr.__version__}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_has_help_and_shows_its_default(capsys):
    parser = build_parser()
    commands = _subparsers(parser)
    assert set(commands) == {"demo", "replay", "forecast-eval", "report", "simulate"}
    for name, command in [("autolr", parser), *commands.items()]:
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, (name, action.dest)
        text = command.format_help()
        for action in command._actions:
            default = action.default
            if action.option_strings and default not in (None, False, True, argparse.SUPPRESS):
                assert f"(default: {default})" in " ".join(text.split()), (name, action.dest)
    top = parser.format_help()
    assert "``" not in top and "autolr: tune the learning rate" in top
    with pytest.raises(SystemExit) as exit_:
        main(["forecast-eval", "--help"])
    assert exit_.value.code == 0
    assert "(default: exponential,power_law)" in " ".join(capsys.readouterr().out.split())
