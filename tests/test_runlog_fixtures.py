"""Run logs written by earlier versions still read and replay exactly.

The logs in ``tests/fixtures/runlogs`` were written by the controller (see
``make_fixtures.py`` there); they are kept as written, not regenerated with the code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autolr.offline.logs import load_run
from autolr.offline.replay import replay_run

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "runlogs").glob("*.jsonl"))


def test_fixtures_cover_the_log_features() -> None:
    runs = {p.stem: load_run(p) for p in FIXTURES}
    assert {"digits_train", "digits_val", "digits_prober", "digits_warmup_anneal", "nqm"} <= set(
        runs
    )
    assert runs["digits_train"].of_type("rollback")
    assert runs["digits_val"].objective == "val_loss"
    assert runs["digits_prober"].prober == "LocalProber"
    assert runs["digits_prober"].config["parallel_probes"] == 2
    phases = [r["phase"] for r in runs["digits_warmup_anneal"].of_type("phase")]
    assert phases[:1] == ["warmup"] and "anneal" in phases
    # The annealed strategy's log, schema version 2: range test, cooldown branches.
    anneal = runs["digits_anneal"]
    assert {r["schema_version"] for r in anneal.records} == {2}
    assert anneal.of_type("range_test") and anneal.config["strategy"] == "anneal"
    (start,) = anneal.of_type("stage_start")
    assert start["cool"] > 0 and len(anneal.of_type("probe")) == start["probes"]
    assert anneal.of_type("decision")[0]["decay_steps"] > 0
    # Schema version 3: the race's start level and noise from the range test's first steps.
    noisy = runs["noisy_anneal"]
    assert {r["schema_version"] for r in noisy.records} == {3}
    (start,) = noisy.of_type("stage_start")
    level, noise = start["level"]
    assert start["cool"] > 0 and noise > 0.5 * level  # a loss as noisy as its level
    old = [p for name, p in runs.items() if name not in ("digits_anneal", "noisy_anneal")]
    assert all(r["schema_version"] == 1 for run in old for r in run.records)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_replays_exactly(path: Path) -> None:
    # Older logs lack the fields added since (run_start.strategy): read leniently.
    result = replay_run(load_run(path))
    assert result.stopped is None
    assert result.matches, [m.describe() for m in result.mismatches]
    assert result.compared == len(result.run.records) - 1
    assert not result.run.warnings
