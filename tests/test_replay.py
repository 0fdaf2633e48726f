"""Replay of run logs through the controller: exact reproduction, what-if, bad logs, CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from autolr import AutoLRS, LocalProber, LogFormatError
from autolr.cli import main
from autolr.errors import ConfigError, LogWarning
from autolr.offline.harness import build_forecaster
from autolr.offline.logs import load_run
from autolr.offline.replay import ReplayResult, replay_run
from autolr.offline.whatif import what_if
from autolr.runlog import SCHEMA_VERSION
from tests.conftest import Regression, make_model, train_step


class Trap(nn.Module):
    """A training problem with AutoLRS's weak point built in.

    The loss falls fast at a large LR (> 0.2), then blows up once enough large
    steps have accumulated: probes like large LRs, exploits of them get rolled
    back. The state lives in buffers, so snapshots save and restore it.
    """

    level: torch.Tensor
    heat: torch.Tensor

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.register_buffer("level", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("heat", torch.tensor(0.0, dtype=torch.float64))
        self.gen = torch.Generator().manual_seed(seed)

    def train_step(self, lr: float) -> float:
        noise = 0.02 * float(torch.randn((), generator=self.gen))
        if lr > 0.2:
            self.heat += 1
        else:
            self.heat.sub_(0.5).clamp_(min=0)
        if self.heat > 15:
            self.level *= 1.15
        else:
            self.level -= min(0.9, 3 * lr) * 0.1 * (self.level - 0.1)
        return float(self.level) * (1 + noise)


def write_trap_log(path: Path, total: int = 300, **options) -> AutoLRS:
    """Run AutoLRS on :class:`Trap` and write its run log."""
    model = Trap()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tuner = AutoLRS(
        model, opt, 1e-3, 1.0, total_steps=total, log_path=path, gp_device="cpu", **options
    )
    while not tuner.finished:
        tuner.step(model.train_step(opt.param_groups[0]["lr"]))
    return tuner


def write_regression_log(
    path: Path, *, val: bool, backend: bool, total: int = 240, **options
) -> AutoLRS:
    """Run AutoLRS on the tiny regression task (optionally validation objective / backend)."""
    task = Regression()
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    xv, yv = task.batch_at(10**6)

    def val_fn() -> float:
        with torch.no_grad():
            return float(nn.functional.mse_loss(model(xv), yv))

    prober = None
    if backend:
        prober = LocalProber(
            model,
            opt,
            train_step,
            lambda s, i: task.stream(10**5 * (s + 1)),
            val_fn=val_fn if val else None,
        )
    tuner = AutoLRS(
        model,
        opt,
        1e-3,
        1.0,
        total_steps=total,
        log_path=path,
        gp_device="cpu",
        val_fn=val_fn if val else None,
        prober=prober,
        probes=4,
        **options,
    )
    stream = task.stream()
    while not tuner.finished:
        tuner.step(train_step(model, opt, next(stream)))
    return tuner


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("runs")
    out = {
        "trap": folder / "trap.jsonl",
        "cheap": folder / "cheap.jsonl",
        "val": folder / "val.jsonl",
        "backend": folder / "backend.jsonl",
    }
    # The GP proposes (and warm-starts) in "trap"; the others probe a space-filling
    # design only (initial_probes = probes), which keeps them fast.
    write_trap_log(out["trap"], warmup_steps=12, warm_start=True)
    write_trap_log(out["cheap"], total=240, warmup_steps=6, probes=4, initial_probes=4)
    write_regression_log(out["val"], val=True, backend=False, initial_probes=4)
    write_regression_log(
        out["backend"], val=True, backend=True, parallel_probes=2, initial_probes=4
    )
    return out


@pytest.fixture(scope="module")
def trap_replay(logs: dict[str, Path]) -> ReplayResult:
    return replay_run(logs["trap"])


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ------------------------------------------------------------------ exact replay


def test_replay_reproduces_probes_decisions_and_rollbacks(
    logs: dict[str, Path], trap_replay: ReplayResult
) -> None:
    run = load_run(logs["trap"])
    assert run.of_type("rollback"), "the trap run should have rolled back at least once"
    result = trap_replay
    assert result.matches, [m.describe() for m in result.mismatches]
    assert result.stopped is None
    assert result.compared == len(run.records) - 1
    replayed = result.tuner.log.records
    for kind in ("probe", "decision", "rollback", "exploit_end"):
        mine = [r for r in replayed if r["type"] == kind]
        theirs = run.of_type(kind)
        assert [r["lr"] for r in mine] == [r["lr"] for r in theirs]
    probes = [r for r in replayed if r["type"] == "probe"]
    assert [p["forecast"] for p in probes] == [p["forecast"] for p in run.of_type("probe")]
    counts = result.counts()
    assert counts["rollbacks"] == len(run.of_type("rollback")) >= 1
    assert counts["steps"] == 300


@pytest.mark.parametrize("name", ["val", "backend"])
def test_replay_validation_objective_inline_and_backend(logs: dict[str, Path], name: str) -> None:
    run = load_run(logs[name])
    assert run.objective == "val_loss"
    assert (run.prober is not None) == (name == "backend")
    result = replay_run(run)
    assert result.matches, [m.describe() for m in result.mismatches]


def test_replay_steps_cover_warmup_and_anneal_lrs(trap_replay: ReplayResult) -> None:
    result = trap_replay
    phases = [p for _, _, p, _ in result.steps]
    assert phases[:12] == ["warmup"] * 12
    assert "anneal" in phases
    warm_lrs = [lr for _, lr, p, _ in result.steps if p == "warmup"]
    assert warm_lrs == sorted(warm_lrs) and warm_lrs[0] > 0  # a linear ramp


def test_replay_reports_a_tampered_decision(logs: dict[str, Path], tmp_path: Path) -> None:
    records = lines_of(logs["cheap"])
    probe = next(r for r in records if r["type"] == "probe" and r["stage"] == 1)
    probe["forecast"] = probe["forecast"] + 1.0
    path = write_lines(tmp_path / "tampered.jsonl", records)
    result = replay_run(path)
    assert not result.matches
    first = result.mismatches[0]
    assert first.type == "probe" and first.field == "forecast" and first.stage == 1
    assert "line" in first.describe() and "forecast" in first.describe()


def test_replay_of_a_log_cut_mid_run(logs: dict[str, Path], tmp_path: Path) -> None:
    records = lines_of(logs["cheap"])
    cut = next(i for i, r in enumerate(records) if r["type"] == "stage_start" and r["stage"] == 1)
    path = write_lines(tmp_path / "cut.jsonl", records[: cut + 3])
    result = replay_run(path)
    assert result.matches, [m.describe() for m in result.mismatches]
    assert result.stopped is not None and "probe 1." in result.stopped


@pytest.mark.parametrize("strategy", ["anneal", "forecast"])
def test_replay_of_a_run_killed_in_its_range_test(tmp_path: Path, strategy: str) -> None:
    # No range given: the range is known only once the range test ends.
    path = tmp_path / "killed.jsonl"
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, total_steps=2000, strategy=strategy, log_path=path)
    for batch in Regression(seed=0).stream():
        tuner.step(train_step(model, opt, batch))
        if tuner.global_step == 10:
            break
    result = replay_run(path)
    assert result.matches and result.stopped is not None and "range test" in result.stopped
    assert main(["replay", str(path)]) == 0


# ------------------------------------------------------------------ what-if


def test_what_if_with_the_logged_forecaster_changes_nothing(logs: dict[str, Path]) -> None:
    res = what_if(logs["trap"])
    assert res.stages and not res.skipped
    assert res.changed == []
    for s in res.stages:
        assert s.new_forecasts == s.logged_forecasts
        assert s.bo_departs is None
        assert s.note.startswith("same choice")


def test_what_if_power_law_recomputes_forecasts_and_says_what_is_unknown(
    logs: dict[str, Path],
) -> None:
    run = load_run(logs["trap"])
    res = what_if(run, "power_law", min_value=0.0)
    assert res.forecaster["name"] == "power_law"
    assert len(res.stages) == len(run.stages)
    for s in res.stages:
        assert s.lrs == [p["lr"] for p in run.stage(s.stage).probes]
        assert s.new_forecasts != s.logged_forecasts
        finite = [(f, lr) for f, lr in zip(s.new_forecasts, s.lrs) if f is not None]
        assert s.new_lr == min(finite)[1]  # the controller's rule: lowest forecast wins
        # Each note says what is unknown, and only then.
        unknown = "rolled back" in s.note or "outcome is unknown" in s.note
        assert s.differs == unknown, s.note
        assert (s.bo_departs is not None) == ("no losses for" in s.note), s.note
        assert len(s.bo_lrs) == len(s.lrs)
    # The power law picks another LR in at least one stage of this run, so the
    # notes above were checked where they matter.
    assert any(s.differs for s in res.stages)


def test_what_if_validation_and_backend_runs(logs: dict[str, Path]) -> None:
    for name in ("val", "backend"):
        same = what_if(logs[name])
        assert same.changed == [] and same.stages
        other = what_if(logs[name], trim_outliers=False)
        assert other.forecaster["trim_outliers"] is False


# ------------------------------------------------------------------ bad logs


def test_truncated_last_line_is_skipped_with_a_warning(logs: dict[str, Path], tmp_path) -> None:
    text = logs["cheap"].read_text()
    path = tmp_path / "trunc.jsonl"
    path.write_text(text[: len(text) - 40])
    with pytest.warns(LogWarning, match=r"line \d+: truncated last line skipped"):
        run = load_run(path)
    assert run.records[-1]["type"] != "run_end"


def test_bad_json_before_the_end_is_an_error(logs: dict[str, Path], tmp_path: Path) -> None:
    lines = logs["cheap"].read_text().splitlines()
    lines[3] = lines[3][:20]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LogFormatError, match=r"bad.jsonl, line 4: not valid JSON"):
        load_run(path)


def test_unknown_schema_version(logs: dict[str, Path], tmp_path: Path) -> None:
    records = lines_of(logs["cheap"])
    records[2]["schema_version"] = 99
    with pytest.raises(LogFormatError, match=r"line 3: schema_version=99 is not supported"):
        load_run(write_lines(tmp_path / "v99.jsonl", records))


def test_missing_field_is_named(logs: dict[str, Path], tmp_path: Path) -> None:
    records = lines_of(logs["cheap"])
    i = next(i for i, r in enumerate(records) if r["type"] == "probe")
    del records[i]["train_losses"]
    with pytest.raises(
        LogFormatError, match=rf"line {i + 1}: probe record is missing the field 'train_losses'"
    ):
        load_run(write_lines(tmp_path / "missing.jsonl", records))


def test_nan_losses_are_read_as_null_with_a_warning(logs: dict[str, Path], tmp_path) -> None:
    text = logs["cheap"].read_text().splitlines()
    i = next(i for i, line in enumerate(text) if '"type": "exploit_end"' in line)
    rec = json.loads(text[i])
    rec["losses"][5] = float("nan")
    text[i] = json.dumps(rec)  # writes the NaN token
    assert "NaN" in text[i]
    path = tmp_path / "nan.jsonl"
    path.write_text("\n".join(text) + "\n")
    with pytest.warns(LogWarning, match=rf"line {i + 1}: field 'losses': 1 non-finite"):
        run = load_run(path)
    assert run.stage(rec["stage"]).exploit_end["losses"][5] is None


def test_steps_out_of_order(logs: dict[str, Path], tmp_path: Path) -> None:
    records = lines_of(logs["cheap"])
    i = next(i for i, r in enumerate(records) if r["type"] == "decision")
    records[i]["step"] = 1
    with pytest.raises(LogFormatError, match=rf"line {i + 1}: step 1 comes after step \d+"):
        load_run(write_lines(tmp_path / "order.jsonl", records))


def test_two_runs_in_one_file(logs: dict[str, Path], tmp_path: Path) -> None:
    records = lines_of(logs["cheap"])
    path = write_lines(tmp_path / "two.jsonl", records + records[:3])
    with pytest.raises(LogFormatError, match="second run_start"):
        load_run(path)


def test_wrong_types_and_empty_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(LogFormatError, match="no records"):
        load_run(empty)
    with pytest.raises(LogFormatError, match="no such file"):
        load_run(tmp_path / "absent.jsonl")
    start = {"type": "run_start", "schema_version": 1, "step": 0, "initial_lrs": []}
    start["config"] = {"min_lr": -1.0}  # null is fine (no range given), a negative LR is not
    with pytest.raises(LogFormatError, match=r"line 1: field 'config.min_lr' must be a positive"):
        load_run(write_lines(tmp_path / "config.jsonl", [start]))
    start["config"] = {"min_lr": 1e-3, "max_lr": 1.0}
    bad = {"type": "stage_start", "schema_version": 1, "step": "ten", "stage": 0}
    with pytest.raises(LogFormatError, match=r"line 2: field 'step' must be an int"):
        load_run(write_lines(tmp_path / "types.jsonl", [start, bad]))
    first = {"type": "phase", "schema_version": 1, "step": 0, "phase": "warmup"}
    with pytest.raises(LogFormatError, match="first record must be run_start"):
        load_run(write_lines(tmp_path / "first.jsonl", [first]))


# ------------------------------------------------------------------ CLI


def test_cli_replay_says_it_reproduced(logs: dict[str, Path], capsys) -> None:
    assert main(["replay", str(logs["cheap"])]) == 0
    out = capsys.readouterr().out
    assert "replay reproduces the run exactly" in out
    assert main(["replay", str(logs["cheap"]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["matches"] is True and data["counts"]["rollbacks"] >= 1


def test_cli_replay_what_if_table_and_json(logs: dict[str, Path], capsys) -> None:
    assert main(["replay", str(logs["cheap"]), "--forecaster", "power_law"]) == 0
    out = capsys.readouterr().out
    assert "what-if forecaster: power_law" in out and "would have chosen another LR" in out
    assert main(["replay", str(logs["cheap"]), "--no-trim", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["forecaster"]["trim_outliers"] is False
    assert all("differs" in s for s in data["stages"])


def test_cli_replay_exit_codes_on_bad_and_tampered_logs(
    logs: dict[str, Path], tmp_path: Path, capsys
) -> None:
    records = lines_of(logs["cheap"])
    records[2]["schema_version"] = SCHEMA_VERSION + 1
    bad = write_lines(tmp_path / "bad.jsonl", records)
    assert main(["replay", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "autolr replay: error:" in captured.err
    assert f"schema_version={SCHEMA_VERSION + 1}" in captured.err
    assert "Traceback" not in captured.err
    records = lines_of(logs["cheap"])
    dec = next(r for r in records if r["type"] == "decision")
    dec["lr"] = dec["lr"] * 1.5
    tampered = write_lines(tmp_path / "tampered.jsonl", records)
    assert main(["replay", str(tampered)]) == 1
    out = capsys.readouterr().out
    assert "replay DIFFERS" in out
    # The difference named is the tampered field, with the value written there.
    assert f"decision (stage {dec['stage']}) field 'lr': logged {dec['lr']!r}" in out


def test_another_forecaster_keeps_the_runs_shared_settings(logs: dict[str, Path]) -> None:
    run = load_run(logs["cheap"])
    run.records[0]["forecaster"]["hampel_window"] = 7
    other = build_forecaster(run, "power_law", hampel_k=4.0)
    cfg = other.config()
    assert cfg["name"] == "power_law" and cfg["hampel_window"] == 7 and cfg["hampel_k"] == 4.0
    assert build_forecaster(run).config() == run.forecaster_config


def test_replay_of_a_log_from_before_the_trust_region(tmp_path: Path) -> None:
    # Such logs have no lr_trust or cap_after_rollback setting and no lr_bounds;
    # they searched the whole range every stage with 5 probes a stage under a
    # budget. They also took any remaining candidate after a rollback, which this
    # version no longer does: the replay says it may differ after a rollback.
    path = tmp_path / "old.jsonl"
    write_trap_log(path, total=300, lr_trust=None, probes=5)
    records = lines_of(path)
    assert any(r["type"] == "rollback" for r in records)
    records[0]["config"].pop("lr_trust")
    records[0]["config"]["cap_after_rollback"] = False
    records[0]["config"]["probes"] = None
    for r in records:
        r.pop("lr_bounds", None)
        r["schema_version"] = 1  # a field added within version 1 may be missing there
    old = write_lines(tmp_path / "legacy.jsonl", records)
    result = replay_run(old)
    # The records came from a run that did take only smaller LRs, so they match.
    assert result.matches, [m.describe() for m in result.mismatches]
    cfg = result.tuner.config
    assert cfg.lr_trust is None and cfg.n_probes == 5
    assert any("replay differs after a rollback" in w for w in result.run.warnings)


def test_replay_refuses_a_removed_option_it_cannot_honour(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_trap_log(path, total=300)
    records = lines_of(path)
    records[0]["config"]["decide_by"] = "posterior"
    with pytest.raises(ConfigError, match=r"decide_by='posterior', an option this version"):
        replay_run(write_lines(tmp_path / "old.jsonl", records))


def test_what_if_keeps_the_logged_trust_region(tmp_path: Path) -> None:
    path = tmp_path / "trust.jsonl"
    write_trap_log(path, total=400, lr_trust=2.0, strategy="forecast")
    assert any(r.get("lr_bounds") for r in lines_of(path) if r["type"] == "stage_start")
    res = what_if(path)
    assert res.stages and res.changed == []
    assert all(s.bo_departs is None for s in res.stages)


def test_what_if_refuses_an_annealed_run_and_says_why(tmp_path: Path, capsys) -> None:
    path = tmp_path / "annealed.jsonl"
    write_trap_log(path, total=600)  # the default with a budget: strategy='anneal'
    assert replay_run(path).matches  # replay it can
    with pytest.raises(ConfigError, match=r"strategy='anneal'.*forecasts nothing"):
        what_if(path, "power_law")
    assert main(["replay", str(path), "--forecaster", "power_law"]) == 2
    assert "applies to runs of strategy='forecast'" in capsys.readouterr().err


def test_an_older_annealed_log_that_replays_differently_says_the_start_level_may_be_why(
    tmp_path: Path,
) -> None:
    # Logged before the race read its start loss and noise from the range test: exact
    # as long as its decisions do not depend on that, and no note then.
    fixture = Path(__file__).parent / "fixtures" / "runlogs" / "digits_anneal.jsonl"
    records = lines_of(fixture)
    assert "level" not in next(r for r in records if r["type"] == "stage_start")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LogWarning)
        assert replay_run(fixture).matches and not load_run(fixture).warnings
        dec = next(r for r in records if r["type"] == "decision")
        dec["lr"] *= 1.5
        result = replay_run(write_lines(tmp_path / "older.jsonl", records))
    assert not result.matches
    assert any(
        "read the start loss and noise from the range test" in w for w in result.run.warnings
    )
