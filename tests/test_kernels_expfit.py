"""Batched curve fits and robust smoothing in ``autolr.kernels``.

The batched kernels are checked against plain per-series references (differential
tests), against scipy's bounded least squares (optimality), and on synthetic series
with known parameters.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autolr.kernels import (
    ExpFit,
    KernelConfigError,
    KernelFitError,
    KernelInputError,
    PowerLawFit,
    evaluate,
    fit_exponential,
    fit_power_law,
    hampel_mask,
    valid_mask,
)
from autolr.kernels import expfit as expfit_module
from autolr.kernels._reference import (
    fit_exponential_reference,
    fit_power_law_reference,
    hampel_mask_reference,
)

F64 = torch.float64


def exp_series(a, b, c, t, noise=0.0, seed=0):
    """`(n, T)` float64 series a*exp(-b*t) + c (+ Gaussian noise)."""
    a, b, c = (torch.as_tensor(v, dtype=F64).reshape(-1, 1) for v in (a, b, c))
    y = a * torch.exp(-b * t.to(F64)) + c
    if noise:
        gen = torch.Generator().manual_seed(seed)
        y = y + noise * torch.randn(y.shape, generator=gen, dtype=F64)
    return y


def random_case(seed, n=12, steps=40):
    """Random exponential series with noise, per-series steps and ragged masks."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.sort(torch.rand(n, steps, generator=gen, dtype=F64) * 200, dim=1).values
    span = t[:, -1:] - t[:, :1]
    a = torch.rand(n, 1, generator=gen, dtype=F64) * 4 - 1
    b = 10 ** (torch.rand(n, 1, generator=gen, dtype=F64) * 3 - 1.5) / span
    c = torch.rand(n, 1, generator=gen, dtype=F64)
    y = a * torch.exp(-b * (t - t[:, :1])) + c
    y = y + 0.01 * torch.randn(n, steps, generator=gen, dtype=F64)
    lengths = torch.randint(6, steps + 1, (n,), generator=gen)
    mask = torch.arange(steps) < lengths.unsqueeze(1)
    mask &= torch.rand(n, steps, generator=gen) > 0.15
    mask[:, :4] = True
    return t, y, mask


def assert_same_fit(fit, ref, *, params=True, t=None, mask=None, log_steps=False):
    """SSE always agrees; parameters too where the series determines them.

    Both run the same search, but sums in a different order round differently, so a
    comparison between candidate rates can flip where the SSE is flat to rounding.
    Near a well-determined minimum that moves b by ~1e-9 relative; for a small
    amplitude (a few noise levels) the SSE is flat over ~1e-6 relative changes of b:
    hence rtol 1e-5 on parameters, and tight checks on the SSE and fitted values.
    A rate above ~50 per data span makes the curve an indicator of the first point
    (``exp(-50 / 40)`` at the next of 40 points is already small against noise, and
    any larger rate fits alike), so such series compare by SSE and fitted values.
    """
    torch.testing.assert_close(fit.sse.to(F64), ref.sse, rtol=1e-9, atol=1e-14)
    assert torch.equal(fit.n_used, ref.n_used)
    if not params:
        return
    keep = torch.ones(ref.b.shape, dtype=torch.bool)
    if t is not None:
        steps = (t if t.dim() == 2 else t.unsqueeze(0)).expand(ref.n, -1)
        used = torch.ones(steps.shape, dtype=torch.bool) if mask is None else mask
        got, want = fit.evaluate(steps), ref.evaluate(steps)
        torch.testing.assert_close(got[used], want[used], rtol=0, atol=1e-7)
        axis = torch.log1p(steps) if log_steps else steps  # the power law's rate axis
        span = torch.stack([s[u].max() - s[u].min() for s, u in zip(axis, used)])
        keep = ref.b * span < 50
    for name in ("a", "b", "c"):
        torch.testing.assert_close(
            getattr(fit, name).to(F64)[keep], getattr(ref, name)[keep], rtol=1e-5, atol=1e-9
        )


