"""The wheel installs one top-level name, ``pdeflow``, holding every package folder of the repo.

Top-level ``flows``, ``tasks`` or ``storage`` modules would collide with a user's folders of the
same name, and a Dask worker's scratch ``storage/`` directory on ``sys.path`` would shadow them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT

SOURCE_DIRS = ("flows", "tasks", "storage")


def _package_dirs() -> set[str]:
    """Every folder with an ``__init__.py`` under the three source folders, as ``pdeflow.*``."""
    out = set()
    for top in SOURCE_DIRS:
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            out.add(".".join(("pdeflow", *rel)))
    return out


def test_wheel_holds_only_the_pdeflow_namespace(tmp_path):
    # A copy of the sources, so setuptools' build/ folder lands outside the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for top in SOURCE_DIRS:
        shutil.copytree(ROOT / top, src / top, ignore=shutil.ignore_patterns("__pycache__"))
    # --no-build-isolation: setuptools comes from the dev extra, no download.
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("pdeflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"pdeflow"}
    packages = {".".join(Path(n).parts[:-1]) for n in names if Path(n).name == "__init__.py"}
    assert packages == _package_dirs()
    assert "pdeflow/flows/configs/demo.yaml" in names
    assert "pdeflow/tasks/pde_catalog.json" in names  # `pdeflow list pdes` reads it
    # pdeflow itself is a namespace package: no code runs when it is imported.
    assert "pdeflow/__init__.py" not in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "pdeflow = pdeflow.flows.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
