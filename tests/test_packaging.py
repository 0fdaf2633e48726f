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
