"""The Lightning callback shows autolr's LR and phase in the progress bar."""

from __future__ import annotations

import pytest

pytest.importorskip("lightning")

from lightning.pytorch.callbacks import TQDMProgressBar  # noqa: E402

from autolr import Phase  # noqa: E402
from autolr.controller import PHASE_CODES  # noqa: E402
from autolr.integrations.lightning import (  # noqa: E402
    METRIC_LR,
    METRIC_PHASE,
    METRIC_STAGE,
    AutoLRSCallback,
)
from tests.test_lightning import OPTIONS, TinyModule, fit  # noqa: E402


class BarSeen(TQDMProgressBar):
    """The progress bar's metrics after every training batch, as the bar shows them."""

    def __init__(self) -> None:
        super().__init__(refresh_rate=1)
        self.shown: list[dict[str, object]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.shown.append(dict(self.get_metrics(trainer, pl_module)))


def test_lr_and_phase_are_in_the_progress_bar(tmp_path):
    bar = BarSeen()
    cb = AutoLRSCallback(min_lr=1e-3, max_lr=1.0, **OPTIONS)
    cb, module, trainer = fit(
        tmp_path, module=TinyModule(), cb=cb, extra=[bar], enable_progress_bar=True
    )
    tuner = cb.tuner
    assert tuner is not None and tuner.finished
    shown = trainer.progress_bar_metrics
    assert shown[METRIC_LR] == pytest.approx(module.used_lrs[-1], rel=1e-6)
    assert shown[METRIC_PHASE] == PHASE_CODES[Phase.ANNEAL]
    assert METRIC_STAGE not in shown and METRIC_STAGE in trainer.callback_metrics
    # The bar itself, step by step: the LR each step used and its phase.
    assert len(bar.shown) == 100
    assert [m[METRIC_LR] for m in bar.shown] == pytest.approx(module.used_lrs, rel=1e-6)
    assert [int(m[METRIC_PHASE]) for m in bar.shown] == list(tuner.trace_phase)
