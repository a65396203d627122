"""Figures of a run: training curves, sample trajectories against predictions, Sobol indices and
conformal coverage. Pure matplotlib on numpy arrays, rendered by the Agg backend.

Figures are built as ``matplotlib.figure.Figure`` objects, never through ``pyplot``: no global
figure registry to leak memory in a long-running worker, and no GUI backend is ever selected.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _figure(width: float, height: float, cols: int = 1) -> Figure:
    """A figure for one row of ``cols`` axes with labelled x and y axes and a title, at fixed
    margins (``_grid_figure``). They fit tick labels as wide as 10^-12 or -12345 beside a one-line
    axis label, and one-line titles (tests/test_report.py draws the widest). The "tight" engine
    measured every label first: 0.25 s of the four figures' 0.53 s."""
    return _grid_figure(
        width, height, (1, cols), left=0.95, right=0.25, bottom=0.6, top=0.4, wgap=0.2, hgap=0
    )


def _grid_figure(
    width: float,
    height: float,
    grid: tuple[int, int],
    *,
    left: float,
    right: float,
    bottom: float,
    top: float,
    wgap: float,
    hgap: float,
) -> Figure:
    """A figure whose grid of subplots sits at fixed margins and gaps, all in inches: ``left``
    (tick labels and y label), ``bottom`` (tick labels and x label), ``top`` (titles),
    ``right``, and between columns and rows (colorbar labels, titles).

    For the sample comparisons, whose labels are short numbers of known width: the "tight"
    engine measures every label before drawing, which was 60% of their drawing time (0.23 s
    against 0.09 s a figure, five panels and two colorbars).
    """
    rows, cols = grid
    axes_w = (width - left - right - (cols - 1) * wgap) / cols
    axes_h = (height - bottom - top - (rows - 1) * hgap) / rows
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wgap / axes_w,
        hspace=hgap / axes_h,
    )
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """``fig`` as PNG bytes (the store writes them, atomically).

    Args:
        fig: the figure.
        dpi: resolution in dots per inch, 20 to 300.
    """
    if not 20 <= dpi <= 300:
        raise ValueError(f"dpi must be in [20, 300], got {dpi}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def training_curves(
    epochs: np.ndarray,
    train_loss: np.ndarray,
    val_loss: np.ndarray | None = None,
    resumed_from: int = 0,
) -> Figure:
    """Training and validation loss per epoch on a log scale.

    Args:
        epochs: epoch numbers (1-based), shape (n_epochs,).
        train_loss: mean training loss of each epoch (normalised units), shape (n_epochs,).
        val_loss: validation loss of each epoch, shape (n_epochs,), NaN where not evaluated.
        resumed_from: epoch the last run resumed from (a dotted line marks it when > 0).
    """
    epochs, train_loss = np.asarray(epochs), np.asarray(train_loss, dtype=float)
    if epochs.ndim != 1 or len(epochs) == 0 or train_loss.shape != epochs.shape:
        raise ValueError(
            f"epochs and train_loss must be equal-length 1D arrays, got {epochs.shape} and "
            f"{train_loss.shape}"
        )
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    ax.plot(epochs, train_loss, marker="o", ms=3, label="train")
    if val_loss is not None and np.isfinite(np.asarray(val_loss, dtype=float)).any():
        ax.plot(epochs, np.asarray(val_loss, dtype=float), marker="s", ms=3, label="validation")
    if resumed_from > 0:
        ax.axvline(resumed_from, color="0.5", ls=":", label=f"resumed at epoch {resumed_from}")
    if (train_loss > 0).all():
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="loss", title="Training curves")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def _with_channel(arr: np.ndarray, space_ndim: int, what: str) -> np.ndarray:
    """(time, *space) or (time, channel, *space) -> (time, channel, *space)."""
    arr = np.asarray(arr, dtype=float)
    if arr.ndim == 1 + space_ndim:
        return arr[:, None]
    if arr.ndim == 2 + space_ndim:
        return arr
    raise ValueError(
        f"{what} must be (time, *space) or (time, channel, *space) with {space_ndim} space "
        f"dimension(s), got shape {arr.shape}"
    )


