"""Batched fit of ``L(t) = a * exp(-b * (t - t0)) + c`` with ``b >= 0``.

The fit is a variable projection. For a fixed rate ``b`` the model is linear in
``(a, c)``, so the best ``(a, c)`` and the residual sum of squares (SSE) follow in
closed form from a 2x2 least-squares problem. What is left is a one-dimensional
search over ``b``:

1. Each series is rescaled to ``x = (t - t_first) / span`` in ``[0, 1]`` (``span``
   is the range of its valid steps), so the search runs over the scaled rate
   ``beta = b * span``, which does not depend on the units of ``t``.
2. ``beta`` is searched on a log-spaced grid over ``rate_bounds``; the best grid
   point is refined by rounds of a finer local grid in ``log(beta)`` (9 points
   spanning the neighbouring grid points, then 5 times narrower each round).
3. The constant model (``b = 0``, ``a = 0``, ``c`` = mean) is kept when no rate
   improves on it beyond rounding, so a flat series gives exactly ``b = 0``.

Everything is batched as tensors of shape ``(n, n_rates, T)``; the work is
bounded (``n_grid + 9 * refine_rounds + 1`` profile evaluations in
``refine_rounds + 2`` batched calls), deterministic, and runs on the device of the
inputs, in float64.

The parameters are unconstrained except ``b >= 0``: an increasing series gets
``a < 0`` (a curve rising toward ``c``) or, if nothing beats it, the constant fit.
When the data look linear the search ends at the lower rate bound, and the curve
extrapolates the trend almost linearly for about ``1 / rate_bounds[0]`` spans
before it levels off at ``c``. Callers forecasting far ahead should floor or
otherwise guard the value (see :mod:`autolr.forecast`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .errors import KernelConfigError, KernelFitError, KernelInputError

__all__ = [
    "exponential_profile",
    "ExpFit",
    "evaluate",
    "fit_exponential",
    "valid_mask",
]

MIN_POINTS = 4
"""Default least number of valid points per series (three parameters plus one)."""

DEFAULT_RATE_BOUNDS = (1e-3, 1e3)
"""Default search range of the scaled rate ``b * span`` (decay per data span)."""

# Points per refinement round (odd, so the current best is among them); each round
# shrinks the search interval around the best point by (K + 1) / 2 = 5.
_REFINE_POINTS = 9
# A basis whose weighted variance is below this (times the point count) is constant.
_TINY_VAR = 1e-24
# The constant fit wins unless a rate lowers the SSE by more than rounding noise:
# a relative 1e-12 of its SSE plus a spread of 1e-10 of the series' level.
_TIE_RTOL = 1e-12
_FLAT_RTOL = 1e-10
# Upper bound on n * n_rates * T elements per profile evaluation (memory guard).
_CHUNK_ELEMENTS = 1 << 22

T0 = float | Tensor | Literal["first"]


@dataclass(frozen=True)
class ExpFit:
    """Result of :func:`fit_exponential`: ``L(t) = a * exp(-b * (t - t0)) + c``.

    Attributes:
        a: `(n,)` amplitude at ``t = t0``, loss units; negative for a rising curve.
        b: `(n,)` decay rate, per step (units of ``1 / t``); always ``>= 0``.
        c: `(n,)` asymptote as ``t -> inf``, loss units (the mean when ``b == 0``).
        sse: `(n,)` residual sum of squares over the points used, loss units squared.
        n_used: `(n,)` int64 number of points the fit used.
        t0: `(n,)` reference step of ``a``, same units as ``t``.
    """

    a: Tensor
    b: Tensor
    c: Tensor
    sse: Tensor
    n_used: Tensor
    t0: Tensor

    @property
    def n(self) -> int:
        """Number of series."""
        return int(self.a.shape[0])

    def evaluate(self, t: float | Tensor) -> Tensor:
        """Evaluate the fitted curves.

        Args:
            t: steps, same units as the fit's ``t``. A scalar gives `(n,)` (one
                value per series at that step); an `(n,)` tensor gives `(n,)` (step
                ``t[i]`` for series ``i``); an `(n, m)` or `(1, m)` tensor gives
                `(n, m)`.

        Returns:
            Loss values, computed in float64 and returned in the dtype of ``a``.
            Steps far before ``t0`` may overflow to ``inf`` (steep backward growth).
        """
        steps, _ = _eval_steps(t, self.n, self.a.device)
        a, b, c, t0 = (v.to(torch.float64) for v in (self.a, self.b, self.c, self.t0))
        if steps.dim() == 2:
            a, b, c, t0 = (v.unsqueeze(-1) for v in (a, b, c, t0))
        return (a * torch.exp(-b * (steps - t0)) + c).to(self.a.dtype)


def evaluate(fit: ExpFit, t: float | Tensor) -> Tensor:
    """Evaluate a fitted curve (:class:`ExpFit` or ``PowerLawFit``) at steps ``t``.

    See :meth:`ExpFit.evaluate` for the accepted shapes of ``t``.
    """
    return fit.evaluate(t)


def fit_exponential(
    t: Tensor,
    y: Tensor,
    mask: Tensor | None = None,
    *,
    t0: T0 = 0.0,
    rate_bounds: tuple[float, float] = DEFAULT_RATE_BOUNDS,
    n_grid: int = 48,
    refine_rounds: int = 12,
    min_points: int = MIN_POINTS,
    dtype: torch.dtype | None = None,
    c_min: float | None = None,
) -> ExpFit:
    """Least-squares fit of ``a * exp(-b * (t - t0)) + c`` (``b >= 0``) to n series.

    Args:
        t: `(T,)` steps shared by all series, or `(n, T)` steps per series; any
            real dtype. Need not be sorted or evenly spaced.
        y: `(n, T)` observed losses. NaN and inf entries are never used.
        mask: optional `(n, T)` bool, True where a point may be used.
        t0: reference step of the amplitude ``a``: a float, an `(n,)` tensor, or
            ``"first"`` for each series' first valid step (never overflows). The
            default 0.0 gives the plain ``a * exp(-b * t) + c``.
        rate_bounds: ``(low, high)`` range of the scaled rate ``b * span`` searched,
            where ``span`` is the range of a series' valid steps; ``low > 0``.
            ``high`` = 1e3 already models a drop that is over within the first
            point or two.
        n_grid: number of log-spaced grid points over ``rate_bounds`` (>= 2).
        refine_rounds: rounds of local refinement around the best grid point (>= 0);
            each evaluates 9 rates and narrows the interval 5-fold, so the default
            12 pins ``log(b)`` to ~1e-9 (the grid step is ~0.3).
        min_points: least number of valid points per series (>= 3).
        dtype: floating dtype of the returned tensors; default: ``y``'s dtype if
            floating, else the default dtype. The fit itself runs in float64.
        c_min: optional floor on the asymptote ``c`` (loss units). Where the free
            fit's ``c`` is below it, the series is refitted with ``c = c_min``
            (``a * exp(-b * t)`` to ``y - c_min``, same rate search). Losses are
            usually non-negative, so ``c_min = 0`` keeps a short, steeply falling
            series from extrapolating below zero.

    Returns:
        An :class:`ExpFit` with `(n,)` tensors on ``y``'s device.

    Raises:
        KernelInputError: wrong types or shapes (the message names the shapes).
        KernelConfigError: an option out of range.
        KernelFitError: a series has fewer than ``min_points`` valid points (the message
            names the series and its count), or ``a`` overflows at the given ``t0``.
    """
    _check_options(rate_bounds, n_grid, refine_rounds, min_points)
    t64, y64, valid, out_dtype = _prepare(t, y, mask, dtype)
    _check_counts(valid, min_points, "a*exp(-b*t) + c")
    n, dev = y64.shape[0], y64.device
    if n == 0:
        empty = torch.zeros(0, dtype=out_dtype, device=dev)
        return ExpFit(
            empty, empty, empty, empty, torch.zeros(0, dtype=torch.long, device=dev), empty
        )

    x, t_first, span = _rescale(t64, valid)
    w = valid.to(torch.float64)
    ones = torch.ones(n, dtype=torch.float64, device=dev)
    beta, amp, c, sse = _vp_fit(
        x,
        torch.where(valid, y64, 0.0),
        w,
        ones * math.log(rate_bounds[0]),
        ones * math.log(rate_bounds[1]),
        n_grid,
        refine_rounds,
    )
    if c_min is not None:
        if (
            isinstance(c_min, bool)
            or not isinstance(c_min, (int, float))
            or not math.isfinite(c_min)
        ):
            raise KernelConfigError(f"c_min must be None or a finite number, got {c_min!r}")
        low = c < c_min
        if bool(low.any()):
            fb, fa, fsse = _vp_fit_floor(
                x,
                torch.where(valid, y64 - c_min, 0.0),
                w,
                ones * math.log(rate_bounds[0]),
                ones * math.log(rate_bounds[1]),
                n_grid,
                refine_rounds,
            )
            beta = torch.where(low, fb, beta)
            amp = torch.where(low, fa, amp)
            c = torch.where(low, torch.full_like(c, float(c_min)), c)
            sse = torch.where(low, fsse, sse)
    b = beta / span
    t0_64 = _resolve_t0(t0, t_first, n, dev)
    a = torch.where(b > 0, amp * torch.exp(-b * (t0_64 - t_first)), torch.zeros_like(amp))
    fit = ExpFit(
        a.to(out_dtype),
        b.to(out_dtype),
        c.to(out_dtype),
        sse.to(out_dtype),
        valid.sum(dim=1),
        t0_64.to(out_dtype),
    )
    _check_finite(fit.a, "a", "pass t0='first' or a t0 inside the data")
    return fit


def exponential_profile(
    t: Tensor,
    y: Tensor,
    horizon: Tensor,
    mask: Tensor | None = None,
    *,
    rate_bounds: tuple[float, float] = DEFAULT_RATE_BOUNDS,
    n_grid: int = 48,
    c_min: float | None = None,
) -> tuple[Tensor, Tensor]:
    """SSE and forecast of the best ``a * exp(-b * t) + c`` at each rate of the grid.

    The profile over the rate shows how well the data pin the forecast down:
    for a series that still falls in a straight line, fits with very different
    rates (and so very different forecasts) have nearly the same SSE.

    Args:
        t: `(T,)` or `(n, T)` steps.
        y: `(n, T)` losses (NaN/inf entries unused).
        horizon: `(n,)` step at which to forecast, same units as ``t``.
        mask: optional `(n, T)` bool of points to use.
        rate_bounds, n_grid: the log grid of scaled rates, as in :func:`fit_exponential`.
        c_min: optional floor on the asymptote (as in :func:`fit_exponential`).

    Returns:
        ``(sse, forecast)``, each `(n, n_grid + 1)` float64; the last column is the
        constant fit (``b = 0``).
    """
    _check_options(rate_bounds, n_grid, 0, MIN_POINTS)
    t64, y64, valid, _ = _prepare(t, y, mask, None)
    _check_counts(valid, 2, "a*exp(-b*t) + c")
    n, dev = y64.shape[0], y64.device
    x, t_first, span = _rescale(t64, valid)
    w = valid.to(torch.float64)
    yv = torch.where(valid, y64, 0.0)
    wsum = w.sum(dim=1)
    ybar = (w * yv).sum(dim=1) / wsum
    frac = torch.arange(n_grid, dtype=torch.float64, device=dev) / (n_grid - 1)
    lo, hi = math.log(rate_bounds[0]), math.log(rate_bounds[1])
    beta = torch.exp(lo + frac * (hi - lo)).expand(n, n_grid)
    amp, c, sse = _profile(beta, x, yv, w, wsum, ybar)
    if c_min is not None:
        famp, fsse = _profile_floor(beta, x, torch.where(valid, y64 - c_min, 0.0), w)
        low = c < c_min
        amp = torch.where(low, famp, amp)
        sse = torch.where(low, fsse, sse)
        c = torch.where(low, torch.full_like(c, float(c_min)), c)
    xh = ((horizon.to(dev, torch.float64) - t_first) / span).unsqueeze(1)
    forecast = c + amp * torch.exp(-beta * xh)
    sse0 = (w * (yv - ybar.unsqueeze(1)) ** 2).sum(dim=1, keepdim=True)
    return torch.cat([sse, sse0], dim=1), torch.cat([forecast, ybar.unsqueeze(1)], dim=1)


def valid_mask(y: Tensor, mask: Tensor | None = None, t: Tensor | None = None) -> Tensor:
    """Points that may be used: ``mask`` and finite ``y`` (and finite ``t``).

    Args:
        y: `(n, T)` values.
        mask: optional `(n, T)` bool.
        t: optional `(T,)` or `(n, T)` steps.

    Returns:
        `(n, T)` bool tensor on ``y``'s device.
    """
    _, _, valid, _ = _prepare(t, y, mask, None)
    return valid


# ----------------------------------------------------------------------------
# Shared batched machinery (also used by the power-law fit)
# ----------------------------------------------------------------------------


def _check_options(
    bounds: tuple[float, float],
    n_grid: int,
    refine_rounds: int,
    min_points: int,
    *,
    name: str = "rate_bounds",
) -> None:
    try:
        lo, hi = (float(v) for v in bounds)
    except (TypeError, ValueError):
        raise KernelConfigError(
            f"{name} must be a pair (low, high) of floats, got {bounds!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo < hi):
        raise KernelConfigError(f"{name} must satisfy 0 < low < high < inf, got {bounds!r}")
    if isinstance(n_grid, bool) or not isinstance(n_grid, int) or n_grid < 2:
        raise KernelConfigError(f"n_grid must be an int >= 2, got {n_grid!r}")
    if isinstance(refine_rounds, bool) or not isinstance(refine_rounds, int) or refine_rounds < 0:
        raise KernelConfigError(f"refine_rounds must be an int >= 0, got {refine_rounds!r}")
    if isinstance(min_points, bool) or not isinstance(min_points, int) or min_points < 3:
        raise KernelConfigError(f"min_points must be an int >= 3, got {min_points!r}")


def _prepare(
    t: Tensor | None, y: Tensor, mask: Tensor | None, dtype: torch.dtype | None
) -> tuple[Tensor, Tensor, Tensor, torch.dtype]:
    """Validate and convert inputs: float64 ``(n, T)`` t and y, the valid mask, out dtype."""
    if not isinstance(y, Tensor):
        raise KernelInputError(f"y must be a torch.Tensor of shape (n, T), got {type(y).__name__}")
    if y.dim() != 2:
        raise KernelInputError(f"y must be 2-D with shape (n, T), got shape {tuple(y.shape)}")
    if y.is_complex() or y.dtype == torch.bool:
        raise KernelInputError(f"y must be real-valued, got dtype {y.dtype}")
    n, steps = y.shape
    if t is None:
        t = torch.zeros(steps, dtype=torch.float64, device=y.device)
    if not isinstance(t, Tensor):
        raise KernelInputError(
            f"t must be a torch.Tensor of shape (T,) or (n, T), got {type(t).__name__}"
        )
    if t.is_complex() or t.dtype == torch.bool:
        raise KernelInputError(f"t must be real-valued, got dtype {t.dtype}")
    if t.dim() == 1 and t.shape[0] == steps:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[1] != steps or t.shape[0] not in (1, n):
        raise KernelInputError(
            f"t must have shape ({steps},) or ({n}, {steps}) to match y of shape "
            f"{tuple(y.shape)}, got shape {tuple(t.shape)}"
        )
    y64 = y.detach().to(torch.float64)
    t64 = t.detach().to(device=y.device, dtype=torch.float64).expand(n, steps)
    valid = torch.isfinite(y64) & torch.isfinite(t64)
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise KernelInputError(
                f"mask must be a bool tensor of shape {tuple(y.shape)}, got {got}"
            )
        if tuple(mask.shape) != tuple(y.shape):
            raise KernelInputError(
                f"mask must have the shape of y {tuple(y.shape)}, got shape {tuple(mask.shape)}"
            )
        valid = valid & mask.to(y.device)
    if dtype is None:
        dtype = y.dtype if y.is_floating_point() else torch.get_default_dtype()
    elif not dtype.is_floating_point:
        raise KernelConfigError(f"dtype must be a floating dtype, got {dtype}")
    return t64, y64, valid, dtype


def _check_counts(valid: Tensor, min_points: int, model: str) -> None:
    counts = valid.sum(dim=1)
    bad = torch.nonzero(counts < min_points).flatten()
    if bad.numel() == 0:
        return
    shown = bad[:5].tolist()
    details = "; ".join(f"series {i} has {int(counts[i])} valid points" for i in shown)
    more = f"; and {bad.numel() - len(shown)} more series" if bad.numel() > len(shown) else ""
    raise KernelFitError(
        f"cannot fit {model}: {details}{more} (at least {min_points} are needed; "
        "NaN/inf and masked-out entries do not count)"
    )


def _check_finite(values: Tensor, what: str, hint: str) -> None:
    bad = torch.nonzero(~torch.isfinite(values)).flatten()
    if bad.numel():
        raise KernelFitError(
            f"fitted {what} is not finite for series {bad[:5].tolist()} "
            f"(values {values[bad[:5]].tolist()}); {hint}"
        )


def _rescale(t64: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Map valid steps of each series to ``[0, 1]``; returns ``x``, ``t_first``, ``span``."""
    inf = torch.tensor(math.inf, dtype=torch.float64, device=t64.device)
    t_first = torch.where(valid, t64, inf).amin(dim=1)
    t_last = torch.where(valid, t64, -inf).amax(dim=1)
    span = t_last - t_first
    span = torch.where(span > 0, span, torch.ones_like(span))
    x = torch.where(valid, (t64 - t_first.unsqueeze(1)) / span.unsqueeze(1), 0.0)
    return x, t_first, span


