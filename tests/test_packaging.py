"""The wheel holds autolr, autolr.kernels and autolr.integrations and nothing top-level else."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_mapped_packages(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("autolr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "autolr/kernels/__init__.py" in names
    assert "autolr/kernels/expfit.py" in names
    assert "autolr/integrations/__init__.py" in names
    assert "autolr/controller.py" in names and "autolr/py.typed" in names
    assert "autolr/offline/replay.py" in names
    tops = {n.split("/")[0] for n in names}
    assert not {"kernels", "integrations", "tests", "benchmarks"} & tops


def test_installed_subpackages_import():
    import autolr.integrations
    import autolr.kernels

    assert Path(autolr.kernels.__file__).parent.name == "kernels"
    assert autolr.integrations.__name__ == "autolr.integrations"


def test_no_folder_of_the_checkout_shadows_an_installed_package():
    """``python -m pytest`` and ``python -m benchmarks...`` put the checkout's root first on
    ``sys.path``: a folder there named like another distribution's top-level module (HF's
    ``kernels``, which transformers imports) would be imported in its place."""
    import importlib.metadata

    installed = importlib.metadata.packages_distributions()
    ours = {"autolr", "benchmarks", "tests", "examples"}
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert folders <= ours, f"unexpected top-level code folders {sorted(folders - ours)}"
    clash = {
        name: installed[name]
        for name in folders
        if name in installed and set(installed[name]) != {"autolr"}
    }
    assert not clash, f"checkout folders shadow installed packages: {clash}"
