"""Numeric kernels of autolr: batched curve fits, robust smoothing, GP kernels.

Installed as ``autolr.kernels``. Device-agnostic torch; every function takes a
batch of series and works on whatever device its inputs live on.
"""

from .expfit import (
    ExpFit,
    evaluate,
    exponential_profile,
    fit_exponential,
    fit_exponential_reference,
    valid_mask,
)
from .powerlaw import PowerLawFit, fit_power_law, fit_power_law_reference
from .smoothing import hampel_mask, hampel_mask_reference

__all__ = [
    "exponential_profile",
    "ExpFit",
    "PowerLawFit",
    "evaluate",
    "fit_exponential",
    "fit_exponential_reference",
    "fit_power_law",
    "fit_power_law_reference",
    "hampel_mask",
    "hampel_mask_reference",
    "valid_mask",
]