def _resolve_t0(t0: T0, t_first: Tensor, n: int, device: torch.device) -> Tensor:
    if isinstance(t0, str):
        if t0 != "first":
            raise KernelConfigError(f"t0 must be a float, an (n,) tensor or 'first', got {t0!r}")
        return t_first
    if isinstance(t0, Tensor):
        if t0.numel() == 1:
            t0 = float(t0)
        elif tuple(t0.shape) != (n,):
            raise KernelInputError(
                f"t0 must be a scalar or have shape ({n},), got shape {tuple(t0.shape)}"
            )
        else:
            out = t0.to(device=device, dtype=torch.float64)
            if not bool(torch.isfinite(out).all()):
                raise KernelConfigError(f"t0 must be finite, got {t0.tolist()}")
            return out
    if isinstance(t0, bool) or not isinstance(t0, (int, float)) or not math.isfinite(t0):
        raise KernelConfigError(f"t0 must be a finite float, an (n,) tensor or 'first', got {t0!r}")
    return torch.full((n,), float(t0), dtype=torch.float64, device=device)


def _eval_steps(t: float | Tensor, n: int, device: torch.device) -> tuple[Tensor, bool]:
    """Steps for evaluation as float64 `(n,)` or `(n, m)`; the flag tells which."""
    if isinstance(t, Tensor):
        steps = t.to(device=device, dtype=torch.float64)
        if steps.dim() == 0:
            return steps.expand(n), False
        if steps.dim() == 1 and steps.shape[0] == n:
            return steps, False
        if steps.dim() == 2 and steps.shape[0] in (1, n):
            return steps.expand(n, steps.shape[1]), True
        raise KernelInputError(
            f"t must be a scalar, shape ({n},) or ({n}, m) for {n} series, "
            f"got shape {tuple(t.shape)}"
        )
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise KernelInputError(f"t must be a number or a tensor, got {type(t).__name__}")
    return torch.full((n,), float(t), dtype=torch.float64, device=device), False


