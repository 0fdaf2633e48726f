"""Bad input gets a clear error that names the value, and never touches the model."""

from __future__ import annotations

import math

import pytest
import torch

from autolr import AutoLRS, ConfigError, InputError
from autolr.config import AutoLRSConfig
from tests.conftest import make_model


def _tuner(**kw):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    args = {"min_lr": 1e-3, "max_lr": 1.0, "total_steps": 2000}
    args.update(kw)
    return AutoLRS(model, opt, **args)


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"min_lr": 0.5, "max_lr": 0.5}, r"min_lr=0\.5 >= max_lr=0\.5"),
        ({"min_lr": 1.0, "max_lr": 0.1}, r"min_lr=1\.0 >= max_lr=0\.1"),
        ({"min_lr": 0.0}, r"min_lr must be a positive finite number, got 0\.0"),
        ({"min_lr": -1e-3}, r"min_lr must be a positive finite number, got -0\.001"),
        ({"max_lr": math.nan}, r"max_lr must be a positive finite number, got nan"),
        ({"max_lr": math.inf}, r"max_lr must be a positive finite number, got inf"),
        ({"min_lr": "0.1"}, r"min_lr must be a positive number, got '0\.1'"),
        ({"total_steps": 0}, r"total_steps must be an integer >= 1, got 0"),
        ({"total_steps": 40}, r"total_steps=40 is too small for strategy='anneal'.*'forecast'"),
        (
            {"total_steps": 40, "strategy": "forecast"},
            r"total_steps=40 is too small for one stage",
        ),
        ({"probes": 0}, r"probes must be an integer >= 1, got 0"),
        (
            {"decide_by": "vote"},
            r"unknown AutoLRS options \['decide_by'\]; allowed: \[.*'guard_factor'",
        ),
        ({"keep_winner": 1}, r"keep_winner must be True or False, got 1"),
        ({"strategy": "vote"}, r"strategy must be one of \('forecast', 'anneal'\), got 'vote'"),
        ({"decay_shape": "step"}, r"decay_shape must be one of .*got 'step'"),
        ({"strategy": "anneal", "total_steps": None}, r"strategy='anneal' needs total_steps"),
        ({"guard_factor": 0.9}, r"guard_factor must be above 1, got 0\.9"),
        ({"lr_trust": 1.0}, r"lr_trust must be above 1 \(or None\), got 1\.0"),
        ({"lr_trust": -2}, r"lr_trust must be a positive finite number, got -2"),
        ({"lr_trust": "2"}, r"lr_trust must be a positive number, got '2'"),
        ({"anneal_fraction": 1.5}, r"anneal_fraction must be in \[0\.0, 0\.9\], got 1\.5"),
        ({"gp_device": "tpu9"}, r"gp_device must be 'auto' or a torch device, got 'tpu9'"),
        ({"tau": 100, "tau_probe": 200}, r"tau_probe must be <= tau, got tau_probe=200 > tau=100"),
    ],
)
def test_bad_settings_name_the_value(kw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        _tuner(**kw)


def test_bad_settings_leave_model_and_optimizer_untouched():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError):
        AutoLRS(model, opt, min_lr=1.0, max_lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_optimizer_without_param_groups():
    class Empty:
        param_groups: list = []

    with pytest.raises(ConfigError, match="optimizer has no param groups"):
        AutoLRS(make_model(), Empty(), min_lr=1e-3, max_lr=1.0)  # type: ignore[arg-type]


def test_wrong_model_and_optimizer_types():
    model = make_model()
    with pytest.raises(InputError, match="model must be a torch.nn.Module, got str"):
        AutoLRS("model", torch.optim.SGD(model.parameters(), lr=0.1), 1e-3, 1.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="optimizer must be a torch.optim.Optimizer, got dict"):
        AutoLRS(model, {}, 1e-3, 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("loss", "pattern"),
    [
        (torch.ones(3), r"got a tensor of shape \(3,\)"),
        ("0.5", r"got str: '0\.5'"),
        ([0.5], r"got list: \[0\.5\]"),
        (None, r"got NoneType: None"),
        (True, r"got True"),
    ],
)
def test_step_rejects_non_scalar_losses(loss, pattern):
    tuner = _tuner()
    with pytest.raises(InputError, match=pattern):
        tuner.step(loss)
    assert tuner.global_step == 0


@pytest.mark.parametrize("loss", [0.5, 1, torch.tensor(0.5), torch.tensor([0.5])])
def test_step_accepts_numbers_and_one_element_tensors(loss):
    tuner = _tuner()
    tuner.step(loss)
    assert tuner.global_step == 1


class _Custom:
    """A strategy object the config does not know by name."""

    name = "mine"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"total_steps": 2000}, "anneal"),  # a budget: the annealed strategy
        ({"total_steps": None}, "forecast"),  # no budget: AutoLRS's plan
        ({"total_steps": 2000, "strategy": "forecast"}, "forecast"),
        ({"total_steps": None, "strategy": "anneal"}, None),  # refused: it needs a budget
        # An option only the forecast strategy reads picks it.
        ({"total_steps": 2000, "tau": 300}, "forecast"),
        ({"total_steps": 2000, "lr_trust": None}, "forecast"),
        ({"total_steps": 2000, "initial_probes": 2}, "forecast"),
        ({"total_steps": 2000, "lr_trust": 2.0}, "anneal"),  # its default picks nothing
        ({"total_steps": 2000, "tau": 300, "strategy": "anneal"}, "anneal"),  # a name wins
    ],
)
def test_the_default_strategy(given, expected):
    if expected is None:
        with pytest.raises(ConfigError, match="strategy='anneal' needs total_steps"):
            _tuner(**given)
        return
    tuner = _tuner(**given)
    assert tuner.config.strategy == tuner.strategy.name == expected
    options = {k: v for k, v in given.items() if k != "total_steps"}
    checked = AutoLRS.check_options(1e-3, 1.0, given["total_steps"], options)
    assert checked.strategy == expected
    assert AutoLRSConfig.from_dict(tuner.config.to_dict()).strategy == expected


