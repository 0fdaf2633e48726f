"""Show what happened in a run: a PNG and a self-contained HTML page from its run log.

What is drawn, each from a function that returns the arrays (tested on their own):

- :func:`step_series`: LR and loss over all steps, probes included, with each
  step's phase (warmup, probe, exploit, rolled back, anneal). Losses come from
  the log; the LR of warmup and anneal steps (not logged) from a replay of the
  log through the controller.
- :func:`probe_curves`: each stage's probe series and the forecaster's fitted
  curve out to ``tau`` (the run's own forecaster, rebuilt from the log).
- :func:`gp_posterior`: the GP over log(lr) each stage decided with, refit from
  the logged probes with :class:`autolr.proposer.GPProposer`.
- :func:`forecast_vs_actual`: each stage's forecast for its chosen LR, the
  loss its exploit actually reached, and the forecast's error.
- :func:`objective_series`: the validation objective over time, when the run
  has one (at each snapshot, in the probes, at each stage's end).
- :func:`effective_settings`: the settings the run used: the configured ones
  and the stage plan of its ``stage_start`` records (``tau``, ``tau_probe``,
  probes and exploit steps of each stage), where the config may say None.
- :func:`range_curve` and :func:`race`: a run of the annealed strategy is drawn
  by its range test (loss over the ramp's LR, the range it set) and its race
  (each candidate through its hold and cooldown, its score after it) in place
  of the forecasts and the GP.

matplotlib is needed (``pip install "autolr[plot]"``); the HTML page embeds its
images as base64 and loads nothing else.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autolr.errors import AutoLRError, FitError, require
from autolr.offline.harness import build_forecaster
from autolr.offline.logs import LoggedRun, load_run
from autolr.offline.replay import ReplayResult, replay_run
from autolr.probing import cooldown_lr
from autolr.proposer import GPProposer
from autolr.runlog import EXPLOIT_END, PHASE, PROBE, RANGE_TEST, ROLLBACK

__all__ = [
    "OBJECTIVE_KINDS",
    "ReportFiles",
    "effective_settings",
    "forecast_vs_actual",
    "gp_posterior",
    "objective_series",
    "probe_curves",
    "race",
    "range_curve",
    "render_figures",
    "settings_rows",
    "step_series",
    "write_report",
]

logger = logging.getLogger(__name__)

PHASES = ("range", "warmup", "probe", "exploit", "rolled_back", "anneal")
_COLORS = {
    "range": "#b58adb",
    "warmup": "#bbbbbb",
    "probe": "#f4a259",
    "exploit": "#5b8def",
    "rolled_back": "#e05d5d",
    "anneal": "#8bc34a",
}


def search_range(run: LoggedRun) -> tuple[float, float]:
    """The run's search range: the one its range test set, else the one given."""
    tests = run.of_type(RANGE_TEST)
    if tests:
        low, high = tests[0]["lr_range"]
        return float(low), float(high)
    return float(run.config["min_lr"]), float(run.config["max_lr"])


def _as_run(run: LoggedRun | str | Path) -> LoggedRun:
    return run if isinstance(run, LoggedRun) else load_run(run)


def _try_replay(run: LoggedRun) -> ReplayResult | None:
    try:
        return replay_run(run)
    except AutoLRError as exc:
        logger.warning("replay failed (%s): warmup and anneal LRs are left out", exc)
        return None


def step_series(
    run: LoggedRun | str | Path, replay: ReplayResult | None | bool = True
) -> dict[str, np.ndarray]:
    """Every step's LR, loss and phase.

    Args:
        run: the logged run or its path.
        replay: a :class:`ReplayResult` of it, True to replay now, or False/None
            to use the records alone (warmup and anneal LRs are then NaN).

    Returns:
        ``step``: `(n,)` int64 global steps ``0..n-1`` (probe steps count);
        ``lr``: `(n,)` float64 LR applied at the step (linear scale; NaN: unknown);
        ``loss``: `(n,)` float64 loss of the step (NaN: not logged or non-finite);
        ``phase``: `(n,)` str, one of :data:`PHASES` or ``""`` (unknown).
    """
    run = _as_run(run)
    if replay is True:
        replay = _try_replay(run)
    n = int(run.run_end["total"]) if run.run_end is not None else run.last_step
    lr = np.full(n, np.nan)
    loss = np.full(n, np.nan)
    phase = np.full(n, "", dtype=object)
    replayed = False
    if isinstance(replay, ReplayResult) and replay.matches:
        replayed = True
        for step, applied, ph, _ in replay.steps:
            if 0 <= step < n:
                lr[step], phase[step] = applied, ph
    for rec in run.records:
        kind = rec["type"]
        if kind == RANGE_TEST:
            _put(lr, loss, phase, rec["step"], rec["losses"], None, "range")
            _put_rates(lr, rec["step"], rec["lrs"])
        elif kind == PROBE:
            _put(lr, loss, phase, rec["step"], rec["train_losses"], None, "probe")
            _put_rates(lr, rec["step"], _probe_rates(run, rec))
        elif kind == ROLLBACK:
            # The steps up to the state it went back to (the hold's best) were kept.
            start = rec["step"] - len(rec["losses"])
            kept = max(0, (rec.get("back_to") or 0) - start)
            _put(lr, loss, phase, start + kept, rec["losses"][:kept], rec["lr"], "exploit")
            _put(lr, loss, phase, rec["step"], rec["losses"][kept:], rec["lr"], "rolled_back")
        elif kind == EXPLOIT_END:
            _put(lr, loss, phase, rec["step"], rec["losses"], rec["lr"], "exploit")
            if rec.get("climbs") and not replayed:
                _put_climb(lr, rec)
    first = run.stages[0] if run.stages else None
    warm = int(run.config.get("warmup_steps") or 0)
    if first is not None and warm:
        phase[:warm] = "warmup"
        recent = first.recent or []
        if recent and len(recent) <= warm:
            loss[warm - len(recent) : warm] = recent
    for rec in run.of_type(PHASE):
        if rec["phase"] == "anneal":
            phase[rec["step"] :] = "anneal"
    anneal = (run.run_end or {}).get("anneal_losses")
    if anneal:
        _put(lr, loss, phase, n, anneal, None, "anneal")
    return {"step": np.arange(n, dtype=np.int64), "lr": lr, "loss": loss, "phase": phase}


