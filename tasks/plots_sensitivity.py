"""Figures of the quantify stage's sensitivity options: Sobol' index maps and Morris screening.

Built like the figures of :mod:`pdeflow.tasks.plots`: ``Figure`` objects at fixed margins,
never through ``pyplot``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from pdeflow.tasks.plots import (
    BarPanel,
    _grid_figure,
    channel_labels,
    check_space_ndim,
    mid_plane,
    mid_plane_title,
    paired_bars,
    spacetime_extent,
)


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
    check_space_ndim(space_ndim)
    s1, st = np.asarray(first_order, dtype=float), np.asarray(total_order, dtype=float)
    d = len(parameter_names)
    if s1.shape != st.shape or s1.ndim != 3 + space_ndim or s1.shape[0] != d:
        raise ValueError(
            f"first_order and total_order must both be (d={d}, time, channel, *space) with "
            f"{space_ndim} space dimension(s), got {s1.shape} and {st.shape}"
        )
    if space_ndim == 3:
        s1, st, title = mid_plane(s1), mid_plane(st), mid_plane_title(title)
    names = channel_labels(channel_names, s1.shape[2])
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
    extent = spacetime_extent(s1.shape[1], s1.shape[-1], time, x)
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
    return paired_bars(
        parameter_names,
        BarPanel("mu_star", "Morris mu*", mu_star),
        BarPanel("sigma", "Morris sigma", sigma),
        ylabel="effect on the QoI",
    )
