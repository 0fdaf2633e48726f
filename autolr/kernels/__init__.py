"""Numeric kernels of autolr: batched curve fits and robust smoothing.

Installed as ``autolr.kernels``. A leaf: tensors in, tensors out, importing only
torch and the standard library, nothing from the rest of autolr. Device-agnostic
torch; every function takes a batch of series and works on whatever device its
inputs live on. Errors are the builtin-derived classes of
:mod:`autolr.kernels.errors`; :mod:`autolr.forecast` turns them into autolr's own.
The plain per-series implementations the tests compare against live in the
private ``_reference`` module.
"""

from .errors import KernelConfigError, KernelError, KernelFitError, KernelInputError
from .expfit import ExpFit, evaluate, exponential_profile, fit_exponential, valid_mask
from .powerlaw import PowerLawFit, fit_power_law
from .smoothing import hampel_mask

__all__ = [
    "exponential_profile",
    "ExpFit",
    "KernelConfigError",
    "KernelError",
    "KernelFitError",
    "KernelInputError",
    "PowerLawFit",
    "evaluate",
    "fit_exponential",
    "fit_power_law",
    "hampel_mask",
    "valid_mask",
]