def _probe_rates(run: LoggedRun, rec: dict[str, Any]) -> list[float]:
    """Each step's LR of a probe: its LR held, then its cooldown (annealed strategy)."""
    st = run.stage(int(rec["stage"]))
    cool = int((st.start.get("cool") or 0) if st is not None else 0)
    steps = len(rec["train_losses"])
    held = min(steps, int(st.start["tau_probe"])) if st is not None and cool else steps
    rate = float(rec["lr"])
    return [rate] * held + [cooldown_lr(rate, k, cool) for k in range(steps - held)]


def _put_rates(lr: np.ndarray, end: int, rates: list[float]) -> None:
    start = end - len(rates)
    for k, rate in enumerate(rates):
        if 0 <= start + k < len(lr):
            lr[start + k] = rate


def _put_climb(lr: np.ndarray, rec: dict[str, Any]) -> None:
    """An exploit that climbed off a plateau: its LR, doubled at each ``climbs`` step."""
    end = int(rec["step"])
    climbs = [(int(step), float(rate)) for step, rate in rec["climbs"]]
    rate = float(rec["lr"]) / 2.0 ** len(climbs)
    for i in range(max(end - len(rec["losses"]), 0), min(end, len(lr))):
        while climbs and climbs[0][0] <= i:
            rate = climbs.pop(0)[1]
        lr[i] = rate


def _put(
    lr: np.ndarray,
    loss: np.ndarray,
    phase: np.ndarray,
    end: int,
    values: list[float | None],
    rate: float | None,
    name: str,
) -> None:
    start = end - len(values)
    for k, v in enumerate(values):
        i = start + k
        if 0 <= i < len(loss):
            loss[i] = np.nan if v is None else v
            phase[i] = name
            if rate is not None and (name != "exploit" or math.isnan(lr[i])):
                lr[i] = rate


def probe_curves(run: LoggedRun | str | Path, stage: int, points: int = 64) -> list[dict[str, Any]]:
    """Each probe of a stage with its fitted forecast curve.

    Args:
        run: the logged run or its path.
        stage: stage number.
        points: points of each curve, from ``t = 0`` to ``t = tau``.

    Returns:
        One dict per probe: ``lr`` (float), ``t`` and ``losses`` (`(m,)` float64,
        the objective series; NaN where non-finite), ``diverged`` (bool),
        ``reason`` (str), ``forecast`` (float or None: the logged forecast at
        ``tau``), ``curve_t`` and ``curve`` (`(points,)` float64, the curve the
        run's forecaster fits, refit from the series; None for diverged probes or
        when the forecaster cannot be rebuilt), ``tau`` (int).
    """
    run = _as_run(run)
    st = run.stage(stage)
    if st is None:
        raise AutoLRError(f"{run.path}: no stage {stage} in the log")
    try:
        fc = build_forecaster(run)
    except AutoLRError as exc:
        logger.warning("cannot rebuild the run's forecaster (%s): no curves drawn", exc)
        fc = None
    grid = torch.linspace(0.0, float(st.tau), points, dtype=torch.float64)
    out = []
    for p in st.probes:
        t = np.asarray(p["t"], dtype=np.float64)
        y = np.asarray([np.nan if v is None else v for v in p["losses"]], dtype=np.float64)
        curve = None
        if fc is not None and not p["diverged"] and np.isfinite(y).sum() >= 3:
            tt = torch.as_tensor(t)
            yy = torch.as_tensor(y).unsqueeze(0).expand(points, -1)
            try:
                # The same series forecast at every grid point: the fitted curve, by the
                # forecaster's own code.
                curve = fc.forecast(tt, yy, grid).values.double().numpy().copy()
            except FitError:
                curve = None
        out.append(
            {
                "lr": float(p["lr"]),
                "t": t,
                "losses": y,
                "diverged": bool(p["diverged"]),
                "reason": str(p.get("reason") or ""),
                "forecast": p["forecast"],
                "curve_t": grid.numpy().copy() if curve is not None else None,
                "curve": curve,
                "tau": st.tau,
            }
        )
    return out


