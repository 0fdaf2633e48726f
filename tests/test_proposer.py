"""The GP proposer: bounds, no repeats, diverged points, batches, reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from autolr.proposer import GPProposer, Observation, _fill_diverged


def _loss(lr: float) -> float:
    # A valley in log(lr) with its minimum at lr = 0.03.
    return (math.log10(lr) - math.log10(0.03)) ** 2 + 0.1


@pytest.mark.parametrize("acquisition", ["ei", "ucb", "lcb-autolrs"])
def test_proposals_stay_in_bounds_and_never_repeat(acquisition):
    prop = GPProposer(1e-4, 1.0, acquisition=acquisition, seed=0, device="cpu")
    prop.reset(0, 0.0)
    seen = []
    for _ in range(10):
        (lr,) = prop.propose(1)
        assert 1e-4 <= lr <= 1.0
        assert all(abs(prop.to_x(lr) - prop.to_x(s)) > 1e-6 for s in seen)
        seen.append(lr)
        prop.observe(lr, _loss(lr))


def test_ei_finds_the_valley():
    prop = GPProposer(1e-4, 1.0, seed=0, device="cpu")
    prop.reset(0, 0.0)
    for _ in range(8):
        (lr,) = prop.propose(1)
        prop.observe(lr, _loss(lr))
    best = min(prop.stage_observations(), key=lambda o: o.value)
    assert abs(prop.to_lr(best.x) / 0.03 - 1) < 0.5


def test_diverged_probes_become_finite_bad_values():
    data = [Observation(0.1, 1.0, 0), Observation(0.5, 0.5, 0), Observation(0.9, None, 0)]
    ys = _fill_diverged(data, per_stage=False)
    assert all(math.isfinite(y) for y in ys)
    assert ys[2] > max(ys[:2]) and ys[2] < 10


def test_proposer_steers_away_from_diverged_region():
    prop = GPProposer(1e-4, 1.0, seed=0, device="cpu")
    prop.reset(0, 0.0)
    for lr in (1e-3, 1e-2, 0.3):
        prop.observe(lr, None if lr > 0.1 else _loss(lr))
    (lr,) = prop.propose(1)
    assert lr < 0.3


def test_all_diverged_searches_below():
    prop = GPProposer(1e-4, 1.0, initial=2, seed=0, device="cpu")
    prop.reset(0, 0.0)
    prop.observe(0.5, None)
    prop.observe(0.1, None)
    (lr,) = prop.propose(1)
    assert lr < 0.1


def test_batch_of_q_distinct_candidates():
    prop = GPProposer(1e-4, 1.0, seed=0, device="cpu")
    prop.reset(0, 0.0)
    for lr in prop.propose(3):
        prop.observe(lr, _loss(lr))
    batch = prop.propose(4)
    assert len(batch) == 4 and len({round(prop.to_x(x), 9) for x in batch}) == 4
    taken = [o.x for o in prop.stage_observations()]
    assert all(min(abs(prop.to_x(lr) - t) for t in taken) > 1e-6 for lr in batch)


def test_reproducible_and_rng_neutral():
    def run():
        prop = GPProposer(1e-4, 1.0, seed=7, device="cpu")
        prop.reset(0, 0.0)
        out = []
        for _ in range(6):
            (lr,) = prop.propose(1)
            prop.observe(lr, _loss(lr))
            out.append(lr)
        return out

    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    first = run()
    assert torch.equal(torch.rand(2), expected)
    assert run() == first


def test_warm_start_keeps_earlier_stages_and_state_round_trip():
    prop = GPProposer(1e-4, 1.0, warm_start=True, seed=0, device="cpu")
    prop.reset(0, 0.0)
    for lr in prop.propose(3):
        prop.observe(lr, _loss(lr))
    prop.reset(1, 0.5)
    (lr,) = prop.propose(1)
    assert 1e-4 <= lr <= 1.0 and len(prop.observations) == 3
    clone = GPProposer(1e-4, 1.0, warm_start=True, seed=0, device="cpu")
    clone.load_state_dict(prop.state_dict())
    assert clone.propose(1) == prop.propose(1)


def test_posterior_shapes():
    prop = GPProposer(1e-4, 1.0, seed=0, device="cpu")
    prop.reset(0, 0.0)
    for lr in (1e-3, 1e-2, 1e-1, 0.5):
        prop.observe(lr, _loss(lr))
    mean, std = prop.posterior(torch.logspace(-4, 0, 9))
    assert mean.shape == std.shape == (9,) and bool((std >= 0).all())


def test_stage_bounds_confine_every_proposal_and_survive_state_dict():
    prop = GPProposer(1e-4, 1.0, seed=0, device="cpu")
    prop.reset(1, 0.5, bounds=(0.01, 0.04))
    seen = []
    for _ in range(6):
        (lr,) = prop.propose(1)
        assert 0.01 * (1 - 1e-9) <= lr <= 0.04 * (1 + 1e-9)
        seen.append(lr)
        prop.observe(lr, _loss(lr))
    assert max(seen) / min(seen) > 1.5  # the space-filling start spans the region
    other = GPProposer(1e-4, 1.0, seed=0, device="cpu")
    other.load_state_dict(prop.state_dict())
    assert other.bounds == prop.bounds
    assert other.propose(1) == prop.propose(1)
    prop.reset(2, 0.7)
    assert prop.bounds == (0.0, 1.0)


def test_stage_bounds_must_be_ordered():
    prop = GPProposer(1e-4, 1.0, seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"low < high, got \(0\.04, 0\.01\)"):
        prop.reset(0, 0.0, bounds=(0.04, 0.01))
