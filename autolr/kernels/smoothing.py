"""Robust smoothing: batched Hampel filter that trims outliers from loss series.

Per-step training losses are noisy and spike now and then (a hard batch, a
transient instability). A least-squares curve fit is dragged by such points, so
they are removed first. The Hampel filter flags point ``i`` when it is further
than ``k`` robust standard deviations from the median of its window::

    |y[i] - median(W_i)| > k * max(1.4826 * MAD(W_i), floor)

where ``W_i`` holds the valid values at array positions ``i - h .. i + h``
(``window = 2h + 1``, truncated at the ends), ``MAD`` is the median absolute
deviation from that median and 1.4826 makes it a standard deviation for Gaussian
noise. Medians of an even count take the lower middle value (``torch.nanmedian``).
``floor`` is ``1e-9 * median(|y|)`` of the series, so a perfectly flat stretch does
not turn rounding differences into outliers.

On a steep curve the window median lags the trend and the first points of a fast
drop can be flagged. Pass the fitted curve as ``trend`` to filter the residuals
instead; :mod:`autolr.forecast` does both (raw pass, fit, residual pass).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import KernelConfigError, KernelInputError
from .expfit import _prepare

__all__ = ["MAD_TO_STD", "hampel_mask"]

MAD_TO_STD = 1.4826
"""Ratio of the standard deviation to the MAD for Gaussian noise."""

_REL_FLOOR = 1e-9


def _check_hampel(window: int, k: float) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 3 or window % 2 == 0:
        raise KernelConfigError(f"window must be an odd int >= 3, got {window!r}")
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not (0 < k < math.inf):
        raise KernelConfigError(f"k must be a finite number > 0, got {k!r}")


def hampel_mask(
    y: Tensor,
    mask: Tensor | None = None,
    *,
    window: int = 11,
    k: float = 3.0,
    trend: Tensor | None = None,
    global_scale: bool = False,
) -> Tensor:
    """Mask of the points a Hampel filter keeps, for n series at once.

    Args:
        y: `(n, T)` values (losses). NaN/inf entries count as invalid.
        mask: optional `(n, T)` bool of valid points; invalid points are neither
            used in any window nor kept.
        window: odd window length in array positions (>= 3).
        k: threshold in robust standard deviations (> 0); 3 is customary.
        trend: optional `(n, T)` curve subtracted from ``y`` before filtering
            (e.g. a fitted curve), so the filter sees residuals.
        global_scale: if True, the scale of every window is at least the robust
            scale of the whole series (1.4826 times its MAD). Small windows give
            noisy MADs that flag ordinary noise; the series-wide scale stops that.
            Meant for residuals (with ``trend``): on raw losses the trend inflates it.

    Returns:
        `(n, T)` bool on ``y``'s device: valid and not an outlier.

    Raises:
        KernelInputError: wrong types or shapes.
        KernelConfigError: ``window`` or ``k`` out of range.
    """
    _check_hampel(window, k)
    _, y64, valid, _ = _prepare(None, y, mask, None)
    level = torch.where(valid, y64.abs(), math.nan).nanmedian(dim=1).values
    if trend is not None:
        if not isinstance(trend, Tensor) or tuple(trend.shape) != tuple(y.shape):
            got = tuple(trend.shape) if isinstance(trend, Tensor) else type(trend).__name__
            raise KernelInputError(f"trend must be a tensor of shape {tuple(y.shape)}, got {got}")
        trend64 = trend.to(device=y64.device, dtype=torch.float64)
        valid = valid & torch.isfinite(trend64)
        y64 = y64 - trend64
    if y64.shape[0] == 0 or y64.shape[1] == 0:
        return valid
    v = torch.where(valid, y64, math.nan)
    h = window // 2
    win = F.pad(v, (h, h), value=math.nan).unfold(1, window, 1)  # (n, T, window)
    med = win.nanmedian(dim=-1).values
    mad = (win - med.unsqueeze(-1)).abs().nanmedian(dim=-1).values
    floor = _REL_FLOOR * torch.nan_to_num(level, nan=0.0).unsqueeze(1) + 1e-300
    scale = torch.maximum(MAD_TO_STD * mad, floor)
    if global_scale:
        gmed = v.nanmedian(dim=1, keepdim=True).values
        gmad = (v - gmed).abs().nanmedian(dim=1, keepdim=True).values
        scale = torch.maximum(scale, MAD_TO_STD * torch.nan_to_num(gmad, nan=0.0))
    outlier = (v - med).abs() > k * scale
    return valid & ~outlier