def gp_posterior(
    run: LoggedRun | str | Path, stage: int, points: int = 128
) -> dict[str, Any] | None:
    """The GP over log(lr) that the stage's decision saw, refit from the logged probes.

    The proposer is rebuilt with the run's settings; with ``warm_start`` it also
    sees the earlier stages' probes (and their rollbacks), as in the run.

    Returns:
        None when the stage has no finite forecast to fit. Else ``lrs`` (`(points,)`
        float64, log-spaced over ``[min_lr, max_lr]``), ``mean`` and ``std``
        (`(points,)` float64, forecast-loss units), ``obs_lr`` and ``obs_value``
        (`(k,)` the probes with a forecast), ``diverged_lr`` (`(j,)` the others),
        ``chosen_lr`` (float or None: the stage's first decision).
    """
    run = _as_run(run)
    st = run.stage(stage)
    if st is None:
        raise AutoLRError(f"{run.path}: no stage {stage} in the log")
    cfg = run.config
    total = cfg.get("total_steps")
    low, high = search_range(run)
    prop = GPProposer(
        low,
        high,
        acquisition=str(cfg.get("acquisition", "ei")),
        beta=float(cfg.get("ucb_beta", 2.0)),
        initial=int(cfg.get("initial_probes", 3)),
        warm_start=bool(cfg.get("warm_start", False)),
        seed=int(cfg.get("seed", 0)),
        device="cpu",
    )
    for earlier in run.stages[: stage + 1]:
        if not prop.warm_start and earlier.index != stage:
            continue
        progress = earlier.start["step"] / total if total else 0.0
        prop.reset(earlier.index, progress)
        for p in earlier.probes:
            prop.observe(float(p["lr"]), None if p["diverged"] else p["forecast"])
        if earlier.index != stage:
            for rb in earlier.rollbacks:
                prop.mark_diverged(float(rb["lr"]))
    finite = [p for p in st.probes if not p["diverged"] and p["forecast"] is not None]
    if not finite:
        return None
    lrs = torch.logspace(math.log10(low), math.log10(high), points).double()
    try:
        mean, std = prop.posterior(lrs)
    except (FitError, RuntimeError, ValueError) as exc:
        logger.warning("stage %d: GP refit failed (%s)", stage, exc)
        return None
    dec = st.first_decision()
    return {
        "lrs": lrs.numpy().copy(),
        "mean": mean.double().numpy().copy(),
        "std": std.double().numpy().copy(),
        "obs_lr": np.asarray([p["lr"] for p in finite], dtype=np.float64),
        "obs_value": np.asarray([p["forecast"] for p in finite], dtype=np.float64),
        "diverged_lr": np.asarray(
            [p["lr"] for p in st.probes if p not in finite], dtype=np.float64
        ),
        "chosen_lr": None if dec is None else dec["lr"],
    }


def annealed(run: LoggedRun) -> bool:
    """The run decided with the annealed strategy (range test, race, hold, decay)."""
    return run.config.get("strategy") == "anneal"


def range_curve(run: LoggedRun | str | Path) -> dict[str, Any] | None:
    """The LR range test: ``lrs`` and ``losses`` (`(m,)` float64, NaN where
    non-finite), ``best_lr``, ``lr_range`` (the search range it set), ``reason``
    (why it stopped); None when the run had none."""
    run = _as_run(run)
    tests = run.of_type(RANGE_TEST)
    if not tests:
        return None
    rec = tests[0]
    return {
        "lrs": np.asarray(rec["lrs"], dtype=np.float64),
        "losses": np.asarray([_num(v) for v in rec["losses"]], dtype=np.float64),
        "best_lr": float(rec["best_lr"]),
        "lr_range": (float(rec["lr_range"][0]), float(rec["lr_range"][1])),
        "reason": str(rec.get("reason") or "end of the ramp"),
    }


def race(run: LoggedRun | str | Path, stage: int = 0) -> list[dict[str, Any]]:
    """The annealed strategy's race in a stage: per candidate ``lr``, ``t`` and
    ``losses`` (`(m,)` float64, the objective through the hold and the cooldown),
    ``held`` (steps at the LR before the cooldown), ``score`` (the objective after
    the cooldown, None when out), ``reason`` (why out, or ""), ``chosen`` (bool)."""
    run = _as_run(run)
    st = run.stage(stage)
    if st is None:
        raise AutoLRError(f"{run.path}: no stage {stage} in the log")
    dec = st.first_decision()
    chosen = None if dec is None or not dec.get("from_probe") else dec["lr"]
    return [
        {
            "lr": float(p["lr"]),
            "t": np.asarray(p["t"], dtype=np.float64),
            "losses": np.asarray([_num(v) for v in p["losses"]], dtype=np.float64),
            "held": int(st.start["tau_probe"]),
            "score": None if p["diverged"] else p["forecast"],
            "reason": str(p.get("reason") or ""),
            "chosen": chosen is not None and math.isclose(float(p["lr"]), chosen, rel_tol=1e-9),
        }
        for p in st.probes
    ]


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def forecast_vs_actual(run: LoggedRun | str | Path) -> dict[str, np.ndarray]:
    """Each finished stage: its chosen LR, the forecast for it, the loss reached, the error.

    Returns:
        ``stage`` (`(s,)` int64), ``lr``, ``forecast`` and ``actual`` (`(s,)`
        float64; NaN where the log has none). ``actual`` is the objective the
        exploit reached, as the controller logs it (the validation loss with a
        validation objective, else the median of the last exploit losses).
        ``error``: ``forecast - actual``; ``rel_error``: ``error / |actual|``
        (`(s,)` float64; NaN where either is missing or ``actual`` is 0).
    """
    run = _as_run(run)
    ends = run.of_type(EXPLOIT_END)
    forecast = np.asarray([_num(r["forecast"]) for r in ends], dtype=np.float64)
    actual = np.asarray([_num(r.get("actual")) for r in ends], dtype=np.float64)
    error = forecast - actual
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(actual != 0, error / np.abs(actual), np.nan)
    return {
        "stage": np.asarray([r["stage"] for r in ends], dtype=np.int64),
        "lr": np.asarray([_num(r["lr"]) for r in ends], dtype=np.float64),
        "forecast": forecast,
        "actual": actual,
        "error": error,
        "rel_error": rel,
    }


