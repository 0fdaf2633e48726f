"""Forecasters: predict a probe's loss at the exploit horizon from its short series.

A forecaster fits a decaying curve to each probe's losses (after trimming
outliers) and evaluates it at ``t = horizon``. Strategies are small objects behind
the :class:`Forecaster` protocol, like BoTorch's stopping criteria:

- :class:`ExponentialForecaster`: ``L(t) = a * exp(-b * (t - t0)) + c`` as in
  AutoLRS, ``t0`` being each series' first valid step (0 for a probe counted
  from 0), so ``a`` is the drop still to come from the first observation.
- :class:`PowerLawForecaster`: ``L(t) = a * (t + 1) ** (-b) + c``.

Far extrapolation. When a probe's losses look linear (no visible curvature), the
least-squares rate ends at its lower bound and the exponential continues the
linear trend for about ``1 / rate_bounds[0]`` probe lengths (1000 by default)
before levelling off. A horizon of ten probe lengths, as in AutoLRS, thus gives
roughly the linear extrapolation, which can fall below any reachable loss (even
below zero). That is the honest least-squares answer and stays finite; set
``min_value`` (e.g. 0.0 for cross-entropy) to floor it. The power law with a
small exponent falls only logarithmically instead.

Trimming (``trim_outliers=True``) runs in two passes: a Hampel filter on the raw
losses, a fit on what it keeps, then a Hampel filter on the residuals of all valid
points from that fit (its scale floored at the series-wide robust scale), and the
final fit on what that keeps. The residual pass follows the curve, so it gives
back most points of a steep drop that a raw rolling median mistakes for outliers,
and the series-wide floor keeps ordinary Gaussian noise (about 0.6% of points
trimmed at the defaults, against about 3% for a plain Hampel filter). The very
first point of a steep, noisy drop is still trimmed in a fair share of series: it
has no left neighbours to vouch for it. If a pass would leave a series with fewer
than ``min_points`` points, that series keeps its untrimmed points.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from autolr.errors import AutoLRError, ConfigError, FitError, InputError
from autolr.kernels.errors import KernelConfigError, KernelError, KernelFitError, KernelInputError
from autolr.kernels.expfit import (
    DEFAULT_RATE_BOUNDS,
    MIN_POINTS,
    exponential_profile,
    fit_exponential,
    valid_mask,
)
from autolr.kernels.powerlaw import DEFAULT_EXPONENT_BOUNDS, fit_power_law
from autolr.kernels.smoothing import hampel_mask

__all__ = [
    "FORECASTERS",
    "ExponentialForecaster",
    "Forecast",
    "Forecaster",
    "PowerLawForecaster",
    "make_forecaster",
]

logger = logging.getLogger(__name__)

_KERNEL_ERRORS: tuple[tuple[type[KernelError], type[AutoLRError]], ...] = (
    (KernelConfigError, ConfigError),
    (KernelInputError, InputError),
    (KernelFitError, FitError),
)
"""Each error of :mod:`autolr.kernels` and the autolr error it is raised as."""


@contextmanager
def _kernel_errors() -> Iterator[None]:
    """Raise the kernels' errors as autolr's, with the same message and traceback.

    The kernels are a leaf and raise builtin-derived errors of their own; this is
    the boundary where they become :class:`ConfigError`, :class:`InputError` and
    :class:`FitError`. Usable as a decorator.
    """
    try:
        yield
    except KernelError as exc:
        for kernel_error, ours in _KERNEL_ERRORS:
            if isinstance(exc, kernel_error):
                raise ours(*exc.args).with_traceback(exc.__traceback__) from None
        raise


@dataclass(frozen=True)
class Forecast:
    """Forecast of n loss series at their horizons.

    Attributes:
        values: `(n,)` forecast loss at ``t = horizon``, in the dtype of the losses
            (float64 for non-floating losses).
        horizon: `(n,)` float64 steps the values are for, same units as ``t``.
        params: fitted curve parameters, each `(n,)` float64: ``"a"``, ``"b"``,
            ``"c"`` (and ``"t0"`` for the exponential); see each forecaster.
        sse: `(n,)` float64 residual sum of squares of the fit, loss units squared.
        n_used: `(n,)` int64 points the fit used after trimming.
        forecaster: name of the forecaster that made it.
    """

    values: Tensor
    horizon: Tensor
    params: dict[str, Tensor]
    sse: Tensor
    n_used: Tensor
    forecaster: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of lists (non-finite numbers become None)."""

        def plain(v: Tensor) -> list[Any]:
            return [x if not isinstance(x, float) or math.isfinite(x) else None for x in v.tolist()]

        return {
            "forecaster": self.forecaster,
            "values": plain(self.values),
            "horizon": plain(self.horizon),
            "params": {k: plain(v) for k, v in self.params.items()},
            "sse": plain(self.sse),
            "n_used": self.n_used.tolist(),
        }