def sample_comparison(
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    space_ndim: int = 1,
    channel_names: Sequence[str] | None = None,
    time: np.ndarray | None = None,
    x: np.ndarray | None = None,
    title: str = "",
) -> Figure:
    """One trajectory against the models' predictions of it.

    1D fields: space-time images, one row per channel: truth, each prediction, then each
    prediction's error (prediction - truth). 2D fields: the final frame, one row per model
    (truth first), one column per channel, then the final-frame error per channel. 3D fields:
    as 2D, on the mid-plane of the last axis (z = n_z / 2).

    Args:
        truth: reference trajectory, (time, *space) or (time, channel, *space).
        predictions: model name -> trajectory of the same shape as ``truth``.
        space_ndim: number of space dimensions, 1, 2 or 3.
        channel_names: one name per channel; default ``c0, c1, ...``.
        time: frame times, shape (time,), for the time axis of 1D images; default frame index.
        x: grid coordinates, shape (n_x,), for the space axis of 1D images; default grid index.
        title: figure title.
    """
    check_space_ndim(space_ndim)
    truth = _with_channel(truth, space_ndim, "truth")
    preds = {k: _with_channel(v, space_ndim, f"prediction {k!r}") for k, v in predictions.items()}
    if space_ndim == 3:
        truth, preds = mid_plane(truth), {k: mid_plane(v) for k, v in preds.items()}
        title = mid_plane_title(title)
    for name, pred in preds.items():
        if pred.shape != truth.shape:
            raise ValueError(f"prediction {name!r} has shape {pred.shape}, truth {truth.shape}")
    names = channel_labels(channel_names, truth.shape[1])
    draw = _comparison_1d if space_ndim == 1 else _comparison_2d
    fig = draw(truth, preds, names, time, x, top=0.35 + (0.35 if title else 0.0))
    if title:
        fig.suptitle(title)
    return fig


def check_space_ndim(space_ndim: int) -> None:
    if space_ndim not in (1, 2, 3):
        raise ValueError(f"space_ndim must be 1, 2 or 3, got {space_ndim}")