OBJECTIVE_KINDS = ("snapshot", "probe", "stage_end")
"""Where :func:`objective_series` values come from."""


def objective_series(run: LoggedRun | str | Path) -> dict[str, np.ndarray] | None:
    """The validation objective over time, when the run has one.

    The log holds the objective at each stage's snapshot (``t = 0`` of its
    probes), every ``val_every`` steps of each probe (a probe starts from the
    snapshot, so its values are of a branch that is put back), and at each
    exploit's end (``exploit_end.actual``: the model that trains on).

    Returns:
        None when the objective is the training loss. Else ``step`` (`(m,)`
        int64, global steps, probes counted), ``value`` (`(m,)` float64, the
        validation loss; NaN where non-finite), ``stage`` (`(m,)` int64),
        ``kind`` (`(m,)` str, one of :data:`OBJECTIVE_KINDS`), in step order.
    """
    run = _as_run(run)
    if run.objective != "val_loss":
        return None
    rows: list[tuple[int, float, int, str]] = []
    for st in run.stages:
        for k, p in enumerate(st.probes):
            start = int(p["step"]) - int(p.get("steps", len(p["train_losses"])))
            for t, v in zip(p["t"], p["losses"]):
                kind = "snapshot" if t == 0 else "probe"
                if kind == "snapshot" and k > 0:
                    continue  # every probe starts from the same snapshot
                rows.append((start + int(t), _num(v), st.index, kind))
        end = st.exploit_end
        if end is not None and end.get("actual") is not None:
            rows.append((int(end["step"]), float(end["actual"]), st.index, "stage_end"))
    rows.sort(key=lambda r: r[0])
    return {
        "step": np.asarray([r[0] for r in rows], dtype=np.int64),
        "value": np.asarray([r[1] for r in rows], dtype=np.float64),
        "stage": np.asarray([r[2] for r in rows], dtype=np.int64),
        "kind": np.asarray([r[3] for r in rows], dtype=object),
    }


_CONFIGURED = (
    "min_lr",
    "max_lr",
    "total_steps",
    "objective",
    "warmup_steps",
    "probes",
    "tau",
    "tau_probe",
)
_PLAN = ("tau", "tau_probe", "probes", "exploit_steps")


def effective_settings(run: LoggedRun | str | Path) -> dict[str, Any]:
    """The settings the run used, beside the ones it was given.

    Returns:
        ``configured``: the ``run_start`` config's value of each main setting
        (None: left to autolr's plan); ``stages``: per setting of the stage
        plan (``tau``, ``tau_probe``, ``probes``, ``exploit_steps``), the list
        of each stage's value from its ``stage_start`` (in stage order; for
        ``probes``, the candidates a searched stage ran: a race may end early);
        ``forecaster`` and ``strategy`` (names, or None when not logged);
        ``steps`` (steps taken), ``search_steps`` (steps probing) and
        ``search_share`` (their fraction; NaN for an empty run).
    """
    run = _as_run(run)
    cfg = run.config
    strategy = run.start.get("strategy")
    forecaster = run.forecaster_config or {}
    probes = run.of_type(PROBE)
    search = sum(int(p.get("steps", len(p["train_losses"]))) for p in probes)
    end = run.run_end
    total = int(end["total"]) if end is not None else run.last_step
    if end is not None and end.get("search_steps") is not None:
        search = int(end["search_steps"])
    return {
        "configured": {k: cfg.get(k) for k in _CONFIGURED},
        "stages": {
            k: [
                len(st.probes) if k == "probes" and st.searched else int(st.start[k])
                for st in run.stages
            ]
            for k in _PLAN
        },
        "forecaster": forecaster.get("name", cfg.get("forecaster")),
        "strategy": strategy.get("name") if isinstance(strategy, dict) else None,
        "steps": total,
        "search_steps": search,
        "search_share": search / total if total else math.nan,
    }


def _values(values: list[int]) -> str:
    """``3`` when every stage has it, else ``45, 90, 200``."""
    if not values:
        return "-"
    if len(set(values)) == 1:
        return f"{values[0]} (every stage)"
    return ", ".join(str(v) for v in values)


def settings_rows(run: LoggedRun | str | Path) -> list[tuple[str, str, str]]:
    """``(setting, configured, used)`` rows of :func:`effective_settings`, as text."""
    eff = effective_settings(run)
    conf = eff["configured"]
    rows = [
        (k, _fmt(conf[k]), _fmt(conf[k]))
        for k in ("min_lr", "max_lr", "total_steps", "objective", "warmup_steps")
    ]
    for k in _PLAN:
        given = conf.get(k, None) if k != "exploit_steps" else None
        used = _values(eff["stages"][k])
        rows.append((k if k != "probes" else "probes per stage", _fmt(given), used))
    if eff["strategy"] != "anneal":  # the annealed strategy scores without a forecaster
        rows.append(("forecaster", _fmt(eff["forecaster"]), _fmt(eff["forecaster"])))
    if eff["strategy"] is not None:
        rows.append(("strategy", eff["strategy"], eff["strategy"]))
    share = eff["search_share"]
    rows.append(
        (
            "steps probing",
            "-",
            f"{eff['search_steps']} of {eff['steps']} ({100 * share:.0f}%)"
            if math.isfinite(share)
            else "-",
        )
    )
    return rows


