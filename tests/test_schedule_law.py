"""The LR-annealing law kernel: areas, recovery of known parameters, batched == reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autolr.kernels._schedule_law_reference import (
    annealing_areas_reference,
    fit_schedule_law_reference,
)
from autolr.kernels.schedule_law import (
    annealing_areas,
    decay_factors,
    fit_schedule_law,
    forecast_final,
    predict_loss,
)


def wsd(peak: float, total: int, decay_steps: int, shape: str = "linear") -> torch.Tensor:
    hold = torch.full((total - decay_steps,), peak, dtype=torch.float64)
    return torch.cat([hold, peak * decay_factors(shape, decay_steps)])


def test_areas_match_the_recursion_and_survive_long_runs() -> None:
    g = torch.Generator().manual_seed(0)
    lrs = torch.rand(3, 700, generator=g, dtype=torch.float64)
    for decay in (0.9, 0.999):
        s1, s2 = annealing_areas(lrs, decay)
        for b in range(3):
            r1, r2 = annealing_areas_reference(lrs[b].tolist(), decay)
            np.testing.assert_allclose(s1[b].numpy(), r1, rtol=1e-12)
            np.testing.assert_allclose(s2[b].numpy(), r2, rtol=1e-9, atol=1e-9)
    # lam = 0.5 forces many scan chunks; a constant LR has no annealing area
    _, s2 = annealing_areas(torch.full((5000,), 0.1, dtype=torch.float64), 0.5)
    assert torch.all(s2 == 0)
    lrs = wsd(1.0, 5000, 1000)
    s1, s2 = annealing_areas(lrs, 0.5)
    r1, r2 = annealing_areas_reference(lrs.tolist(), 0.5)
    np.testing.assert_allclose(s2.numpy(), r2, rtol=1e-9, atol=1e-9)


def test_annealing_area_of_a_full_drop_tends_to_drop_over_one_minus_lam() -> None:
    # a single drop of 1 at step 2: m decays geometrically, S2 -> 1 / (1 - lam)
    lrs = torch.tensor([1.0] + [0.0] * 20000, dtype=torch.float64)
    _, s2 = annealing_areas(lrs, 0.999)
    assert math.isclose(float(s2[-1]), 1000.0, rel_tol=1e-6)


def _synthetic(params: tuple[float, float, float, float], decay: float, noise: float, seed: int):
    """Points of three schedules (constant, WSD 20%, cosine) at every 10th step."""
    l0, a, alpha, c = params
    series = [
        torch.full((2000,), 0.5, dtype=torch.float64),
        wsd(0.5, 2000, 400),
        0.5 * decay_factors("cosine", 2000),
    ]
    s1s, s2s, ys = [], [], []
    g = torch.Generator().manual_seed(seed)
    for lrs in series:
        s1, s2 = annealing_areas(lrs, decay)
        s1, s2 = s1[9::10], s2[9::10]
        y = predict_loss(l0, a, alpha, c, s1, s2)
        y = y * (1.0 + noise * torch.randn(y.shape, generator=g, dtype=torch.float64))
        s1s.append(s1)
        s2s.append(s2)
        ys.append(y)
    return torch.cat(s1s), torch.cat(s2s), torch.cat(ys)


def test_fit_recovers_known_parameters_from_noiseless_points() -> None:
    truth = (0.8, 2.0, 0.45, 1.5e-3)
    s1, s2, y = _synthetic(truth, 0.999, 0.0, 0)
    fit = fit_schedule_law(s1, s2, y)
    got = (float(fit.l0[0]), float(fit.a[0]), float(fit.alpha[0]), float(fit.c[0]))
    for g_, t in zip(got, truth):
        assert math.isclose(g_, t, rel_tol=0.02), (got, truth)


def test_fit_picks_the_decay_and_survives_noise_and_outliers() -> None:
    truth = (0.8, 2.0, 0.45, 1.5e-3)
    decays = (0.99, 0.999)
    s1, _, y = _synthetic(truth, 0.999, 0.003, 1)
    y[::37] *= 1.5  # outliers: the Huber loss keeps them from pulling the fit
    s2s = []
    for decay in decays:
        parts = [
            annealing_areas(lrs, decay)[1][9::10]
            for lrs in (
                torch.full((2000,), 0.5, dtype=torch.float64),
                wsd(0.5, 2000, 400),
                0.5 * decay_factors("cosine", 2000),
            )
        ]
        s2s.append(torch.cat(parts))
    fit = fit_schedule_law(s1, s2s, y, decays=decays)
    assert float(fit.decay[0]) == 0.999
    assert math.isclose(float(fit.l0[0]), truth[0], rel_tol=0.05)
    assert math.isclose(float(fit.c[0]), truth[3], rel_tol=0.15)
    # the forecast of an unseen schedule (WSD with a 40% decay) is within 1%
    history = torch.full((1000,), 0.5, dtype=torch.float64)
    cand = torch.stack([wsd(0.5, 1000, 800, "1-sqrt"), wsd(0.5, 1000, 100)])
    pred = forecast_final(fit, 0, history, cand)
    for i in range(2):
        s1c, s2c = annealing_areas(torch.cat([history, cand[i]]), 0.999)
        true = predict_loss(*truth, s1c[-1], s2c[-1])
        assert math.isclose(float(pred[i]), float(true), rel_tol=0.01)


def test_batched_equals_reference_per_series_with_padding() -> None:
    decays = (0.99, 0.999)
    rows = []
    for seed, truth in enumerate(
        [(0.8, 2.0, 0.45, 1.5e-3), (1.5, 0.7, 1.2, 0.0), (0.1, 3.0, 0.2, 4e-3)]
    ):
        s1, _, y = _synthetic(truth, 0.999, 0.01, seed)
        s2s = [_synthetic(truth, d, 0.0, seed)[1] for d in decays]
        n = 600 - 100 * seed  # ragged rows: padding masked out
        rows.append((s1[:n], [t[:n] for t in s2s], y[:n]))
    width = max(r[0].numel() for r in rows)
    s1b = torch.ones(len(rows), width, dtype=torch.float64)
    yb = torch.ones_like(s1b)
    s2b = [torch.zeros_like(s1b) for _ in decays]
    mask = torch.zeros_like(s1b, dtype=torch.bool)
    for i, (s1, s2s, y) in enumerate(rows):
        n = s1.numel()
        s1b[i, :n], yb[i, :n], mask[i, :n] = s1, y, True
        for k in range(len(decays)):
            s2b[k][i, :n] = s2s[k]
    fit = fit_schedule_law(s1b, s2b, yb, mask, decays=decays)
    for i, (s1, s2s, y) in enumerate(rows):
        ref = fit_schedule_law_reference(
            s1.tolist(), [t.tolist() for t in s2s], y.tolist(), decays=decays
        )
        assert float(fit.decay[i]) == ref["decay"]
        for key in ("l0", "a", "alpha", "c", "objective"):
            assert math.isclose(
                float(getattr(fit, key)[i]), ref[key], rel_tol=1e-6, abs_tol=1e-12
            ), key
        assert int(fit.n_used[i]) == s1.numel()


def test_bad_inputs_name_the_value() -> None:
    with pytest.raises(ValueError, match="decay"):
        annealing_areas(torch.ones(3), 1.0)
    with pytest.raises(ValueError, match="shape"):
        decay_factors("step", 3)
    with pytest.raises(ValueError, match="alpha_bounds"):
        fit_schedule_law(torch.ones(3), torch.ones(3), torch.ones(3), alpha_bounds=(1.0, 0.5))
    with pytest.raises(ValueError, match="one s2 per decay"):
        fit_schedule_law(torch.ones(3), [torch.ones(3)] * 2, torch.ones(3))


def test_too_few_points_give_an_infinite_objective() -> None:
    fit = fit_schedule_law(torch.tensor([1.0, 2.0]), torch.zeros(2), torch.tensor([1.0, -1.0]))
    assert math.isinf(float(fit.objective[0]))
