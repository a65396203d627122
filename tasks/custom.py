"""Bring your own simulator: the ``generate.simulator`` config section and its checks.

With ``generate.pde: custom`` the generate stage samples ``generate.parameters`` with the chosen
design, splits the samples into blocks and calls the simulator on each block exactly as it calls
a built-in PDE: same manifest, resume, storage and per-block errors. Two kinds:

- ``python``: ``target: "package.module:function"``; vectorized functions are called as
  ``fn(params: dict[str, ndarray (n,)], seeds: ndarray (n,)) -> ndarray (n, n_frames, C, *grid)``,
  others once per sample as ``fn(params: dict[str, float], seed: int) -> (n_frames, C, *grid)``.
- ``executable``: ``command: [...]`` run once per sample with ``{params}`` replaced by a JSON
  file ({"sample", "seed", "parameters"}) and ``{output}`` by the ``.npy`` file it must write,
  of shape (n_frames, C, *grid); non-zero exits, timeouts and wrong shapes fail that sample.

Worked examples live in ``tasks/simulators/examples``.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SimulatorConfig(BaseModel):
    """A user simulator for ``pde: custom``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["python", "executable"] = Field(
        "python", description="python: an importable callable; executable: a command per sample."
    )
    target: str | None = Field(
        None, description="kind python: 'package.module:function' importable on every worker."
    )
    command: tuple[str, ...] | None = Field(
        None,
        description="kind executable: the command as a list; {params} and {output} are "
        "replaced by the per-sample JSON input and the .npy output path.",
    )
    fields: tuple[str, ...] = Field(
        ("u",), min_length=1, max_length=64, description="Names of the output channels, in order."
    )
    units: tuple[str, ...] | None = Field(
        None,
        description="Unit of each field (same order as fields), a UDUNITS string such as 'K' "
        "or 'm s-1' (the field's CF units attribute); default unstated ('arbitrary').",
    )
    grid: tuple[int, ...] = Field(
        (128,),
        min_length=1,
        max_length=3,
        description="Spatial grid shape, e.g. [128] or [64, 64].",
    )
    vectorized: bool = Field(
        True, description="kind python: the function takes the whole batch at once."
    )
    timeout_s: float = Field(
        600.0, gt=0, le=86_400, description="kind executable: seconds allowed per sample."
    )
    max_parallel: int = Field(
        1, ge=1, le=256, description="kind executable: samples of a block run concurrently."
    )
    options: dict[str, float | int | str | bool] = Field(
        {}, description="kind python: keyword arguments passed to the function (grid, t_end)."
    )
    keep_failed: bool = Field(
        False, description="kind executable: keep a failed sample's working directory."
    )

    @model_validator(mode="after")
    def _check_kind(self) -> SimulatorConfig:
        if self.kind == "python" and (not self.target or ":" not in self.target):
            raise ValueError("kind 'python' needs target: 'package.module:function'")
        if self.kind == "executable" and not self.command:
            raise ValueError("kind 'executable' needs command: [program, arg, ...]")
        if self.units is not None and len(self.units) != len(self.fields):
            raise ValueError(
                f"units has {len(self.units)} entries but fields has {len(self.fields)}"
            )
        if any(n < 1 for n in self.grid):
            raise ValueError(f"grid sizes must be >= 1 (got {list(self.grid)})")
        return self


def check_custom(gen) -> None:
    """Cross-field checks of ``pde: custom``; ValueError naming the field.

    Nothing of the user's is imported or run here: a Python target's top-level package is
    looked up (``importlib.util.find_spec``, which executes nothing), an executable's program
    on PATH. The module itself is imported where the simulator first solves, on the worker,
    and an import error there fails the blocks with its message.
    """
    if gen.simulator is None:
        raise ValueError("pde 'custom' needs a simulator section (kind, target or command)")
    if not gen.parameters:
        raise ValueError("pde 'custom' needs parameters: the marginal of each sampled input")
    if gen.initial_condition is not None:
        raise ValueError("initial_condition does not apply to pde 'custom'")
    sim = gen.simulator
    if sim.kind == "python":
        module = sim.target.partition(":")[0]
        top = module.partition(".")[0]
        if not module or importlib.util.find_spec(top) is None:
            raise ValueError(
                f"simulator.target: no module {top!r} is importable here (target {sim.target!r})"
            )
        return
    from pdeflow.tasks.simulators.executable import check_command

    check_command(list(sim.command))


def build_simulator(gen, workdir: str | None = None):
    """The ``pdeflow.tasks.simulators`` object for a ``pde: custom`` generate config.

    Args:
        workdir: where an executable simulator makes its per-sample directories; default the
            system's temporary directory (the generate stage passes the store's scratch).
    """
    from pdeflow.tasks.simulators import ExecutableSimulator, PythonSimulator

    sim = gen.simulator
    shape = (gen.n_frames, len(sim.fields), *sim.grid)
    if sim.kind == "python":
        return PythonSimulator(
            sim.target,
            output_shape=shape,
            fields=sim.fields,
            dtype=gen.dtype,
            vectorized=sim.vectorized,
            options=sim.options,
        )
    return ExecutableSimulator(
        list(sim.command),
        output_shape=shape,
        fields=sim.fields,
        dtype=gen.dtype,
        timeout_s=sim.timeout_s,
        max_parallel=sim.max_parallel,
        keep_failed=sim.keep_failed,
        workdir=workdir,
    )
