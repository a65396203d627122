"""Figures of the quantify stage's sensitivity options: Sobol' index maps and Morris screening.

Built like the figures of :mod:`pdeflow.tasks.plots`: ``Figure`` objects at fixed margins,
never through ``pyplot``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from pdeflow.tasks.plots import _figure, _grid_figure


def sobol_maps(
    parameter_names: Sequence[str],
    first_order: np.ndarray,
    total_order: np.ndarray,
    space_ndim: int = 1,
    channel_names: Sequence[str] | None = None,
    time: np.ndarray | None = None,
    x: np.ndarray | None = None,
    title: str = "",
) -> Figure:
    """First-order and total Sobol' index maps of a field, one row per parameter.

    1D fields: space-time images (time up, x across) of S1 and ST per channel. 2D fields: the
    final frame's maps. 3D fields: as 2D, on the mid-plane of the last axis (z = n_z / 2). The
    colour scale is [0, 1] on every panel (estimates a little outside it are clipped); NaN
    (a point where the field does not vary) is left blank.

    Args:
        parameter_names: names of the d parameters.
        first_order: S1 maps, shape (d, time, channel, *space).
        total_order: ST maps, same shape.
        space_ndim: number of space dimensions, 1, 2 or 3.
        channel_names: one name per channel; default ``c0, c1, ...``.
        time: frame times, shape (time,), for the time axis of 1D images; default frame index.
        x: grid coordinates, shape (n_x,), for the space axis of 1D images; default grid index.
        title: figure title.
    """
    if space_ndim not in (1, 2, 3):
        raise ValueError(f"space_ndim must be 1, 2 or 3, got {space_ndim}")
    s1, st = np.asarray(first_order, dtype=float), np.asarray(total_order, dtype=float)
    d = len(parameter_names)
    if s1.shape != st.shape or s1.ndim != 3 + space_ndim or s1.shape[0] != d:
        raise ValueError(
            f"first_order and total_order must both be (d={d}, time, channel, *space) with "
            f"{space_ndim} space dimension(s), got {s1.shape} and {st.shape}"
        )
    if space_ndim == 3:
        mid = s1.shape[-1] // 2
        s1, st = s1[..., mid], st[..., mid]
        title = f"{title} (mid-plane z = n_z / 2)" if title else "mid-plane z = n_z / 2"
    n_ch = s1.shape[2]
    names = list(channel_names) if channel_names is not None else [f"c{i}" for i in range(n_ch)]
    if len(names) != n_ch:
        raise ValueError(f"channel_names has {len(names)} names for {n_ch} channels")
    if space_ndim > 1:
        title = f"{title}, final frame" if title else "final frame"
    top = 0.35 + (0.35 if title else 0.0)
    draw = _maps_1d if space_ndim == 1 else _maps_2d
    fig = draw(list(parameter_names), s1, st, names, time, x, top)
    if title:
        fig.suptitle(title)
    return fig


def _panels(parameter_names, s1, st, channels):
    """(row, column, label, image) of every panel: per parameter, per channel, S1 then ST."""
    for i, p in enumerate(parameter_names):
        for c, ch in enumerate(channels):
            yield i, 2 * c, f"S1 {p} ({ch})", s1[i, :, c]
            yield i, 2 * c + 1, f"ST {p} ({ch})", st[i, :, c]


def _maps_1d(parameter_names, s1, st, channels, time, x, top: float) -> Figure:
    n_t, n_x = s1.shape[1], s1.shape[-1]
    t = np.arange(n_t, dtype=float) if time is None else np.asarray(time, dtype=float)
    xs = np.arange(n_x, dtype=float) if x is None else np.asarray(x, dtype=float)
    dx = xs[1] - xs[0] if len(xs) > 1 else 1.0
    dt = t[1] - t[0] if len(t) > 1 else 1.0
    extent = (xs[0] - dx / 2, xs[-1] + dx / 2, t[0] - dt / 2, t[-1] + dt / 2)
    rows, cols = len(parameter_names), 2 * len(channels)
    # As the sample comparisons: gaps for a colorbar's labels, rows apart by a title and x label.
    fig = _grid_figure(2.6 * cols, 2.4 * rows, (rows, cols), left=0.7, right=0.55,
                       bottom=0.5, top=top, wgap=0.6, hgap=0.75)  # fmt: skip
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for i, j, label, img in _panels(parameter_names, s1, st, channels):
        ax = axes[i, j]
        im = ax.imshow(img, origin="lower", aspect="auto", extent=extent, cmap="viridis",
                       vmin=0.0, vmax=1.0)  # fmt: skip
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("x (grid index)" if x is None else "x")
        if j == 0:
            ax.set_ylabel("time")
        if j == cols - 1:
            fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def _maps_2d(parameter_names, s1, st, channels, time, x, top: float) -> Figure:
    rows, cols = len(parameter_names), 2 * len(channels)
    fig = _grid_figure(2.4 * cols, 2.2 * rows, (rows, cols), left=0.3, right=0.6,
                       bottom=0.15, top=top, wgap=0.65, hgap=0.4)  # fmt: skip
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, j, label, img in _panels(parameter_names, s1, st, channels):
        ax = axes[i, j]
        im = ax.imshow(img[-1].T, origin="lower", cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def morris_bars(
    parameter_names: Sequence[str],
    mu_star: Mapping[str, np.ndarray],
    sigma: Mapping[str, np.ndarray],
) -> Figure:
    """Morris screening: mu* and sigma of the elementary effects per parameter, one bar per
    model (Campolongo et al. 2007: mu* ranks importance, sigma flags non-linearity).

    Args:
        parameter_names: names of the d parameters.
        mu_star: model name -> mu*, shape (d,), in units of the QoI per unit of normalised
            parameter.
        sigma: model name -> sigma, shape (d,), same models as ``mu_star``.
    """
    d = len(parameter_names)
    if set(mu_star) != set(sigma) or not mu_star:
        raise ValueError("mu_star and sigma must name the same, non-empty models")
    for label, values in (*mu_star.items(), *sigma.items()):
        if np.shape(values) != (d,):
            raise ValueError(f"values of {label!r} have shape {np.shape(values)}, expected ({d},)")
    fig = _figure(max(6.0, 1.6 * d + 3), 3.5, cols=2)
    axes = fig.subplots(1, 2, sharey=True)
    models, pos = list(mu_star), np.arange(d)
    width = 0.8 / len(models)
    for ax, what, values in ((axes[0], "mu*", mu_star), (axes[1], "sigma", sigma)):
        for k, model in enumerate(models):
            ax.bar(pos + (k - (len(models) - 1) / 2) * width, values[model], width, label=model)
        ax.set_xticks(pos, list(parameter_names))
        ax.set_title(f"Morris {what}")
        ax.set_xlabel("parameter")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("effect on the QoI")
    axes[1].legend()
    return fig
