"""Prefect artifacts of a run: a metrics table, plots saved in the store, a markdown report.

Plots are PNG files the store keeps (``RunStore.write_plot``). The report names them by their
path relative to the store and also embeds the small ones as ``data:image/png;base64`` URIs: both
Prefect UIs render those in markdown artifacts (the Vue UI passes an image's ``src`` through; the
React UI allows ``data:image/`` sources explicitly), and the Prefect server cannot serve files
from the store itself.
"""

from __future__ import annotations

import base64

import numpy as np
import torch
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pdeflow.storage import RunStore
from pdeflow.tasks import plots
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.config_reduce import TABLE_COLUMNS
from pdeflow.tasks.orchestration import log_warning
from pdeflow.tasks.report_sensitivity import sensitivity_lines, sensitivity_plots
from pdeflow.tasks.rom.methods import get_method
from pdeflow.tasks.stages import hash_of
from pdeflow.tasks.stages.models import (
    load_rom,
    load_surrogate,
    stored_rollouts,
    unit_parameters,
)
from pdeflow.tasks.stages.quantify_mfmc import report_lines as mfmc_lines
from pdeflow.tasks.stages.status import summary as store_summary
from pdeflow.tasks.surrogates.ensemble import Ensemble
from pdeflow.tasks.surrogates.training import rollout

# PNGs larger than this are linked by path only: a markdown artifact lives in the server's
# database and is sent whole to every browser that opens it.
EMBED_MAX_BYTES = 200_000
N_SAMPLE_PLOTS = 2
MODELS = ("solver", "surrogate", "rom")
PLOT_ORDER = ("training", "sample", "rom", "sobol", "coverage")


def artifact_key(store: str, what: str) -> str:
    """``pdeflow-<store>-<what>``: artifact keys allow lowercase letters, digits and dashes."""
    slug = "".join(c if c.isalnum() else "-" for c in store.lower()).strip("-")
    return f"pdeflow-{slug}-{what}"


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


# Model errors and the trivial predictions they must beat: metric -> (baseline label, metric).
BASELINES = {
    "train.nrmse_rollout": (("persistence", "train.nrmse_persist_rollout"),),
    "train.nrmse_one_step": (("persistence", "train.nrmse_persist_one_step"),),
    "reduce.rom_rel_error_mean": (
        ("zero", "reduce.baseline_zero_rel_error"),
        ("mean field", "reduce.baseline_mean_rel_error_mean"),
    ),
}


def baseline_text(metrics: dict, key: str) -> str:
    """``"persistence 0.12"`` or ``"zero 1, mean field 0.98"``: the baselines of ``key``."""
    pairs = [(label, metrics[k]) for label, k in BASELINES.get(key, ()) if k in metrics]
    return ", ".join(f"{label} {_fmt(v)}" for label, v in pairs)


def metric_rows(summary: dict) -> list[dict]:
    """One row per metric of a store summary, for tables, with each error's baselines."""
    metrics = summary["metrics"]
    return [
        {"metric": k, "value": _fmt(v), "trivial baseline": baseline_text(metrics, k)}
        for k, v in sorted(metrics.items())
    ]


def _complete(cfg: PipelineConfig, store: RunStore, stage: str) -> bool:
    rec = store.record(stage)
    return bool(rec and rec.status == "complete" and rec.config_hash == hash_of(cfg, stage))


# -- plots ----------------------------------------------------------------------------------------
def predict_samples(
    cfg: PipelineConfig, store: RunStore, indices: np.ndarray
) -> dict[str, np.ndarray]:
    """Stored trajectories and the saved surrogate's and ROM's predictions of them.

    Shapes come from the stored data: every field (``attrs["fields"]``, default ``u``) becomes a
    channel. The surrogate's rollouts are the ones the train stage stored for its test samples
    (``stored_rollouts``), else rolled out here from each stored initial frame; the ROM
    predicts from the parameters (and the stored initial frame, when it takes one). A model is
    included only when its stage is complete for ``cfg``.

    Args:
        cfg: the run's config.
        store: the run store.
        indices: sample indices, shape (n,); read in ascending order.

    Returns:
        ``truth`` and (when available) ``surrogate`` and ``rom``, each of shape
        (n, time, channel, *space) in the field's units.
    """
    idx = np.sort(np.asarray(indices))
    truth = store.read_samples(idx)
    out = {"truth": truth}
    p_unit = unit_parameters(store, cfg, idx)
    if _complete(cfg, store, "train"):
        stored = stored_rollouts(store, idx)
        if stored is None:  # not test samples, or a store trained before rollouts were kept
            model = load_surrogate(cfg, store)
            dtype = next(model.parameters()).dtype
            u0 = torch.as_tensor(truth[:, 0], dtype=dtype)
            p = torch.as_tensor(p_unit, dtype=dtype)
            if isinstance(model, Ensemble):  # the members' mean, as the stage scores it
                stored = model.rollout(u0, p, truth.shape[1] - 1)[0].numpy()
            else:
                stored = rollout(model, u0, p, truth.shape[1] - 1).numpy()
        out["surrogate"] = stored.reshape(truth.shape)
    if _complete(cfg, store, "reduce"):
        rom = load_rom(cfg, store)
        out["rom"] = rom.predict(p_unit, truth[:, 0]).reshape(truth.shape)
    return out


