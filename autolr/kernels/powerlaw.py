"""Batched fit of the power law ``L(t) = a * (t + 1) ** (-b) + c`` with ``b >= 0``.

With ``u = log(t + 1)`` the model is ``a * exp(-b * u) + c``, so the fit reuses
the variable-projection search of :mod:`autolr.kernels.expfit` on the log axis.
Unlike the exponential rate, the exponent ``b`` has no unit, so its search range
``exponent_bounds`` is absolute. Steps must be greater than -1 (steps counted
from 0 are the intended use).

A power law with small ``b`` decays like ``-a * b * log(t + 1)``: far forecasts
keep falling slowly, which is the contrast with the exponential's plateau that a
forecaster comparison looks for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import KernelInputError
from .expfit import (
    MIN_POINTS,
    _check_counts,
    _check_finite,
    _check_options,
    _eval_steps,
    _prepare,
    _rescale,
    _vp_fit,
)

__all__ = ["PowerLawFit", "fit_power_law"]

DEFAULT_EXPONENT_BOUNDS = (1e-3, 10.0)
"""Default search range of the exponent ``b``."""


@dataclass(frozen=True)
class PowerLawFit:
    """Result of :func:`fit_power_law`: ``L(t) = a * (t + 1) ** (-b) + c``.

    Attributes:
        a: `(n,)` amplitude (the curve is ``a + c`` at ``t = 0``), loss units.
        b: `(n,)` exponent, unitless, ``>= 0``.
        c: `(n,)` asymptote as ``t -> inf``, loss units (the mean when ``b == 0``).
        sse: `(n,)` residual sum of squares over the points used.
        n_used: `(n,)` int64 number of points the fit used.
    """

    a: Tensor
    b: Tensor
    c: Tensor
    sse: Tensor
    n_used: Tensor

    @property
    def n(self) -> int:
        """Number of series."""
        return int(self.a.shape[0])

    def evaluate(self, t: float | Tensor) -> Tensor:
        """Evaluate the fitted curves at steps ``t`` (> -1).

        Args:
            t: a scalar (gives `(n,)`), an `(n,)` tensor (step ``t[i]`` for series
                ``i``, gives `(n,)`) or an `(n, m)` / `(1, m)` tensor (gives `(n, m)`).

        Returns:
            Loss values, computed in float64, in the dtype of ``a``.
        """
        steps, _ = _eval_steps(t, self.n, self.a.device)
        a, b, c = (v.to(torch.float64) for v in (self.a, self.b, self.c))
        if steps.dim() == 2:
            a, b, c = (v.unsqueeze(-1) for v in (a, b, c))
        return (a * torch.exp(-b * torch.log1p(steps)) + c).to(self.a.dtype)


def fit_power_law(
    t: Tensor,
    y: Tensor,
    mask: Tensor | None = None,
    *,
    exponent_bounds: tuple[float, float] = DEFAULT_EXPONENT_BOUNDS,
    n_grid: int = 48,
    refine_rounds: int = 12,
    min_points: int = MIN_POINTS,
    dtype: torch.dtype | None = None,
) -> PowerLawFit:
    """Least-squares fit of ``a * (t + 1) ** (-b) + c`` (``b >= 0``) to n series.

    Args:
        t: `(T,)` or `(n, T)` steps, each valid one > -1.
        y: `(n, T)` observed losses; NaN/inf entries are never used.
        mask: optional `(n, T)` bool, True where a point may be used.
        exponent_bounds: ``(low, high)`` search range of ``b``, ``0 < low < high``.
            ``b = 0`` (the constant fit) is always a candidate too.
        n_grid: log-spaced grid points over ``exponent_bounds`` (>= 2).
        refine_rounds: local refinement rounds after the grid (>= 0); see ``fit_exponential``.
        min_points: least number of valid points per series (>= 3).
        dtype: floating dtype of the result; default ``y``'s (if floating).

    Returns:
        A :class:`PowerLawFit` with `(n,)` tensors on ``y``'s device.

    Raises:
        KernelInputError: wrong types or shapes, or a valid step <= -1.
        KernelConfigError: an option out of range.
        KernelFitError: a series has fewer than ``min_points`` valid points, or ``a``
            overflows (huge steps with a steep exponent).
    """
    _check_options(exponent_bounds, n_grid, refine_rounds, min_points, name="exponent_bounds")
    t64, y64, valid, out_dtype = _prepare(t, y, mask, dtype)
    _check_counts(valid, min_points, "a*(t+1)^(-b) + c")
    low = valid & (t64 <= -1.0)
    if bool(low.any()):
        i, j = (int(v) for v in torch.nonzero(low)[0])
        raise KernelInputError(
            f"power-law steps must be > -1; series {i} has t = {float(t64[i, j])} at index {j}"
        )
    n, dev = y64.shape[0], y64.device
    if n == 0:
        empty = torch.zeros(0, dtype=out_dtype, device=dev)
        return PowerLawFit(empty, empty, empty, empty, torch.zeros(0, dtype=torch.long, device=dev))

    u = torch.where(valid, torch.log1p(torch.where(valid, t64, 0.0)), 0.0)
    x, u_first, u_span = _rescale(u, valid)
    beta, amp, c, sse = _vp_fit(
        x,
        torch.where(valid, y64, 0.0),
        valid.to(torch.float64),
        torch.log(exponent_bounds[0] * u_span),
        torch.log(exponent_bounds[1] * u_span),
        n_grid,
        refine_rounds,
    )
    b = beta / u_span
    a = torch.where(b > 0, amp * torch.exp(b * u_first), torch.zeros_like(amp))
    fit = PowerLawFit(
        a.to(out_dtype), b.to(out_dtype), c.to(out_dtype), sse.to(out_dtype), valid.sum(dim=1)
    )
    _check_finite(fit.a, "a", "the steps are too large for this exponent range")
    return fit