# -- recovery of known parameters -------------------------------------------------------


def test_recovers_noise_free_parameters():
    t = torch.arange(100, dtype=F64)
    a = torch.tensor([2.0, 0.5, -1.0, 3.0])
    b = torch.tensor([0.05, 0.005, 0.1, 0.3])
    c = torch.tensor([0.5, 1.0, 2.0, -0.2])
    fit = fit_exponential(t, exp_series(a, b, c, t))
    assert isinstance(fit, ExpFit)
    # noise-free: the only error is the final refinement interval (~1e-9 relative in b)
    torch.testing.assert_close(fit.b, b.to(F64), rtol=1e-7, atol=0)
    torch.testing.assert_close(fit.a, a.to(F64), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(fit.c, c.to(F64), rtol=1e-6, atol=1e-8)
    assert float(fit.sse.max()) < 1e-12


def test_recovers_parameters_with_large_step_offset():
    t = torch.arange(5000, 5200, dtype=F64)
    y = 2.0 * torch.exp(-0.02 * (t - 5000)) + 0.3
    fit = fit_exponential(t, y.unsqueeze(0), t0="first")
    assert float(fit.t0[0]) == 5000.0
    torch.testing.assert_close(fit.b, torch.tensor([0.02], dtype=F64), rtol=1e-7, atol=0)
    torch.testing.assert_close(fit.a, torch.tensor([2.0], dtype=F64), rtol=1e-6, atol=0)
    # the same curve with t0 = 0 needs a = 2 * exp(100): still finite
    fit0 = fit_exponential(t, y.unsqueeze(0))
    torch.testing.assert_close(fit0.evaluate(t[None]), y[None], rtol=1e-7, atol=1e-9)
    # ... but a steeper rate overflows a at t0 = 0, and the error says what to do
    steep = 2.0 * torch.exp(-0.5 * (t - 5000)) + 0.3
    with pytest.raises(
        KernelFitError, match=r"fitted a is not finite for series \[0\].*t0='first'"
    ):
        fit_exponential(t, steep.unsqueeze(0))


def test_recovers_noisy_parameters_within_standard_errors():
    n, sigma = 32, 0.02
    t = torch.arange(200, dtype=F64)
    gen = torch.Generator().manual_seed(1)
    a = 0.5 + 2 * torch.rand(n, generator=gen, dtype=F64)
    b = 0.005 + 0.03 * torch.rand(n, generator=gen, dtype=F64)
    c = torch.rand(n, generator=gen, dtype=F64)
    fit = fit_exponential(t, exp_series(a, b, c, t, noise=sigma, seed=2))
    for i in range(n):
        # Gauss-Newton standard errors sigma * sqrt(diag((J^T J)^-1)) at the truth
        e = torch.exp(-b[i] * t)
        jac = torch.stack([e, -a[i] * t * e, torch.ones_like(t)], dim=1)
        se = sigma * torch.linalg.inv(jac.T @ jac).diagonal().sqrt()
        err = torch.stack([fit.a[i] - a[i], fit.b[i] - b[i], fit.c[i] - c[i]]).abs()
        # 5 standard errors: P(any of 96 estimates beyond) < 1e-4 for Gaussian noise
        assert bool((err < 5 * se).all()), (i, err, se)


def test_flat_series_is_not_an_error():
    t = torch.arange(50, dtype=F64)
    y = torch.full((3, 50), 0.7, dtype=F64)
    y[1] = 2.5
    y[2] = 0.1  # 0.1 is not exact in binary: the mean carries rounding noise
    fit = fit_exponential(t, y)
    assert torch.equal(fit.b, torch.zeros(3, dtype=F64))
    assert torch.equal(fit.a, torch.zeros(3, dtype=F64))
    torch.testing.assert_close(fit.c, y[:, 0], rtol=1e-15, atol=0)
    assert torch.isfinite(fit.evaluate(1e9)).all()


def test_noisy_flat_series_forecasts_its_level():
    t = torch.arange(100, dtype=F64)
    y = exp_series([0.0] * 8, [0.0] * 8, [1.0] * 8, t, noise=0.01, seed=3)
    fit = fit_exponential(t, y)
    assert bool((fit.b >= 0).all())
    # whatever b the noise suggests, |a| stays at noise level: forecasts stay near 1
    assert float((fit.evaluate(1000.0) - 1.0).abs().max()) < 0.05


def test_increasing_series_gets_negative_amplitude():
    t = torch.arange(100, dtype=F64)
    rising = 1.0 - torch.exp(-0.05 * t)
    linear = 0.01 * t
    fit = fit_exponential(t, torch.stack([rising, linear]))
    assert bool((fit.b >= 0).all())
    torch.testing.assert_close(fit.a[0], torch.tensor(-1.0, dtype=F64), rtol=1e-6, atol=0)
    torch.testing.assert_close(fit.b[0], torch.tensor(0.05, dtype=F64), rtol=1e-7, atol=0)
    # a straight line: the rate sits at its lower bound (1e-3 per span of 99 steps)
    assert float(fit.a[1]) < 0
    torch.testing.assert_close(fit.b[1], torch.tensor(1e-3 / 99, dtype=F64), rtol=1e-6, atol=0)


# -- masks, NaN, errors -----------------------------------------------------------------


def test_nan_and_inf_entries_are_masked():
    t = torch.arange(60, dtype=F64)
    clean = exp_series([1.0, 2.0], [0.05, 0.1], [0.2, 0.3], t, noise=0.01)
    dirty = clean.clone()
    dirty[0, [3, 10, 11]] = math.nan
    dirty[1, [0, 59]] = torch.tensor([math.inf, -math.inf], dtype=F64)
    fit = fit_exponential(t, dirty)
    assert fit.n_used.tolist() == [57, 58]
    assert_same_fit(fit, fit_exponential(t, clean, torch.isfinite(dirty)))
    assert_same_fit(fit, fit_exponential_reference(t, dirty))
    assert torch.isfinite(fit.a).all() and torch.isfinite(fit.sse).all()


def test_too_short_series_name_index_and_count():
    t = torch.arange(10, dtype=F64)
    y = exp_series([1.0] * 3, [0.1] * 3, [0.0] * 3, t)
    y[1, 3:] = math.nan
    with pytest.raises(KernelFitError, match=r"series 1 has 3 valid points.*at least 4"):
        fit_exponential(t, y)
    y[2] = math.nan
    with pytest.raises(KernelFitError, match=r"series 1 has 3 valid points; series 2 has 0 valid"):
        fit_exponential(t, y)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[0, 2:] = False
    with pytest.raises(KernelFitError, match=r"series 0 has 2 valid points"):
        fit_exponential(t, exp_series([1.0] * 3, [0.1] * 3, [0.0] * 3, t), mask)
    with pytest.raises(
        KernelFitError, match=r"cannot fit a\*\(t\+1\)\^\(-b\) \+ c: series 0 has 0 valid points"
    ):
        fit_power_law(t, torch.full((1, 10), math.nan))


def test_too_short_lists_at_most_five_series():
    y = torch.full((8, 6), math.nan)
    with pytest.raises(KernelFitError, match=r"series 4 has 0 valid points; and 3 more series"):
        fit_exponential(torch.arange(6.0), y)


@pytest.mark.parametrize(
    ("t", "y", "mask", "match"),
    [
        (torch.arange(5.0), torch.zeros(5), None, r"y must be 2-D .* got shape \(5,\)"),
        (torch.arange(5.0), torch.zeros(1, 2, 5), None, r"got shape \(1, 2, 5\)"),
        (
            torch.arange(4.0),
            torch.zeros(2, 5),
            None,
            r"t must have shape \(5,\) or \(2, 5\).*\(4,\)",
        ),
        (torch.zeros(3, 5), torch.zeros(2, 5), None, r"got shape \(3, 5\)"),
        (
            torch.arange(5.0),
            torch.zeros(2, 5),
            torch.ones(2, 4, dtype=torch.bool),
            r"mask .*\(2, 4\)",
        ),
        (torch.arange(5.0), torch.zeros(2, 5), torch.ones(2, 5), r"mask must be a bool tensor"),
        (torch.arange(5.0), [[0.0] * 5], None, r"y must be a torch.Tensor .* got list"),
        ([0.0] * 5, torch.zeros(1, 5), None, r"t must be a torch.Tensor .* got list"),
    ],
)
def test_bad_inputs_raise_input_error(t, y, mask, match):
    with pytest.raises(KernelInputError, match=match):
        fit_exponential(t, y, mask)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate_bounds": (0.0, 1.0)}, r"rate_bounds must satisfy 0 < low < high .*\(0.0, 1.0\)"),
        ({"rate_bounds": (2.0, 1.0)}, r"rate_bounds .*\(2.0, 1.0\)"),
        ({"rate_bounds": 3.0}, r"rate_bounds must be a pair"),
        ({"n_grid": 1}, r"n_grid must be an int >= 2, got 1"),
        ({"refine_rounds": -1}, r"refine_rounds must be an int >= 0, got -1"),
        ({"min_points": 2}, r"min_points must be an int >= 3, got 2"),
        ({"t0": "last"}, r"t0 must be .* got 'last'"),
        ({"t0": math.inf}, r"t0 must be a finite float"),
        ({"dtype": torch.int64}, r"dtype must be a floating dtype"),
    ],
)
def test_bad_options_raise_config_error(kwargs, match):
    t = torch.arange(10.0)
    with pytest.raises(KernelConfigError, match=match):
        fit_exponential(t, torch.exp(-t).unsqueeze(0), **kwargs)


