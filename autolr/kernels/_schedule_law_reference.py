"""Plain per-series reference of :mod:`schedule_law`, for tests: loops and numpy.

Same algorithm (grid over decay and alpha, finer alpha grid, subset-constrained
weighted least squares, Huber IRLS on relative residuals), written one series
and one grid point at a time so the batched kernel can be checked against it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .schedule_law import (
    _RIDGE,
    COARSE_ALPHAS,
    DEFAULT_ALPHA_BOUNDS,
    DEFAULT_DECAYS,
    DEFAULT_HUBER_DELTA,
    DEFAULT_IRLS_ITERS,
    FINE_ALPHAS,
)

__all__ = ["annealing_areas_reference", "fit_schedule_law_reference"]


def annealing_areas_reference(
    lrs: Sequence[float], decay: float = 0.999
) -> tuple[np.ndarray, np.ndarray]:
    """``(S1, S2)`` after each step of one LR sequence, by the recursion itself."""
    s1 = np.zeros(len(lrs))
    s2 = np.zeros(len(lrs))
    total = area = m = 0.0
    prev = lrs[0]
    for i, lr in enumerate(lrs):
        m = decay * m + (prev - lr)
        prev = lr
        total += lr
        area += m
        s1[i], s2[i] = total, area
    return s1, s2


def _solve(
    x1: np.ndarray, x2: np.ndarray, y: np.ndarray, w: np.ndarray
) -> tuple[float, float, float]:
    best: tuple[float, float, float] = (0.0, 0.0, 0.0)
    best_sse = math.inf
    cols = np.stack([np.ones_like(x1), x1, x2], axis=1)
    for keep in ((0, 1, 2), (0, 1), (0, 2), (0,)):
        xs = cols[:, keep]
        g = xs.T @ (xs * w[:, None])
        g = g + np.diag(_RIDGE * np.maximum(np.diag(g), 1e-300))
        try:
            sol = np.linalg.solve(g, xs.T @ (w * y))
        except np.linalg.LinAlgError:
            continue
        coef = np.zeros(3)
        coef[list(keep)] = sol
        sse = float(np.sum(w * (cols @ coef - y) ** 2))
        if math.isfinite(sse) and coef[1] >= 0 and coef[2] >= 0 and sse < best_sse:
            best_sse, best = sse, (float(coef[0]), float(coef[1]), float(coef[2]))
    return best


def _fit_at(
    s1: np.ndarray, s2: np.ndarray, y: np.ndarray, alpha: float, delta: float, iters: int
) -> tuple[float, float, float, float]:
    x1, x2 = s1**-alpha, -s2
    base = 1.0 / y**2
    w = base
    for _ in range(iters + 1):
        l0, a, c = _solve(x1, x2, y, w)
        r = (l0 + a * x1 + c * x2) / y - 1.0
        w = base * np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))
    ar = np.abs(r)
    obj = float(np.sum(np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))))
    return l0, a, c, obj if math.isfinite(obj) else math.inf


def fit_schedule_law_reference(
    s1: Sequence[float],
    s2: Sequence[Sequence[float]],
    loss: Sequence[float],
    *,
    decays: Sequence[float] = DEFAULT_DECAYS,
    alpha_bounds: tuple[float, float] = DEFAULT_ALPHA_BOUNDS,
    huber_delta: float = DEFAULT_HUBER_DELTA,
    irls_iters: int = DEFAULT_IRLS_ITERS,
) -> dict[str, float]:
    """Fit one series: ``s2[k]`` holds the annealing areas for ``decays[k]``.

    Returns:
        ``{"l0", "a", "alpha", "c", "decay", "objective"}``.
    """
    s1a, ya = np.asarray(s1, float), np.asarray(loss, float)
    lo, hi = math.log(alpha_bounds[0]), math.log(alpha_bounds[1])
    coarse = np.linspace(lo, hi, COARSE_ALPHAS)
    step = coarse[1] - coarse[0]
    best: dict[str, float] = {"objective": math.inf}
    for k, decay in enumerate(decays):
        s2a = np.asarray(s2[k], float)
        ok = np.isfinite(s1a) & np.isfinite(ya) & np.isfinite(s2a) & (s1a > 0) & (ya > 0)
        p1, p2, py = s1a[ok], s2a[ok], ya[ok]
        objs = [_fit_at(p1, p2, py, math.exp(g), huber_delta, irls_iters)[3] for g in coarse]
        centre = coarse[int(np.argmin(objs))]
        fine = np.clip(centre + np.linspace(-step, step, FINE_ALPHAS), lo, hi)
        results = [
            (math.exp(g), *_fit_at(p1, p2, py, math.exp(g), huber_delta, irls_iters)) for g in fine
        ]
        alpha, l0, a, c, obj = min(results, key=lambda t: t[4])
        if obj < best["objective"]:
            best = {"l0": l0, "a": a, "alpha": alpha, "c": c, "decay": decay, "objective": obj}
    return best
