"""PDE solvers: an explicit registry from name to solver class."""

from __future__ import annotations

from pdeflow.tasks.pdes.advection import Advection
from pdeflow.tasks.pdes.allen_cahn import AllenCahn
from pdeflow.tasks.pdes.burgers import Burgers
from pdeflow.tasks.pdes.darcy2d import Darcy2D
from pdeflow.tasks.pdes.errors import BlowUpError, CFLViolation
from pdeflow.tasks.pdes.euler1d import CompressibleEuler1D
from pdeflow.tasks.pdes.fisher_kpp import FisherKPP
from pdeflow.tasks.pdes.fitzhugh_nagumo2d import FitzHugh2D
from pdeflow.tasks.pdes.gray_scott2d import GrayScott2D
from pdeflow.tasks.pdes.heat import Heat
from pdeflow.tasks.pdes.kdv import KdV
from pdeflow.tasks.pdes.kolmogorov2d import KolmogorovFlow2D
from pdeflow.tasks.pdes.kuramoto_sivashinsky import KuramotoSivashinsky
from pdeflow.tasks.pdes.navier_stokes2d import NavierStokes2D
from pdeflow.tasks.pdes.navier_stokes3d import NavierStokes3D
from pdeflow.tasks.pdes.shallow_water2d import ShallowWater2D
from pdeflow.tasks.pdes.thermal_block import ThermalBlock2x2, ThermalBlock3x2

__all__ = [
    "PDES",
    "Advection",
    "AllenCahn",
    "BlowUpError",
    "Burgers",
    "CFLViolation",
    "CompressibleEuler1D",
    "Darcy2D",
    "FisherKPP",
    "FitzHugh2D",
    "GrayScott2D",
    "Heat",
    "KdV",
    "KolmogorovFlow2D",
    "KuramotoSivashinsky",
    "NavierStokes2D",
    "NavierStokes3D",
    "ShallowWater2D",
    "ThermalBlock2x2",
    "ThermalBlock3x2",
    "get_pde",
]

PDES: dict[str, type] = {
    "burgers": Burgers,
    "advection": Advection,
    "heat": Heat,
    "kdv": KdV,
    "ks": KuramotoSivashinsky,
    "fisher_kpp": FisherKPP,
    "allen_cahn": AllenCahn,
    "compressible_euler_1d": CompressibleEuler1D,
    "navier_stokes_2d": NavierStokes2D,
    "kolmogorov_2d": KolmogorovFlow2D,
    "darcy_2d": Darcy2D,
    "fitzhugh_nagumo_2d": FitzHugh2D,
    "gray_scott_2d": GrayScott2D,
    "shallow_water_2d": ShallowWater2D,
    "navier_stokes_3d": NavierStokes3D,
    "thermal_block_2x2": ThermalBlock2x2,
    "thermal_block_3x2": ThermalBlock3x2,
}


def get_pde(name: str) -> type:
    """Look up a PDE solver class by its registry name.

    Args:
        name: Registry key, e.g. ``"burgers"``.

    Returns:
        The solver class (not an instance).

    Raises:
        ValueError: If ``name`` is not registered; the message lists the valid names.
    """
    try:
        return PDES[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(PDES))
        raise ValueError(f"unknown pde {name!r}; valid: {valid}") from None