def test_empty_batch_returns_empty_fit():
    fit = fit_exponential(torch.arange(5.0), torch.zeros(0, 5))
    assert fit.n == 0 and fit.a.shape == (0,)
    assert fit_power_law(torch.arange(5.0), torch.zeros(0, 5)).b.shape == (0,)


# -- differential tests against the plain reference -------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_batched_equals_reference(seed):
    t, y, mask = random_case(seed)
    fit, ref = fit_exponential(t, y, mask), fit_exponential_reference(t, y, mask)
    assert_same_fit(fit, ref, t=t, mask=mask)
    assert_same_fit(
        fit_exponential(t, y, mask, t0="first"),
        fit_exponential_reference(t, y, mask, t0="first"),
        t=t,
        mask=mask,
    )


@pytest.mark.parametrize("seed", range(3))
def test_batched_equals_reference_on_pure_noise(seed):
    # no curve to find: parameters are not identifiable, the SSE must still agree
    gen = torch.Generator().manual_seed(100 + seed)
    y = torch.randn(10, 30, generator=gen, dtype=F64)
    t = torch.arange(30, dtype=F64)
    assert_same_fit(fit_exponential(t, y), fit_exponential_reference(t, y), params=False)
    assert_same_fit(fit_power_law(t, y), fit_power_law_reference(t, y), params=False)


@pytest.mark.parametrize("seed", range(3))
def test_power_law_batched_equals_reference(seed):
    t, y, mask = random_case(seed + 10)
    fit, ref = fit_power_law(t, y, mask), fit_power_law_reference(t, y, mask)
    assert_same_fit(fit, ref, t=t, mask=mask, log_steps=True)


def test_grid_chunks_do_not_change_the_result(monkeypatch):
    t, y, mask = random_case(7)
    whole = fit_exponential(t, y, mask)
    monkeypatch.setattr(expfit_module, "_CHUNK_ELEMENTS", y.numel() * 5)
    chunked = fit_exponential(t, y, mask)
    for name in ("a", "b", "c", "sse"):
        assert torch.equal(getattr(whole, name), getattr(chunked, name))


def test_fit_is_a_least_squares_optimum():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    t, y, mask = random_case(3, n=6)
    fit = fit_exponential(t, y, mask)
    for i in range(6):
        ti, yi = t[i][mask[i]].numpy(), y[i][mask[i]].numpy()
        t_i = ti - ti[0]

        def resid(p, t_i=t_i, yi=yi):
            return p[0] * np.exp(-p[1] * t_i) + p[2] - yi

        start = [yi[0] - yi[-1], 1.0 / (t_i[-1] + 1), yi[-1]]
        res = scipy_optimize.least_squares(
            resid, start, bounds=([-np.inf, 0, -np.inf], np.inf), xtol=1e-15, ftol=1e-15
        )
        # never worse than scipy's local optimum (the grid search is global in b)
        assert float(fit.sse[i]) <= 2 * res.cost * (1 + 1e-7) + 1e-15


