"""What a user sees: warnings that save a run, a line per decision, a summary table."""

from __future__ import annotations

import logging

import pytest
import torch

from autolr import AutoLRS, ConfigError
from autolr.errors import RangeWarning
from autolr.stage import StageRow
from tests.conftest import make_model, train_step


def _run(task, steps, **kw):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tuner = AutoLRS(model, opt, total_steps=steps, **kw)
    for batch in task.stream():
        tuner.step(train_step(model, opt, batch))
        if tuner.finished:
            break
    return tuner


class Slope(torch.nn.Module):
    """A long, noiseless descent: within a small range, the larger the LR the better."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def step(self, opt: torch.optim.Optimizer) -> torch.Tensor:
        opt.zero_grad()
        loss = 1e-3 * (self.w - 100.0) ** 2
        loss.backward()
        opt.step()
        return loss.detach()


@pytest.mark.parametrize(
    ("strategy", "pattern"),
    [
        # The annealed strategy's range test sees the loss still falling far above the range.
        (
            "anneal",
            r"range test found its best lr=.* above the search range given"
            r".*larger max_lr",
        ),
        # The forecast strategy sees its best candidate at the top, stage after stage.
        ("forecast", r"top of the search range.*max_lr=0\.1\)"),
    ],
)
def test_a_range_below_the_right_lr_warns_naming_max_lr(strategy, pattern):
    model = Slope()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    tuner = AutoLRS(model, opt, min_lr=1e-4, max_lr=1e-2, total_steps=600, strategy=strategy)
    with pytest.warns(RangeWarning, match=pattern):
        while not tuner.finished:
            tuner.step(model.step(opt))


@pytest.mark.parametrize(
    ("strategy", "pattern"),
    [
        ("anneal", r"range test found its best lr=.* below the search range given"),
        ("forecast", r"every candidate LR diverged.*smaller min_lr"),
    ],
)
def test_a_range_above_the_right_lr_warns_naming_min_lr(task, strategy, pattern):
    with pytest.warns(RangeWarning, match=pattern) as seen:
        _run(task, 400, min_lr=0.5, max_lr=50.0, strategy=strategy)
    assert len([w for w in seen if issubclass(w.category, RangeWarning)]) == 1  # once a bound


def test_a_good_range_gives_no_range_warning(task, recwarn):
    _run(task, 400, min_lr=1e-3, max_lr=1.0)
    assert not [w for w in recwarn if issubclass(w.category, RangeWarning)]


def test_no_budget_warns_what_the_probes_cost(caplog):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with caplog.at_level(logging.WARNING, logger="autolr.controller"):
        AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0)
    assert "no total_steps given" in caplog.text
    assert "stage 0 alone is 1900 steps of which 1000 are probes" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="autolr.controller"):
        AutoLRS(model, opt, 1e-3, 1.0, 400)
    assert "no total_steps" not in caplog.text


def test_each_decision_is_one_log_line(task, caplog):
    with caplog.at_level(logging.INFO, logger="autolr.controller"):
        tuner = _run(task, 400, min_lr=1e-3, max_lr=1.0)
    lines = [r.getMessage() for r in caplog.records if " chosen (" in r.getMessage()]
    assert len(lines) == len(tuner.log.of_type("decision"))
    assert lines[0].startswith("stage 0: lr=") and "steps so far on search" in lines[0]


def test_summary_rows_are_typed_and_print_as_a_table(task):
    tuner = _run(task, 600, min_lr=1e-3, max_lr=1.0)
    rows = tuner.summary()
    assert rows and all(isinstance(r, StageRow) for r in rows)
    assert [r.stage for r in rows] == list(range(len(rows)))
    assert rows.search_steps == tuner.search_steps and rows.total_steps == 600
    text = str(rows)
    assert text.splitlines()[0].split() == [
        "stage",
        "lr",
        "score",  # the annealed strategy's loss after a cooldown (the forecast strategy's forecast)
        "actual",
        "steps",
        "rollbacks",
    ]
    assert len(text.splitlines()) == len(rows) + 2
    assert f"search: {tuner.search_steps} of 600 steps" in text


def test_a_tau_too_large_for_the_budget_is_named():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(ConfigError, match=r"tau=5000 does not fit total_steps=1000"):
        AutoLRS(model, opt, 1e-3, 1.0, total_steps=1000, tau=5000)
