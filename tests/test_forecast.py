"""Forecaster strategy objects in ``autolr.forecast``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autolr.errors import ConfigError, FitError, InputError
from autolr.forecast import (
    FORECASTERS,
    ExponentialForecaster,
    Forecast,
    Forecaster,
    PowerLawForecaster,
    make_forecaster,
)

F64 = torch.float64


def decaying(n=8, steps=100, a=2.0, b=0.03, c=0.5, noise=0.02, seed=0):
    t = torch.arange(steps, dtype=F64)
    gen = torch.Generator().manual_seed(seed)
    y = a * torch.exp(-b * t) + c + noise * torch.randn(n, steps, generator=gen, dtype=F64)
    return t, y


def with_spikes(y, per_series=6, seed=1):
    gen = torch.Generator().manual_seed(seed)
    n, steps = y.shape
    idx = torch.randint(0, steps, (n, per_series), generator=gen)
    return y.clone().scatter_add_(
        1, idx, 2 + 3 * torch.rand(n, per_series, generator=gen, dtype=F64)
    )


@pytest.mark.parametrize("cls", [ExponentialForecaster, PowerLawForecaster])
def test_forecasters_follow_the_protocol(cls):
    fc = cls()
    assert isinstance(fc, Forecaster)
    assert fc.name in FORECASTERS
    t, y = decaying()
    out = fc.forecast(t, y, 500.0)
    assert isinstance(out, Forecast)
    assert out.values.shape == out.sse.shape == out.n_used.shape == (8,)
    assert {"a", "b", "c"} <= set(out.params)
    assert all(v.shape == (8,) for v in out.params.values())
    assert torch.equal(out.horizon, torch.full((8,), 500.0, dtype=F64))
    assert out.forecaster == fc.name
    assert fc.last is out
    fc.reset()
    assert fc.last is None
    json.dumps(out.to_dict())


@pytest.mark.parametrize("cls", [ExponentialForecaster, PowerLawForecaster])
def test_config_is_json_and_rebuilds_the_forecaster(cls):
    fc = cls(trim_outliers=False, hampel_window=7, hampel_k=4, min_value=0.0, n_grid=16)
    cfg = json.loads(json.dumps(fc.config()))
    again = make_forecaster(cfg)
    assert type(again) is cls
    assert again.config() == fc.config()
    assert "hampel_window=7" in repr(again)


def test_exponential_forecast_is_accurate():
    t, y = decaying(n=16)
    out = ExponentialForecaster().forecast(t, y, 1000.0)
    truth = 2.0 * math.exp(-30.0) + 0.5
    # the asymptote's standard error is ~0.004 for noise 0.02 over 100 points
    assert float((out.values - truth).abs().max()) < 0.02
    assert bool((out.params["t0"] == 0).all())
    torch.testing.assert_close(
        out.params["b"].median(), torch.tensor(0.03, dtype=F64), rtol=0.05, atol=0
    )


def test_the_controllers_call_shape():
    # one probe: (T,) steps, (1, T) losses with NaN gaps, a float horizon
    t, y = decaying(n=1, steps=40)
    y[0, [5, 17]] = math.nan
    out = make_forecaster("exponential").forecast(t, y, 400.0)
    assert out.values.shape == (1,) and math.isfinite(float(out.values[0]))
    assert int(out.n_used[0]) <= 38


def test_trimming_keeps_the_forecast_near_the_clean_one():
    t, clean = decaying(n=16, steps=120)
    spiky = with_spikes(clean)
    ref = ExponentialForecaster(trim_outliers=False).forecast(t, clean, 1000.0).values
    untrimmed = ExponentialForecaster(trim_outliers=False).forecast(t, spiky, 1000.0)
    trimmed = ExponentialForecaster().forecast(t, spiky, 1000.0)
    # six +2..5 spikes in 120 points lift the untrimmed asymptote by ~0.2 on average
    assert float((untrimmed.values - ref).abs().median()) > 0.1
    # trimmed stays within noise (0.02) of the clean fit
    assert float((trimmed.values - ref).abs().max()) < 0.03
    assert bool((trimmed.n_used <= 120 - 4).all())


def test_trimming_rarely_drops_clean_points():
    t, y = decaying(n=32, steps=100, seed=4)
    out = ExponentialForecaster().forecast(t, y, 1000.0)
    # Gaussian noise only: the residual pass's series-wide scale keeps ~99% of points
    assert float(out.n_used.double().mean()) > 98.0


def test_trimming_falls_back_when_too_few_points_remain():
    t = torch.arange(4, dtype=F64)
    y = torch.tensor([[1.0, 1.01, 0.99, 5.0]], dtype=F64)
    out = ExponentialForecaster().forecast(t, y, 10.0)
    assert int(out.n_used[0]) == 4


def test_nan_and_masked_points_are_ignored():
    t, y = decaying(n=2, steps=60)
    mask = torch.ones(2, 60, dtype=torch.bool)
    mask[0, 30:] = False
    y[1, ::7] = math.nan
    fc = ExponentialForecaster(trim_outliers=False)
    out = fc.forecast(t, y, 600.0, mask)
    assert out.n_used.tolist() == [30, 51]
    assert torch.isfinite(out.values).all()


def test_per_series_steps_and_horizons():
    t, y = decaying(n=3, steps=50, noise=0.0)
    t2 = torch.stack([t, t + 100, 2 * t])
    y2 = torch.stack([y[0], y[1], 2.0 * torch.exp(-0.015 * t2[2]) + 0.5])
    out = ExponentialForecaster().forecast(t2, y2, torch.tensor([50.0, 150.0, 100.0]))
    expected = 2.0 * math.exp(-1.5) + 0.5
    torch.testing.assert_close(out.values, torch.full((3,), expected, dtype=F64), rtol=1e-6, atol=0)
    assert out.params["t0"].tolist() == [0.0, 100.0, 0.0]


def test_float32_losses_give_float32_values():
    t, y = decaying(n=4)
    out = ExponentialForecaster().forecast(t.float(), y.float(), 1000.0)
    assert out.values.dtype == torch.float32
    ref = ExponentialForecaster().forecast(t, y, 1000.0).values
    torch.testing.assert_close(out.values.double(), ref, rtol=1e-4, atol=1e-4)


def test_linear_series_extrapolates_linearly_unless_floored():
    # no curvature: the rate sits at its lower bound, the forecast continues the line
    t = torch.arange(100, dtype=F64)
    y = (1.0 - 0.005 * t).unsqueeze(0)
    horizon = 1000.0
    out = ExponentialForecaster().forecast(t, y, horizon)
    drop = 0.005 * horizon
    linear = 1.0 - drop  # -4.0: below any reachable loss
    # 10 spans ahead at a rate of 1e-3 per span, exp(-x) ~ 1 - x + x^2/2 bends the
    # line by ~x/2 = 0.5% of the drop
    assert abs(float(out.values[0]) - linear) < 0.01 * drop
    # With a floor the asymptote stays at 0: a positive exponential decay instead.
    floored = ExponentialForecaster(min_value=0.0).forecast(t, y, horizon)
    assert float(floored.params["c"][0]) == 0.0
    assert 0.0 < float(floored.values[0]) < float(y[0, -1])


def test_power_law_forecast_is_accurate():
    t = torch.arange(200, dtype=F64)
    gen = torch.Generator().manual_seed(2)
    y = 3.0 * (t + 1) ** -0.7 + 0.2 + 0.005 * torch.randn(8, 200, generator=gen, dtype=F64)
    out = PowerLawForecaster().forecast(t, y, 2000.0)
    truth = 3.0 * 2001.0**-0.7 + 0.2
    assert float((out.values - truth).abs().max()) < 0.02
    assert set(out.params) == {"a", "b", "c"}


def test_too_short_series_raises_fit_error_naming_it():
    t, y = decaying(n=3, steps=10)
    y[2, 2:] = math.nan
    for fc in (ExponentialForecaster(), PowerLawForecaster()):
        with pytest.raises(FitError, match=r"series 2 has 2 valid points"):
            fc.forecast(t, y, 100.0)
    with pytest.raises(FitError, match=r"series 0 has 0 valid points"):
        ExponentialForecaster().forecast(t, torch.full((1, 10), math.nan), 100.0)


def test_kernel_errors_reach_the_user_as_autolr_errors():
    """The kernels raise their own builtin-derived errors; the forecaster maps them."""
    from autolr.errors import AutoLRError
    from autolr.kernels import KernelError

    t, y = decaying(n=3, steps=10)
    y[2, 2:] = math.nan
    cases = [
        (FitError, lambda: ExponentialForecaster().forecast(t, y, 100.0)),
        (FitError, lambda: PowerLawForecaster(trim_outliers=False).forecast(t, y, 100.0)),
        (InputError, lambda: ExponentialForecaster().forecast(t, y[0], 100.0)),
        (InputError, lambda: PowerLawForecaster().forecast(t - 5.0, y[:2], 100.0)),
        (InputError, lambda: ExponentialForecaster().forecast(t, y, 100.0, torch.ones(3, 10))),
    ]
    for kind, call in cases:
        with pytest.raises(kind) as info:
            call()
        assert isinstance(info.value, AutoLRError) and not isinstance(info.value, KernelError)
        # the traceback still reaches the kernel line that raised it
        assert any("kernels" in entry.path.parts for entry in info.traceback), kind


def test_kernel_config_errors_map_to_config_error(monkeypatch):
    from autolr import forecast as forecast_module
    from autolr.kernels import KernelConfigError

    def bad_fit(*args, **kwargs):
        raise KernelConfigError("n_grid must be an int >= 2, got 1")

    monkeypatch.setattr(forecast_module, "fit_exponential", bad_fit)
    t, y = decaying(n=2, steps=20)
    with pytest.raises(ConfigError, match=r"^n_grid must be an int >= 2, got 1$"):
        ExponentialForecaster(trim_outliers=False).forecast(t, y, 100.0)


@pytest.mark.parametrize(
    ("horizon", "exc", "match"),
    [
        (math.nan, InputError, r"horizon must be finite, got \[nan"),
        (torch.tensor([1.0, 2.0]), InputError, r"horizon must be a float or have shape \(3,\)"),
        ("100", InputError, r"horizon must be a float or a tensor, got str"),
    ],
)
def test_bad_horizon(horizon, exc, match):
    t, y = decaying(n=3, steps=20)
    with pytest.raises(exc, match=match):
        ExponentialForecaster().forecast(t, y, horizon)


def test_bad_losses_shape():
    t, y = decaying(n=1, steps=20)
    with pytest.raises(InputError, match=r"y must be 2-D with shape \(n, T\), got shape \(20,\)"):
        ExponentialForecaster().forecast(t, y[0], 100.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"trim_outliers": "yes"}, r"trim_outliers must be True or False, got 'yes'"),
        ({"hampel_window": 4}, r"hampel_window must be an odd int >= 3, got 4"),
        ({"hampel_window": 2.0}, r"hampel_window must be an odd int >= 3, got 2.0"),
        ({"hampel_k": 0}, r"hampel_k must be a finite number > 0, got 0"),
        ({"hampel_k": math.inf}, r"hampel_k must be a finite number > 0, got inf"),
        ({"min_value": math.nan}, r"min_value must be None or a finite number, got nan"),
        ({"min_value": "0"}, r"min_value must be None or a finite number, got '0'"),
        ({"n_grid": 1}, r"n_grid must be an int >= 2, got 1"),
        ({"refine_rounds": -3}, r"refine_rounds must be an int >= 0, got -3"),
        ({"min_points": 2}, r"min_points must be an int >= 3, got 2"),
        (
            {"rate_bounds": (1.0, 0.5)},
            r"rate_bounds must satisfy 0 < low < high < inf, got \(1.0, 0.5\)",
        ),
        ({"rate_bounds": None}, r"rate_bounds must be a pair \(low, high\), got None"),
    ],
)
def test_exponential_constructor_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ExponentialForecaster(**kwargs)


def test_power_law_constructor_validation():
    with pytest.raises(ConfigError, match=r"exponent_bounds must satisfy .*got \(0, 1\)"):
        PowerLawForecaster(exponent_bounds=(0, 1))


class ConstantForecaster:
    """A user-defined forecaster: last valid loss, whatever the horizon."""

    name = "last_value"

    def forecast(self, t, losses, horizon, mask=None):
        n = losses.shape[0]
        values = torch.stack([row[torch.isfinite(row)][-1] for row in losses])
        zeros = torch.zeros(n, dtype=F64)
        params = {"a": zeros, "b": zeros, "c": values.double()}
        used = torch.isfinite(losses).sum(dim=1)
        return Forecast(values, zeros + float(horizon), params, zeros, used, self.name)

    def reset(self):
        pass

    def config(self):
        return {"name": self.name}


def test_make_forecaster_accepts_names_dicts_and_objects():
    assert isinstance(make_forecaster("exponential"), ExponentialForecaster)
    assert isinstance(make_forecaster("power_law"), PowerLawForecaster)
    custom = ConstantForecaster()
    assert make_forecaster(custom) is custom
    fc = make_forecaster({"name": "exponential", "hampel_k": 5.0, "rate_bounds": [1e-2, 1e2]})
    assert fc.config()["hampel_k"] == 5.0 and fc.config()["rate_bounds"] == [1e-2, 1e2]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("exp", r"unknown forecaster 'exp'; choose one of 'exponential', 'power_law'"),
        (object(), r"forecaster must be one of .* got object"),
        (42, r"forecaster must be one of .* got int"),
        ({"hampel_k": 2.0}, r"forecaster config needs 'name' in .* got None"),
        ({"name": "exponential", "bogus": 1}, r"bad settings for forecaster 'exponential'.*bogus"),
        ({"name": "power_law", "hampel_k": -1}, r"hampel_k must be a finite number > 0, got -1"),
    ],
)
def test_make_forecaster_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        make_forecaster(spec)


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(st.floats(0.0, 50.0, allow_nan=False), min_size=6, max_size=30),
    horizon=st.floats(0.0, 1e5),
    name=st.sampled_from(sorted(FORECASTERS)),
)
def test_forecast_is_always_finite(values, horizon, name):
    y = torch.tensor([values], dtype=F64)
    t = torch.arange(len(values), dtype=F64)
    out = make_forecaster(name).forecast(t, y, horizon)
    assert bool(torch.isfinite(out.values).all())
    assert bool((out.params["b"] >= 0).all())
    assert int(out.n_used[0]) >= 4


def test_pessimism_raises_unidentified_extrapolations_only():
    t = torch.arange(26, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    falling = 0.285 - 0.002 * t  # still straight: the rate is barely pinned down
    settled = 0.177 + 0.11 * torch.exp(-0.3 * t)  # curvature seen: well pinned down
    y = torch.stack([falling, settled]) + 0.01 * torch.randn(2, 26, generator=gen, dtype=F64)
    point = ExponentialForecaster(min_value=0.0).forecast(t, y, 256.0).values
    careful = ExponentialForecaster(min_value=0.0, pessimism=2.0).forecast(t, y, 256.0).values
    assert bool((careful >= point).all())
    assert float(careful[0] - point[0]) > 0.1  # the straight line no longer wins on paper
    assert float(careful[0] - point[0]) > 10 * abs(float(careful[1] - point[1]))
    with pytest.raises(ConfigError, match=r"pessimism must be a finite number >= 0, got -1"):
        ExponentialForecaster(pessimism=-1)


def test_exponential_profile_matches_the_fit_at_its_minimum():
    from autolr.kernels import exponential_profile, fit_exponential

    t = torch.arange(30, dtype=F64)
    y = (2.0 * torch.exp(-0.1 * t) + 0.3).unsqueeze(0)
    sse, fc = exponential_profile(t, y, torch.tensor([300.0], dtype=F64), n_grid=200)
    fit = fit_exponential(t, y)
    best = int(sse.argmin())
    assert float(sse[0, best]) == pytest.approx(float(fit.sse[0]), abs=1e-3)
    assert float(fc[0, best]) == pytest.approx(0.3, abs=0.02)
    assert float(fc[0, -1]) == pytest.approx(float(y.mean()))
