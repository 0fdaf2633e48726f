"""check_outcome: what a probe backend returns is checked before the controller uses it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autolr.errors import InputError
from autolr.probing import ProbeOutcome, ProbeRequest, check_outcome
from autolr.snapshot import capture
from tests.conftest import make_model


def _request(**kw) -> ProbeRequest:
    base = dict(lr=0.1, steps=4, stage=0, index=0, ref_loss=None, blowup_factor=2.0)
    base.update(kw)
    return ProbeRequest(early_abort=True, **base)  # type: ignore[arg-type]


def _snapshot(dim: int = 8):
    model = make_model(0, dim=dim)
    return capture(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))


def test_a_good_outcome_is_cleaned_not_changed():
    out = ProbeOutcome(train_losses=[1.0, np.float32(0.5), math.inf, None])
    got = check_outcome(out, _request())
    assert got.train_losses == [1.0, 0.5, None, None]
    assert all(v is None or type(v) is float for v in got.train_losses)
    assert got.error is None and got.val is None and got.end_state is None


def test_val_pairs_and_an_end_state_that_fits_are_kept():
    snap = _snapshot()
    out = ProbeOutcome(train_losses=[1.0, 0.9], val=[(1.0, 0.8), (2, math.nan)], end_state=snap)
    got = check_outcome(out, _request(val_every=1, keep_state=True), snap)
    assert got.val == [(1.0, 0.8), (2.0, None)] and got.end_state is snap
    # An end state nobody asked for is dropped.
    got = check_outcome(ProbeOutcome([1.0], end_state=snap), _request(), snap)
    assert got.end_state is None


@pytest.mark.parametrize(
    ("out", "request_kw", "pattern"),
    [
        ({"train_losses": [1.0]}, {}, r"expected a ProbeOutcome, got dict"),
        (ProbeOutcome(train_losses=[1.0] * 5), {}, r"5 losses for a probe of 4 steps"),
        (ProbeOutcome(train_losses=[1.0, "0.3"]), {}, r"train_losses\[1\] must be a number"),
        (ProbeOutcome(train_losses=[True]), {}, r"train_losses\[0\] must be a number"),
        (ProbeOutcome(train_losses=3.0), {}, r"train_losses must be a list, got float"),  # type: ignore[arg-type]
        (ProbeOutcome(train_losses=[], error=7), {}, r"error must be a str, got int"),  # type: ignore[arg-type]
        (ProbeOutcome(train_losses=[1.0]), {"val_every": 1}, r"no validation values"),
        (ProbeOutcome([1.0], val=[(1.0, 0.5)]), {}, r"validation values for a training-loss"),
        (ProbeOutcome([1.0, 1.0], val=[(2.0, 0.5), (1.0, 0.4)]), {"val_every": 1}, r"val\[1\]"),
        (ProbeOutcome([1.0], val=[(3.0, 0.5)]), {"val_every": 1}, r"within the 1 steps"),
        (ProbeOutcome([1.0], val=[(1.0,)]), {"val_every": 1}, r"val\[0\] must be a \(t, loss\)"),
        (ProbeOutcome([1.0], end_state={"model": {}}), {"keep_state": True}, r"a Snapshot"),  # type: ignore[arg-type]
    ],
)
def test_garbage_is_named(out, request_kw, pattern):
    with pytest.raises(InputError, match="malformed probe outcome: .*" + pattern):
        check_outcome(out, _request(**request_kw))


def test_an_end_state_of_another_model_is_refused():
    other = ProbeOutcome(train_losses=[1.0], end_state=_snapshot(dim=4))
    with pytest.raises(InputError, match=r"end_state entry '0.weight' differs in shape"):
        check_outcome(other, _request(keep_state=True), _snapshot())
    # A failed probe may say so and report the steps it took.
    failed = check_outcome(ProbeOutcome(train_losses=[1.0], error="boom"), _request())
    assert failed.error == "boom" and failed.train_losses == [1.0]
