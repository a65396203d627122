"""The campaign's report: the held-out error against the number of simulations (a plot and a
table), as a Prefect artifact updated every round and as a plot in the store."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact

from pdeflow.storage import RunStore
from pdeflow.tasks import plots
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.orchestration import in_run_context
from pdeflow.tasks.report import _fmt, _images, artifact_key, log_warning

PLOT = "campaign-error"


def error_figure(rounds: list[dict], acquisition: str, design: int):
    fig = plots._figure(6.0, 3.8)
    ax = fig.subplots()
    x = [design + r["simulations"] for r in rounds]
    ax.semilogy(x, [r["error"] for r in rounds], "o-", label=acquisition)
    ax.set_xlabel("simulations (design + campaign)")
    ax.set_ylabel("ROM held-out mean rel. L2 error")
    ax.set_title("campaign: held-out error against simulations")
    ax.legend(fontsize=8)
    return fig


def campaign_lines(rounds: list[dict], design: int) -> list[str]:
    lines = ["| round | simulations | held-out error | seconds |", "|---|---|---|---|"]
    lines += [
        f"| {r['round']} | {design + r['simulations']} | {_fmt(r['error'])} | "
        f"{_fmt(r['seconds'])} |"
        for r in rounds
    ]
    return lines


def publish_campaign(cfg: PipelineConfig, entry: dict) -> None:
    """The error-against-simulations plot and table, written to the store and, in a flow run,
    published as a markdown artifact (one key per store, updated every round).

    A failure is logged as a warning: the round's results are complete and stored.
    """
    store = RunStore.named(cfg.store)
    try:
        design = cfg.generate.n_design
        fig = error_figure(entry["rounds"], cfg.campaign.acquisition, design)
        store.write_plot(PLOT, plots.png_bytes(fig))
        if not in_run_context():
            return
        lines = [
            "# Campaign",
            "",
            f"Acquisition {cfg.campaign.acquisition}, budget {cfg.campaign.budget} simulations "
            f"in batches of {cfg.campaign.batch}, after a design of {design}.",
            "",
            *campaign_lines(entry["rounds"], design),
            "",
            *_images(store, [PLOT]),
        ]
        create_markdown_artifact(
            "\n".join(lines),
            key=artifact_key(cfg.store, "campaign"),
            description="Active learning: held-out error against the number of simulations",
        )
    except Exception as err:  # see the docstring
        log_warning(f"campaign report of {store.path} not published: {err!r}")
