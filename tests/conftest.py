"""Shared fixtures: an isolated runs directory and Prefect home for every test session."""

from __future__ import annotations

import os
from pathlib import Path

# Before any test module imports torch: see tasks/__init__.py for why.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """Runs and Prefect state go to temporary directories, never the user's."""
    base = tmp_path_factory.mktemp("pdeflow")
    saved = {k: os.environ.get(k) for k in ("PDEFLOW_RUNS_DIR", "PREFECT_HOME")}
    os.environ["PDEFLOW_RUNS_DIR"] = str(base / "runs")
    os.environ["PREFECT_HOME"] = str(base / "prefect")
    yield base
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def runs_dir() -> Path:
    return Path(os.environ["PDEFLOW_RUNS_DIR"])
