"""How well do short probes forecast the loss further on? Measured on logged curves.

AutoLRS fits a curve to ``tau_probe`` steps of loss and reads it at ``tau`` (ten
times longer in the paper). Any logged training curve can test that: cut windows
of ``tau_probe`` steps out of it, forecast the loss ``tau`` steps after each
window's start, and compare with the loss the log shows there. The error by
horizon, per forecaster, on the same windows, says which forecaster to use and
how long probes must be.

Caveat: a logged run follows its own schedule. A window is a fair test only where
the LR barely changes between the window's start and its horizon, so when the log
has the LR, windows over which it changes by more than ``max_lr_change`` are left
out (and the result says how many).
"""

from __future__ import annotations

import bisect
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from autolr.errors import ConfigError, FitError, LogFormatError
from autolr.forecast import Forecaster, make_forecaster
from autolr.offline.importers import LossLog

__all__ = [
    "ForecastEval",
    "HorizonRow",
    "Recommendation",
    "Window",
    "default_taus",
    "evaluate_forecasts",
    "make_windows",
]

logger = logging.getLogger(__name__)

# tau_probe / tau tested at every horizon (AutoLRS: 0.1).
DEFAULT_FRACTIONS = (0.05, 0.1, 0.2, 0.5)
MIN_POINTS = 5
# A probe length is good enough when its error is within this factor of the lowest,
# or below the tolerance given to evaluate_forecasts: longer probes cost more steps.
GOOD_ENOUGH = 1.2


@dataclass(frozen=True)
class Window:
    """One forecast test.

    Attributes:
        start: log step where the window starts (t = 0).
        t: `(m,)` steps of the window's points, counted from ``start``.
        losses: `(m,)` losses of those points.
        horizon: steps after ``start`` to forecast (``tau``).
        actual: the loss the log shows there (median of the points within
            ``horizon / 40`` steps, at least half the logging interval, of
            ``start + horizon``).
    """

    start: int
    t: list[float]
    losses: list[float]
    horizon: int
    actual: float


@dataclass
class HorizonRow:
    """Errors of one forecaster at one (tau_probe, tau).

    Attributes:
        forecaster: its name.
        tau_probe: window length in steps.
        tau: horizon in steps.
        windows: windows evaluated.
        failed: windows whose fit failed.
        median_abs_error: median ``|forecast - actual|``, loss units.
        median_rel_error: median ``|forecast - actual| / |actual|``.
        p90_rel_error: 90th percentile of the relative error.
        bias: median ``(forecast - actual) / |actual|``: above 0, forecasts too high.
    """

    forecaster: str
    tau_probe: int
    tau: int
    windows: int
    failed: int
    median_abs_error: float | None
    median_rel_error: float | None
    p90_rel_error: float | None
    bias: float | None

    @property
    def ratio(self) -> float:
        return self.tau / self.tau_probe


@dataclass
class Recommendation:
    """The suggested probe length at one horizon.

    Attributes:
        tau_probe: the shortest probe length whose median error is within 20% of
            the lowest at this horizon (longer probes cost more steps).
        tau: the horizon.
        forecaster: the forecaster with the lowest error there.
        median_rel_error: its median relative error.
        reason: one sentence why.
    """

    tau_probe: int
    tau: int
    forecaster: str
    median_rel_error: float
    reason: str


