"""The infer stage's report: posterior marginals and traces (a plot), and the samplers'
efficiency table, as Prefect artifacts and in the store."""

from __future__ import annotations

import numpy as np
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pdeflow.storage import RunStore
from pdeflow.tasks import plots
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.report import _fmt, _images, artifact_key, log_warning

PLOT = "infer-posterior"
COLOURS = {"da": "tab:blue", "mh": "tab:orange"}
# Columns of the samplers' table: heading and key of a method's row in the record.
COLUMNS = (
    ("acceptance", "acceptance"),
    ("screen acceptance", "screen_acceptance"),
    ("second-stage acceptance", "second_acceptance"),
    ("solver calls", "solver_calls"),
    ("solver calls / step", "solver_calls_per_step"),
    ("ESS (min)", "ess_min"),
    ("ESS / solver call", "ess_per_solver_call"),
    ("R-hat (max)", "rhat_max"),
)


def posterior_figure(ds, names: list[str], truth):
    """One column per parameter: the marginal histograms of each method (top) and the first
    chain's trace (bottom), with the truth. The axes span the posterior, not the prior, which
    is often a hundred times wider."""
    d = len(names)
    fig = plots._grid_figure(
        3.4 * d + 0.6, 5.4, (2, d), left=0.85, right=0.25, bottom=0.6, top=0.45, wgap=0.95,
        hgap=0.75,
    )  # fmt: skip
    axes = fig.subplots(2, d, squeeze=False)
    methods = [str(m) for m in ds["method"].values]
    for j, name in enumerate(names):
        top, bottom = axes[0, j], axes[1, j]
        for k, m in enumerate(methods):
            x = np.asarray(ds["draws"].values[k, :, :, j]).reshape(-1)
            top.hist(x, bins=40, density=True, histtype="step", color=COLOURS[m], label=m)
            bottom.plot(ds["draws"].values[k, 0, :, j], color=COLOURS[m], lw=0.6, label=m)
        if truth is not None:
            for ax in (top,):
                ax.axvline(truth[j], color="k", ls="--", lw=1, label="truth")
            bottom.axhline(truth[j], color="k", ls="--", lw=1)
        top.set_title(f"posterior of {name}")
        top.set_xlabel(name)
        top.set_ylabel("density")
        bottom.set_xlabel("step after burn-in (chain 0)")
        bottom.set_ylabel(name)
        if j == 0:
            top.legend(fontsize=7)
    return fig


def efficiency_rows(rec) -> list[dict]:
    rows = []
    for method, row in (rec.details.get("methods") or {}).items():
        cells = {head: _fmt(row[key]) if key in row else "-" for head, key in COLUMNS}
        rows.append({"method": f"{method}: {row['text']}", **cells})
    return rows


def infer_section(rec) -> list[str]:
    """Markdown: the samplers' table and the posterior against the truth."""
    rows = efficiency_rows(rec)
    if not rows:
        return []
    heads = list(rows[0])
    lines = ["## Bayesian inversion", "", "| " + " | ".join(heads) + " |"]
    lines += ["|" + "---|" * len(heads)] + ["| " + " | ".join(r.values()) + " |" for r in rows]
    m = rec.metrics
    if "ess_per_solver_call_gain" in m:
        lines += ["", f"Delayed acceptance: {m['ess_per_solver_call_gain']:.2f}x the effective "
                  "samples per solver call of Metropolis."]  # fmt: skip
    names = [k[: -len("_mean")] for k in m if k.endswith("_mean")]
    lines += [
        "",
        "| parameter | posterior mean | 90% interval | truth | covered |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        truth = _fmt(m[f"{n}_true"]) if f"{n}_true" in m else "-"
        cov = ("yes" if m[f"{n}_covered"] else "no") if f"{n}_covered" in m else "-"
        lines.append(
            f"| {n} | {_fmt(m[f'{n}_mean'])} | [{_fmt(m[f'{n}_q05'])}, {_fmt(m[f'{n}_q95'])}] "
            f"| {truth} | {cov} |"
        )
    return [*lines, ""]


def write_infer_plot(cfg: PipelineConfig, store: RunStore) -> str:
    ds = store.open_dataset("infer")
    truth = ds.attrs.get("truth")
    gen = cfg.generate
    fig = posterior_figure(ds, list(gen.parameter_names), truth)
    return store.write_plot(PLOT, plots.png_bytes(fig))


def publish_infer(cfg: PipelineConfig) -> None:
    """The samplers' table and a markdown report with the posterior plot, inline.

    A failure is logged as a warning: the stage's results are complete and stored.
    """
    store = RunStore.named(cfg.store)
    try:
        rec = store.record("infer")
        if rec is None or rec.status != "complete":
            return
        create_table_artifact(
            efficiency_rows(rec),
            key=artifact_key(cfg.store, "infer-samplers"),
            description="Posterior sampling: acceptance, solver calls, ESS per solver call",
        )
        with store.lock("pdeflow report"):
            write_infer_plot(cfg, store)
        lines = ["# Bayesian inversion", "", *infer_section(rec), *_images(store, [PLOT])]
        create_markdown_artifact(
            "\n".join(lines),
            key=artifact_key(cfg.store, "infer-report"),
            description="Posterior against the truth, sampler efficiency, marginals and traces",
        )
    except Exception as err:  # see the docstring
        log_warning(f"infer report of {store.path} not published: {err!r}")
