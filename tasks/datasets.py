"""What a generated store says about itself: coordinates, dataset card, units, statistics.

Layout (The Well's conventions): one variable per field with dimensions ``(sample, time, x)`` or
``(sample, time, x, y)``; ``attrs["fields"]`` gives the channel order used by in-memory
trajectories ``(sample, time, channel, *space)`` (for shallow water ``h, hu, hv``: the depth
and the two momentum components, a vector in the last two channels). Per-sample coordinates hold
every sampled parameter, the sample's seed and its split.

CF attributes (CF conventions 1.12): every field and coordinate has a ``long_name``; ``units``
is a UDUNITS string where the units are known: "1" for every number of a registered PDE (all of
them are non-dimensional, ``PdeProblem.cf_units``), a simulator's own ``units`` for its fields,
and no ``units`` where a simulator leaves them unstated. Time and space coordinates carry
``axis`` ("T", "X", "Y", "Z"; CF's recommendation for generic spatial coordinates). No
``standard_name`` is set: CF's ``time`` needs units of time since a reference date, and
``projection_x_coordinate`` is a distance in metres on a map projection of the Earth; the
non-dimensional variables of a PDE are neither, and no standard name fits its fields.
"""

from __future__ import annotations

from importlib.metadata import version

import numpy as np

from pdeflow.storage.dataset import Layout, Template, dataset_key
from pdeflow.tasks.config import GenerateConfig
from pdeflow.tasks.design import SPLITS, design_parameters, design_seeds, split_labels
from pdeflow.tasks.presets import PDEBENCH_CITATION, PRESETS
from pdeflow.tasks.solve import grid_coords, space_shape

SPACE_DIMS = ("x", "y", "z")
# The CF conventions version whose attributes the dataset follows (module docstring).
CF_CONVENTIONS = "CF-1.12"


def sample_coords(gen: GenerateConfig, start: int = 0) -> dict[str, tuple]:
    """Per-sample coordinates of samples ``start .. n_samples - 1`` (design, seeds, splits)."""
    names = gen.parameter_names
    params = design_parameters(gen, start)
    idx = np.arange(start, gen.n_samples)
    seed_attrs = {"long_name": "per-sample random seed", "description": "per-sample seed"}
    split_attrs = {
        "long_name": "dataset split",
        "flag_values": list(range(len(SPLITS))),
        "flag_meanings": " ".join(SPLITS),
    }
    coords = {
        "sample": ("sample", idx, {"long_name": "sample index"}),
        "seed": ("sample", design_seeds(gen, start), seed_attrs),
        "split": ("sample", split_labels(gen, start), split_attrs),
    }
    for j, name in enumerate(names):
        attrs = {"long_name": f"parameter {name}", "description": _parameter_text(gen, name)}
        coords[name] = ("sample", params[:, j], _with_units(attrs, gen.problem.coordinate_units))
    return coords


def _with_units(attrs: dict, units: str | None) -> dict:
    return attrs if units is None else {**attrs, "units": units}


def _parameter_text(gen: GenerateConfig, name: str) -> str:
    spec = gen.sampled_specs[name]
    info = getattr(gen.problem, "info", None)
    if name.startswith("a") and name[1:].isdigit():
        role = "initial mode amplitude"
    elif info is not None and name in info.coefficients:
        # The coefficient's dimension in the PDE's own (non-dimensional) units.
        role = f"coefficient ({info.coefficients[name].unit})"
    else:
        role = "coefficient"
    return f"{role}, {spec.distribution} on [{spec.low:g}, {spec.high:g}]"


def coords(gen: GenerateConfig) -> dict:
    out = sample_coords(gen)
    frames = 1 if _stationary(gen) else gen.n_frames
    units = gen.problem.coordinate_units
    times = np.linspace(0.0, gen.t_end if frames > 1 else 0.0, frames)
    out["time"] = ("time", times, _with_units({"long_name": "time", "axis": "T"}, units))
    points = _grid_points(gen)
    for dim, values in zip(SPACE_DIMS, grid_coords(gen), strict=False):
        attrs = {"long_name": f"position along {dim}", "axis": dim.upper(), "grid_points": points}
        out[dim] = (dim, values, _with_units(attrs, units))
    return out


def _grid_points(gen: GenerateConfig) -> str:
    """Where the stored values sit: ``periodic nodes`` (``i dx`` on a periodic domain, the
    spectral PDEs) or ``cell centres`` (finite volumes); exports convert between the two."""
    info = getattr(gen.problem, "info", None)
    if info is not None and info.coordinate_offset == 0.5:
        return "cell centres"
    if info is not None and info.boundary == "periodic":
        return "periodic nodes"
    return "nodes"


def _stationary(gen: GenerateConfig) -> bool:
    return gen.problem.stationary


def field_units(gen: GenerateConfig) -> dict[str, str]:
    """What each field is, in words or in the problem's own units (``Problem.units``)."""
    return dict(gen.problem.units)


