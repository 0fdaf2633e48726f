"""Plain per-series implementations of the kernels, for differential tests only.

Each function here computes what its batched kernel computes, one series (and one
rate, one point) at a time in Python and numpy, on the valid points only. They are
slow and not part of the kernels' API; the tests compare the batched kernels with
them. They share the kernels' constants and option checks, so a change to the
algorithm is made in both places or the tests fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .errors import KernelFitError
from .expfit import (
    _FLAT_RTOL,
    _REFINE_POINTS,
    _TIE_RTOL,
    _TINY_VAR,
    DEFAULT_RATE_BOUNDS,
    MIN_POINTS,
    ExpFit,
    _refine_offsets,
)
from .powerlaw import DEFAULT_EXPONENT_BOUNDS, PowerLawFit
from .smoothing import _REL_FLOOR, MAD_TO_STD, _check_hampel

__all__ = [
    "fit_exponential_reference",
    "fit_power_law_reference",
    "hampel_mask_reference",
    "lower_median",
]


def _reference_one(
    x: np.ndarray, y: np.ndarray, log_lo: float, log_hi: float, n_grid: int, refine_rounds: int
) -> tuple[float, float, float, float]:
    """Same algorithm as :func:`_vp_fit` for one series of valid points only."""
    ybar = float(y.mean())
    sse0 = float(((y - ybar) ** 2).sum())

    def prof(log_beta: float) -> tuple[float, float, float]:
        g = np.expm1(-math.exp(log_beta) * x)
        gbar = float(g.mean())
        dg, dy = g - gbar, y - ybar
        sxx = float(dg @ dg)
        amp = float(dg @ dy) / sxx if sxx > _TINY_VAR * len(x) else 0.0
        r = dy - amp * dg
        return amp, ybar - amp * (gbar + 1.0), float(r @ r)

    def grid_sse(log_beta: float) -> float:
        g = np.expm1(-math.exp(log_beta) * x)
        sxx = float(g @ g) - float(g.sum()) ** 2 / len(x)
        sxy = float(g @ (y - ybar))
        gain = sxy * sxy / sxx if sxx > _TINY_VAR * len(x) else 0.0
        return max(sse0 - gain, 0.0)

    grid = [log_lo + (i / (n_grid - 1)) * (log_hi - log_lo) for i in range(n_grid)]
    sses = [grid_sse(u) for u in grid]
    u = grid[int(np.argmin(sses))]
    half = (log_hi - log_lo) / (n_grid - 1)
    offsets = _refine_offsets().tolist()
    for _ in range(refine_rounds):
        cand = [min(max(u + half * o, log_lo), log_hi) for o in offsets]
        u = cand[int(np.argmin([prof(v)[2] for v in cand]))]
        half = half * (2.0 / (_REFINE_POINTS + 1))
    amp, c, sse = prof(u)
    if sse >= sse0 - (_TIE_RTOL * sse0 + len(x) * (_FLAT_RTOL * abs(ybar)) ** 2 + 1e-300):
        return 0.0, 0.0, ybar, sse0
    return math.exp(u), amp, c, sse


def _reference_fit(
    t: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    mask: Tensor | np.ndarray | None,
    transform: Callable[[np.ndarray], np.ndarray],
    log_bounds: Callable[[float], tuple[float, float]],
    n_grid: int,
    refine_rounds: int,
    min_points: int,
) -> list[tuple[float, float, float, float, int, float, float]]:
    """Per-series loop; returns ``(beta, A, c, sse, n_used, u_first, u_span)`` per series."""
    y_np = np.asarray(torch.as_tensor(y).detach().cpu(), dtype=np.float64)
    t_np = np.asarray(torch.as_tensor(t).detach().cpu(), dtype=np.float64)
    t_np = np.broadcast_to(t_np, y_np.shape)
    m_np = np.ones(y_np.shape, bool) if mask is None else np.asarray(torch.as_tensor(mask).cpu())
    out = []
    for i in range(y_np.shape[0]):
        keep = m_np[i] & np.isfinite(y_np[i]) & np.isfinite(t_np[i])
        if keep.sum() < min_points:
            raise KernelFitError(f"series {i} has {int(keep.sum())} valid points")
        u = transform(t_np[i][keep])
        u_first = float(u.min())
        u_span = float(u.max() - u_first)
        u_span = u_span if u_span > 0 else 1.0
        lo, hi = log_bounds(u_span)
        res = _reference_one((u - u_first) / u_span, y_np[i][keep], lo, hi, n_grid, refine_rounds)
        out.append((*res, int(keep.sum()), u_first, u_span))
    return out


def fit_exponential_reference(
    t: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    mask: Tensor | np.ndarray | None = None,
    *,
    t0: float | Literal["first"] = 0.0,
    rate_bounds: tuple[float, float] = DEFAULT_RATE_BOUNDS,
    n_grid: int = 48,
    refine_rounds: int = 12,
    min_points: int = MIN_POINTS,
) -> ExpFit:
    """Plain per-series implementation of :func:`fit_exponential` (slow; for tests).

    Loops over series and rates in Python/numpy on the valid points only. Takes the
    same arguments (``t0`` a float or ``"first"``) and returns float64 tensors on
    the CPU.
    """
    rows = _reference_fit(
        t,
        y,
        mask,
        lambda v: v,
        lambda _span: (math.log(rate_bounds[0]), math.log(rate_bounds[1])),
        n_grid,
        refine_rounds,
        min_points,
    )
    a, b, c, sse, used, ref = [], [], [], [], [], []
    for beta, amp, ci, si, ni, t_first, span in rows:
        bi = beta / span
        ti = t_first if t0 == "first" else float(t0)
        a.append(amp * math.exp(-bi * (ti - t_first)) if bi > 0 else 0.0)
        b.append(bi)
        c.append(ci)
        sse.append(si)
        used.append(ni)
        ref.append(ti)
    f64 = torch.float64
    return ExpFit(
        torch.tensor(a, dtype=f64),
        torch.tensor(b, dtype=f64),
        torch.tensor(c, dtype=f64),
        torch.tensor(sse, dtype=f64),
        torch.tensor(used, dtype=torch.long),
        torch.tensor(ref, dtype=f64),
    )


def fit_power_law_reference(
    t: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    mask: Tensor | np.ndarray | None = None,
    *,
    exponent_bounds: tuple[float, float] = DEFAULT_EXPONENT_BOUNDS,
    n_grid: int = 48,
    refine_rounds: int = 12,
    min_points: int = MIN_POINTS,
) -> PowerLawFit:
    """Plain per-series implementation of :func:`fit_power_law` (slow; for tests)."""
    rows = _reference_fit(
        t,
        y,
        mask,
        np.log1p,
        lambda span: (math.log(exponent_bounds[0] * span), math.log(exponent_bounds[1] * span)),
        n_grid,
        refine_rounds,
        min_points,
    )
    a, b, c, sse, used = [], [], [], [], []
    for beta, amp, ci, si, ni, u_first, span in rows:
        bi = beta / span
        a.append(amp * math.exp(bi * u_first) if bi > 0 else 0.0)
        b.append(bi)
        c.append(ci)
        sse.append(si)
        used.append(ni)
    f64 = torch.float64
    return PowerLawFit(
        torch.tensor(a, dtype=f64),
        torch.tensor(b, dtype=f64),
        torch.tensor(c, dtype=f64),
        torch.tensor(sse, dtype=f64),
        torch.tensor(used, dtype=torch.long),
    )


def hampel_mask_reference(
    y: Tensor | np.ndarray,
    mask: Tensor | np.ndarray | None = None,
    *,
    window: int = 11,
    k: float = 3.0,
    trend: Tensor | np.ndarray | None = None,
    global_scale: bool = False,
) -> Tensor:
    """Plain per-point loop implementation of :func:`hampel_mask` (slow; for tests)."""
    _check_hampel(window, k)
    yy = np.asarray(torch.as_tensor(y).detach().cpu(), dtype=np.float64)
    keep = np.isfinite(yy)
    if mask is not None:
        keep &= np.asarray(torch.as_tensor(mask).cpu(), dtype=bool)
    levels = [
        lower_median(np.abs(row[k_row])) if k_row.any() else 0.0 for row, k_row in zip(yy, keep)
    ]
    if trend is not None:
        tr = np.asarray(torch.as_tensor(trend).detach().cpu(), dtype=np.float64)
        keep &= np.isfinite(tr)
        yy = yy - tr
    h = window // 2
    out = np.zeros(yy.shape, dtype=bool)
    for i in range(yy.shape[0]):
        floor = _REL_FLOOR * levels[i] + 1e-300
        if global_scale and keep[i].any():
            row = yy[i][keep[i]]
            gmed = lower_median(row)
            floor = max(floor, MAD_TO_STD * lower_median(np.abs(row - gmed)))
        for j in range(yy.shape[1]):
            if not keep[i, j]:
                continue
            lo, hi = max(0, j - h), min(yy.shape[1], j + h + 1)
            vals = yy[i, lo:hi][keep[i, lo:hi]]
            med = lower_median(vals)
            mad = lower_median(np.abs(vals - med))
            out[i, j] = abs(yy[i, j] - med) <= k * max(MAD_TO_STD * mad, floor)
    return torch.from_numpy(out)


def lower_median(values: np.ndarray) -> float:
    """Lower middle value of a non-empty array (the median for odd counts)."""
    s = np.sort(values)
    return float(s[(len(s) - 1) // 2])
