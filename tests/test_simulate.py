"""Tests of the noisy quadratic model and its exact expected-loss recursion."""

from __future__ import annotations

import math

import pytest
import torch

from autolr.errors import ConfigError
from autolr.offline.nqm import (
    NoisyQuadratic,
    QuadraticSpec,
    best_constant_lr,
    constant_lr_expected_loss,
    inverse_spectrum,
    optimal_schedule,
    piecewise_expected_loss,
    sgd_expected_loss,
)


def _run_sgd(model: NoisyQuadratic, lrs: torch.Tensor) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=float(lrs[0]))
    losses = [float(model.expected_loss())]
    for lr in lrs.tolist():
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        model().backward()
        opt.step()
        losses.append(float(model.expected_loss()))
    return losses


def test_gradient_is_curvature_times_theta_plus_noise() -> None:
    model = NoisyQuadratic(dim=4, batch_size=8, seed=3, dtype=torch.float64)
    with torch.no_grad():
        model.theta.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64))
    grads = []
    for _ in range(4000):
        model.zero_grad()
        model().backward()
        assert model.theta.grad is not None
        grads.append(model.theta.grad.clone())
    g = torch.stack(grads)
    h = inverse_spectrum(4)
    expected_mean = h * model.theta.detach()
    se = (h / 8).sqrt() / math.sqrt(len(grads))
    assert torch.all((g.mean(0) - expected_mean).abs() < 5 * se)
    torch.testing.assert_close(g.var(0), h / 8, rtol=0.1, atol=0.0)


def test_same_seed_same_noise_and_reseed() -> None:
    a = NoisyQuadratic(dim=16, batch_size=2, seed=7)
    b = NoisyQuadratic(dim=16, batch_size=2, seed=7)
    c = NoisyQuadratic(dim=16, batch_size=2, seed=8)
    na, nb, nc = a.sample_noise(), b.sample_noise(), c.sample_noise()
    assert torch.equal(na, nb)
    assert not torch.equal(na, nc)
    a.reseed(7)
    assert torch.equal(a.sample_noise(), na)


def test_minibatch_loss_is_unbiased() -> None:
    model = NoisyQuadratic(dim=8, batch_size=1, seed=0, dtype=torch.float64)
    with torch.no_grad():
        samples = torch.stack([model() for _ in range(4000)])
    assert abs(samples.mean().item() - model.expected_loss().item()) < 5 * samples.std().item() / 63


def test_recursion_matches_monte_carlo_average_of_simulator() -> None:
    lrs = torch.cat([torch.full((10,), 1.2), torch.full((15,), 0.4), torch.full((5,), 0.05)])
    lrs = lrs.double()
    replicas = 300
    curves = torch.tensor(
        [
            _run_sgd(NoisyQuadratic(dim=6, batch_size=2, seed=s, dtype=torch.float64), lrs)
            for s in range(replicas)
        ]
    )
    spec = NoisyQuadratic(dim=6, batch_size=2).spec
    exact = sgd_expected_loss(lrs, spec)
    assert exact.shape == (lrs.numel() + 1,)
    mean, se = curves.mean(0), curves.std(0) / math.sqrt(replicas)
    assert mean[0].item() == pytest.approx(exact[0].item())
    for t in (1, 10, 25, 30):
        assert abs(mean[t].item() - exact[t].item()) < 4 * se[t].item() + 1e-12, t


def test_closed_form_chunks_equal_the_step_recursion() -> None:
    spec = NoisyQuadratic(dim=50, batch_size=4).spec
    chunk_lrs = torch.tensor([1.9, 0.7, 0.2, 0.01], dtype=torch.float64)
    lengths = [30, 5, 40, 25]
    per_step = torch.repeat_interleave(chunk_lrs, torch.tensor(lengths))
    exact = sgd_expected_loss(per_step, spec)[-1]
    torch.testing.assert_close(piecewise_expected_loss(chunk_lrs, lengths, spec), exact)
    batched = piecewise_expected_loss(torch.stack([chunk_lrs, chunk_lrs.flip(0)]), lengths, spec)
    assert batched.shape == (2,)
    torch.testing.assert_close(batched[0], exact)
    consts = constant_lr_expected_loss([0.3, 1.0], 100, spec)
    torch.testing.assert_close(consts[1], sgd_expected_loss(torch.ones(100), spec)[-1])