# -- dtypes, devices, evaluation --------------------------------------------------------


def test_float32_input_gives_float32_output_close_to_float64():
    t = torch.arange(100)
    y64 = exp_series([1.5, 0.3], [0.04, 0.02], [0.1, 2.0], t, noise=0.01)
    fit32 = fit_exponential(t, y64.float())
    fit64 = fit_exponential(t, y64)
    assert fit32.a.dtype == fit32.b.dtype == fit32.sse.dtype == torch.float32
    assert fit32.n_used.dtype == torch.long
    pred32, pred64 = fit32.evaluate(500.0), fit64.evaluate(500.0)
    assert pred32.dtype == torch.float32
    # float32 rounding of the data (~1e-7) moves the forecast far less than the noise
    torch.testing.assert_close(pred32.double(), pred64, rtol=1e-4, atol=1e-4)


def test_dtype_option_and_integer_steps():
    t = torch.arange(0, 200, 2)  # int64 steps
    y = exp_series([1.0], [0.01], [0.5], t).float()
    fit = fit_exponential(t, y, dtype=F64)
    assert fit.b.dtype == F64
    torch.testing.assert_close(fit.b, torch.tensor([0.01], dtype=F64), rtol=1e-6, atol=0)


def test_evaluate_shapes():
    t = torch.arange(50, dtype=F64)
    fit = fit_exponential(t, exp_series([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], [0.0, 0.1, 0.2], t))
    assert fit.evaluate(10.0).shape == (3,)
    assert evaluate(fit, torch.tensor(10.0)).shape == (3,)
    per_series = fit.evaluate(torch.tensor([0.0, 10.0, 20.0]))
    torch.testing.assert_close(
        per_series, torch.tensor([1.0, 2 * math.exp(-2) + 0.1, 3 * math.exp(-6) + 0.2], dtype=F64)
    )
    assert fit.evaluate(torch.arange(7.0).unsqueeze(0)).shape == (3, 7)
    assert fit.evaluate(torch.zeros(3, 4)).shape == (3, 4)
    with pytest.raises(
        KernelInputError, match=r"t must be a scalar, shape \(3,\) or \(3, m\).*\(5,\)"
    ):
        fit.evaluate(torch.zeros(5))
    with pytest.raises(KernelInputError, match="t must be a number or a tensor, got str"):
        fit.evaluate("10")  # type: ignore[arg-type]


