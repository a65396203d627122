"""The report's part for the quantify stage's sensitivity options: plots and markdown lines.

Each function looks for the variables the options store in the quantify group and does nothing
for a store quantified without them.
"""

from __future__ import annotations

from pdeflow.storage import RunStore
from pdeflow.tasks import plots, plots_sensitivity
from pdeflow.tasks.stages.quantify_sensitivity import CHEAP


def sensitivity_plots(store: RunStore, res) -> dict[str, str]:
    """``morris`` (mu* and sigma per parameter) and ``sobol-maps-<model>`` (S1 and ST maps per
    parameter), saved through the store when the quantify group ``res`` holds them.

    Returns:
        Plot name -> its PNG's path relative to the store.
    """
    out: dict[str, str] = {}
    names = [str(p) for p in res.parameter.values] if "parameter" in res.coords else []
    if all(f"morris_mu_star_{m}" in res for m in CHEAP):
        fig = plots_sensitivity.morris_bars(
            names,
            {m: res[f"morris_mu_star_{m}"].values for m in CHEAP},
            {m: res[f"morris_sigma_{m}"].values for m in CHEAP},
        )
        out["morris"] = store.write_plot("morris", plots.png_bytes(fig))
    ds = None
    for model in CHEAP:
        if f"field_S1_{model}" not in res:
            continue
        if ds is None:
            ds = store.open_dataset()
        s1 = res[f"field_S1_{model}"]
        space_ndim = s1.ndim - 3
        fig = plots_sensitivity.sobol_maps(
            names,
            s1.values,
            res[f"field_ST_{model}"].values,
            space_ndim=space_ndim,
            channel_names=list(store.layout().fields),
            time=ds["time"].values,
            x=ds["x"].values if space_ndim == 1 and "x" in ds.coords else None,
            title=f"Sobol index maps of the {model}",
        )
        name = f"sobol-maps-{model}"
        out[name] = store.write_plot(name, plots.png_bytes(fig))
    return out


def sensitivity_lines(m: dict, res, fmt) -> list[str]:
    """Markdown lines on Morris screening, the index maps and the PCE, from the quantify
    metrics ``m`` and group ``res``; ``fmt`` formats a number."""
    lines: list[str] = []
    names = [str(p) for p in res.parameter.values] if "parameter" in res.coords else []
    if all(f"morris_mu_star_{n}" in res for n in CHEAP):
        lines += [
            "",
            "Morris screening of the QoI (mu* / sigma, per unit of normalised parameter):",
        ]
        lines += ["", "| parameter | " + " | ".join(f"mu* {n} | sigma {n}" for n in CHEAP) + " |"]
        lines.append("|---" * (1 + 2 * len(CHEAP)) + "|")
        for j, p in enumerate(names):
            cells = " | ".join(
                f"{fmt(float(res[f'morris_{k}_{n}'].values[j]))}"
                for n in CHEAP
                for k in ("mu_star", "sigma")
            )
            lines.append(f"| {p} | {cells} |")
        lines.append("")
    for n in CHEAP:
        if f"field_S1_agg_{n}" in res:
            agg = ", ".join(
                f"{p} {res[f'field_S1_agg_{n}'].values[j]:.3f} / "
                f"{res[f'field_ST_agg_{n}'].values[j]:.3f}"
                for j, p in enumerate(names)
            )
            lines.append(
                f"- {n} index maps (S1 / ST of the whole field, variance-weighted; not the "
                f"QoI's): {agg}"
            )
    for n in CHEAP:
        if f"pce_mean_{n}" in m:
            lines.append(
                f"- {n} PCE (degree {m[f'pce_degree_{n}']} by cross-validation): mean "
                f"{fmt(m[f'pce_mean_{n}'])} vs Monte Carlo {fmt(m[f'mc_qoi_mean_{n}'])} "
                f"+- {fmt(m[f'mc_qoi_mean_se_{n}'])} ({m[f'pce_mean_z_{n}']:+.2f} SE), variance "
                f"{fmt(m[f'pce_variance_{n}'])} vs {fmt(m[f'mc_qoi_variance_{n}'])} "
                f"+- {fmt(m[f'mc_qoi_variance_se_{n}'])} ({m[f'pce_variance_z_{n}']:+.2f} SE); "
                f"Sobol indices max |PCE - Saltelli| {fmt(m[f'pce_sobol_max_abs_diff_{n}'])}"
            )
    return lines