def _settings_line(run: LoggedRun) -> str:
    eff = effective_settings(run)
    conf = eff["configured"]
    head = ", ".join(
        f"{k}={_fmt(conf[k])}" for k in ("min_lr", "max_lr", "total_steps", "objective")
    )
    if annealed(run):
        first = run.stages[0].start if run.stages else {}
        share = eff["search_share"]
        planned, ran = first.get("probes", "-"), len(run.stages[0].probes) if run.stages else 0
        lrs = f"{ran} of {planned}" if run.stages and ran != planned else f"{planned}"
        race = (
            f"race: {lrs} LRs, {first.get('tau_probe', '-')} steps held "
            f"+ {first.get('cool', '-')} cooling down"
        )
        searching = f"{100 * share:.0f}% of steps searching" if math.isfinite(share) else ""
        return f"{head}, strategy=anneal   |   {race}   |   {searching} (range test, race)"
    plan = "; ".join(
        f"{k} {', '.join(str(v) for v in eff['stages'][k]) or '-'}"
        for k in ("tau", "tau_probe", "probes")
    )
    share = eff["search_share"]
    probing = f"{100 * share:.0f}% of steps probing" if math.isfinite(share) else ""
    return f"{head}, forecaster={eff['forecaster']}   |   per stage: {plan}   |   {probing}"


# --------------------------------------------------------------------------- drawing


def _figure(width: float, height: float) -> Any:
    require("matplotlib", "plot")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _spans(phase: np.ndarray) -> list[tuple[int, int, str]]:
    out = []
    start = 0
    for i in range(1, len(phase) + 1):
        if i == len(phase) or phase[i] != phase[start]:
            if phase[start]:
                out.append((start, i, str(phase[start])))
            start = i
    return out


def _stage_marks(ax: Any, run: LoggedRun, label: bool) -> None:
    """A thin line at each stage's start; ``label``: its number at the top (at most ~12)."""
    starts = [(st.index, int(st.start["step"])) for st in run.stages]
    every = max(1, math.ceil(len(starts) / 12))
    for i, (index, step) in enumerate(starts):
        ax.axvline(step, color="#666666", lw=0.5, alpha=0.6)
        if label and i % every == 0:
            ax.text(
                step,
                1.01,
                f"stage {index}" if len(starts) <= 6 else f"s{index}",
                transform=ax.get_xaxis_transform(),
                fontsize=8,
                ha="left",
                va="bottom",
            )
    for rec in run.resumes:
        ax.axvline(rec["step"], color="#7b1fa2", lw=1.2, ls="--")


def _draw_overview(
    axes: dict[str, Any],
    run: LoggedRun,
    series: dict[str, np.ndarray],
    fva: dict[str, np.ndarray],
    objective: dict[str, np.ndarray] | None,
) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax_lr, ax_loss = axes["lr"], axes["loss"]
    steps = series["step"]
    lines = [ax for ax in (ax_lr, ax_loss, axes.get("objective")) if ax is not None]
    for a, b, ph in _spans(series["phase"]):
        for ax in lines:
            ax.axvspan(a, b, color=_COLORS.get(ph, "#dddddd"), alpha=0.18, lw=0)
    for ax in lines:
        _stage_marks(ax, run, label=ax is ax_lr)
    ax_lr.plot(steps, series["lr"], color="black", lw=1)
    if np.isfinite(series["lr"]).any() and np.nanmin(series["lr"]) > 0:
        ax_lr.set_yscale("log")
    ax_lr.set_ylabel("LR")
    ax_lr.set_title("LR per step (shaded: phase)", pad=14)
    shown = [ph for ph in PHASES if (series["phase"] == ph).any()]
    handles: list[Any] = [
        Patch(color=_COLORS[ph], alpha=0.4, label=ph.replace("_", " ")) for ph in shown
    ]
    if run.resumes:
        handles.append(Line2D([], [], color="#7b1fa2", ls="--", label="resumed"))
    if handles:
        ax_lr.legend(handles=handles, loc="lower left", fontsize=8, ncol=len(handles))
    for ph in PHASES:
        mask = series["phase"] == ph
        if mask.any() and np.isfinite(series["loss"][mask]).any():
            ax_loss.plot(
                steps[mask],
                series["loss"][mask],
                ".",
                ms=2,
                color=_COLORS[ph],
                label=ph.replace("_", " "),
            )
    finite = series["loss"][np.isfinite(series["loss"])]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title("training loss per step (warmup losses are not logged)")
    if finite.size:
        ax_loss.legend(loc="upper right", fontsize=8, markerscale=4)
    bottom = ax_loss
    ax_obj = axes.get("objective")
    if ax_obj is not None and objective is not None:
        for kind, style, label in (
            ("probe", dict(marker=".", ls="", ms=3, color=_COLORS["probe"]), "in probes"),
            ("snapshot", dict(marker="s", ls="", ms=4, color="#444444"), "at each snapshot"),
        ):
            mask = objective["kind"] == kind
            if mask.any():
                ax_obj.plot(objective["step"][mask], objective["value"][mask], label=label, **style)
        mask = objective["kind"] == "stage_end"
        if mask.any():
            ax_obj.plot(
                objective["step"][mask],
                objective["value"][mask],
                "o-",
                ms=5,
                lw=1.2,
                color=_COLORS["exploit"],
                label="at each stage's end",
            )
        ax_obj.set_ylabel("validation loss")
        ax_obj.set_title("validation objective over time")
        if objective["step"].size:
            ax_obj.legend(loc="upper right", fontsize=8)
        bottom = ax_obj
    bottom.set_xlabel("step (probe steps count)")
    if annealed(run):
        cands = race(run) if run.stages else []
        _draw_range_test(axes["fva"], range_curve(run), cands)
        _draw_race_scores(axes["error"], cands)
        return
    _draw_forecast_vs_actual(axes["fva"], fva)
    _draw_forecast_error(axes["error"], fva)