def test_valid_mask():
    y = torch.tensor([[1.0, math.nan, 2.0, math.inf]])
    mask = torch.tensor([[True, True, False, True]])
    assert valid_mask(y).tolist() == [[True, False, True, False]]
    assert valid_mask(y, mask).tolist() == [[True, False, False, False]]
    t = torch.tensor([0.0, 1.0, 2.0, math.nan])
    assert valid_mask(torch.ones(1, 4), None, t).tolist() == [[True, True, True, False]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    t, y, mask = random_case(4)
    cpu = fit_exponential(t, y, mask)
    gpu = fit_exponential(t.cuda(), y.cuda(), mask.cuda())
    assert gpu.a.device.type == "cuda"
    assert_same_fit(gpu.__class__(*(v.cpu() for v in vars(gpu).values())), cpu)
    assert torch.equal(hampel_mask(y.cuda(), mask.cuda()).cpu(), hampel_mask(y, mask))


# -- power law --------------------------------------------------------------------------


def test_power_law_recovers_parameters():
    t = torch.arange(300, dtype=F64)
    a = torch.tensor([2.0, 1.0, 0.5])
    b = torch.tensor([0.5, 1.2, 0.1])
    c = torch.tensor([0.3, 0.0, 1.0])
    y = a.to(F64)[:, None] * (t + 1) ** (-b.to(F64)[:, None]) + c.to(F64)[:, None]
    fit = fit_power_law(t, y)
    assert isinstance(fit, PowerLawFit)
    torch.testing.assert_close(fit.b, b.to(F64), rtol=1e-7, atol=0)
    torch.testing.assert_close(fit.a, a.to(F64), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(fit.c, c.to(F64), rtol=1e-6, atol=1e-8)
    far = a.to(F64) * 10001.0 ** -b.to(F64) + c.to(F64)
    torch.testing.assert_close(fit.evaluate(1e4), far, rtol=1e-6, atol=1e-8)


def test_power_law_rejects_steps_at_or_below_minus_one():
    t = torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0])
    with pytest.raises(
        KernelInputError, match=r"steps must be > -1; series 0 has t = -1.0 at index 0"
    ):
        fit_power_law(t, torch.ones(1, 5))
    with pytest.raises(KernelConfigError, match=r"exponent_bounds must satisfy"):
        fit_power_law(t + 2, torch.ones(1, 5), exponent_bounds=(1.0, 1.0))


# -- robust smoothing -------------------------------------------------------------------


def test_hampel_flags_spikes_and_keeps_clean_points():
    t = torch.arange(100, dtype=F64)
    y = exp_series([2.0], [0.03], [0.5], t, noise=0.01, seed=5)
    spikes = [7, 30, 31, 64, 90]
    y[0, spikes] += torch.tensor([1.0, 3.0, 2.0, 0.5, 4.0], dtype=F64)
    kept = hampel_mask(y)
    assert not kept[0, spikes].any()
    assert int(kept.sum()) >= 100 - len(spikes) - 3  # a few noise points at most


def test_hampel_on_flat_series_with_a_spike():
    y = torch.full((1, 20), 0.25, dtype=F64)
    y[0, 9] = 0.26
    kept = hampel_mask(y)
    assert kept.sum() == 19 and not kept[0, 9]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("global_scale", [False, True])
def test_hampel_equals_reference(seed, global_scale):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(6, 50, generator=gen, dtype=F64)
    y[torch.rand(6, 50, generator=gen) < 0.05] += 10
    y[0, 3] = math.nan
    mask = torch.rand(6, 50, generator=gen) > 0.1
    trend = 0.1 * torch.randn(6, 50, generator=gen, dtype=F64)
    for kwargs in ({}, {"trend": trend}, {"window": 5, "k": 2.0}):
        got = hampel_mask(y, mask, global_scale=global_scale, **kwargs)
        ref = hampel_mask_reference(y, mask, global_scale=global_scale, **kwargs)
        assert torch.equal(got, ref), kwargs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 4}, r"window must be an odd int >= 3, got 4"),
        ({"window": 1}, r"window must be an odd int >= 3, got 1"),
        ({"k": 0.0}, r"k must be a finite number > 0, got 0.0"),
        ({"k": math.nan}, r"k must be a finite number > 0, got nan"),
        ({"trend": torch.zeros(2)}, r"trend must be a tensor of shape \(1, 10\), got \(2,\)"),
    ],
)
def test_hampel_bad_options(kwargs, match):
    with pytest.raises((KernelConfigError, KernelInputError), match=match):
        hampel_mask(torch.zeros(1, 10), **kwargs)