def _grid_sse(
    beta: Tensor, x: Tensor, w: Tensor, wdy: Tensor, wsum: Tensor, sse0: Tensor
) -> Tensor:
    """SSE for rates ``beta`` `(n, k)` by sums of products (fast; for the grid).

    Uses ``SSE = SSE_0 - Sxy^2 / Sxx`` with the basis ``expm1(-beta * x)``, which
    keeps ``Sxx`` accurate for small rates; the subtraction loses relative precision
    only when the fit is nearly exact, which the refinement recomputes directly.
    """
    g = torch.expm1(-beta.unsqueeze(-1) * x.unsqueeze(1))  # (n, k, T)
    sg = torch.einsum("nkt,nt->nk", g, w)
    sgg = torch.einsum("nkt,nt->nk", g * g, w)
    sxy = torch.einsum("nkt,nt->nk", g, wdy)
    sxx = sgg - sg * sg / wsum.unsqueeze(1)
    ok = sxx > _TINY_VAR * wsum.unsqueeze(1)
    gain = torch.where(ok, sxy * sxy / torch.where(ok, sxx, 1.0), 0.0)
    return (sse0.unsqueeze(1) - gain).clamp(min=0.0)


def _profile(
    beta: Tensor, x: Tensor, y: Tensor, w: Tensor, wsum: Tensor, ybar: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Best ``(A, c)`` and SSE for rates ``beta`` `(n, k)` from residuals; `(n, k)` each."""
    g = torch.expm1(-beta.unsqueeze(-1) * x.unsqueeze(1))  # (n, k, T); exp(-beta x) - 1
    wb = w.unsqueeze(1)
    gbar = (wb * g).sum(-1) / wsum.unsqueeze(1)
    dg = g - gbar.unsqueeze(-1)
    dy = (y - ybar.unsqueeze(1)).unsqueeze(1)
    sxx = (wb * dg * dg).sum(-1)
    sxy = (wb * dg * dy).sum(-1)
    ok = sxx > _TINY_VAR * wsum.unsqueeze(1)
    amp = torch.where(ok, sxy / torch.where(ok, sxx, 1.0), 0.0)
    r = dy - amp.unsqueeze(-1) * dg
    sse = (wb * r * r).sum(-1)
    return amp, ybar.unsqueeze(1) - amp * (gbar + 1.0), sse


def _profile_floor(beta: Tensor, x: Tensor, y: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Best ``A`` and SSE of ``A * exp(-beta * x)`` (no offset) for rates `(n, k)`."""
    g = torch.exp(-beta.unsqueeze(-1) * x.unsqueeze(1))  # (n, k, T)
    wb = w.unsqueeze(1)
    sgg = (wb * g * g).sum(-1)
    amp = (wb * g * y.unsqueeze(1)).sum(-1) / sgg.clamp(min=1e-300)
    r = y.unsqueeze(1) - amp.unsqueeze(-1) * g
    return amp, (wb * r * r).sum(-1)


def _vp_fit_floor(
    x: Tensor, y: Tensor, w: Tensor, log_lo: Tensor, log_hi: Tensor, n_grid: int, refine_rounds: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Fit ``A * exp(-beta * x)`` (the asymptote fixed at 0) by the rate grid and refinement.

    Same grid and refinement as :func:`_vp_fit`; ``y`` is already shifted by the floor.

    Returns:
        ``beta``, ``A``, ``sse``; `(n,)` float64 each.
    """
    frac = torch.arange(n_grid, dtype=torch.float64, device=y.device) / (n_grid - 1)
    grid = log_lo.unsqueeze(1) + frac * (log_hi - log_lo).unsqueeze(1)
    u = grid.gather(1, _profile_floor(torch.exp(grid), x, y, w)[1].argmin(dim=1, keepdim=True))
    half = ((log_hi - log_lo) / (n_grid - 1)).unsqueeze(1)
    offsets = _refine_offsets(y.device)
    lo, hi = log_lo.unsqueeze(1), log_hi.unsqueeze(1)
    for _ in range(refine_rounds):
        cand = torch.minimum(torch.maximum(u + half * offsets, lo), hi)
        u = cand.gather(1, _profile_floor(torch.exp(cand), x, y, w)[1].argmin(dim=1, keepdim=True))
        half = half * (2.0 / (_REFINE_POINTS + 1))
    amp, sse = (v.squeeze(1) for v in _profile_floor(torch.exp(u), x, y, w))
    return torch.exp(u.squeeze(1)), amp, sse


def _refine_offsets(device: torch.device | None = None) -> Tensor:
    """`(K,)` offsets in ``(-1, 1)``, evenly spaced, with an exact 0 in the middle."""
    i = torch.arange(1, _REFINE_POINTS + 1, dtype=torch.float64, device=device)
    return (2 * i - (_REFINE_POINTS + 1)) / (_REFINE_POINTS + 1)


def _vp_fit(
    x: Tensor, y: Tensor, w: Tensor, log_lo: Tensor, log_hi: Tensor, n_grid: int, refine_rounds: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Variable-projection fit of ``A * exp(-beta * x) + c`` with ``beta`` in ``{0} U [lo, hi]``.

    Args:
        x: `(n, T)` scaled steps in ``[0, 1]``, 0 where ``w == 0``.
        y: `(n, T)` values, 0 where ``w == 0``.
        w: `(n, T)` 0/1 weights.
        log_lo, log_hi: `(n,)` log bounds of ``beta``.

    Returns:
        ``beta``, ``A`` (amplitude at ``x = 0``), ``c``, ``sse``; `(n,)` float64 each.
    """
    n, steps = y.shape
    wsum = w.sum(dim=1)
    ybar = (w * y).sum(dim=1) / wsum
    sse0 = (w * (y - ybar.unsqueeze(1)) ** 2).sum(dim=1)

    def prof(log_beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return _profile(torch.exp(log_beta), x, y, w, wsum, ybar)

    frac = torch.arange(n_grid, dtype=torch.float64, device=y.device) / (n_grid - 1)
    grid = log_lo.unsqueeze(1) + frac * (log_hi - log_lo).unsqueeze(1)  # (n, n_grid)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n * steps))
    wdy = w * (y - ybar.unsqueeze(1))
    sse_grid = torch.cat(
        [
            _grid_sse(torch.exp(grid[:, i : i + chunk]), x, w, wdy, wsum, sse0)
            for i in range(0, n_grid, chunk)
        ],
        dim=1,
    )
    u = grid.gather(1, sse_grid.argmin(dim=1, keepdim=True))  # (n, 1)
    half = ((log_hi - log_lo) / (n_grid - 1)).unsqueeze(1)
    offsets = _refine_offsets(y.device)
    lo, hi = log_lo.unsqueeze(1), log_hi.unsqueeze(1)
    for _ in range(refine_rounds):
        cand = torch.minimum(torch.maximum(u + half * offsets, lo), hi)  # (n, K); centre is u
        u = cand.gather(1, prof(cand)[2].argmin(dim=1, keepdim=True))
        half = half * (2.0 / (_REFINE_POINTS + 1))
    amp, c, sse = (v.squeeze(1) for v in prof(u))
    beta = torch.exp(u.squeeze(1))

    tol = _TIE_RTOL * sse0 + wsum * (_FLAT_RTOL * ybar.abs()) ** 2 + 1e-300
    flat = sse >= sse0 - tol
    zero = torch.zeros_like(beta)
    return (
        torch.where(flat, zero, beta),
        torch.where(flat, zero, amp),
        torch.where(flat, ybar, c),
        torch.where(flat, sse0, sse),
    )