def _draw_range_test(ax: Any, curve: dict[str, Any] | None, cands: list[dict[str, Any]]) -> None:
    if curve is None:
        ax.text(0.5, 0.5, "no range test", ha="center", transform=ax.transAxes)
        return
    ax.plot(curve["lrs"], curve["losses"], ".-", ms=3, lw=0.8, color=_COLORS["range"])
    low, high = curve["lr_range"]
    ax.axvspan(low, high, color="#5b8def", alpha=0.12, lw=0, label="search range")
    ax.axvline(curve["best_lr"], color="black", lw=1, ls=":", label="best lr (range test)")
    for c in cands:
        ax.axvline(c["lr"], color="#2e7d32" if c["chosen"] else "#999999", lw=0.8)
    ax.set_xscale("log")
    finite = curve["losses"][np.isfinite(curve["losses"])]
    if finite.size:
        top = min(float(finite.max()), 3.0 * float(finite[0]) if finite[0] > 0 else np.inf)
        ax.set_ylim(float(finite.min()) - 0.05 * abs(float(finite.min())), top * 1.05)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("ramp LR (lines: candidates, green: chosen)")
    ax.set_ylabel("training loss")
    ax.set_title(f"range test ({curve['reason']})")


def _draw_race_scores(ax: Any, cands: list[dict[str, Any]]) -> None:
    scored = [c for c in cands if c["score"] is not None]
    if not cands:
        ax.text(0.5, 0.5, "no race", ha="center", transform=ax.transAxes)
        return
    if scored:
        ax.plot([c["lr"] for c in scored], [c["score"] for c in scored], "o", color="#5b8def")
        for c in scored:
            if c["chosen"]:
                ax.plot([c["lr"]], [c["score"]], "o", ms=10, mfc="none", color="#2e7d32")
    for c in cands:
        if c["score"] is None:
            ax.axvline(c["lr"], color="#e05d5d", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("candidate LR (red dashes: out)")
    ax.set_ylabel("objective after the cooldown")
    ax.set_title("race: each LR's score (circled: chosen)")


def _draw_forecast_vs_actual(ax: Any, fva: dict[str, np.ndarray]) -> None:
    ok = np.isfinite(fva["forecast"]) & np.isfinite(fva["actual"])
    if ok.any():
        f, a = fva["forecast"][ok], fva["actual"][ok]
        ax.scatter(f, a, color="#5b8def")
        every = max(1, math.ceil(int(ok.sum()) / 12))
        for k, (st, x, y) in enumerate(zip(fva["stage"][ok], f, a)):
            if k % every == 0:
                ax.annotate(
                    f"stage {st}", (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points"
                )
        lo, hi = min(f.min(), a.min()), max(f.max(), a.max())
        ax.plot([lo, hi], [lo, hi], "--", color="grey", lw=1, label="forecast = actual")
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished stage", ha="center", transform=ax.transAxes)
    ax.margins(0.15)
    ax.set_xlabel("forecast at tau (chosen LR)")
    ax.set_ylabel("objective reached")
    ax.set_title("forecast vs actual")


def _draw_forecast_error(ax: Any, fva: dict[str, np.ndarray]) -> None:
    rel = fva["rel_error"]
    ok = np.isfinite(rel)
    if not ok.any():
        ax.text(0.5, 0.5, "no finished stage", ha="center", transform=ax.transAxes)
    else:
        stages = fva["stage"][ok]
        pct = 100 * rel[ok]
        x = np.arange(len(stages))
        colors = ["#e05d5d" if v > 0 else "#5b8def" for v in pct]
        ax.bar(x, pct, color=colors)
        ax.axhline(0, color="black", lw=0.8)
        every = max(1, math.ceil(len(stages) / 12))
        ax.set_xticks(x[::every])
        ax.set_xticklabels([str(s) for s in stages[::every]], fontsize=8)
        if len(stages) <= 12:
            for xi, v in zip(x, pct):
                ax.annotate(
                    f"{v:+.0f}%",
                    (xi, v),
                    fontsize=8,
                    ha="center",
                    va="bottom" if v >= 0 else "top",
                    xytext=(0, 2 if v >= 0 else -2),
                    textcoords="offset points",
                )
        ax.margins(y=0.2)
    ax.set_xlabel("stage")
    ax.set_ylabel("(forecast - actual) / actual, %")
    ax.set_title("forecast error per stage (red: too high)")


def _lr_colors(lrs: list[float]) -> list[Any]:
    """One viridis colour per LR, by its place on a log scale between the extremes."""
    import matplotlib as mpl

    cmap = mpl.colormaps["viridis"]
    lo, hi = math.log(min(lrs or [1.0])), math.log(max(lrs or [1.0]))
    return [cmap(0.1 + 0.8 * (0.5 if hi == lo else (math.log(x) - lo) / (hi - lo))) for x in lrs]


def _draw_stage(
    ax_curves: Any, ax_gp: Any, stage: int, curves: list[dict[str, Any]], gp: dict[str, Any] | None
) -> None:
    for c, color in zip(curves, _lr_colors([c["lr"] for c in curves])):
        label = f"lr={c['lr']:.3g}" + (" (diverged)" if c["diverged"] else "")
        ax_curves.plot(c["t"], c["losses"], ".", ms=3, color=color, label=label)
        if c["curve"] is not None:
            ax_curves.plot(c["curve_t"], c["curve"], "-", lw=1, color=color)
        if c["forecast"] is not None:
            ax_curves.plot([c["tau"]], [c["forecast"]], "x", color=color)
    if curves:
        ax_curves.axvline(curves[0]["tau"], color="grey", lw=0.8, ls=":")
        # A diverged probe's losses can reach 1e38: scale the axis to the others.
        kept = [np.asarray(c["losses"], dtype=float) for c in curves if not c["diverged"]]
        kept = [v[np.isfinite(v)] for v in kept]
        kept = [v for v in kept if v.size]
        if kept:
            low = min(float(v.min()) for v in kept)
            high = max(float(v.max()) for v in kept)
            # The forecasts at tau too (the x marks), unless far off the series.
            span = high - low or abs(high) or 1.0
            for c in curves:
                f = c["forecast"]
                if not c["diverged"] and f is not None and low - 2 * span <= f <= high + span:
                    low, high = min(low, f), max(high, f)
            pad = 0.1 * (high - low) or 0.1 * abs(high) or 1.0
            ax_curves.set_ylim(low - pad, high + 3 * pad)
    ax_curves.set_title(f"stage {stage}: probes and their forecasts (x: forecast at tau)")
    ax_curves.set_xlabel("probe step")
    ax_curves.set_ylabel("objective")
    ax_curves.legend(fontsize=8, loc="upper right", markerscale=3)
    if gp is None:
        ax_gp.text(0.5, 0.5, "no GP: no finite forecast", ha="center", transform=ax_gp.transAxes)
    else:
        ax_gp.plot(gp["lrs"], gp["mean"], color="#5b8def", label="GP mean")
        ax_gp.fill_between(
            gp["lrs"],
            gp["mean"] - 2 * gp["std"],
            gp["mean"] + 2 * gp["std"],
            color="#5b8def",
            alpha=0.2,
            label="+-2 sd",
        )
        ax_gp.plot(gp["obs_lr"], gp["obs_value"], "o", color="black", ms=4, label="forecasts")
        for x in gp["diverged_lr"]:
            ax_gp.axvline(x, color="#e05d5d", lw=0.8, ls="--")
        if gp["chosen_lr"] is not None:
            ax_gp.axvline(gp["chosen_lr"], color="#2e7d32", lw=1.2, label="chosen")
        ax_gp.set_xscale("log")
        ax_gp.legend(fontsize=8, loc="upper right")
    ax_gp.set_title(f"stage {stage}: GP posterior over log(lr) (red dashes: diverged)")
    ax_gp.set_xlabel("LR")
    ax_gp.set_ylabel("forecast loss")


def _draw_race_curves(ax: Any, stage: int, cands: list[dict[str, Any]]) -> None:
    for c, color in zip(cands, _lr_colors([c["lr"] for c in cands])):
        label = f"lr={c['lr']:.3g}" + (" *" if c["chosen"] else "")
        if c["reason"]:
            label += f" (out: {c['reason']})"
        ax.plot(c["t"], c["losses"], ".-", ms=3, lw=0.6, color=color, label=label)
        if c["score"] is not None and c["t"].size:
            ax.plot([c["t"][-1]], [c["score"]], "x", ms=8, color=color)
    if cands:
        ax.axvline(cands[0]["held"], color="grey", lw=0.8, ls=":")
        kept = [c["losses"][np.isfinite(c["losses"])] for c in cands if c["score"] is not None]
        kept = [v for v in kept if v.size]
        if kept:
            low = min(float(v.min()) for v in kept)
            high = max(float(v.max()) for v in kept)
            pad = 0.1 * (high - low) or 0.1 * abs(high) or 1.0
            ax.set_ylim(low - pad, high + 3 * pad)
    ax.set_title(
        f"stage {stage}: the race (held until the dotted line, then cooled down to LR 0; "
        "x: the score, * chosen)"
    )
    ax.set_xlabel("probe step")
    ax.set_ylabel("objective")
    ax.legend(fontsize=8, loc="upper right")


def render_figures(
    run: LoggedRun | str | Path, replay: ReplayResult | None | bool = True
) -> dict[str, bytes]:
    """PNG bytes: ``"overview"``, ``"stage <i>"`` per stage with probes, ``"all"`` (stacked)."""
    run = _as_run(run)
    series = step_series(run, replay)
    fva = forecast_vs_actual(run)
    objective = objective_series(run)
    out: dict[str, bytes] = {}
    rows = 3 if objective is not None else 2
    fig = _figure(12, 3.3 * rows + 0.8)
    grid = fig.add_gridspec(
        rows * 2,
        3,
        left=0.07,
        right=0.98,
        top=1 - 0.75 / (3.3 * rows + 0.8),
        bottom=0.55 / (3.3 * rows + 0.8),
        hspace=1.1,
        wspace=0.3,
    )
    axes = {
        "lr": fig.add_subplot(grid[0:2, :2]),
        "loss": fig.add_subplot(grid[2:4, :2]),
        "fva": fig.add_subplot(grid[0:rows, 2]),
        "error": fig.add_subplot(grid[rows : 2 * rows, 2]),
    }
    if objective is not None:
        axes["objective"] = fig.add_subplot(grid[4:6, :2], sharex=axes["lr"])
    axes["loss"].sharex(axes["lr"])
    fig.text(0.01, 0.995, _settings_line(run), fontsize=8.5, va="top", ha="left", wrap=True)
    _draw_overview(axes, run, series, fva, objective)
    out["overview"] = _png(fig)
    for st in run.stages:
        if not st.probes:
            continue
        if annealed(run):
            fig = _figure(11, 3.6)
            ax = fig.subplots(1, 1)
            fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.15)
            _draw_race_curves(ax, st.index, race(run, st.index))
            out[f"stage {st.index}"] = _png(fig)
            continue
        fig = _figure(11, 3.6)
        a, b = fig.subplots(1, 2)
        fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.15, wspace=0.25)
        _draw_stage(a, b, st.index, probe_curves(run, st.index), gp_posterior(run, st.index))
        out[f"stage {st.index}"] = _png(fig)
    out["all"] = _stack(list(out.values()))
    return out


