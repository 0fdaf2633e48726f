"""Batched fit of the LR-annealing scaling law (Tissue et al. 2024).

"Scaling Law with Learning Rate Annealing" models the loss after ``s`` steps of
any LR schedule ``eta_1 .. eta_s`` as

    L(s) = L0 + A * S1(s) ** (-alpha) - C * S2(s)

- ``S1(s) = sum_{i<=s} eta_i``: the forward area (LR x steps).
- ``S2(s) = sum_{i<=s} m_i`` with ``m_i = lam * m_{i-1} + (eta_{i-1} - eta_i)``,
  ``m_0 = 0`` and ``eta_0 = eta_1``: the annealing area with momentum. A drop in
  the LR keeps adding to ``S2`` for about ``1 / (1 - lam)`` steps; a rise in the
  LR subtracts from it (re-warming costs loss).

Parameters: ``L0`` (loss units), ``A >= 0`` (loss units x area**alpha),
``alpha > 0`` (unitless), ``C >= 0`` (loss units per unit of area) and the decay
``lam`` in ``(0, 1)``. For fixed ``alpha`` and ``lam`` the law is linear in
``(L0, A, C)``, so the fit is a grid over ``(lam, alpha)`` (then a finer grid
around the best ``alpha``) with, at each point, a weighted linear least-squares
solve for ``(L0, A, C)`` under ``A, C >= 0`` (every subset of active constraints
solved, the best feasible kept). Residuals are relative (``pred / obs - 1``, the
log residual to first order) under a Huber loss, minimized by iteratively
reweighted least squares. Everything is batched over independent fits and runs
on the device of its inputs.

A joint fit of several series (a main trajectory, probes, branches) is one row:
the law depends on a point only through its ``(S1, S2)``, so the points of every
series, each with the areas of its own full LR history, go side by side in the row.

This module is a leaf: it imports only torch and numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DECAY_SHAPES",
    "ScheduleLawFit",
    "annealing_areas",
    "decay_factors",
    "fit_schedule_law",
    "forecast_final",
    "predict_loss",
]

DEFAULT_DECAYS = (0.999,)
"""Default candidates for the momentum decay ``lam`` (the paper's value)."""
DEFAULT_ALPHA_BOUNDS = (0.02, 3.0)
"""Default search range of the exponent ``alpha``."""
COARSE_ALPHAS = 40
FINE_ALPHAS = 17
DEFAULT_HUBER_DELTA = 0.01
"""Huber threshold on the relative residual (1%)."""
DEFAULT_IRLS_ITERS = 4
DECAY_SHAPES = ("linear", "1-sqrt", "cosine")
_RIDGE = 1e-12
# a scan chunk keeps lam ** (-chunk) below exp(_MAX_EXPONENT): no overflow in float64
_MAX_EXPONENT = 200.0


@dataclass(frozen=True)
class ScheduleLawFit:
    """Result of :func:`fit_schedule_law`, one entry per fit.

    Attributes:
        l0: `(B,)` irreducible loss, loss units.
        a: `(B,)` amplitude of the power term, ``>= 0``.
        alpha: `(B,)` exponent of the forward area, unitless, ``> 0``.
        c: `(B,)` gain per unit of annealing area, ``>= 0``.
        decay: `(B,)` the momentum decay ``lam`` chosen.
        objective: `(B,)` Huber loss of the relative residuals at the optimum
            (``inf`` where the row had fewer than 2 usable points).
        n_used: `(B,)` int64 number of points used.
    """

    l0: Tensor
    a: Tensor
    alpha: Tensor
    c: Tensor
    decay: Tensor
    objective: Tensor
    n_used: Tensor


def _check_decay(decay: float) -> float:
    decay = float(decay)
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay must be in (0, 1), got {decay!r}")
    return decay


def annealing_areas(lrs: Tensor, decay: float = 0.999) -> tuple[Tensor, Tensor]:
    """Forward area ``S1`` and annealing area ``S2`` after every step.

    Args:
        lrs: `(..., n)` LR of each step, in order (``n >= 1``).
        decay: the momentum decay ``lam`` in ``(0, 1)``.

    Returns:
        ``(s1, s2)``, each `(..., n)` float64: the areas after steps ``1 .. n``.
        With ``d_i = eta_{i-1} - eta_i`` (``d_1 = 0``), ``m_i = sum_{j<=i} lam^(i-j) d_j``
        and ``S2(s) = sum_{j<=s} d_j (1 - lam^(s-j+1)) / (1 - lam)``; computed by
        cumulative sums in chunks short enough that ``lam^-k`` stays finite.
    """
    decay = _check_decay(decay)
    if lrs.dim() < 1 or lrs.shape[-1] < 1:
        raise ValueError(
            f"lrs must have at least one step on its last axis, got {tuple(lrs.shape)}"
        )
    x = lrs.to(torch.float64)
    s1 = torch.cumsum(x, dim=-1)
    d = torch.zeros_like(x)
    d[..., 1:] = x[..., :-1] - x[..., 1:]
    n = x.shape[-1]
    log_lam = math.log(decay)
    chunk = max(1, int(_MAX_EXPONENT / -log_lam))
    m_prev = torch.zeros(x.shape[:-1], dtype=torch.float64, device=x.device)
    s2_prev = torch.zeros_like(m_prev)
    s2 = torch.empty_like(x)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        k = torch.arange(1, stop - start + 1, dtype=torch.float64, device=x.device)
        lam_k = torch.exp(k * log_lam)  # lam^k, k = 1..len
        # m_t = lam^t * (m_prev + sum_{j<=t} lam^-j d_j) for t = 1..len within the chunk
        m = lam_k * (m_prev.unsqueeze(-1) + torch.cumsum(d[..., start:stop] / lam_k, dim=-1))
        s2[..., start:stop] = s2_prev.unsqueeze(-1) + torch.cumsum(m, dim=-1)
        m_prev = m[..., -1]
        s2_prev = s2[..., stop - 1]
    return s1, s2


def decay_factors(shape: str, n: int) -> Tensor:
    """Multipliers of the hold LR over an ``n``-step final decay: `(n,)` float64.

    Step ``i`` (0-based) has progress ``p = (i + 1) / (n + 1)``, so the last step
    still trains: ``linear`` ``1 - p``, ``1-sqrt`` ``1 - sqrt(p)``, ``cosine``
    ``(1 + cos(pi p)) / 2``.
    """
    if shape not in DECAY_SHAPES:
        raise ValueError(f"shape must be one of {DECAY_SHAPES}, got {shape!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    p = torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
    if shape == "linear":
        return 1.0 - p
    if shape == "1-sqrt":
        return 1.0 - torch.sqrt(p)
    return 0.5 * (1.0 + torch.cos(math.pi * p))


def predict_loss(
    l0: Tensor | float,
    a: Tensor | float,
    alpha: Tensor | float,
    c: Tensor | float,
    s1: Tensor,
    s2: Tensor,
) -> Tensor:
    """The law at areas ``(s1, s2)``: ``l0 + a * s1**(-alpha) - c * s2``.

    Parameters broadcast against ``s1``/``s2`` (give `(B, 1)` parameters with `(B, n)`
    areas). ``s1`` must be ``> 0``.
    """
    return l0 + a * torch.pow(s1, -alpha) - c * s2  # type: ignore[operator]


def _huber(r: Tensor, delta: float) -> Tensor:
    ar = r.abs()
    return torch.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def _solve_subsets(x1: Tensor, x2: Tensor, y: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted LS for ``y ~ l0 + a x1 + c x2`` with ``a, c >= 0``, over the last axis.

    Every subset of free coefficients ({l0, a, c}, {l0, a}, {l0, c}, {l0}) is
    solved; infeasible ones (negative a or c, non-finite) are dropped and the
    lowest weighted SSE is kept. Returns ``(l0, a, c)`` with the leading shape.
    """
    ones = torch.ones_like(x1)
    cols = torch.stack([ones, x1, x2], dim=-1)  # (..., n, 3)
    sw = w.unsqueeze(-1)
    gram = torch.einsum("...ni,...nj->...ij", cols * sw, cols)
    rhs = torch.einsum("...ni,...n->...i", cols * sw, y)
    best_sse = torch.full(y.shape[:-1], math.inf, dtype=y.dtype, device=y.device)
    best = torch.zeros(y.shape[:-1] + (3,), dtype=y.dtype, device=y.device)
    for keep in ((0, 1, 2), (0, 1), (0, 2), (0,)):
        idx = list(keep)
        g = gram[..., idx, :][..., :, idx]
        scale = torch.diagonal(g, dim1=-2, dim2=-1).clamp_min(1e-300)
        g = g + torch.diag_embed(_RIDGE * scale)
        sol = torch.linalg.solve(g, rhs[..., idx].unsqueeze(-1)).squeeze(-1)
        coef = torch.zeros_like(best)
        coef[..., idx] = sol
        pred = coef[..., 0:1] + coef[..., 1:2] * x1 + coef[..., 2:3] * x2
        sse = (w * (pred - y) ** 2).sum(-1)
        ok = torch.isfinite(sse) & (coef[..., 1] >= 0) & (coef[..., 2] >= 0)
        better = ok & (sse < best_sse)
        best_sse = torch.where(better, sse, best_sse)
        best = torch.where(better.unsqueeze(-1), coef, best)
    return best[..., 0], best[..., 1], best[..., 2]


def _fit_grid(
    s1: Tensor, s2: Tensor, y: Tensor, mask: Tensor, alphas: Tensor, delta: float, iters: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fit at every alpha of ``alphas`` (shape `(G,)` or `(..., G)` broadcastable).

    ``s1, s2, y, mask``: `(K, B, n)`. Returns ``(l0, a, c, objective)`` of shape `(G, K, B)`
    when ``alphas`` is `(G,)`, or `(G, K, B)` when ``alphas`` is `(G, K, B)`.
    """
    if alphas.dim() == 1:
        alphas = alphas.view(-1, 1, 1)
    al = alphas.unsqueeze(-1)  # (G, K|1, B|1, 1)
    x1 = torch.pow(s1.unsqueeze(0), -al)
    x2 = (-s2).unsqueeze(0).expand_as(x1)
    yy = y.unsqueeze(0).expand_as(x1)
    mm = mask.unsqueeze(0).expand_as(x1)
    x1 = torch.where(mm, x1, torch.zeros_like(x1))
    base_w = torch.where(mm, 1.0 / (yy * yy), torch.zeros_like(yy))
    w = base_w
    l0 = a = c = torch.zeros(x1.shape[:-1], dtype=torch.float64, device=s1.device)
    for _ in range(iters + 1):
        l0, a, c = _solve_subsets(x1, x2, yy, w)
        pred = l0.unsqueeze(-1) + a.unsqueeze(-1) * x1 + c.unsqueeze(-1) * x2
        r = torch.where(mm, pred / yy - 1.0, torch.zeros_like(yy))
        w = base_w * torch.clamp(delta / r.abs().clamp_min(1e-300), max=1.0)
    obj = _huber(r, delta).masked_fill(~mm, 0.0).sum(-1)
    obj = torch.where(torch.isfinite(obj), obj, torch.full_like(obj, math.inf))
    return l0, a, c, obj


def fit_schedule_law(
    s1: Tensor,
    s2: Tensor | Sequence[Tensor],
    loss: Tensor,
    mask: Tensor | None = None,
    *,
    decays: Sequence[float] = DEFAULT_DECAYS,
    alpha_bounds: tuple[float, float] = DEFAULT_ALPHA_BOUNDS,
    huber_delta: float = DEFAULT_HUBER_DELTA,
    irls_iters: int = DEFAULT_IRLS_ITERS,
) -> ScheduleLawFit:
    """Fit ``L = L0 + A * S1**(-alpha) - C * S2`` to each row of points.

    Args:
        s1: `(B, n)` forward area of each point (> 0 where used), or `(n,)` for one fit.
        s2: `(B, n)` annealing area of each point for the single decay in
            ``decays``, or a sequence of such tensors, one per entry of ``decays``
            (the areas depend on ``lam``).
        loss: `(B, n)` observed loss at each point (> 0 where used).
        mask: `(B, n)` bool, points to use (default all); points with non-finite
            values, ``s1 <= 0`` or ``loss <= 0`` are dropped too.
        decays: the ``lam`` each ``s2`` entry was computed with; the best is kept per row.
        alpha_bounds: ``(lo, hi)`` search range of ``alpha``, ``0 < lo < hi``.
        huber_delta: Huber threshold on the relative residual ``pred / obs - 1``.
        irls_iters: reweighting rounds of the Huber fit (0: plain weighted LS).

    Returns:
        A :class:`ScheduleLawFit` with `(B,)` fields, float64, on the inputs' device
        (1-D inputs give `(1,)` fields).
    """
    s2_list = [s2] if isinstance(s2, Tensor) else list(s2)
    decays = [_check_decay(d) for d in decays]
    if len(s2_list) != len(decays):
        raise ValueError(f"need one s2 per decay: {len(s2_list)} s2 for {len(decays)} decays")
    lo, hi = (float(v) for v in alpha_bounds)
    if not 0.0 < lo < hi:
        raise ValueError(f"alpha_bounds must satisfy 0 < lo < hi, got {alpha_bounds!r}")
    if huber_delta <= 0:
        raise ValueError(f"huber_delta must be > 0, got {huber_delta!r}")
    if irls_iters < 0:
        raise ValueError(f"irls_iters must be >= 0, got {irls_iters!r}")
    if s1.dim() == 1:
        s1, loss = s1.unsqueeze(0), loss.unsqueeze(0)
        s2_list = [t.unsqueeze(0) for t in s2_list]
        mask = None if mask is None else mask.unsqueeze(0)
    shape = s1.shape
    for name, t in [("loss", loss)] + [(f"s2[{i}]", t) for i, t in enumerate(s2_list)]:
        if t.shape != shape:
            raise ValueError(
                f"{name} must have the shape of s1 {tuple(shape)}, got {tuple(t.shape)}"
            )
    dev = s1.device
    f64 = torch.float64
    s1 = s1.to(f64)
    y = loss.to(f64)
    s2k = torch.stack([t.to(f64) for t in s2_list])  # (K, B, n)
    m = torch.ones(shape, dtype=torch.bool, device=dev) if mask is None else mask.to(torch.bool)
    if m.shape != shape:
        raise ValueError(f"mask must have the shape of s1 {tuple(shape)}, got {tuple(m.shape)}")
    m = m & torch.isfinite(s1) & torch.isfinite(y) & (s1 > 0) & (y > 0)
    mk = m.unsqueeze(0) & torch.isfinite(s2k)
    s1k = torch.where(mk, s1.unsqueeze(0).expand_as(s2k), torch.ones_like(s2k))
    yk = torch.where(mk, y.unsqueeze(0).expand_as(s2k), torch.ones_like(s2k))
    s2k = torch.where(mk, s2k, torch.zeros_like(s2k))

    log_grid = torch.linspace(math.log(lo), math.log(hi), COARSE_ALPHAS, dtype=f64, device=dev)
    l0, a, c, obj = _fit_grid(s1k, s2k, yk, mk, torch.exp(log_grid), huber_delta, irls_iters)
    # finer grid within one coarse cell of the best alpha, per (decay, row)
    best = obj.argmin(0)  # (K, B)
    step = float(log_grid[1] - log_grid[0])
    centre = log_grid[best]
    offsets = torch.linspace(-step, step, FINE_ALPHAS, dtype=f64, device=dev).view(-1, 1, 1)
    fine = torch.exp((centre.unsqueeze(0) + offsets).clamp(math.log(lo), math.log(hi)))
    l0f, af, cf, objf = _fit_grid(s1k, s2k, yk, mk, fine, huber_delta, irls_iters)
    j = objf.argmin(0, keepdim=True)  # (1, K, B)
    pick = lambda t: t.gather(0, j).squeeze(0)  # noqa: E731
    l0k, ak, ck, objk, alk = pick(l0f), pick(af), pick(cf), pick(objf), pick(fine)
    kbest = objk.argmin(0, keepdim=True)  # (1, B)
    pick_k = lambda t: t.gather(0, kbest).squeeze(0)  # noqa: E731
    n_used = m.sum(-1)
    objective = pick_k(objk)
    objective = torch.where(n_used >= 2, objective, torch.full_like(objective, math.inf))
    decay_t = torch.tensor(decays, dtype=f64, device=dev)[kbest.squeeze(0)]
    return ScheduleLawFit(
        l0=pick_k(l0k),
        a=pick_k(ak),
        alpha=pick_k(alk),
        c=pick_k(ck),
        decay=decay_t,
        objective=objective,
        n_used=n_used,
    )


def forecast_final(fit: ScheduleLawFit, row: int, history: Tensor, candidates: Tensor) -> Tensor:
    """Forecast the final loss of candidate remaining schedules under one fitted law.

    Args:
        fit: a fit; row ``row`` of it is used (its own ``decay``).
        history: `(h,)` LR of every step taken so far on the kept trajectory.
        candidates: `(M, r)` LR of every remaining step for ``M`` candidates.

    Returns:
        `(M,)` float64: the law at the end of ``history`` followed by each candidate.
    """
    if history.dim() != 1 or candidates.dim() != 2:
        raise ValueError(
            f"history must be (h,) and candidates (M, r), got {tuple(history.shape)}"
            f" and {tuple(candidates.shape)}"
        )
    hist = history.to(torch.float64).to(candidates.device)
    full = torch.cat([hist.expand(candidates.shape[0], -1), candidates.to(torch.float64)], dim=-1)
    s1, s2 = annealing_areas(full, float(fit.decay[row]))
    return predict_loss(fit.l0[row], fit.a[row], fit.alpha[row], fit.c[row], s1[:, -1], s2[:, -1])
