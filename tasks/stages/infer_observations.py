"""What the infer stage observes: values of the field at sensor points and saved frames.

Every observation is a field (channel) at a saved frame and a point in space; a model's
trajectory is observed there by multilinear interpolation between the grid points around the
point (exact on a grid point, which is where synthetic sensors sit). Observations come from a
stored sample with seeded Gaussian noise (``synthetic``) or from a user's CSV or netCDF file.
Both are checked before anything computes; a bad file gets an error naming the column and the
valid range or values.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pdeflow.storage import RunStore
from pdeflow.storage.tables import read_table
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.solve import grid_coords

SPACE = ("x", "y", "z")
# A file's time matches a saved frame within this fraction of the frame interval.
TIME_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Observations:
    """Observed values and where they were observed.

    Attributes:
        frames, channels: saved frame and field index of each observation, (m,).
        points: positions (m, n_dims), in the grid's coordinates.
        values: observed values (m,).
        sigma: the Gaussian noise's standard deviation (the likelihood's).
        sample: the stored sample whose initial state the models start from.
        truth: the observed sample's parameters (synthetic), or None (a file).
        index, weight: each observation's 2^n_dims neighbouring grid values (flat indices into a
            trajectory of shape (time, channel, *space)) and their interpolation weights.
    """

    frames: np.ndarray
    channels: np.ndarray
    points: np.ndarray
    values: np.ndarray
    sigma: float
    sample: int
    truth: np.ndarray | None
    index: np.ndarray
    weight: np.ndarray

    def observe(self, traj: np.ndarray) -> np.ndarray:
        """A trajectory (time, channel, *space) at the observations' frames and points."""
        flat = np.asarray(traj, dtype=np.float64).reshape(-1)
        return np.sum(flat[self.index] * self.weight, axis=1)


