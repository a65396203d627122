"""Named generate settings that reproduce published dataset settings, chosen with ``preset:``.

A preset is a partial ``generate`` section: the config's own values win over it, so
``--set generate.constants.nu=0.0318`` picks another of the published coefficient values. The
PDEBench presets follow the equations, domains, grids, time spans, boundary conditions and
coefficient values published in Takamoto et al. (2022), "PDEBench: An Extensive Benchmark for
Scientific Machine Learning", NeurIPS Datasets and Benchmarks; the initial states are drawn from
the same families (sums of random sine waves in 1D, thresholded Gaussian random fields for the
Darcy permeability, independent standard normal values per cell for the 2D diffusion-reaction
state) by pdeflow's own generators and seeds, so the
data are statistically alike, not bitwise equal. Each preset ships one coefficient value; the
published list is in its ``values`` entry.
"""

from __future__ import annotations

import copy
import math
from typing import Any

PDEBENCH_CITATION = (
    "Takamoto, M., Praditia, T., Leiteritz, R., MacKinlay, D., Alesiani, F., Pflueger, D., "
    "Niepert, M. (2022). PDEBench: An Extensive Benchmark for Scientific Machine Learning. "
    "NeurIPS 2022 Datasets and Benchmarks Track."
)

_SINE_WAVES = {"kind": "fourier", "n_waves": 2, "k_max": 4, "amplitude": {"low": 0.0, "high": 1.0}}

PRESETS: dict[str, dict[str, Any]] = {
    "pdebench-advection": {
        "description": "1D advection u_t + beta u_x = 0 on (0, 1), periodic, t in [0, 2]",
        "values": {"c": [0.1, 0.2, 0.4, 0.7, 1.0, 2.0, 4.0, 7.0]},
        "generate": {
            "pde": "advection",
            "length": 1.0,
            "n_x": 1024,
            "t_end": 2.0,
            "n_frames": 201,
            "dt": 0.01,
            "parameters": {},
            "constants": {"c": 0.4},
            "initial_condition": _SINE_WAVES,
        },
    },
    "pdebench-burgers": {
        "description": "1D Burgers u_t + (u^2/2)_x = (nu/pi) u_xx on (0, 1), periodic, t in [0, 2]",
        # PDEBench writes the viscosity as nu/pi; pdeflow's nu is the coefficient itself.
        "values": {
            "nu": [
                round(v / math.pi, 10)
                for v in (0.001, 0.002, 0.004, 0.01, 0.02, 0.04, 0.1, 0.2, 0.4, 1.0, 2.0, 4.0)
            ]
        },
        "generate": {
            "pde": "burgers",
            "length": 1.0,
            "n_x": 1024,
            "t_end": 2.0,
            "n_frames": 201,
            "dt": 4e-4,
            "parameters": {},
            "constants": {"nu": round(0.01 / math.pi, 10)},
            "initial_condition": _SINE_WAVES,
        },
    },
    "pdebench-reaction-diffusion-1d": {
        "description": "1D reaction-diffusion u_t = nu u_xx + rho u (1 - u) on (0, 1), periodic",
        "values": {"nu": [0.5, 1.0, 2.0, 5.0], "rho": [1.0, 2.0, 5.0, 10.0]},
        "generate": {
            "pde": "fisher_kpp",
            "length": 1.0,
            "n_x": 1024,
            "t_end": 1.0,
            "n_frames": 101,
            "dt": 0.01,
            "parameters": {},
            "constants": {"nu": 0.5, "rho": 1.0},
            "initial_condition": {**_SINE_WAVES, "rescale": "unit"},
        },
    },
    "pdebench-darcy-2d": {
        "description": "2D steady Darcy flow -div(a grad u) = beta on (0, 1)^2, u = 0 on the "
        "boundary, a(x) piecewise constant in {0.1, 1}",
        "values": {"beta": [0.01, 0.1, 1.0, 10.0, 100.0]},
        "generate": {
            "pde": "darcy_2d",
            "length": 1.0,
            "n_x": 128,
            "parameters": {},
            "constants": {"beta": 1.0},
            "initial_condition": {"kind": "pde", "options": {"levels": [0.1, 1.0]}},
        },
    },
    "pdebench-diffusion-reaction-2d": {
        "description": "2D FitzHugh-Nagumo diffusion-reaction on (-1, 1)^2, no-flux walls, "
        "t in [0, 5], standard normal initial state",
        "values": {"Du": [1e-3], "Dv": [5e-3], "k": [5e-3]},
        "generate": {
            "pde": "fitzhugh_nagumo_2d",
            "length": 2.0,
            "n_x": 128,
            "t_end": 5.0,
            "n_frames": 101,
            "dt": 0.005,
            "parameters": {},
            "constants": {"Du": 1e-3, "Dv": 5e-3, "k": 5e-3},
            "initial_condition": {"kind": "pde"},
        },
    },
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def describe_presets() -> list[dict]:
    """One JSON-ready row per preset, as ``pdeflow list presets --json`` prints it."""
    return [
        {
            "name": name,
            "pde": p["generate"]["pde"],
            "description": p["description"],
            "published_values": p["values"],
            "cite": PDEBENCH_CITATION,
        }
        for name, p in sorted(PRESETS.items())
    ]


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "parameters":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_preset(data: dict) -> dict:
    """The preset's settings under the config's own (which win); ValueError for unknown names."""
    name = data["preset"]
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(preset_names())}")
    base = copy.deepcopy(PRESETS[name]["generate"])
    # A coefficient the config samples is no longer one of the preset's constants.
    for key in data.get("parameters") or {}:
        base["constants"].pop(key, None)
    return _merge(base, data)