@runtime_checkable
class Forecaster(Protocol):
    """Predicts each series' loss at a later step.

    Attributes:
        name: short identifier, written to the run log.
    """

    name: str

    def forecast(
        self, t: Tensor, losses: Tensor, horizon: float | Tensor, mask: Tensor | None = None
    ) -> Forecast:
        """Forecast n series.

        Args:
            t: `(T,)` or `(n, T)` steps of the observations.
            losses: `(n, T)` observed losses; NaN/inf entries are ignored.
            horizon: step to forecast, same units as ``t``: a float or an `(n,)` tensor.
            mask: optional `(n, T)` bool of points that may be used.
        """
        ...  # pragma: no cover

    def reset(self) -> None:
        """Forget any state kept between calls."""
        ...  # pragma: no cover

    def config(self) -> dict[str, Any]:
        """JSON-friendly settings; ``make_forecaster(config())`` rebuilds the object."""
        ...  # pragma: no cover


def _check_bounds(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo < hi):
        raise ConfigError(f"{name} must satisfy 0 < low < high < inf, got {value!r}")
    return lo, hi


def _check_int(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{name} must be an int >= {least}, got {value!r}")
    return value


class _CurveForecaster:
    """Shared trimming, validation and evaluation; subclasses provide the fit."""

    name: str = ""

    def __init__(
        self,
        *,
        trim_outliers: bool,
        hampel_window: int,
        hampel_k: float,
        min_value: float | None,
        n_grid: int,
        refine_rounds: int,
        min_points: int,
    ) -> None:
        if not isinstance(trim_outliers, bool):
            raise ConfigError(f"trim_outliers must be True or False, got {trim_outliers!r}")
        if (
            isinstance(hampel_window, bool)
            or not isinstance(hampel_window, int)
            or hampel_window < 3
            or hampel_window % 2 == 0
        ):
            raise ConfigError(f"hampel_window must be an odd int >= 3, got {hampel_window!r}")
        if (
            isinstance(hampel_k, bool)
            or not isinstance(hampel_k, (int, float))
            or not 0 < hampel_k < math.inf
        ):
            raise ConfigError(f"hampel_k must be a finite number > 0, got {hampel_k!r}")
        if min_value is not None and (
            isinstance(min_value, bool)
            or not isinstance(min_value, (int, float))
            or not math.isfinite(min_value)
        ):
            raise ConfigError(f"min_value must be None or a finite number, got {min_value!r}")
        self.trim_outliers = trim_outliers
        self.hampel_window = hampel_window
        self.hampel_k = float(hampel_k)
        self.min_value = None if min_value is None else float(min_value)
        self.n_grid = _check_int("n_grid", n_grid, 2)
        self.refine_rounds = _check_int("refine_rounds", refine_rounds, 0)
        self.min_points = _check_int("min_points", min_points, 3)
        self.last: Forecast | None = None

    # -- subclass hooks ---------------------------------------------------------------------

    def _fit(self, t: Tensor, y: Tensor, mask: Tensor) -> Any:
        raise NotImplementedError

    def _params(self, fit: Any) -> dict[str, Tensor]:
        return {"a": fit.a, "b": fit.b, "c": fit.c}

    def _options(self) -> dict[str, Any]:
        return {}

    def _upper(self, t: Tensor, y: Tensor, steps: Tensor, used: Tensor, fit: Any) -> Tensor | None:
        """A pessimistic forecast `(n,)` to use when it is above the point forecast, or None."""
        return None

    # -- protocol ---------------------------------------------------------------------------

    @_kernel_errors()
    def forecast(
        self, t: Tensor, losses: Tensor, horizon: float | Tensor, mask: Tensor | None = None
    ) -> Forecast:
        """Fit each series and evaluate the curve at ``horizon``.

        Args:
            t: `(T,)` steps shared by all series, or `(n, T)` per series.
            losses: `(n, T)` observed losses; NaN/inf entries are ignored.
            horizon: step to forecast, same units as ``t``: a float or an `(n,)`
                tensor. Typically the exploit length ``tau`` when ``t`` counts
                probe steps from 0.
            mask: optional `(n, T)` bool of points that may be used.

        Returns:
            A :class:`Forecast`; ``values`` is finite for every series, floored at
            ``min_value`` when set.

        Raises:
            InputError: wrong shapes or types, or a non-finite horizon.
            FitError: a series has fewer than ``min_points`` valid points (the
                message names it and its count).
        """
        valid = valid_mask(losses, mask, t)
        n = valid.shape[0]
        steps = self._horizon(horizon, n, valid.device)
        used = valid
        if self.trim_outliers and n > 0:
            used = self._keep_enough(hampel_mask(losses, valid, **self._hampel()), valid)
            first = self._fit(t, losses, used)
            trend = first.evaluate(t.to(valid.device, torch.float64).expand(valid.shape))
            used = self._keep_enough(
                hampel_mask(losses, valid, trend=trend, global_scale=True, **self._hampel()),
                valid,
            )
        fit = self._fit(t, losses, used)
        values = fit.evaluate(steps)
        upper = self._upper(t, losses, steps, used, fit)
        if upper is not None:
            values = torch.maximum(values, upper)
        if self.min_value is not None:
            values = values.clamp(min=self.min_value)
        out_dtype = losses.dtype if losses.is_floating_point() else torch.float64
        result = Forecast(
            values=values.to(out_dtype),
            horizon=steps,
            params=self._params(fit),
            sse=fit.sse,
            n_used=fit.n_used,
            forecaster=self.name,
        )
        self.last = result
        return result

    def reset(self) -> None:
        """Drop the last forecast (the only state kept between calls)."""
        self.last = None

    def config(self) -> dict[str, Any]:
        """JSON-friendly settings, including ``"name"``."""
        return {
            "name": self.name,
            "trim_outliers": self.trim_outliers,
            "hampel_window": self.hampel_window,
            "hampel_k": self.hampel_k,
            "min_value": self.min_value,
            "n_grid": self.n_grid,
            "refine_rounds": self.refine_rounds,
            "min_points": self.min_points,
            **self._options(),
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    # -- helpers ----------------------------------------------------------------------------

    def _hampel(self) -> dict[str, Any]:
        return {"window": self.hampel_window, "k": self.hampel_k}

    def _keep_enough(self, trimmed: Tensor, valid: Tensor) -> Tensor:
        short = trimmed.sum(dim=1) < self.min_points
        if bool(short.any()):
            logger.debug(
                "trimming left fewer than %d points in series %s; using them untrimmed",
                self.min_points,
                torch.nonzero(short).flatten().tolist(),
            )
        return torch.where(short.unsqueeze(1), valid, trimmed)

    @staticmethod
    def _horizon(horizon: float | Tensor, n: int, device: torch.device) -> Tensor:
        if isinstance(horizon, Tensor):
            h = horizon.to(device=device, dtype=torch.float64)
            if h.dim() == 0:
                h = h.expand(n)
            elif tuple(h.shape) != (n,):
                raise InputError(
                    f"horizon must be a float or have shape ({n},), "
                    f"got shape {tuple(horizon.shape)}"
                )
        elif isinstance(horizon, bool) or not isinstance(horizon, (int, float)):
            raise InputError(f"horizon must be a float or a tensor, got {type(horizon).__name__}")
        else:
            h = torch.full((n,), float(horizon), dtype=torch.float64, device=device)
        if not bool(torch.isfinite(h).all()):
            raise InputError(f"horizon must be finite, got {h.tolist()}")
        return h


class ExponentialForecaster(_CurveForecaster):
    """AutoLRS forecaster: ``L(t) = a * exp(-b * (t - t0)) + c``, ``b >= 0``, at the horizon.

    ``t0`` is each series' first valid step (``params["t0"]``), so ``a`` stays finite
    whatever the step offset. ``b`` is per step.

    Args:
        trim_outliers: drop outliers (two-pass Hampel filter) before the final fit.
        hampel_window: odd window length of the Hampel filter, in points (>= 3).
        hampel_k: Hampel threshold in robust standard deviations (> 0).
        min_value: optional floor on the loss (loss units), e.g. 0.0: the fitted
            asymptote ``c`` is kept at or above it and forecasts are clamped to it.
        rate_bounds: search range of the rate times the series' step span.
        n_grid: grid points of the rate search (>= 2).
        refine_rounds: local refinement rounds after the grid (>= 0).
        min_points: least valid points per series (>= 3); fewer is a ``FitError``.
        pessimism: forecast the highest value among the rates the data cannot
            rule out, ``z`` in profile-likelihood units (0: the point forecast).
            A probe still falling in a straight line fits rates from slow to
            fast almost equally well; its point forecast is then an arbitrary
            extrapolation, and pessimism keeps it from winning on that alone.

    Raises:
        ConfigError: an argument out of range (the message names it and its value).
    """

    name = "exponential"

    def __init__(
        self,
        trim_outliers: bool = True,
        hampel_window: int = 11,
        hampel_k: float = 3.0,
        min_value: float | None = None,
        rate_bounds: tuple[float, float] = DEFAULT_RATE_BOUNDS,
        n_grid: int = 48,
        refine_rounds: int = 12,
        min_points: int = MIN_POINTS,
        pessimism: float = 0.0,
    ) -> None:
        super().__init__(
            trim_outliers=trim_outliers,
            hampel_window=hampel_window,
            hampel_k=hampel_k,
            min_value=min_value,
            n_grid=n_grid,
            refine_rounds=refine_rounds,
            min_points=min_points,
        )
        self.rate_bounds = _check_bounds("rate_bounds", rate_bounds)
        if (
            isinstance(pessimism, bool)
            or not isinstance(pessimism, (int, float))
            or not 0 <= pessimism < math.inf
        ):
            raise ConfigError(f"pessimism must be a finite number >= 0, got {pessimism!r}")
        self.pessimism = float(pessimism)

    def _upper(self, t: Tensor, y: Tensor, steps: Tensor, used: Tensor, fit: Any) -> Tensor | None:
        """Highest forecast among the rates the data cannot rule out.

        A rate is plausible when its profile likelihood is within ``pessimism**2``
        of the best (Gaussian noise: ``n * log(SSE_rate / SSE_best) <= z**2``; z = 1
        is about a 68% interval, 2 about 95%).
        """
        if self.pessimism <= 0:
            return None
        sse, forecasts = exponential_profile(
            t,
            y,
            steps,
            used,
            rate_bounds=self.rate_bounds,
            n_grid=self.n_grid,
            c_min=self.min_value,
        )
        n = used.sum(dim=1, keepdim=True).to(torch.float64)
        best = torch.minimum(sse.min(dim=1, keepdim=True).values, fit.sse.to(sse).unsqueeze(1))
        eps = 1e-12 * (1.0 + forecasts.abs().amax(dim=1, keepdim=True)) ** 2 * n
        plausible = n * torch.log((sse + eps) / (best + eps)) <= self.pessimism**2
        return torch.where(plausible, forecasts, -math.inf).amax(dim=1)

    def _fit(self, t: Tensor, y: Tensor, mask: Tensor) -> Any:
        return fit_exponential(
            t,
            y,
            mask,
            t0="first",
            rate_bounds=self.rate_bounds,
            n_grid=self.n_grid,
            refine_rounds=self.refine_rounds,
            min_points=self.min_points,
            dtype=torch.float64,
            c_min=self.min_value,
        )

    def _params(self, fit: Any) -> dict[str, Tensor]:
        return {"a": fit.a, "b": fit.b, "c": fit.c, "t0": fit.t0}

    def _options(self) -> dict[str, Any]:
        return {"rate_bounds": list(self.rate_bounds), "pessimism": self.pessimism}


class PowerLawForecaster(_CurveForecaster):
    """Power-law forecaster: ``L(t) = a * (t + 1) ** (-b) + c``, ``b >= 0``, at the horizon.

    Steps must be > -1 (count probe steps from 0).

    Args:
        trim_outliers: drop outliers (two-pass Hampel filter) before the final fit.
        hampel_window: odd window length of the Hampel filter, in points (>= 3).
        hampel_k: Hampel threshold in robust standard deviations (> 0).
        min_value: optional floor on forecast values (loss units), e.g. 0.0.
        exponent_bounds: search range of the exponent ``b``.
        n_grid: grid points of the exponent search (>= 2).
        refine_rounds: local refinement rounds after the grid (>= 0).
        min_points: least valid points per series (>= 3); fewer is a ``FitError``.

    Raises:
        ConfigError: an argument out of range (the message names it and its value).
    """

    name = "power_law"

    def __init__(
        self,
        trim_outliers: bool = True,
        hampel_window: int = 11,
        hampel_k: float = 3.0,
        min_value: float | None = None,
        exponent_bounds: tuple[float, float] = DEFAULT_EXPONENT_BOUNDS,
        n_grid: int = 48,
        refine_rounds: int = 12,
        min_points: int = MIN_POINTS,
    ) -> None:
        super().__init__(
            trim_outliers=trim_outliers,
            hampel_window=hampel_window,
            hampel_k=hampel_k,
            min_value=min_value,
            n_grid=n_grid,
            refine_rounds=refine_rounds,
            min_points=min_points,
        )
        self.exponent_bounds = _check_bounds("exponent_bounds", exponent_bounds)

    def _fit(self, t: Tensor, y: Tensor, mask: Tensor) -> Any:
        return fit_power_law(
            t,
            y,
            mask,
            exponent_bounds=self.exponent_bounds,
            n_grid=self.n_grid,
            refine_rounds=self.refine_rounds,
            min_points=self.min_points,
            dtype=torch.float64,
        )

    def _options(self) -> dict[str, Any]:
        return {"exponent_bounds": list(self.exponent_bounds)}


FORECASTERS: dict[str, Callable[..., _CurveForecaster]] = {
    "exponential": ExponentialForecaster,
    "power_law": PowerLawForecaster,
}
"""Built-in forecasters by name."""


def make_forecaster(spec: str | Mapping[str, Any] | Forecaster) -> Forecaster:
    """Build a forecaster from a name, a config dict, or pass an object through.

    Args:
        spec: ``"exponential"`` or ``"power_law"`` (default settings); a dict as
            returned by ``config()`` (``"name"`` plus constructor arguments), so a
            logged configuration rebuilds the same forecaster; or an object with
            ``name``, ``forecast()``, ``reset()`` and ``config()``, returned as is.

    Raises:
        ConfigError: unknown name, bad settings in the dict, or an object that
            does not implement the :class:`Forecaster` protocol.
    """
    choices = ", ".join(repr(k) for k in FORECASTERS)
    if isinstance(spec, str):
        if spec not in FORECASTERS:
            raise ConfigError(
                f"unknown forecaster {spec!r}; choose one of {choices} or pass a Forecaster object"
            )
        return FORECASTERS[spec]()
    if isinstance(spec, Mapping):
        settings = dict(spec)
        name = settings.pop("name", None)
        if name not in FORECASTERS:
            raise ConfigError(f"forecaster config needs 'name' in {choices}, got {name!r}")
        for key in ("rate_bounds", "exponent_bounds"):
            if isinstance(settings.get(key), list):
                settings[key] = tuple(settings[key])
        try:
            return FORECASTERS[name](**settings)
        except TypeError as exc:
            raise ConfigError(f"bad settings for forecaster {name!r}: {exc}") from None
    if isinstance(spec, Forecaster) and isinstance(getattr(spec, "name", None), str):
        return spec
    raise ConfigError(
        f"forecaster must be one of {choices}, a config dict, or an object with name, "
        f"forecast(), reset() and config(); got {type(spec).__name__}"
    )