def field_attrs(gen: GenerateConfig) -> dict[str, dict]:
    """CF attributes of each field, in channel order: ``long_name`` and, where known, ``units``.

    A registered PDE's fields are pure numbers (units "1"); what each one is ("velocity",
    "length/time") goes into its ``long_name``, e.g. ``burgers field u (velocity)``.
    """
    meaning, cf = field_units(gen), gen.problem.cf_units
    out = {}
    for f in gen.fields:
        long_name = f"{gen.pde} field {f}"
        if cf[f] is not None and meaning[f] != cf[f]:
            long_name += f" ({meaning[f]})"
        attrs = {"long_name": long_name}
        if cf[f] is None:
            attrs["comment"] = "units not stated by the simulator (generate.simulator.units)"
        out[f] = _with_units(attrs, cf[f])
    return out


def dataset_card(gen: GenerateConfig) -> str:
    """A markdown card: equation, domain, BCs, parameters, grid, step, solver, citation."""
    card = gen.problem.card(gen)
    head = [f"# pdeflow dataset: {card['title']}", "", f"Equation: {card['equation']}."]
    boundary, solver = card["boundary"], card["solver"]
    dims = " x ".join(str(n) for n in space_shape(gen))
    units = field_units(gen)
    lines = [
        *head,
        f"Domain: side L = {gen.domain_length:g} in {gen.dim}D, grid {dims}; "
        f"boundary conditions: {boundary}.",
        f"Time: [0, {gen.t_end:g}], {gen.n_frames} saved frames, internal step "
        f"{gen.internal_dt:.4g} ({gen.steps_per_frame} per frame).",
        f"Fields (channel order): {', '.join(f'{f} [{units[f]}]' for f in gen.fields)}.",
        f"Solver: {solver}.",
        "Initial condition: "
        + ("set by the simulator" if gen.initial_condition is None else gen.initial_condition.kind)
        + ".",
        f"Design: {gen.design}, seed {gen.seed}, {gen.n_samples} samples; per-sample seeds in "
        "coordinate `seed`, splits in `split` (train/val/test/calibration).",
        "Sampled parameters:",
    ]
    for name, spec in gen.sampled_specs.items():
        lines.append(f"- {name}: {spec.distribution} on [{spec.low:g}, {spec.high:g}]")
    if not gen.sampled_specs:
        lines.append("- none")
    for name, value in gen.constants.items():
        lines.append(f"- {name} = {value:g} (constant)")
    if gen.preset:
        lines += [
            "",
            f"Preset `{gen.preset}`: {PRESETS[gen.preset]['description']}. "
            f"Cite: {PDEBENCH_CITATION}",
        ]
    return "\n".join(lines)


def layout(gen: GenerateConfig) -> Layout:
    """How the store holds ``gen``'s trajectories; its key ignores ``n_samples`` and the chosen
    ``points`` (which only add samples; ``Generate.prepare`` checks they extend the store's)."""
    space = space_shape(gen)
    return Layout(
        fields=tuple(gen.fields),
        space_dims=SPACE_DIMS[: len(space)],
        space=space,
        n_frames=1 if _stationary(gen) else gen.n_frames,
        n_samples=gen.n_samples,
        chunk_size=gen.chunk_size,
        block_size=gen.block_size,
        dtype=gen.dtype,
        key=dataset_key(gen.model_dump(mode="json", exclude={"n_samples", "points"})),
    )


def template(gen: GenerateConfig) -> Template:
    """The store's template for ``gen``: layout, coordinates, attributes, field attributes."""
    attrs = {
        "Conventions": CF_CONVENTIONS,
        "title": f"pdeflow dataset: {gen.problem.card(gen)['title']}",
        "pdeflow_version": version("pdeflow"),
        "config": gen.model_dump(mode="json"),
        "pde": gen.pde,
        "stationary": _stationary(gen),
        "solver": {"steps_per_frame": gen.steps_per_frame, "dtype": gen.dtype},
        "parameters": gen.parameter_names,
        "constants": dict(gen.constants),
        "dataset_card": dataset_card(gen),
    }
    return Template(
        layout=layout(gen), coords=coords(gen), attrs=attrs, field_attrs=field_attrs(gen)
    )


def normalization_stats(store, train_idx: np.ndarray) -> dict[str, dict[str, float]]:
    """Per-field mean and standard deviation over the training split (float64, streaming)."""
    names = list(store.layout().fields)
    sums = np.zeros((len(names), 3))
    for _, values in store.iter_chunks(train_idx):
        v = np.moveaxis(values.astype(np.float64), 2, 0).reshape(len(names), -1)
        sums += np.stack([np.full(len(names), v.shape[1]), v.sum(1), (v**2).sum(1)], axis=1)
    out = {}
    for name, (n, s, s2) in zip(names, sums, strict=True):
        mean = s / max(n, 1)
        out[name] = {"mean": float(mean), "std": float(np.sqrt(max(s2 / max(n, 1) - mean**2, 0)))}
    return out