def _stack(pngs: list[bytes]) -> bytes:
    """One PNG of several, top to bottom (padded white to the widest)."""
    from matplotlib import image

    arrays = [image.imread(io.BytesIO(b), format="png") for b in pngs]
    width = max(a.shape[1] for a in arrays)
    chans = max(a.shape[2] for a in arrays)
    padded = []
    for a in arrays:
        if a.shape[2] < chans:
            a = np.concatenate([a, np.ones((*a.shape[:2], chans - a.shape[2]), a.dtype)], axis=2)
        pad = np.ones((a.shape[0], width - a.shape[1], chans), dtype=a.dtype)
        padded.append(np.concatenate([a, pad], axis=1))
    buf = io.BytesIO()
    image.imsave(buf, np.concatenate(padded, axis=0), format="png")
    return buf.getvalue()


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    png: Path
    html: Path


def write_report(
    run: LoggedRun | str | Path,
    out_dir: str | Path | None = None,
    *,
    replay: bool = True,
) -> ReportFiles:
    """Write ``<name>.png`` (everything in one image) and ``<name>.html`` (self-contained).

    Args:
        run: the logged run or its path.
        out_dir: folder to write to (default: the log's folder); created if needed.
        replay: replay the log to check it and to draw warmup and anneal LRs.

    Raises:
        LogFormatError: the log cannot be read.
        MissingDependencyError: matplotlib is not installed.
    """
    run = _as_run(run)
    result = _try_replay(run) if replay else None
    images = render_figures(run, result if result is not None else False)
    src = Path(run.path)
    folder = Path(out_dir) if out_dir is not None else src.parent
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{src.stem}.png"
    page = folder / f"{src.stem}.html"
    png.write_bytes(images["all"])
    page.write_text(_html(run, images, result), encoding="utf-8")
    logger.info("report written: %s, %s", png, page)
    return ReportFiles(png=png, html=page)


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _resumed_note(run: LoggedRun) -> str:
    steps = [r["step"] for r in run.resumes]
    if not steps:
        return ""
    return (
        f" Resumed from a checkpoint at step(s) {', '.join(map(str, steps))}: one run "
        f"across {len(steps) + 1} segments ({len(run.abandoned)} record(s) of work "
        "redone after a resume are left out)."
    )


