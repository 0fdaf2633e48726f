"""Where a result came from: the commit, the hash of the autolr sources that ran, rounding."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any


def _git_commit() -> str | None:
    """Short commit of the checkout (``+dirty`` with uncommitted changes), if in git."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        )
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@functools.cache
def autolr_source_hash() -> str | None:
    """sha256 (16 hex digits) of the installed autolr's algorithm sources.

    Tells apart results made with different controller code, also when the
    checkout has uncommitted changes elsewhere. Computed once per process, when
    autolr is first imported (call it before any run): a process keeps running
    the code it imported even if the files change under it.
    """
    try:
        import autolr
        import autolr.kernels
    except Exception:  # noqa: BLE001 - reported as unknown
        return None
    root = Path(autolr.__file__).resolve().parent
    kernels = Path(autolr.kernels.__file__).resolve().parent
    # The training core: every module of autolr/ outside the offline wing.
    files = sorted(root.glob("*.py")) + sorted(kernels.glob("*.py"))
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _rounded(obj: Any, digits: int = 6) -> Any:
    """Floats to ``digits`` significant digits, recursively (smaller results files)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v, digits) for v in obj]
    return obj
