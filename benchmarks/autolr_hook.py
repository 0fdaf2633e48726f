"""Where autolr plugs into the benchmark: the two autolr methods and how they are driven.

The runner builds the workload's usual optimizer at its default LR, then wraps
it in ``autolr.AutoLRS`` exactly as a user would::

    tuner = autolr.AutoLRS(model, optimizer, min_lr=..., max_lr=..., total_steps=T, seed=seed)
    for batch in batches:
        loss = train_step(model, optimizer, batch)
        tuner.step(loss)
        if tuner.finished: break

``min_lr``/``max_lr`` are the ends of the workload's grid, so autolr and the grid
search start from the same prior knowledge. What is read back from the tuner
(``lr``, ``finished``, step counters) goes through ``getattr`` with fallbacks, so
the benchmark keeps running while the controller's attribute names settle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class AutoLRVariant:
    """One way of running autolr in the benchmark.

    Attributes:
        name: method id used on the command line and in the results.
        label: row label in the report.
        settings: keyword arguments for ``AutoLRS(...)`` beyond the common ones;
            any the installed ``AutoLRS`` does not accept are dropped and recorded.
        common_batches: feed the loop through ``tuner.batches(...)`` (autolr owns
            the data iterator, probes of a stage see the same batches) when the
            tuner has that method.
        val_objective: pass the workload's validation loss as ``val_fn``, so probes
            are judged on validation loss instead of training loss.
    """

    name: str
    label: str
    settings: dict[str, Any] = field(default_factory=dict)
    common_batches: bool = False
    val_objective: bool = False


VARIANTS: dict[str, AutoLRVariant] = {
    v.name: v
    for v in (
        # With a budget the default is strategy='anneal'.
        AutoLRVariant("autolr", "autolr (default settings)"),
        AutoLRVariant(
            "autolr-forecast",
            "autolr (strategy='forecast', the default before 'anneal')",
            settings={"strategy": "forecast"},
        ),
        AutoLRVariant(
            "autolr-paper",
            "autolr (AutoLRS-paper settings)",
            # The forecast rule with 10 probes per stage over the whole range,
            # tau_probe = tau / 10, exploit restarts from the snapshot
            settings={
                "strategy": "forecast",
                "probes": 10,
                "probe_fraction": 0.1,
                "keep_winner": False,
                "lr_trust": None,
            },
        ),
        AutoLRVariant(
            "autolr-anneal-val",
            "autolr (default settings, validation objective)",
            settings={"strategy": "anneal"},
            val_objective=True,
        ),
    )
}

# Tuner attributes reported after a run, when present (first name found wins per key).
COUNTERS: dict[str, tuple[str, ...]] = {
    "search_steps": ("search_steps", "probe_steps", "steps_searching"),
    "exploit_steps": ("exploit_steps",),
    "global_step": ("global_step", "step_count", "steps"),
    "stages": ("stage_index", "stages_done", "num_stages", "stage"),
    "rollbacks": ("rollbacks", "n_rollbacks", "num_rollbacks"),
    "aborted_probes": ("aborted_probes", "n_aborted", "early_aborts"),
}


def availability() -> tuple[bool, str]:
    """Whether ``from autolr import AutoLRS`` works; the error text when it does not."""
    try:
        from autolr import AutoLRS  # noqa: F401
    except Exception as exc:  # any import-time failure means: skip, and say why
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def _split_settings(cls: type, settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    from autolr.config import option_names
    from autolr.controller import PARTS

    known = option_names() | PARTS
    accepted = {k: v for k, v in settings.items() if k in known}
    return accepted, sorted(set(settings) - set(accepted))


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return None


class TunerDriver:
    """Builds ``AutoLRS`` for one run and reads its results back.

    Args:
        variant: which autolr method.
        model: the workload's model.
        optimizer: its optimizer, built at the workload's default LR.
        min_lr: lower end of the search range (linear scale); ``None``: not given.
        max_lr: upper end of the search range (linear scale); ``None``: not given.
        total_steps: the run's budget ``T``; probe steps count inside it.
        seed: the run seed.
        val_fn: the workload's validation loss, used when the variant asks for it.
        log_path: JSON-lines run log to write (None: kept in memory only).
    """

    def __init__(
        self,
        variant: AutoLRVariant,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        min_lr: float | None,
        max_lr: float | None,
        total_steps: int,
        seed: int,
        val_fn: Callable[[], float] | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        from autolr import AutoLRS

        self.variant = variant
        self.optimizer = optimizer
        wanted = dict(variant.settings)
        if variant.val_objective and val_fn is not None:
            wanted["val_fn"] = val_fn
        if log_path is not None:
            wanted["log_path"] = log_path
        self.settings, self.ignored = _split_settings(AutoLRS, wanted)
        bounds: dict[str, Any] = {
            k: v for k, v in (("min_lr", min_lr), ("max_lr", max_lr)) if v is not None
        }
        self.tuner = AutoLRS(
            model,
            optimizer,
            **bounds,
            total_steps=total_steps,
            seed=seed,
            **self.settings,
        )
        self.restores = 0

    def batches(self, iterable: Any) -> Any:
        """The tuner's common-batches wrapper when asked for and available, else as given."""
        wrap = getattr(self.tuner, "batches", None)
        if self.variant.common_batches and callable(wrap):
            return wrap(iterable)
        return iterable

    def step(self, loss: float) -> None:
        """Hand one training loss to the tuner; counts restores it reports."""
        self.tuner.step(loss)
        if getattr(self.tuner, "restored", False):
            self.restores += 1

    @property
    def finished(self) -> bool:
        return bool(getattr(self.tuner, "finished", False))

    @property
    def lr(self) -> float:
        """The tuner's current base LR, else the first param group's."""
        value = _number(getattr(self.tuner, "lr", None))
        return float(value) if value is not None else float(self.optimizer.param_groups[0]["lr"])

    def counters(self) -> dict[str, Any]:
        """Step counters and settings, for the results file."""
        out: dict[str, Any] = {}
        for key, names in COUNTERS.items():
            for name in names:
                value = _number(getattr(self.tuner, name, None))
                if value is not None:
                    out[key] = value
                    break
        out["restores_seen"] = self.restores
        hidden = ("val_fn", "log_path")
        out["settings"] = {k: v for k, v in self.settings.items() if k not in hidden}
        if self.variant.val_objective:
            out["settings"]["objective"] = "val_loss" if "val_fn" in self.settings else "train_loss"
        if self.ignored:
            out["settings_ignored"] = self.ignored
        config = getattr(self.tuner, "config", None)
        if config is not None and callable(getattr(config, "to_dict", None)):
            plain = {k: v for k, v in config.to_dict().items() if _json_scalar(v)}
            plain["probes_per_stage"] = getattr(config, "n_probes", plain.get("probes"))
            plain["anneal_steps"] = getattr(config, "anneal_steps", None)
            out["config"] = plain
        records = getattr(getattr(self.tuner, "log", None), "records", None)
        if isinstance(records, list):
            out["diagnostics"] = diagnostics(records)
        return out


