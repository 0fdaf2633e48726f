"""The CLI demo runs end to end at a small budget and shows what autolr chose."""

from __future__ import annotations

import json

import pytest

from autolr.cli import main


@pytest.mark.slow
def test_demo_prints_stages_and_writes_log_and_plot(tmp_path, capsys):
    assert main(["demo", "--steps", "800", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "LR chosen" in out and "forecast" in out and "actual" in out
    assert "autolr" in out and "SGD cosine from lr=0.1" in out
    records = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert records[0]["type"] == "run_start" and records[-1]["type"] == "run_end"
    png = (tmp_path / "lr_loss.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_cli_requires_a_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2  # argparse's usage error
    err = capsys.readouterr().err
    assert "usage: autolr" in err and "required: command" in err