def test_best_constant_is_a_local_minimum() -> None:
    spec = NoisyQuadratic(dim=200, batch_size=16).spec
    lr, loss = best_constant_lr(300, spec)
    assert 0 < lr < spec.max_stable_lr
    neighbours = constant_lr_expected_loss([lr * 0.97, lr * 1.03], 300, spec)
    assert loss <= neighbours.min().item()


def test_optimal_schedule_beats_best_constant_and_has_zero_regret() -> None:
    spec = NoisyQuadratic(dim=300, batch_size=32).spec
    opt = optimal_schedule(400, spec, num_chunks=32)
    assert opt.lrs.shape == (400,)
    assert int(opt.chunk_lengths.sum()) == 400
    assert opt.expected_loss < 0.9 * opt.constant_expected_loss
    assert opt.expected_loss == pytest.approx(sgd_expected_loss(opt.lrs, spec)[-1].item())
    assert opt.regret(opt.lrs, spec) == pytest.approx(0.0, abs=1e-12)
    constant = torch.full((400,), opt.constant_lr)
    assert opt.regret(constant, spec) == pytest.approx(
        opt.constant_expected_loss - opt.expected_loss, rel=1e-6
    )
    # a decaying schedule: early LRs are larger than late ones
    assert opt.lrs[:50].mean() > opt.lrs[-50:].mean()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, r"dim must be an int >= 1, got 0"),
        ({"dim": 2.5}, r"dim must be an int >= 1, got 2.5"),
        ({"batch_size": -3}, r"batch_size must be an int >= 1, got -3"),
        ({"seed": -1}, r"seed must be an int >= 0, got -1"),
        ({"init_scale": float("nan")}, r"init_scale must be a finite number, got nan"),
        ({"dim": 3, "curvature": [1.0, -1.0, 0.5]}, r"curvature must be > 0 everywhere"),
        ({"dim": 3, "curvature": [1.0, 0.5]}, r"curvature must have dim=3 entries, got 2"),
        ({"dim": 2, "noise": [1.0, -0.1]}, r"noise must be >= 0 everywhere"),
        ({"dtype": torch.int64}, r"dtype must be a floating-point dtype, got torch.int64"),
    ],
)
def test_bad_model_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        NoisyQuadratic(**kwargs)  # type: ignore[arg-type]


def test_bad_schedule_arguments_raise() -> None:
    spec = NoisyQuadratic(dim=4).spec
    with pytest.raises(ConfigError, match=r"total_steps must be an int >= 1, got 0"):
        optimal_schedule(0, spec)
    with pytest.raises(ConfigError, match=r"num_chunks must be <= total_steps=5, got num_chunks=9"):
        optimal_schedule(5, spec, num_chunks=9)
    with pytest.raises(ConfigError, match=r"lrs must be >= 0, got min -0.1"):
        sgd_expected_loss([0.1, -0.1], spec)
    with pytest.raises(ConfigError, match=r"chunk_lrs must be > 0"):
        piecewise_expected_loss(torch.tensor([0.0, 0.1]), [1, 1], spec)
    with pytest.raises(ConfigError, match=r"same number of chunks"):
        piecewise_expected_loss(torch.tensor([0.1, 0.1]), [1, 1, 1], spec)
    with pytest.raises(ConfigError, match=r"noise_var must have dim=2 entries, got 3"):
        QuadraticSpec(torch.ones(2), torch.ones(3), torch.ones(2))
    with pytest.raises(ConfigError, match=r"lrs must have 10 steps like the optimum, got 3"):
        optimal_schedule(10, spec, num_chunks=2).regret([0.1, 0.1, 0.1], spec)