def test_parts_of_the_forecast_strategy_pick_it():
    from autolr.forecast import make_forecaster
    from autolr.strategy import ForecastStrategy

    forecaster = make_forecaster({"name": "exponential"})
    assert _tuner(forecaster=forecaster).config.strategy == "forecast"
    opts = {"forecaster": forecaster}
    assert AutoLRS.check_options(1e-3, 1.0, 2000, opts).strategy == "forecast"
    config = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=2000, strategy="forecast")
    tuner = _tuner(strategy=ForecastStrategy(config))
    assert tuner.config.strategy == "forecast"
    # A strategy of its own is consulted with the forecast strategy's plan.
    custom = AutoLRS.check_options(1e-3, 1.0, 2000, {"strategy": _Custom()})
    assert custom.strategy == "forecast"


def test_config_round_trip():
    cfg = AutoLRSConfig(min_lr=1e-4, max_lr=1e-1, total_steps=5000, probes=4)
    assert AutoLRSConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"unknown AutoLRS settings: \['bogus'\]"):
        AutoLRSConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_removed_options_are_read_from_old_configs_only_at_their_one_value():
    old = {**AutoLRSConfig(min_lr=1e-4, max_lr=1e-1).to_dict(), "decide_by": "forecast"}
    old.update(prefer_larger=0.0, cap_after_rollback=True, acquisition="ei")
    old.update(forecaster="exponential")
    assert AutoLRSConfig.from_dict(old) == AutoLRSConfig(min_lr=1e-4, max_lr=1e-1)
    removed = r"sets acquisition='ucb', an option this version removed"
    with pytest.raises(ConfigError, match=removed):
        AutoLRSConfig.from_dict({**old, "acquisition": "ucb"})


def test_every_option_has_a_doc_and_a_checked_default():
    from autolr.config import option_fields, options_doc

    for f in option_fields():
        assert f.metadata["doc"], f.name
        assert f"{f.name}: " in options_doc()
        assert f"        {f.name}: " in (AutoLRS.__doc__ or ""), f.name
    # The defaults pass their own checks.
    AutoLRSConfig(min_lr=1e-4, max_lr=1e-1)


def test_readme_options_table_is_the_config():
    from pathlib import Path

    from autolr.config import options_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert options_table() in readme, "README's options table differs: paste options_table()"


def test_a_frozen_param_group_stays_frozen_whichever_group_is_first():
    model = make_model()
    params = list(model.parameters())
    opt = torch.optim.SGD([{"params": params[:1], "lr": 0.0}, {"params": params[1:], "lr": 0.01}])
    tuner = AutoLRS(model, opt, min_lr=1e-3, max_lr=1.0, total_steps=2000)
    assert tuner.ratios == [0.0, 1.0]
    before = params[0].detach().clone()
    for _ in range(30):
        opt.zero_grad()
        model(torch.randn(8, 8)).pow(2).mean().backward()
        opt.step()
        tuner.step(1.0)
        assert opt.param_groups[0]["lr"] == 0.0 and opt.param_groups[1]["lr"] > 0
    assert torch.equal(params[0].detach(), before)
