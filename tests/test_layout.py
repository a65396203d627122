"""Imports point one way: science modules never import orchestration or storage libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCIENCE = [
    p
    for p in (ROOT / "tasks").rglob("*.py")
    if p.parent != ROOT / "tasks" or p.name in ("sampling.py", "metrics.py")
]
FORBIDDEN = {"prefect", "prefect_dask", "dask", "distributed", "zarr", "xarray", "flows", "storage"}


def _top(module: str) -> str:
    """``pdeflow.flows.cli`` -> ``flows``; ``prefect.artifacts`` -> ``prefect``."""
    parts = module.split(".")
    return parts[1] if parts[0] == "pdeflow" and len(parts) > 1 else parts[0]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {_top(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(_top(node.module))
    return names


def test_science_modules_found():
    assert len(SCIENCE) >= 10


@pytest.mark.parametrize("path", SCIENCE, ids=lambda p: str(p.relative_to(ROOT)))
def test_science_module_imports_no_orchestration(path):
    assert not (_imports(path) & FORBIDDEN)


@pytest.mark.parametrize("path", sorted((ROOT / "storage").glob("*.py")), ids=lambda p: p.name)
def test_storage_does_not_import_flows_or_prefect(path):
    assert not (_imports(path) & {"flows", "prefect", "tasks"})