def sample_plot_name(sample: int) -> str:
    """``sample-<index>``: a sample plot is named by the store index of the sample it shows."""
    return f"sample-{int(sample)}"


def plot_heading(name: str) -> str:
    """The report heading of plot ``name``: ``sample-3`` -> ``sample 3``, else the name."""
    kind, _, rest = name.partition("-")
    return f"sample {rest}" if kind == "sample" and rest.isdigit() else name


def _sample_plots(cfg: PipelineConfig, store: RunStore, n: int) -> dict[str, str]:
    test = store.sample_indices("test")
    which = "test sample" if len(test) else "sample"
    indices = test[:n] if len(test) else np.arange(min(n, cfg.generate.n_samples))
    series = predict_samples(cfg, store, indices)
    if len(series) == 1:  # no model to compare with
        return {}
    ds = store.open_dataset()
    fields = list(store.layout().fields)
    space_ndim = ds[fields[0]].ndim - 2
    names = cfg.generate.parameter_names
    params = store.read_coords(names)
    out = {}
    for k, sample in enumerate(np.sort(indices)):
        label = ", ".join(f"{p} = {v:.3g}" for p, v in zip(names, params[sample], strict=True))
        fig = plots.sample_comparison(
            series["truth"][k],
            {m: v[k] for m, v in series.items() if m != "truth"},
            space_ndim=space_ndim,
            channel_names=fields,
            time=ds["time"].values,
            x=ds["x"].values if space_ndim == 1 and "x" in ds.coords else None,
            title=f"{which} {sample}: {label}",
        )
        name = sample_plot_name(sample)
        out[name] = store.write_plot(name, plots.png_bytes(fig))
    return out


def _uq_plots(cfg: PipelineConfig, store: RunStore) -> dict[str, str]:
    res = _quantify_group(store)
    names = [str(p) for p in res.parameter.values]
    fig = plots.sobol_bars(
        names,
        {m: res[f"S1_{m}"].values for m in MODELS},
        {m: res[f"ST_{m}"].values for m in MODELS},
        {m: res[f"S1_conf_{m}"].values for m in MODELS},
        {m: res[f"ST_conf_{m}"].values for m in MODELS},
    )
    out = {"sobol": store.write_plot("sobol", plots.png_bytes(fig))}
    n_cal = len(store.sample_indices("calibration"))
    fig = plots.coverage_histogram(
        res["conformal_resplit_coverage"].values,
        1.0 - float(res.attrs.get("alpha", cfg.quantify.alpha)),
        n_cal=n_cal or None,
    )
    out["coverage"] = store.write_plot("coverage", plots.png_bytes(fig))
    out.update(sensitivity_plots(store, res))
    return out


def _quantify_group(store: RunStore):
    rec = store.record("quantify")
    return store.read_group("quantify", rec.artifact_entries() if rec else None)


def write_plots(
    cfg: PipelineConfig, store: RunStore, n_samples: int = N_SAMPLE_PLOTS
) -> dict[str, str]:
    """Save PNG plots of what the store's complete stages hold, through the store.

    ``training`` (loss curves from the train record), ``sample-<index>`` (test samples against
    the surrogate and the ROM, named by their index in the store), ``sobol`` and ``coverage``
    (from the quantify group). Plots of missing stages are skipped; each file is written
    atomically.

    Args:
        cfg: the run's config.
        store: the run store.
        n_samples: number of test samples to plot, 0 to 10.

    Returns:
        Plot name -> its PNG's path relative to the store.
    """
    if not 0 <= n_samples <= 10:
        raise ValueError(f"n_samples must be in [0, 10], got {n_samples}")
    out: dict[str, str] = {}
    rec = store.record("train")
    if _complete(cfg, store, "train") and rec.details.get("history"):
        hist = rec.details["history"]
        fig = plots.training_curves(
            np.array([h["epoch"] for h in hist]),
            np.array([h["train_loss"] for h in hist], dtype=float),
            np.array([h["val_loss"] for h in hist], dtype=float),
            resumed_from=int(rec.details.get("resumed_from_epoch") or 0),
        )
        out["training"] = store.write_plot("training", plots.png_bytes(fig))
    if n_samples and _complete(cfg, store, "generate"):
        out.update(_sample_plots(cfg, store, n_samples))
    if _complete(cfg, store, "reduce"):
        out.update(_rom_plots(store))
    if _complete(cfg, store, "quantify"):
        out.update(_uq_plots(cfg, store))
    return out


# -- markdown -------------------------------------------------------------------------------------
def _training_section(rec) -> list[str]:
    if not rec or rec.status != "complete":
        return []
    hist, m = rec.details.get("history") or [], rec.metrics
    lines = ["## Surrogate training", ""]
    start = int(rec.details.get("resumed_from_epoch") or 0)
    lines.append(
        f"- epochs: {m.get('epochs', len(hist))}"
        + (f", resumed from epoch {start}" if start else ", trained from scratch")
    )
    if hist:
        last = hist[-1]
        lines.append(
            f"- final train loss {_fmt(last['train_loss'])}, val loss "
            f"{_fmt(last['val_loss']) if last['val_loss'] is not None else 'not measured'}"
        )
        # A record stores a loss that was not measured (no validation split) as null.
        vals = [(h["val_loss"], h["epoch"]) for h in hist if h["val_loss"] is not None]
        vals = [(v, e) for v, e in vals if np.isfinite(v)]
        if vals:
            best = min(vals)
            lines.append(f"- best val loss {_fmt(best[0])} at epoch {best[1]}")
    if "nrmse_rollout" in m:
        lines.append(
            f"- test nRMSE: rollout {_fmt(m['nrmse_rollout'])} (persistence "
            f"{_fmt(m.get('nrmse_persist_rollout'))}), one step {_fmt(m.get('nrmse_one_step'))} "
            f"(persistence {_fmt(m.get('nrmse_persist_one_step'))})"
        )
        lines += [f"- **Warning:** {w}" for w in surrogate_warnings(m)]
    return [*lines, ""]


def surrogate_warnings(m: dict) -> list[str]:
    """Why the surrogate is no better than persistence (repeating the input frame), if it is."""
    out = []
    for what in ("rollout", "one_step"):
        err, base = m.get(f"nrmse_{what}"), m.get(f"nrmse_persist_{what}")
        if err is not None and base is not None and err >= base:
            out.append(
                f"the surrogate's {what.replace('_', '-')} nRMSE {_fmt(err)} is no better than "
                f"persistence ({_fmt(base)}, repeating the input frame); likely cause: too "
                "little training (train.epochs, generate.n_samples) for the dynamics, or frames "
                "so close in time that the state barely changes between them"
            )
    return out


def _rom_section(rec) -> list[str]:
    if not rec or rec.status != "complete":
        return []
    m = rec.metrics
    lines = ["## Reduced-order model", ""]
    if method := rec.details.get("method"):
        lines.append(f"- method `{method}` (reduce.method): {get_method(method).summary}")
    if "rank" in m:
        lines.append(f"- POD rank {m['rank']}, energy captured {_fmt(m.get('energy_captured'))}")
    if m.get("initial_modes"):
        lines.append(
            f"- inputs: the parameters and {m['initial_modes']} POD coefficients of the random "
            "initial state"
        )
    if "rom_rel_error_mean" in m:
        lines.append(
            f"- ROM relative error (test): mean {_fmt(m['rom_rel_error_mean'])}, max "
            f"{_fmt(m.get('rom_rel_error_max'))}; trivial baselines: predicting zero "
            f"{_fmt(m.get('baseline_zero_rel_error', 1.0))}, the training mean field "
            f"{_fmt(m.get('baseline_mean_rel_error_mean'))}; POD projection floor "
            f"{_fmt(m.get('pod_projection_error_mean'))}"
        )
    lines += [f"- **Warning:** {note}" for note in rec.details.get("notes") or []]
    return [*lines, "", *method_table(rec.details.get("methods") or {}, rec.details.get("method"))]


