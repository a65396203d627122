"""What a generated store says about itself: coordinates, dataset card, units, statistics.

Layout (The Well's conventions): one variable per field with dimensions ``(sample, time, x)`` or
``(sample, time, x, y)``; ``attrs["fields"]`` gives the channel order used by in-memory
trajectories ``(sample, time, channel, *space)`` (for shallow water ``h, hu, hv``: the depth
and the two momentum components, a vector in the last two channels). Per-sample coordinates hold
every sampled parameter, the sample's seed and its split.
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


def sample_coords(gen: GenerateConfig, start: int = 0) -> dict[str, tuple]:
    """Per-sample coordinates of samples ``start .. n_samples - 1`` (design, seeds, splits)."""
    names = gen.parameter_names
    params = design_parameters(gen, start)
    idx = np.arange(start, gen.n_samples)
    coords = {
        "sample": ("sample", idx),
        "seed": ("sample", design_seeds(gen, start), {"description": "per-sample seed"}),
        "split": (
            "sample",
            split_labels(gen, start),
            {"flag_values": list(range(4)), "flag_meanings": " ".join(SPLITS)},
        ),
    }
    for j, name in enumerate(names):
        coords[name] = ("sample", params[:, j], {"description": _parameter_text(gen, name)})
    return coords


def _parameter_text(gen: GenerateConfig, name: str) -> str:
    spec = gen.sampled_specs[name]
    role = (
        "initial mode amplitude" if name.startswith("a") and name[1:].isdigit() else "coefficient"
    )
    return f"{role}, {spec.distribution} on [{spec.low:g}, {spec.high:g}]"


def coords(gen: GenerateConfig) -> dict:
    out = sample_coords(gen)
    frames = 1 if _stationary(gen) else gen.n_frames
    out["time"] = ("time", np.linspace(0.0, gen.t_end if frames > 1 else 0.0, frames))
    points = _grid_points(gen)
    for dim, values in zip(SPACE_DIMS, grid_coords(gen), strict=False):
        out[dim] = (dim, values, {"units": "length", "grid_points": points})
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
    return dict(gen.problem.units)


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
    """How the store holds ``gen``'s trajectories; its key ignores ``n_samples`` only."""
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
        key=dataset_key(gen.model_dump(mode="json", exclude={"n_samples"})),
    )


def template(gen: GenerateConfig) -> Template:
    """The store's template for ``gen``: layout, coordinates, attributes, field attributes."""
    units = field_units(gen)
    attrs = {
        "pdeflow_version": version("pdeflow"),
        "config": gen.model_dump(mode="json"),
        "pde": gen.pde,
        "stationary": _stationary(gen),
        "solver": {"steps_per_frame": gen.steps_per_frame, "dtype": gen.dtype},
        "parameters": gen.parameter_names,
        "constants": dict(gen.constants),
        "dataset_card": dataset_card(gen),
    }
    field_attrs = {f: {"units": units[f], "long_name": f"{gen.pde} field {f}"} for f in gen.fields}
    return Template(layout=layout(gen), coords=coords(gen), attrs=attrs, field_attrs=field_attrs)


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
