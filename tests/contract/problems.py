"""The problems the contract suite runs over: every registered PDE and the two example
simulators, each with a small config derived from its own defaults."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.pdes import PDES, get_pde

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIMULATORS = {"sim-python": "custom_python.yaml", "sim-executable": "custom_executable.yaml"}
CASES = [*PDES, *SIMULATORS]
# Points per axis of the small layout runs: enough for every PDE's dealiasing and options
# (Kolmogorov's forcing wavenumber 4 needs 3 * 4 < n), few enough for seconds per case.
SMALL_N = {1: 32, 2: 16, 3: 16}


def own_defaults(name: str, n_samples: int = 16) -> dict:
    """The generate section a user writes to get a PDE's own defaults."""
    return {"pde": name, "n_samples": n_samples, "design": "random"}


def generate_section(case: str, small: bool = True) -> dict:
    """A simulator's test config, or a PDE's own defaults (with ``small``: a coarser grid and
    a short horizon, at the PDE's own step)."""
    if case in SIMULATORS:
        gen = yaml.safe_load((CONFIGS / SIMULATORS[case]).read_text())["generate"]
        gen.update(n_samples=16, block_size=8, chunk_size=4)
        if "command" in gen["simulator"]:  # "python" of the test environment, not of PATH
            gen["simulator"]["command"] = [sys.executable, *gen["simulator"]["command"][1:]]
        return gen
    gen = {**own_defaults(case), "block_size": 8, "chunk_size": 8}
    if small:
        info = get_pde(case).info
        d = info.defaults
        n = min(d.n, SMALL_N[info.dim])
        # Some grids must be a multiple of a count (the 3 x 2 thermal block: 6).
        gen["grid"] = [n - n % getattr(get_pde(case), "grid_multiple", 1)]
        if not info.stationary:
            # Two frames a tenth of the PDE's own save interval apart, at its own step.
            gen["n_frames"] = 3
            gen["t_end"] = 0.2 * d.t_end / (d.n_frames - 1)
    return gen


def config(case: str, small: bool = True, **generate) -> PipelineConfig:
    """The pipeline config of ``case`` with ``generate`` settings on top."""
    gen = {**generate_section(case, small), **generate}
    return PipelineConfig.model_validate(
        {"store": f"contract-{case}", "generate": gen, "train": {"modes": 4}}
    )
