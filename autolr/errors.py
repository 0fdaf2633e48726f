"""The autolr exception hierarchy.

Every error autolr raises derives from :class:`AutoLRError`; each subclass also
derives from the builtin it resembles, so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class AutoLRError(Exception):
    """Root of all autolr errors."""


class ConfigError(AutoLRError, ValueError):
    """A setting is out of range or inconsistent with another setting."""


class InputError(AutoLRError, TypeError):
    """A value handed to autolr at run time has the wrong type or shape."""


class FitError(AutoLRError, RuntimeError):
    """A model fit (forecast curve or Gaussian process) failed after all retries."""


class StateError(AutoLRError, RuntimeError):
    """Saved state cannot be loaded (wrong schema version, missing keys, mismatch)."""


class LogFormatError(AutoLRError, ValueError):
    """A run log or imported log cannot be read."""


class SchemaError(AutoLRError, TypeError):
    """A run-log record written with fields that are not its type's (a bug in the writer)."""


class MissingDependencyError(AutoLRError, ImportError):
    """An optional dependency is not installed."""


class AutoLRWarning(UserWarning):
    """Base class of autolr warnings."""


class NonFiniteWarning(AutoLRWarning):
    """The run reached non-finite weights; autolr went back to its last finite state."""


class RangeWarning(AutoLRWarning):
    """The best LR found sits at an edge of the search range the user gave."""


class SchedulerConflictWarning(AutoLRWarning):
    """A framework LR scheduler would overwrite the LR autolr sets; autolr disabled it."""


class LogWarning(AutoLRWarning):
    """A run log or imported log has a flaw that was skipped or repaired."""


def require(module: str, extra: str) -> object:
    """Import an optional dependency or raise an error naming the extra to install.

    Args:
        module: dotted module name, e.g. ``"lightning.pytorch"``.
        extra: the autolr extra that provides it, e.g. ``"lightning"``.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError(
            f'{module!r} is not installed; run: pip install "autolr[{extra}]"'
        ) from exc
