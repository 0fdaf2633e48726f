"""Text output of the ``autolr`` command line: lines, numbers, tables, JSON.

Only the command handlers (:func:`autolr.demo.demo_command`,
:mod:`autolr.offline.commands`) write through these; library code logs instead.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from autolr.runlog import clean


def out(text: str = "") -> None:
    """One line on stdout."""
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    """One line on stderr."""
    sys.stderr.write(text + "\n")


def fmt(value: Any, spec: str = ".4g") -> str:
    """A number for a table cell; ``-`` for None and non-finite values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def print_json(data: Any) -> None:
    """``data`` as indented JSON (tensors as lists, non-finite numbers as null)."""
    out(json.dumps(clean(data), indent=2, allow_nan=False))


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A right-aligned text table with a rule under the headers."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    out("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    out("  ".join("-" * w for w in widths))
    for row in rows:
        out("  ".join(c.rjust(w) for c, w in zip(row, widths)))
