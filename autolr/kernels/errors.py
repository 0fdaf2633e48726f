"""Errors the kernels raise: builtin exceptions, so the kernels depend on nothing else.

Each class derives from the builtin it resembles (``except ValueError`` keeps
working). :mod:`autolr.forecast` turns them into autolr's own errors with the
same message.
"""

from __future__ import annotations

__all__ = ["KernelConfigError", "KernelError", "KernelFitError", "KernelInputError"]


class KernelError(Exception):
    """Root of the kernels' errors."""


class KernelConfigError(KernelError, ValueError):
    """An option is out of range (the message names it and its value)."""


class KernelInputError(KernelError, TypeError):
    """An input tensor has the wrong type, dtype or shape (the message names them)."""


class KernelFitError(KernelError, RuntimeError):
    """A fit cannot be made: too few valid points, or a parameter is not finite."""