@dataclass
class ForecastEval:
    """:func:`evaluate_forecasts` output.

    Attributes:
        log: the loss log evaluated.
        rows: one per (forecaster, tau_probe, tau), sorted.
        recommendation: the suggested tau_probe at the main horizon (None when
            nothing could be evaluated).
        by_horizon: the suggestion at every horizon tested.
        notes: what was left out and why.
    """

    log: LossLog
    rows: list[HorizonRow]
    recommendation: Recommendation | None
    by_horizon: list[Recommendation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Headers and rows of strings, for a terminal table."""
        headers = [
            "forecaster",
            "tau_probe",
            "tau",
            "tau_probe/tau",
            "windows",
            "median |err|",
            "median rel err",
            "p90 rel err",
            "bias",
        ]

        def f(v: float | None, spec: str) -> str:
            return "-" if v is None else format(v, spec)

        rows = [
            [
                r.forecaster,
                str(r.tau_probe),
                str(r.tau),
                f"{r.tau_probe / r.tau:.3g}",
                str(r.windows) + (f" ({r.failed} failed)" if r.failed else ""),
                f(r.median_abs_error, ".4g"),
                f(r.median_rel_error, ".1%"),
                f(r.p90_rel_error, ".1%"),
                f(r.bias, "+.1%"),
            ]
            for r in self.rows
        ]
        return headers, rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": {
                "path": self.log.path,
                "source": self.log.source,
                "name": self.log.name,
                "lr_name": self.log.lr_name,
                "points": len(self.log),
            },
            "rows": [{**r.__dict__, "ratio": r.ratio} for r in self.rows],
            "recommendation": None if self.recommendation is None else self.recommendation.__dict__,
            "by_horizon": [r.__dict__ for r in self.by_horizon],
            "notes": list(self.notes),
        }


def _spacing(steps: Sequence[int]) -> int:
    diffs = [b - a for a, b in zip(steps, steps[1:]) if b > a]
    return max(1, int(statistics.median(diffs))) if diffs else 1


def default_taus(log: LossLog, min_points: int = MIN_POINTS) -> list[int]:
    """Horizons worth testing on this log: 1/40, 1/20, 1/10 and 1/5 of its span of steps.

    A horizon is kept when half of it holds at least ``min_points`` logged points
    (so the longest probe tested fits) and the log has room for a few windows.
    """
    gap = _spacing(log.steps)
    span = log.steps[-1] - log.steps[0] if log.steps else 0
    out: list[int] = []
    for frac in (1 / 40, 1 / 20, 1 / 10, 1 / 5):
        tau = int(round(span * frac / gap)) * gap
        if tau // 2 >= min_points * gap and tau not in out:
            out.append(tau)
    return out


def _half(log: LossLog, tau: int) -> int:
    """Half-width of the stretch of log around ``start + tau`` whose median is the actual loss."""
    return max(_spacing(log.steps) // 2, tau // 40)


def make_windows(
    log: LossLog,
    tau_probe: int,
    tau: int,
    *,
    max_windows: int = 48,
    min_points: int = MIN_POINTS,
    max_lr_change: float | None = 0.1,
) -> tuple[list[Window], int]:
    """Windows of ``tau_probe`` steps with the loss ``tau`` steps after their start.

    Starts are spread evenly over the log and depend on ``tau`` only, so every
    probe length is tested on the same starts for a given horizon.

    Args:
        log: the loss curve.
        tau_probe: window length in steps (log steps, not points).
        tau: horizon in steps from the window's start.
        max_windows: at most this many windows.
        min_points: fewest points a window needs (windows with fewer are skipped).
        max_lr_change: leave out windows over whose span (start to horizon) the
            logged LR changes by more than this fraction (None: keep all).

    Returns:
        ``(windows, left_out_for_lr)``.
    """
    steps, loss = log.steps, log.loss
    half = _half(log, tau)
    last = steps[-1]
    starts = [i for i, s in enumerate(steps) if s + tau + half <= last]
    if len(starts) > max_windows:
        pick = [round(k * (len(starts) - 1) / max(max_windows - 1, 1)) for k in range(max_windows)]
        starts = [starts[k] for k in sorted(set(pick))]
    windows: list[Window] = []
    dropped_lr = 0
    for i in starts:
        s = steps[i]
        j = bisect.bisect_left(steps, s + tau_probe)
        if j - i < min_points:
            continue
        lo = bisect.bisect_left(steps, s + tau - half)
        hi = bisect.bisect_right(steps, s + tau + half)
        if hi <= lo:
            continue
        if max_lr_change is not None and log.lr is not None:
            lrs = [v for v in log.lr[i:hi] if v is not None]
            if lrs and min(lrs) > 0 and max(lrs) / min(lrs) - 1 > max_lr_change:
                dropped_lr += 1
                continue
        windows.append(
            Window(
                start=s,
                t=[float(x - s) for x in steps[i:j]],
                losses=list(loss[i:j]),
                horizon=tau,
                actual=float(statistics.median(loss[lo:hi])),
            )
        )
    return windows, dropped_lr


def _forecast_all(fc: Forecaster, windows: list[Window]) -> list[float | None]:
    """Forecast every window in one batched call (one by one if the batch fails)."""
    if not windows:
        return []
    width = max(len(w.t) for w in windows)
    t = torch.zeros(len(windows), width, dtype=torch.float64)
    y = torch.full((len(windows), width), math.nan, dtype=torch.float64)
    for k, w in enumerate(windows):
        m = len(w.t)
        t[k, :m] = torch.tensor(w.t, dtype=torch.float64)
        t[k, m:] = w.t[-1]  # padding: finite steps, NaN losses (never used)
        y[k, :m] = torch.tensor(w.losses, dtype=torch.float64)
    horizon = torch.tensor([float(w.horizon) for w in windows], dtype=torch.float64)
    try:
        values = fc.forecast(t, y, horizon).values.tolist()
        return [v if math.isfinite(v) else None for v in values]
    except FitError:
        out: list[float | None] = []
        for k in range(len(windows)):
            try:
                v = float(fc.forecast(t[k : k + 1], y[k : k + 1], horizon[k : k + 1]).values[0])
                out.append(v if math.isfinite(v) else None)
            except FitError:
                out.append(None)
        return out


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def evaluate_forecasts(
    log: LossLog,
    *,
    taus: Sequence[int] | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    tau_probes: Sequence[int] | None = None,
    forecasters: Sequence[str | Forecaster] = ("exponential", "power_law"),
    target_tau: int | None = None,
    max_windows: int = 48,
    max_lr_change: float | None = 0.1,
    tolerance: float = 0.05,
) -> ForecastEval:
    """Forecast the loss ``tau`` steps after windows of ``tau_probe`` steps; compare with the log.

    For every horizon ``tau``, each probe length is tested on the same window
    starts, and each forecaster on the same windows.

    Args:
        log: the loss curve (see :mod:`autolr.offline.importers`).
        taus: horizons in log steps (default: :func:`default_taus`).
        fractions: probe lengths as fractions of ``tau`` (``tau_probe = f * tau``).
        tau_probes: probe lengths in log steps, instead of ``fractions`` (each
            used at the horizons longer than it).
        forecasters: names or objects.
        target_tau: the horizon of the main recommendation (default: the tested
            horizon nearest a tenth of the log's span).
        max_windows: windows per (tau_probe, tau), spread over the log.
        max_lr_change: leave out windows over which the logged LR changes by more
            than this fraction (None: keep all). When that leaves nothing, every
            window is kept and a note says so.
        tolerance: a median relative error this low is good enough: the
            recommendation is the shortest probe length whose error is at most
            ``max(tolerance, 1.2 * lowest)`` at the horizon.

    Returns:
        A :class:`ForecastEval`: one row per (forecaster, tau_probe, tau), and the
        shortest probe length whose error is close to the lowest, per horizon.

    Raises:
        ConfigError: bad arguments (names the value).
        LogFormatError: the log is too short to test any horizon.
    """
    if not fractions or any(not 0 < f < 1 for f in fractions):
        raise ConfigError(f"fractions must be numbers in (0, 1), got {list(fractions)!r}")
    if max_windows < 1:
        raise ConfigError(f"max_windows must be >= 1, got {max_windows!r}")
    if tau_probes is not None and any(int(tp) < 2 for tp in tau_probes):
        raise ConfigError(f"tau_probes must be >= 2 steps, got {list(tau_probes)!r}")
    if taus is not None and any(int(t) < 2 for t in taus):
        raise ConfigError(f"taus must be >= 2 steps, got {list(taus)!r}")
    fcs = [make_forecaster(f) for f in forecasters]
    span = log.steps[-1] - log.steps[0] if log.steps else 0
    if taus is None:
        taus = default_taus(log)
        if not taus:
            raise LogFormatError(
                f"{log.path}: {len(log)} points over {span} steps are too few to test "
                f"forecasts: a probe needs about {MIN_POINTS} points, and the horizon lies "
                "2 to 20 probe lengths after it"
            )
    plan: list[tuple[int, int]] = []
    for tau in sorted({int(t) for t in taus}):
        if tau_probes is not None:
            lengths = sorted({int(tp) for tp in tau_probes if int(tp) < tau})
        else:
            lengths = sorted({max(2, int(round(f * tau))) for f in fractions})
        plan += [(tp, tau) for tp in lengths]
    notes: list[str] = []
    if log.lr is None:
        notes.append("the log has no LR: windows may span LR changes, which no forecaster sees")

    def build(limit: float | None) -> dict[tuple[int, int], tuple[list[Window], int]]:
        return {
            key: make_windows(log, *key, max_windows=max_windows, max_lr_change=limit)
            for key in plan
        }

    built = build(max_lr_change)
    if max_lr_change is not None and log.lr is not None:
        if not any(w for w, _ in built.values()):
            notes.append(
                f"the LR changes by more than {max_lr_change:.0%} over every window: all "
                "windows kept, so the errors include the schedule's effect"
            )
            built = build(None)
        else:
            left_out = sum(n for _, n in built.values())
            if left_out:
                notes.append(
                    f"{left_out} window(s) left out: the LR changed by more than "
                    f"{max_lr_change:.0%} between their start and horizon"
                )
    scale = 0.01 * statistics.median(abs(v) for v in log.loss) or 1e-12
    rows: list[HorizonRow] = []
    for fc in fcs:
        keys = [k for k in plan if built[k][0]]
        flat = [w for k in keys for w in built[k][0]]
        preds = _forecast_all(fc, flat)
        pos = 0
        for key in plan:
            windows = built[key][0]
            mine = preds[pos : pos + len(windows)] if windows else []
            pos += len(windows)
            if windows:
                rows.append(_row(fc.name, key, windows, mine, scale))
    empty = sorted(k for k, (w, _) in built.items() if not w)
    if empty:
        notes.append(
            "no window for (tau_probe, tau) = "
            + ", ".join(f"({a}, {b})" for a, b in empty)
            + ": the log is too short or too sparse there"
        )
    rows.sort(key=lambda r: (r.tau, r.tau_probe, r.forecaster))
    horizons = sorted({k[1] for k in plan})
    recs = [r for r in (_recommend(rows, tau, tolerance) for tau in horizons) if r]
    main = None
    if recs:
        goal = target_tau if target_tau is not None else span / 10
        main = min(recs, key=lambda r: (abs(math.log(max(r.tau, 1) / max(goal, 1))), -r.tau))
    return ForecastEval(log=log, rows=rows, recommendation=main, by_horizon=recs, notes=notes)


def _row(
    name: str, key: tuple[int, int], windows: list[Window], preds: list[float | None], scale: float
) -> HorizonRow:
    abs_err: list[float] = []
    rel_err: list[float] = []
    signed: list[float] = []
    for w, p in zip(windows, preds):
        if p is None:
            continue
        denom = max(abs(w.actual), scale)
        abs_err.append(abs(p - w.actual))
        rel_err.append(abs(p - w.actual) / denom)
        signed.append((p - w.actual) / denom)
    ok = bool(abs_err)
    return HorizonRow(
        forecaster=name,
        tau_probe=key[0],
        tau=key[1],
        windows=len(windows),
        failed=sum(1 for p in preds if p is None),
        median_abs_error=statistics.median(abs_err) if ok else None,
        median_rel_error=statistics.median(rel_err) if ok else None,
        p90_rel_error=_quantile(rel_err, 0.9) if ok else None,
        bias=statistics.median(signed) if ok else None,
    )


def _recommend(rows: list[HorizonRow], tau: int, tolerance: float) -> Recommendation | None:
    """At horizon ``tau``: the shortest probe with an error near the lowest or within tolerance."""
    best_by_tp: dict[int, HorizonRow] = {}
    for r in rows:
        if r.tau != tau or r.median_rel_error is None or r.windows < 3:
            continue
        cur = best_by_tp.get(r.tau_probe)
        if cur is None or r.median_rel_error < (cur.median_rel_error or math.inf):
            best_by_tp[r.tau_probe] = r
    if not best_by_tp:
        return None
    lowest = min(r.median_rel_error or math.inf for r in best_by_tp.values())
    limit = max(tolerance, GOOD_ENOUGH * lowest) + 1e-12
    tp = min(t for t, r in best_by_tp.items() if (r.median_rel_error or math.inf) <= limit)
    r = best_by_tp[tp]
    err = r.median_rel_error
    assert err is not None
    longer = [b.median_rel_error or math.inf for t, b in best_by_tp.items() if t > tp]
    if longer:
        why = (
            f"longer probes (up to {max(best_by_tp) / tp:.3g}x the steps) reach "
            f"{min(longer):.1%} at best"
        )
    else:
        why = "no shorter probe was within reach of it"
    others = [
        x
        for x in rows
        if x.tau == tau
        and x.tau_probe == tp
        and x.forecaster != r.forecaster
        and x.median_rel_error is not None
    ]
    versus = "".join(f" ({o.forecaster}: {o.median_rel_error:.1%})" for o in others)
    return Recommendation(
        tau_probe=tp,
        tau=tau,
        forecaster=r.forecaster,
        median_rel_error=err,
        reason=(
            f"tau_probe={tp} (tau/{tau / tp:.3g}) forecasts the loss at tau={tau} with "
            f"{r.forecaster} within {err:.1%} (median){versus}; {why}"
        ),
    )