def mid_plane(arr: np.ndarray) -> np.ndarray:
    """The mid-plane of the last axis (z = n_z / 2), which the figures show of a 3D field."""
    return arr[..., arr.shape[-1] // 2]


def mid_plane_title(title: str) -> str:
    return f"{title} (mid-plane z = n_z / 2)" if title else "mid-plane z = n_z / 2"


def channel_labels(channel_names: Sequence[str] | None, n_ch: int) -> list[str]:
    """``channel_names``, checked against the channel count; default ``c0, c1, ...``."""
    names = list(channel_names) if channel_names is not None else [f"c{i}" for i in range(n_ch)]
    if len(names) != n_ch:
        raise ValueError(f"channel_names has {len(names)} names for {n_ch} channels")
    return names


def spacetime_extent(n_t: int, n_x: int, time, x) -> tuple[float, float, float, float]:
    """``imshow`` extent of a (time, x) image: cell edges half a step beyond the first and
    last points of ``x`` (default grid index) and ``time`` (default frame index)."""
    t = np.arange(n_t, dtype=float) if time is None else np.asarray(time, dtype=float)
    xs = np.arange(n_x, dtype=float) if x is None else np.asarray(x, dtype=float)
    dx = xs[1] - xs[0] if len(xs) > 1 else 1.0
    dt = t[1] - t[0] if len(t) > 1 else 1.0
    return (xs[0] - dx / 2, xs[-1] + dx / 2, t[0] - dt / 2, t[-1] + dt / 2)


def _limits(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    lo = min(float(np.nanmin(a)) for a in arrays)
    hi = max(float(np.nanmax(a)) for a in arrays)
    return lo, hi if hi > lo else lo + 1.0


def _comparison_1d(truth, preds, names, time, x, top: float) -> Figure:
    n_t, n_ch = truth.shape[:2]
    extent = spacetime_extent(n_t, truth.shape[-1], time, x)
    xlabel = "x (grid index)" if x is None else "x"
    cols = 1 + 2 * len(preds)
    # Gaps wide enough for a colorbar's labels; rows apart by a title and an x label.
    fig = _grid_figure(2.6 * cols, 2.4 * n_ch, (n_ch, cols), left=0.7, right=0.55,
                       bottom=0.5, top=top, wgap=0.6, hgap=0.75)  # fmt: skip
    axes = fig.subplots(n_ch, cols, squeeze=False, sharey=True)
    for c, ch in enumerate(names):
        fields = {"truth": truth[:, c], **{k: v[:, c] for k, v in preds.items()}}
        vmin, vmax = _limits(list(fields.values()))
        errors = {k: v[:, c] - truth[:, c] for k, v in preds.items()}
        emax = max((float(np.nanmax(np.abs(e))) for e in errors.values()), default=0.0) or 1.0
        panels = [(k, v, "viridis", vmin, vmax) for k, v in fields.items()]
        panels += [(f"{k} - truth", e, "RdBu_r", -emax, emax) for k, e in errors.items()]
        for j, (label, img, cmap, lo, hi) in enumerate(panels):
            ax = axes[c, j]
            im = ax.imshow(
                img, origin="lower", aspect="auto", extent=extent, cmap=cmap, vmin=lo, vmax=hi
            )
            ax.set_title(f"{label} ({ch})", fontsize=9)
            ax.set_xlabel(xlabel)
            if j == 0:
                ax.set_ylabel("time")
            if j == len(fields) - 1 or j == len(panels) - 1:
                fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def _comparison_2d(truth, preds, names, time, x, top: float) -> Figure:
    n_ch = truth.shape[1]
    rows = {"truth": truth[-1], **{k: v[-1] for k, v in preds.items()}}
    fig = _grid_figure(2.4 * 2 * n_ch, 2.2 * len(rows), (len(rows), 2 * n_ch), left=0.3,
                       right=0.6, bottom=0.15, top=top, wgap=0.65, hgap=0.4)  # fmt: skip
    axes = fig.subplots(len(rows), 2 * n_ch, squeeze=False)
    for c, ch in enumerate(names):
        vmin, vmax = _limits([r[c] for r in rows.values()])
        errors = {k: rows[k][c] - truth[-1, c] for k in preds}
        emax = max((float(np.nanmax(np.abs(e))) for e in errors.values()), default=0.0) or 1.0
        for i, (model, frame) in enumerate(rows.items()):
            ax, err_ax = axes[i, 2 * c], axes[i, 2 * c + 1]
            im = ax.imshow(frame[c].T, origin="lower", cmap="viridis", vmin=vmin, vmax=vmax)
            ax.set_title(f"{model} ({ch}), final frame", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.8)
            if model == "truth":
                err_ax.axis("off")
                continue
            em = err_ax.imshow(
                errors[model].T, origin="lower", cmap="RdBu_r", vmin=-emax, vmax=emax
            )
            err_ax.set_title(f"{model} - truth ({ch})", fontsize=9)
            fig.colorbar(em, ax=err_ax, shrink=0.8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def sobol_bars(
    parameter_names: Sequence[str],
    first_order: Mapping[str, np.ndarray],
    total_order: Mapping[str, np.ndarray],
    first_conf: Mapping[str, np.ndarray] | None = None,
    total_conf: Mapping[str, np.ndarray] | None = None,
) -> Figure:
    """First-order and total Sobol indices per parameter, one bar per model.

    Args:
        parameter_names: names of the d parameters.
        first_order: model name -> S1, shape (d,).
        total_order: model name -> ST, shape (d,), same models as ``first_order``.
        first_conf: model name -> half-width of the S1 confidence interval, shape (d,).
        total_conf: model name -> half-width of the ST confidence interval, shape (d,).
    """
    return paired_bars(
        parameter_names,
        BarPanel("first_order", "First-order index S1", first_order, first_conf),
        BarPanel("total_order", "Total index ST", total_order, total_conf),
        ylabel="Sobol index",
        zero_line=True,
    )


@dataclass(frozen=True)
class BarPanel:
    """One panel of ``paired_bars``: the argument it came from (for errors), its title, model
    -> values (d,), and model -> error-bar half-widths (d,) or None."""

    arg: str
    title: str
    values: Mapping[str, np.ndarray]
    errors: Mapping[str, np.ndarray] | None = None


def paired_bars(
    parameter_names: Sequence[str],
    left: BarPanel,
    right: BarPanel,
    ylabel: str,
    zero_line: bool = False,
) -> Figure:
    """Two panels sharing a y axis: one group of bars per parameter, one bar per model."""
    d = len(parameter_names)
    if set(left.values) != set(right.values) or not left.values:
        raise ValueError(f"{left.arg} and {right.arg} must name the same, non-empty models")
    for label, values in (*left.values.items(), *right.values.items()):
        if np.shape(values) != (d,):
            raise ValueError(f"values of {label!r} have shape {np.shape(values)}, expected ({d},)")
    fig = _figure(max(6.0, 1.6 * d + 3), 3.5, cols=2)
    axes = fig.subplots(1, 2, sharey=True)
    models = list(left.values)
    width = 0.8 / len(models)
    x = np.arange(d)
    for ax, panel in zip(axes, (left, right), strict=True):
        for k, model in enumerate(models):
            conf = panel.errors
            err = None if conf is None or model not in conf else np.abs(conf[model])
            ax.bar(
                x + (k - (len(models) - 1) / 2) * width,
                panel.values[model],
                width,
                yerr=err,
                capsize=2,
                label=model,
            )
        ax.set_xticks(x, list(parameter_names))
        ax.set_title(panel.title)
        ax.set_xlabel("parameter")
        if zero_line:
            ax.axhline(0.0, color="0.3", lw=0.8)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[1].legend()
    return fig


def coverage_histogram(
    coverage: np.ndarray, nominal: float, n_cal: int | None = None, bins: int = 15
) -> Figure:
    """Test coverage of conformal bands over random calibration/test re-splits.

    Args:
        coverage: coverage of each re-split, fractions in [0, 1], shape (n_resplits,).
        nominal: target coverage 1 - alpha, in (0, 1).
        n_cal: calibration samples per split; when given, a dashed line marks the upper bound
            1 - alpha + 1 / (n_cal + 1) of the mean coverage.
        bins: histogram bins, >= 1.
    """
    coverage = np.asarray(coverage, dtype=float)
    if coverage.ndim != 1 or len(coverage) == 0:
        raise ValueError(f"coverage must be a non-empty 1D array, got shape {coverage.shape}")
    if not 0.0 < nominal < 1.0:
        raise ValueError(f"nominal must be in (0, 1), got {nominal}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    fig = _figure(5, 3.5)
    ax = fig.add_subplot()
    ax.hist(coverage, bins=bins, range=(0.0, 1.0), color="C0", alpha=0.8, label="re-splits")
    ax.axvline(nominal, color="C3", lw=2, label=f"target 1 - alpha = {nominal:.3g}")
    if n_cal is not None:
        upper = min(nominal + 1.0 / (n_cal + 1), 1.0)
        ax.axvline(upper, color="C3", ls="--", label=f"upper bound {upper:.3g}")
    ax.axvline(coverage.mean(), color="k", ls=":", label=f"mean {coverage.mean():.3g}")
    ax.set(xlabel="test coverage", ylabel="re-splits", title="Conformal coverage", xlim=(0, 1))
    ax.legend(fontsize=8, loc="upper left")
    return fig


def rom_error_vs_rank(curves: Mapping[str, Mapping[int, tuple[float, float | None]]]) -> Figure:
    """Held-out relative error of each reduce method against its rank, log-log, with the
    projection floor (dashed) where the method has one.

    Args:
        curves: method -> {rank: (mean relative error, mean floor or None)}; a method with one
            rank shows as a single marker.
    """
    if not curves or not any(curves.values()):
        raise ValueError("curves must hold at least one method with at least one rank")
    fig = _figure(6, 3.8)
    ax = fig.add_subplot()
    for k, (name, curve) in enumerate(sorted(curves.items())):
        if not curve:
            continue
        ranks = np.array(sorted(curve), dtype=float)
        err = np.array([curve[r][0] for r in sorted(curve)], dtype=float)
        color = f"C{k % 10}"
        ax.plot(ranks, err, marker="o", ms=4, color=color, label=name)
        floor = [curve[r][1] for r in sorted(curve)]
        if all(f is not None for f in floor):
            ax.plot(ranks, np.array(floor, float), ls="--", color=color, alpha=0.7,
                    label=f"{name} projection floor")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="rank (basis size or latent dimension)", ylabel="held-out relative error",
           title="Reduced-order models: error against rank")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig
