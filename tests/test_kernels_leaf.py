"""``autolr.kernels`` is a leaf, and ``import autolr`` loads its parts lazily.

The kernels take and return tensors and import nothing from the rest of autolr;
importing one must not run the controller, its config or BoTorch.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import autolr
import autolr.kernels

KERNELS = Path(autolr.kernels.__file__).resolve().parent


def _modules_after(code: str) -> list[str]:
    """Names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "statement",
    [
        "import autolr.kernels.expfit",
        "import autolr.kernels",
        "from autolr.kernels import fit_exponential, fit_power_law, hampel_mask",
        "import autolr.kernels._reference",
    ],
)
def test_importing_a_kernel_loads_no_autolr_core(statement):
    modules = _modules_after(statement)
    assert "autolr.kernels" in modules
    core = [m for m in modules if m.startswith("autolr.") and not m.startswith("autolr.kernels")]
    assert core == []
    for heavy in ("autolr.controller", "autolr.errors", "autolr.config", "botorch", "gpytorch"):
        assert heavy not in modules


def test_no_kernel_file_imports_autolr():
    files = sorted(KERNELS.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "expfit.py", "powerlaw.py", "smoothing.py"}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name} imports from above the kernels"
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            bad = [n for n in names if n == "autolr" or n.startswith("autolr.")]
            assert not bad, f"{path.name}:{node.lineno} imports {bad}"


def test_kernel_errors_are_builtins_not_autolr_errors():
    from autolr.errors import AutoLRError
    from autolr.kernels import KernelConfigError, KernelError, KernelFitError, KernelInputError

    for kind, builtin in (
        (KernelConfigError, ValueError),
        (KernelInputError, TypeError),
        (KernelFitError, RuntimeError),
    ):
        assert issubclass(kind, KernelError) and issubclass(kind, builtin)
        assert not issubclass(kind, AutoLRError)


def test_references_are_not_public_kernel_api():
    public = set(autolr.kernels.__all__)
    assert not {name for name in public if name.endswith("_reference")}
    assert not hasattr(autolr.kernels, "fit_exponential_reference")
    from autolr.kernels import _reference

    assert callable(_reference.fit_exponential_reference)


def test_import_autolr_is_lazy():
    modules = _modules_after("import autolr\nassert autolr.__version__")
    assert "autolr" in modules
    assert not [m for m in modules if m.startswith("autolr.")]
    assert "torch" not in modules
    # the first use of a name loads its module
    modules = _modules_after("import autolr\nautolr.AutoLRS")
    assert "autolr.controller" in modules


def test_every_public_name_resolves_and_is_listed():
    names = [n for n in autolr.__all__ if n != "__version__"]
    assert len(names) == len(set(names))
    for name in names:
        value = getattr(autolr, name)
        assert value is not None
        assert name in dir(autolr)
    assert isinstance(autolr.__version__, str)
    from autolr import AutoLRS, ConfigError
    from autolr.controller import AutoLRS as direct
    from autolr.errors import ConfigError as direct_error

    assert AutoLRS is direct and ConfigError is direct_error
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        autolr.not_a_name  # noqa: B018


def test_type_checkers_see_the_same_names_as_the_lazy_exports():
    tree = ast.parse(Path(autolr.__file__).read_text(encoding="utf-8"))
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                typed.update({alias.name: str(imp.module) for alias in imp.names})
    assert typed == autolr._EXPORTS