def test_trimming_brings_the_fit_back_to_the_clean_one():
    t = torch.arange(120, dtype=F64)
    clean = exp_series([2.0] * 16, [0.03] * 16, [0.5] * 16, t, noise=0.02, seed=6)
    gen = torch.Generator().manual_seed(7)
    spiky = clean.clone()
    idx = torch.randint(0, 120, (16, 6), generator=gen)
    spiky.scatter_add_(1, idx, 2 + 3 * torch.rand(16, 6, generator=gen, dtype=F64))
    horizon = 1000.0
    ref = fit_exponential(t, clean).evaluate(horizon)
    raw = fit_exponential(t, spiky).evaluate(horizon)
    trimmed = fit_exponential(t, spiky, hampel_mask(spiky)).evaluate(horizon)
    # 6 spikes of +2..5 over 120 points lift the untrimmed asymptote by ~0.2 on average
    assert float((raw - ref).abs().median()) > 0.1
    # trimmed: within noise of the clean fit (noise 0.02; asymptote s.e. ~0.005)
    assert float((trimmed - ref).abs().max()) < 0.03


# -- properties -------------------------------------------------------------------------

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(st.lists(finite, min_size=12, max_size=12), min_size=1, max_size=4),
    holes=st.lists(st.integers(0, 11), max_size=6),
    scale=st.sampled_from([1.0, 1e-3, 1e3]),
)
def test_fit_properties(values, holes, scale):
    y = torch.tensor(values, dtype=F64)
    y[:, holes] = math.nan
    t = torch.arange(12, dtype=F64) * scale
    for fit in (fit_exponential(t, y), fit_power_law(t, y)):
        assert bool((fit.b >= 0).all())
        for v in (fit.a, fit.b, fit.c, fit.sse):
            assert bool(torch.isfinite(v).all())
        assert bool(torch.isfinite(fit.evaluate(t[-1] * 10 + 1)).all())
        # the constant fit is a candidate, so the SSE never exceeds the spread
        ok = torch.isfinite(y)
        spread = torch.stack([((r[m] - r[m].mean()) ** 2).sum() for r, m in zip(y, ok)])
        assert bool((fit.sse <= spread * (1 + 1e-9) + 1e-9).all())


def test_fit_fields_are_json_friendly():
    t = torch.arange(20, dtype=F64)
    fit = fit_exponential(t, exp_series([1.0], [0.1], [0.0], t))
    json.dumps({k: v.tolist() for k, v in vars(fit).items()})


def test_asymptote_floor_keeps_c_and_recovers_a_pure_exponential():
    t = torch.arange(40, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    clean = 2.0 * torch.exp(-0.05 * t)
    y = torch.stack(
        [
            clean,
            clean + 0.01 * torch.randn(40, generator=gen, dtype=torch.float64),
            1.5 - 0.03 * t,
            clean + 0.5,
        ]
    )
    free = fit_exponential(t, y)
    floored = fit_exponential(t, y, c_min=0.0)
    assert bool((floored.c >= 0).all())
    assert float(free.c[2]) < 0 and float(floored.c[2]) == 0.0
    assert float(floored.b[0]) == pytest.approx(0.05, rel=1e-4)
    assert float(floored.a[0]) == pytest.approx(2.0, rel=1e-4)
    assert float(floored.b[1]) == pytest.approx(0.05, rel=0.1)
    # Series already above the floor keep their free fit.
    assert float(floored.c[3]) == float(free.c[3]) == pytest.approx(0.5)
    # Constrained fits cannot beat the free fit.
    assert bool((floored.sse >= free.sse - 1e-9).all())


def test_asymptote_floor_rejects_bad_values():
    t = torch.arange(10, dtype=torch.float64)
    with pytest.raises(KernelConfigError, match=r"c_min must be None or a finite number, got nan"):
        fit_exponential(t, torch.ones(1, 10, dtype=torch.float64) - 0.01 * t, c_min=float("nan"))