def _json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def diagnostics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What the run log says about the search, compactly.

    Returns:
        ``stages``: per finished stage, the LR chosen, its forecast, the objective
        actually reached and whether it came after a rollback; ``probes``,
        ``diverged_probes`` (stopped early or unforecastable), ``rollbacks`` (with
        their reasons), ``fallbacks`` (no candidate left), and the relative
        forecast error ``(forecast - actual) / actual`` of each stage.
    """
    from autolr.runlog import DECISION, EXPLOIT_END, PROBE, ROLLBACK

    probes = [r for r in records if r.get("type") == PROBE]
    rollbacks = [r for r in records if r.get("type") == ROLLBACK]
    decisions = [r for r in records if r.get("type") == DECISION]
    stages = []
    for r in records:
        if r.get("type") != EXPLOIT_END:
            continue
        stages.append(
            {
                "stage": r.get("stage"),
                "lr": r.get("lr"),
                "forecast": r.get("forecast"),
                "actual": r.get("actual"),
                "steps": r.get("steps"),
            }
        )
    errors = [
        (s["forecast"] - s["actual"]) / abs(s["actual"])
        for s in stages
        if s["forecast"] is not None and s["actual"] not in (None, 0)
    ]
    candidates = {}
    for d in decisions:
        if d.get("reason") == "best_forecast":
            candidates[d.get("stage")] = [
                [c.get("lr"), c.get("forecast")] for c in d.get("candidates", [])
            ]
    return {
        "stages": stages,
        "probes": len(probes),
        "diverged_probes": sum(bool(p.get("diverged")) for p in probes),
        "diverged_reasons": sorted({str(p.get("reason")) for p in probes if p.get("diverged")}),
        "rollbacks": len(rollbacks),
        "rollback_reasons": [str(r.get("reason")) for r in rollbacks],
        "fallbacks": sum(d.get("reason") == "fallback" for d in decisions),
        "forecast_rel_error": errors,
        "candidates": candidates,
    }