def _interpolation(
    coords: list[np.ndarray], shape: tuple[int, ...], frames, channels, points
) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices and weights of multilinear interpolation at ``points``.

    Raises:
        ValueError: a point outside the grid's extent, naming the axis and the extent.
    """
    n_time, n_channels, space = shape[0], shape[1], shape[2:]
    lower, frac = [], []
    for axis, (c, n) in enumerate(zip(coords, space, strict=True)):
        p = points[:, axis]
        if np.any(p < c[0] - 1e-12) or np.any(p > c[-1] + 1e-12):
            bad = p[(p < c[0] - 1e-12) | (p > c[-1] + 1e-12)][0]
            raise ValueError(
                f"infer observations: {SPACE[axis]} = {bad:g} is outside the grid's extent "
                f"[{c[0]:g}, {c[-1]:g}]"
            )
        i = np.clip(np.searchsorted(c, p, side="right") - 1, 0, max(n - 2, 0))
        width = np.where(n > 1, c[np.minimum(i + 1, n - 1)] - c[i], 1.0)
        t = np.clip((p - c[i]) / np.where(width > 0, width, 1.0), 0.0, 1.0) if n > 1 else 0 * p
        lower.append(i)
        frac.append(t)
    index, weight = [], []
    for corner in itertools.product((0, 1), repeat=len(space)):
        flat = frames * n_channels + channels
        w = np.ones(len(points))
        for axis, bit in enumerate(corner):
            i = np.minimum(lower[axis] + bit, space[axis] - 1)
            flat = flat * space[axis] + i
            w = w * (frac[axis] if bit else 1.0 - frac[axis])
        index.append(flat)
        weight.append(w)
    del n_time
    return np.stack(index, axis=1), np.stack(weight, axis=1)


def _evenly(n_wanted: int, first: int, last: int, field: str) -> np.ndarray:
    available = last - first + 1
    if n_wanted > available:
        raise ValueError(f"{field} = {n_wanted}: at most {available} here")
    return np.unique(np.round(np.linspace(first, last, n_wanted)).astype(np.int64))


def observed_frames(cfg: PipelineConfig) -> np.ndarray:
    """The saved frames synthetic observations use: ``n_times`` evenly spaced, the last
    included and the initial one never (a stationary problem has only its solution)."""
    n = cfg.generate.n_frames
    if n == 1:
        if cfg.infer.n_times != 1:
            raise ValueError("infer.n_times: a stationary problem saves one frame, so 1")
        return np.array([0])
    # Evenly spaced counting back from the last frame, never frame 0.
    step = (n - 1) / cfg.infer.n_times
    if cfg.infer.n_times > n - 1:
        raise ValueError(f"infer.n_times = {cfg.infer.n_times}: at most {n - 1} here")
    return np.unique(np.round(n - 1 - step * np.arange(cfg.infer.n_times)[::-1]).astype(np.int64))


def _sensor_indices(n_sensors: int, n: int, axis: int) -> np.ndarray:
    if n_sensors > n:
        raise ValueError(
            f"infer.n_sensors = {n_sensors}: the grid has {n} points along {SPACE[axis]}"
        )
    # Interior points, evenly spaced (a periodic grid's first point is as good as any other).
    return np.unique(np.floor((np.arange(n_sensors) + 0.5) * n / n_sensors).astype(np.int64))


def _default_sample(store: RunStore) -> int:
    test = store.sample_indices("test")
    if len(test) == 0:
        raise ValueError("infer.sample: the store's test split is empty; choose a sample")
    return int(test[0])


def _check_sample(store: RunStore, sample: int) -> None:
    n = store.layout().n_samples
    if not 0 <= sample < n:
        raise ValueError(f"infer.sample = {sample}: store {store.name!r} holds samples 0..{n - 1}")


def load_observations(cfg: PipelineConfig, store: RunStore) -> Observations:
    """The observations ``cfg.infer`` describes, checked.

    Raises:
        ValueError: a setting or file the store cannot serve, naming the field and range.
    """
    if cfg.infer.observations == "file":
        return _from_file(cfg, store)
    return _synthetic(cfg, store)


def _synthetic(cfg: PipelineConfig, store: RunStore) -> Observations:
    gen, ic = cfg.generate, cfg.infer
    sample = _default_sample(store) if ic.sample is None else ic.sample
    _check_sample(store, sample)
    traj = store.read_samples(np.array([sample]))[0].astype(np.float64)
    coords = grid_coords(gen)
    frames = observed_frames(cfg)
    per_axis = [_sensor_indices(ic.n_sensors, len(c), a) for a, c in enumerate(coords)]
    sites = np.array(list(itertools.product(*per_axis)), dtype=np.int64).reshape(-1, len(coords))
    combos = [
        (f, ch, *site) for f in frames for ch in range(traj.shape[1]) for site in sites.tolist()
    ]
    table = np.array(combos, dtype=np.int64)
    points = np.stack([coords[a][table[:, 2 + a]] for a in range(len(coords))], axis=1)
    index, weight = _interpolation(coords, traj.shape, table[:, 0], table[:, 1], points)
    clean = np.sum(traj.reshape(-1)[index] * weight, axis=1)
    sigma = ic.noise_std or ic.noise * float(np.sqrt(np.mean(clean**2)))
    if not sigma > 0:
        raise ValueError(
            f"infer.noise: sample {sample} is zero at every sensor, so a relative noise is "
            "zero; give infer.noise_std"
        )
    rng = np.random.default_rng([ic.seed, 0])
    values = clean + sigma * rng.standard_normal(len(clean))
    truth = store.read_coords(list(gen.parameter_names), sample, sample + 1)[0]
    return Observations(
        table[:, 0], table[:, 1], points, values, sigma, sample, truth, index, weight
    )


def _from_file(cfg: PipelineConfig, store: RunStore) -> Observations:
    gen, ic = cfg.generate, cfg.infer
    path = Path(ic.file).expanduser()
    table = read_table(path, "infer.file")
    coords = grid_coords(gen)
    axes = SPACE[: len(coords)]
    missing = [c for c in ("t", *axes, "value") if c not in table]
    if missing:
        raise ValueError(
            f"infer.file: {path.name} lacks the column(s) {missing}; it needs t, "
            f"{', '.join(axes)}, value (and channel for several fields: {list(gen.fields)})"
        )
    n = len(table["value"])
    if n == 0:
        raise ValueError(f"infer.file: {path.name} holds no observations")
    numbers = {}
    for col in ("t", *axes, "value"):
        try:
            numbers[col] = np.asarray(table[col], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"infer.file: column {col} must hold numbers") from None
        if not np.all(np.isfinite(numbers[col])):
            raise ValueError(f"infer.file: column {col} holds a non-finite value")
    frames = _frames_of(cfg, numbers["t"])
    channels = _channels_of(gen.fields, table.get("channel"), n)
    points = np.stack([numbers[a] for a in axes], axis=1)
    shape = (gen.n_frames, len(gen.fields), *gen.grid)
    index, weight = _interpolation(coords, shape, frames, channels, points)
    values = numbers["value"]
    sigma = ic.noise_std or ic.noise * float(np.sqrt(np.mean(values**2)))
    if not sigma > 0:
        raise ValueError("infer.noise: every observed value is zero; give infer.noise_std")
    sample = ic.sample if ic.sample is not None else 0
    _check_sample(store, sample)
    return Observations(frames, channels, points, values, sigma, sample, None, index, weight)


def _frames_of(cfg: PipelineConfig, t: np.ndarray) -> np.ndarray:
    gen = cfg.generate
    if gen.n_frames == 1:
        if np.any(t != 0):
            raise ValueError("infer.file: column t must be 0 for a stationary problem")
        return np.zeros(len(t), dtype=np.int64)
    interval = gen.t_end / (gen.n_frames - 1)
    k = np.round(t / interval)
    off = np.abs(t - k * interval) > TIME_TOLERANCE * interval
    if np.any(off) or np.any(k < 0) or np.any(k > gen.n_frames - 1):
        bad = t[off | (k < 0) | (k > gen.n_frames - 1)][0]
        raise ValueError(
            f"infer.file: t = {bad:g} is not a saved frame time; valid: k * {interval:g} for "
            f"k = 0..{gen.n_frames - 1}"
        )
    return k.astype(np.int64)


def _channels_of(fields: tuple[str, ...], column, n: int) -> np.ndarray:
    if column is None:
        if len(fields) > 1:
            raise ValueError(
                f"infer.file: add a channel column naming the field, one of {list(fields)}"
            )
        return np.zeros(n, dtype=np.int64)
    names = [str(v).strip() for v in np.asarray(column).reshape(-1)]
    unknown = sorted(set(names) - set(fields))
    if unknown:
        raise ValueError(
            f"infer.file: channel {unknown[0]!r} is not a field; valid: {list(fields)}"
        )
    return np.array([fields.index(v) for v in names], dtype=np.int64)