def _img(data: bytes, alt: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _html(run: LoggedRun, images: dict[str, bytes], result: ReplayResult | None) -> str:
    eff = effective_settings(run)
    settings = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(given)}</td>"
        f"<td>{html.escape(used)}</td></tr>"
        for k, given, used in settings_rows(run)
    )
    probes = run.of_type(PROBE)
    search = eff["search_steps"]
    total = eff["steps"]
    if result is None:
        check = "not replayed"
    elif result.matches:
        check = "the replay through the controller reproduces every logged decision"
    else:
        check = "the replay differs: " + "; ".join(m.describe() for m in result.mismatches[:3])
    rows = []
    for st in run.stages:
        dec = st.first_decision()
        end = st.exploit_end
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(_fmt(v))}</td>"
                for v in (
                    st.index,
                    st.tau,
                    st.tau_probe,
                    f"{len(st.probes)} ({sum(1 for p in st.probes if p['diverged'])} diverged)",
                    dec["lr"] if dec else None,
                    dec["forecast"] if dec else None,
                    len(st.rollbacks),
                    end["lr"] if end else None,
                    end.get("actual") if end else None,
                )
            )
            + "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "stage",
            "tau",
            "tau_probe",
            "probes",
            "LR chosen",
            "forecast",
            "rollbacks",
            "final LR",
            "loss reached",
        )
    )
    stage_imgs = "\n".join(
        f"<h3>{html.escape(k)}</h3>\n{_img(v, k)}"
        for k, v in images.items()
        if k.startswith("stage")
    )
    notes = "".join(f"<li>{html.escape(w)}</li>" for w in run.warnings)
    title = html.escape(Path(run.path).name)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>autolr run: {title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1150px; margin: 1em auto; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>autolr run: {title}</h1>
<h2>Settings</h2>
<table><tr><th>setting</th><th>configured (-: autolr's plan)</th><th>used</th></tr>
{settings}
</table>
<p>{total} steps, {search} of them probing ({100 * search / max(total, 1):.0f}%),
{len(run.stages)} stages, {len(probes)} probes, {len(run.of_type(ROLLBACK))} rollbacks.
Check: {html.escape(check)}.{html.escape(_resumed_note(run))}</p>
{f"<ul>{notes}</ul>" if notes else ""}
<h2>Stages</h2>
<table><tr>{head}</tr>
{"".join(rows)}
</table>
<h2>Overview</h2>
{_img(images["overview"], "overview")}
<h2>Stages in detail</h2>
{stage_imgs}
</body></html>
"""