def method_table(rows: dict, primary: str | None) -> list[str]:
    """The reduce methods side by side, as markdown (empty without methods); the stage's ROM
    (``reduce.method``, the one quantify uses) is marked."""
    if not rows:
        return []
    head = ["method", *[h for h, _ in TABLE_COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in sorted(rows, key=lambda n: (n != primary, n)):
        cells = [
            f"**{name}** (used)" if name == primary else name,
            *_row_cells(rows[name]).values(),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _rom_plots(store: RunStore) -> dict[str, str]:
    rec = store.record("reduce")
    rows = (rec.details.get("methods") if rec else None) or {}
    curves = {
        name: {int(r): tuple(v) for r, v in row.get("rank_errors", {}).items()}
        for name, row in rows.items()
    }
    if not any(curves.values()):
        return {}
    fig = plots.rom_error_vs_rank(curves)
    return {"rom-error-vs-rank": store.write_plot("rom-error-vs-rank", plots.png_bytes(fig))}


def _uq_section(store: RunStore, rec) -> list[str]:
    if not rec or rec.status != "complete":
        return []
    m = rec.metrics
    lines = ["## Uncertainty quantification", ""]
    if "conformal_nominal" in m:
        lines.append(
            f"- conformal bands: nominal {_fmt(m['conformal_nominal'])}, test coverage "
            f"{_fmt(m.get('conformal_coverage_test'))}, over re-splits "
            f"{_fmt(m.get('conformal_coverage_resplit_mean'))} +- "
            f"{_fmt(m.get('conformal_coverage_resplit_std'))}"
        )
    for name in MODELS[1:]:
        keys = (f"mc_mean_rel_diff_{name}", f"mc_std_rel_diff_{name}", f"sobol_max_abs_diff_{name}")
        if all(k in m for k in keys):
            lines.append(
                f"- {name} vs solver: Monte Carlo mean {_fmt(m[keys[0]])}, std {_fmt(m[keys[1]])} "
                f"(relative L2 difference); Sobol indices max |diff| {_fmt(m[keys[2]])}"
            )
    res = _quantify_group(store)
    head = " | ".join(f"{k} {name}" for k in ("S1", "ST") for name in MODELS)
    lines += ["", f"| parameter | {head} |", "|---" * (1 + 2 * len(MODELS)) + "|"]
    for j, p in enumerate(res.parameter.values):
        cells = " | ".join(f"{res[f'{k}_{n}'].values[j]:.3f}" for k in ("S1", "ST") for n in MODELS)
        lines.append(f"| {p} | {cells} |")
    lines += sensitivity_lines(m, res, _fmt)
    lines += mfmc_lines(m, _fmt)
    return [*lines, ""]


def _images(store: RunStore, names: list[str] | None) -> list[str]:
    """The plots (all of the store's, or ``names``) in the order ``write_plots`` makes them."""
    found = store.plots()
    rank = {name: k for k, name in enumerate(PLOT_ORDER)}
    order = sorted(found, key=lambda n: (rank.get(n.split("-")[0], len(rank)), n))
    order = [n for n in order if names is None or n in names]
    if not order:
        return []
    lines = ["## Plots", ""]
    for name in order:
        heading = plot_heading(name)
        lines += [f"### {heading}", "", f"File: `{store.plot_file(name)}` (in the store)", ""]
        data = found[name]
        if len(data) <= EMBED_MAX_BYTES:
            lines += [f"![{name}](data:image/png;base64,{base64.b64encode(data).decode()})", ""]
    return lines


def report_markdown(
    cfg: PipelineConfig, store: RunStore, plot_names: list[str] | None = None
) -> str:
    """Dataset card, training, ROM and UQ results, plots, then every stage's metrics.

    Args:
        cfg: the run's config.
        store: the run store.
        plot_names: the plots to show; default every plot the store holds.
    """
    summary = store_summary(store)
    card = store.attrs().get("dataset_card", "") if store.layout() else ""
    # The card's headings sit one level below the report's title.
    card = "\n".join("#" + ln if ln.startswith("#") else ln for ln in card.splitlines())
    lines = [f"# pdeflow run `{cfg.store}`", "", f"Store: `{store.path}`", "", card, ""]
    lines += _training_section(store.record("train"))
    lines += _rom_section(store.record("reduce"))
    lines += _uq_section(store, store.record("quantify"))
    lines += _images(store, plot_names)
    lines += ["## Stages", ""]
    for stage, info in summary["stages"].items():
        lines += [f"### {stage}: {info['status']}", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {k.split('.', 1)[1]} | {_fmt(v)} |"
            for k, v in sorted(summary["metrics"].items())
            if k.startswith(stage + ".")
        ]
        lines.append("")
    lines.append(
        "Open the data with `xarray.open_zarr(store)`; stage results with "
        "`xarray.open_zarr(store, group='reduce')` or `group='quantify'`."
    )
    return "\n".join(lines)


# -- artifacts ------------------------------------------------------------------------------------
def publish_quantify(cfg: PipelineConfig, summary: dict) -> None:
    """The stage-4 metrics table."""
    create_table_artifact(
        metric_rows(summary),
        key=artifact_key(cfg.store, "uq-metrics"),
        description="Uncertainty quantification metrics",
    )


def publish_train(cfg: PipelineConfig) -> None:
    """The training units side by side (a table artifact): the ensemble's members or the
    sweep's trials, with their settings, worker, device, time and validation nRMSE.

    A failure is logged as a warning: the stage's results are complete and stored.
    """
    store = RunStore.named(cfg.store)
    try:
        rec = store.record("train")
        units = (rec.details.get("units") if rec else None) or []
        if len(units) < 2:
            return
        best = rec.details.get("best")
        rows = [
            {
                "unit": u["unit"] + (" (best)" if u["unit"] == best else ""),
                **{k: str(v) for k, v in u.get("overrides", {}).items()},
                "seed": str(u["seed"]),
                "worker": u.get("worker", "?"),
                "device": u.get("device", "?"),
                "seconds": _fmt(u["seconds"]),
                "val nRMSE": _fmt(u.get("val_nrmse_one_step", float("nan"))),
            }
            for u in units
        ]
        kind = rec.details.get("kind", "units")
        create_table_artifact(
            rows,
            key=artifact_key(cfg.store, "train-units"),
            description=f"Training units ({kind}): one Dask task each"
            + (f"; the stage's model is {best}" if best else ""),
        )
    except Exception as err:  # see the docstring
        log_warning(f"train units of {store.path} not published: {err!r}")


def publish_reduce(cfg: PipelineConfig) -> None:
    """The reduce methods side by side (a table artifact) and a markdown artifact with the
    same table and the error-against-rank plot, inline.

    A failure is logged as a warning: the stage's results are complete and stored.
    """
    store = RunStore.named(cfg.store)
    try:
        rec = store.record("reduce")
        rows = (rec.details.get("methods") if rec else None) or {}
        if not rows:
            return
        create_table_artifact(
            [{"method": name} | _row_cells(row) for name, row in rows.items()],
            key=artifact_key(cfg.store, "rom-methods"),
            description=f"Reduce methods (reduce.method={cfg.reduce.method} is the stage's ROM)",
        )
        with store.lock("pdeflow report"):
            written = _rom_plots(store)
        lines = ["# Reduced-order models", "", *_rom_section(rec), *_images(store, list(written))]
        create_markdown_artifact(
            "\n".join(lines),
            key=artifact_key(cfg.store, "rom-report"),
            description="Reduce methods: errors, estimates, timings, error against rank",
        )
    except Exception as err:  # see the docstring
        log_warning(f"reduce report of {store.path} not published: {err!r}")


def _row_cells(row: dict) -> dict[str, str]:
    return {head: _fmt(row[key]) if key in row else "-" for head, key in TABLE_COLUMNS}


def publish_run(cfg: PipelineConfig) -> dict[str, str]:
    """The whole run's metrics table, its plots (saved in the store) and the markdown report.

    A plot that fails is logged as a warning: the stages' results are complete and stored, and a
    missing figure must not fail the run that produced them.

    Returns:
        Plot name -> PNG path (relative to the store) of the plots written.
    """
    store = RunStore.named(cfg.store)
    try:
        with store.lock("pdeflow report"):
            written = write_plots(cfg, store)
    except Exception as err:  # see the docstring
        log_warning(f"plots of {store.path} not written: {err!r}")
        written = {}
    create_table_artifact(
        metric_rows(store_summary(store)),
        key=artifact_key(cfg.store, "metrics"),
        description="All metrics of the run",
    )
    create_markdown_artifact(
        report_markdown(cfg, store, list(written)),
        key=artifact_key(cfg.store, "report"),
        description="pdeflow run report",
    )
    return written


def publish_changes(store_name: str, changes: dict) -> None:
    """The ``changes_markdown`` report as the run's markdown artifact ``pdeflow-<store>-changes``.

    An API failure is logged as a warning: the report must never fail the run it describes.
    """
    from pdeflow.tasks.stages.extend import changes_markdown

    try:
        create_markdown_artifact(
            changes_markdown(store_name, changes),
            key=artifact_key(store_name, "changes"),
            description="What the run changed: samples, blocks, training, metrics",
        )
    except Exception as err:  # see the docstring
        log_warning(f"changes report of store {store_name} not published: {err!r}")
