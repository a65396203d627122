"""Reports: plot functions, progress artifacts, and the plots and markdown of a tiny run."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from pdeflow.tasks import orchestration as stages
from pdeflow.tasks import plots
from pdeflow.tasks.metrics import nrmse

PNG = plots.PNG_SIGNATURE


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def _assert_png(data: bytes) -> None:
    assert data[:8] == PNG and len(data) > 1000


# -- plots ----------------------------------------------------------------------------------------
def test_training_curves_log_scale_and_resume_marker(tmp_path):
    epochs = np.arange(1, 6)
    fig = plots.training_curves(epochs, 1.0 / epochs, 1.2 / epochs, resumed_from=3)
    ax = fig.axes[0]
    assert ax.get_title() == "Training curves" and ax.get_yscale() == "log"
    assert [ln.get_label() for ln in ax.get_lines()] == [
        "train",
        "validation",
        "resumed at epoch 3",
    ]
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), 1.0 / epochs)
    _assert_png(plots.png_bytes(fig))


def _trajectory(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize(
    ("shape", "space_ndim", "channels"),
    [((11, 32), 1, ["u"]), ((11, 2, 32), 1, ["u", "v"])],
    ids=["1d", "1d-two-channels"],
)
def test_sample_comparison_1d_images_and_errors(tmp_path, shape, space_ndim, channels):
    truth = _trajectory(shape)
    preds = {"surrogate": truth + 0.1, "rom": truth - 0.2 * _trajectory(shape, 1)}
    fig = plots.sample_comparison(truth, preds, space_ndim, channels, time=np.linspace(0, 1, 11))
    titles = _titles(fig)
    # Per channel: truth, two predictions, two errors.
    assert len(titles) == 5 * len(channels)
    by_title = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    for c, ch in enumerate(channels):
        truth_c = truth[:, c] if truth.ndim == 3 else truth
        rom_c = preds["rom"][:, c] if truth.ndim == 3 else preds["rom"]
        np.testing.assert_array_equal(by_title[f"truth ({ch})"].images[0].get_array(), truth_c)
        np.testing.assert_allclose(
            by_title[f"rom - truth ({ch})"].images[0].get_array(), rom_c - truth_c
        )
    _assert_png(plots.png_bytes(fig))


@pytest.mark.parametrize(
    ("shape", "channels"),
    [((5, 16, 12), ["u"]), ((5, 2, 16, 12), ["u", "v"])],
    ids=["2d", "2d-two-channels"],
)
def test_sample_comparison_2d_final_frames(tmp_path, shape, channels):
    truth = _trajectory(shape)
    preds = {"surrogate": 0.5 * truth, "rom": truth + 1.0}
    fig = plots.sample_comparison(truth, preds, space_ndim=2, channel_names=channels)
    by_title = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    # One row per model (truth first); per channel the frame and, for models, the error.
    assert len(by_title) == 3 * len(channels) + 2 * len(channels)
    last = truth[-1] if truth.ndim == 4 else truth[-1][None]
    for c, ch in enumerate(channels):
        img = by_title[f"truth ({ch}), final frame"].images[0].get_array()
        np.testing.assert_array_equal(img, last[c].T)  # x along the horizontal axis
        err = by_title[f"surrogate - truth ({ch})"].images[0].get_array()
        np.testing.assert_allclose(err, -0.5 * last[c].T)
    _assert_png(plots.png_bytes(fig))


@pytest.mark.parametrize("space_ndim", [1, 2])
def test_sample_comparison_labels_fit_in_the_fixed_margins(space_ndim):
    # Wide labels on purpose: 5-digit values (colorbars), 4-digit times, three channels.
    shape = (40, 3, 48) if space_ndim == 1 else (4, 3, 20, 20)
    truth = 12345.0 * _trajectory(shape)
    preds = {"surrogate": 1.01 * truth, "rom": 0.9 * truth}
    fig = plots.sample_comparison(
        truth, preds, space_ndim, ["rho", "u", "p"], time=np.linspace(0, 1000, shape[0]),
        title="test sample 12: nu = 0.01",
    )  # fmt: skip
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    page = fig.bbox
    # Each axes' extent as drawn (ticks in view, labels, title); colorbars are axes too.
    drawn = [(ax, ax.get_tightbbox(renderer)) for ax in fig.axes if ax.get_visible()]
    drawn.append((fig._suptitle, fig._suptitle.get_window_extent(renderer)))
    for what, box in drawn:  # all inside the page (1 px of rounding)
        assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, what
        assert page.y0 - 1 <= box.y0 and box.y1 <= page.y1 + 1, what
    panels = [ax for ax in fig.axes if ax.get_title() and ax.axison]
    assert len(panels) == 15  # 1D: 3 channels x 5 panels; 2D: 3 x (3 frames + 2 errors)
    for a in panels:  # no panel's labels (nor its colorbar's) run into another panel
        reach = a.get_tightbbox(renderer)
        for b in panels:
            if b is not a:
                assert not reach.overlaps(b.get_window_extent(renderer)), (a.get_title(), b)
    cbars = [ax for ax in fig.axes if not ax.get_title() and ax.axison]
    for bar in cbars:
        reach = bar.get_tightbbox(renderer)
        for b in panels:
            assert not reach.overlaps(b.get_window_extent(renderer)), b.get_title()


def _wide_single_figures():
    """The run's single-row figures with the widest labels their inputs give: log axes down to
    1e-12, 4-digit ranks and epochs, 5-digit negative losses (a linear axis), long parameter
    names, negative Sobol estimates, full legends."""
    rng = np.random.default_rng(0)
    epochs = np.arange(1, 501)
    names = [f"amplitude_{k}" for k in range(6)]
    s1 = {m: rng.uniform(-0.05, 1.0, 6) for m in ("solver", "surrogate", "rom")}
    ranks = {m: {2**k: (10.0 ** -(k + 2), 10.0 ** -(k + 3)) for k in range(11)} for m in "abc"}
    return {
        "training, log": plots.training_curves(
            epochs, np.geomspace(1e3, 1e-12, 500), np.geomspace(2e3, 2e-12, 500), resumed_from=250
        ),
        "training, linear": plots.training_curves(
            epochs, np.linspace(-12345.0, 12345.0, 500), np.linspace(-23456.0, 0.0, 500)
        ),
        "coverage": plots.coverage_histogram(rng.uniform(0.8, 0.99, 200), 0.9, n_cal=10_000),
        "sobol": plots.sobol_bars(names, s1, s1, s1, s1),
        "rom error": plots.rom_error_vs_rank(
            {f"pod-{m}": {r: (e, f) for r, (e, f) in c.items()} for m, c in ranks.items()}
        ),
    }


@pytest.mark.parametrize("which", list(_wide_single_figures()))
def test_single_row_figures_labels_fit_in_the_fixed_margins(which):
    fig = _wide_single_figures()[which]
    assert fig.get_layout_engine() is None  # fixed margins, not the layout engine
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    page = fig.bbox
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for ax in axes:  # ticks, tick labels, axis labels, title and legend: inside the page
        box = ax.get_tightbbox(renderer)
        assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, (which, ax.get_title(), box)
        assert page.y0 - 1 <= box.y0 and box.y1 <= page.y1 + 1, (which, ax.get_title(), box)
    for a in axes:  # and clear of the other panel
        for b in axes:
            if b is not a:
                overlap = a.get_tightbbox(renderer).intersection(
                    a.get_tightbbox(renderer), b.get_window_extent(renderer)
                )
                assert overlap is None or overlap.width < 1, (which, a.get_title())
    _assert_png(plots.png_bytes(fig))


def test_sample_comparison_3d_shows_the_mid_plane():
    truth = _trajectory((3, 2, 6, 6, 8))
    preds = {"surrogate": 0.5 * truth}
    fig = plots.sample_comparison(truth, preds, space_ndim=3, channel_names=["u", "v"])
    by_title = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    for c, ch in enumerate(["u", "v"]):
        img = by_title[f"truth ({ch}), final frame"].images[0].get_array()
        np.testing.assert_array_equal(img, truth[-1, c, :, :, 4].T)
    assert "mid-plane" in fig._suptitle.get_text()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"truth": np.zeros((4, 8)), "space_ndim": 4}, "space_ndim"),
        ({"truth": np.zeros(8)}, "truth"),
        ({"truth": np.zeros((4, 8)), "predictions": {"rom": np.zeros((4, 9))}}, "rom"),
        ({"truth": np.zeros((4, 2, 8)), "channel_names": ["u"]}, "channel_names"),
    ],
)
def test_sample_comparison_rejects_bad_shapes(kwargs, fragment):
    args = {"predictions": {}, **kwargs}
    with pytest.raises(ValueError, match=fragment):
        plots.sample_comparison(**args)


def test_sobol_bars_heights_and_parameter_names(tmp_path):
    names = ["nu", "a1", "a2"]
    s1 = {"solver": np.array([0.1, 0.5, 0.2]), "rom": np.array([0.12, 0.48, 0.2])}
    st = {"solver": np.array([0.2, 0.6, 0.25]), "rom": np.array([0.2, 0.6, 0.3])}
    fig = plots.sobol_bars(names, s1, st, first_conf={m: 0.05 * np.ones(3) for m in s1})
    left, right = fig.axes[:2]
    assert (left.get_title(), right.get_title()) == ("First-order index S1", "Total index ST")
    assert [t.get_text() for t in left.get_xticklabels()] == names
    heights = [p.get_height() for p in left.patches]
    np.testing.assert_allclose(heights, np.concatenate([s1["solver"], s1["rom"]]))
    _assert_png(plots.png_bytes(fig))
    with pytest.raises(ValueError, match="same"):
        plots.sobol_bars(names, s1, {"solver": st["solver"]})


def test_coverage_histogram_counts_and_target_line(tmp_path):
    cover = np.random.default_rng(0).uniform(0.8, 1.0, 40)
    fig = plots.coverage_histogram(cover, nominal=0.9, n_cal=19)
    ax = fig.axes[0]
    assert ax.get_title() == "Conformal coverage"
    assert sum(p.get_height() for p in ax.patches) == 40
    lines = {ln.get_label(): ln.get_xdata()[0] for ln in ax.get_lines()}
    assert lines["target 1 - alpha = 0.9"] == 0.9
    assert lines["upper bound 0.95"] == pytest.approx(0.95)  # 0.9 + 1 / (19 + 1)
    _assert_png(plots.png_bytes(fig))
    with pytest.raises(ValueError, match="nominal"):
        plots.coverage_histogram(cover, nominal=1.0)


def test_png_bytes_checks_the_resolution():
    _assert_png(plots.png_bytes(plots.coverage_histogram(np.array([0.9]), 0.9)))
    with pytest.raises(ValueError, match="dpi"):
        plots.png_bytes(plots.coverage_histogram(np.array([0.9]), 0.9), dpi=1000)


# -- progress reporting ---------------------------------------------------------------------------
class FakeApi:
    """Records progress artifact calls in place of the Prefect API."""

    def __init__(self, fail: bool = False):
        self.fail, self.calls = fail, []

    def create(self, progress, description=None, _sync=None):
        self.calls.append(("create", progress, description))
        if self.fail:
            raise ConnectionError("server unreachable")
        return "artifact-id"

    def update(self, artifact_id, progress, description=None, _sync=None):
        self.calls.append(("update", progress, description))


@pytest.fixture
def fake_api(monkeypatch):
    api = FakeApi()
    monkeypatch.setattr(stages, "create_progress_artifact", api.create)
    monkeypatch.setattr(stages, "update_progress_artifact", api.update)
    return api


def test_progress_artifact_is_throttled_but_always_final(fake_api):
    now = [0.0]
    art = stages.ProgressArtifact("train", interval=1.0, clock=lambda: now[0])
    for done, t in [(0, 0.0), (1, 0.3), (2, 0.6), (3, 1.1), (4, 1.5), (5, 1.6)]:
        now[0] = t
        art(done, 5)
    assert fake_api.calls == [
        ("create", 0.0, "train: 0 of 5 epochs"),
        ("update", 60.0, "train: 3 of 5 epochs"),  # first report at least 1 s after the last
        ("update", 100.0, "train: 5 of 5 epochs"),  # final: sent although 0.5 s after the last
    ]


def test_reporter_outside_a_run_only_drives_the_cli(fake_api):
    assert stages.reporter("generate") is None
    seen = []
    stages.set_reporter(lambda *args: seen.append(args))
    try:
        progress = stages.reporter("generate")
        progress(1, 4)
        progress(4, 4)
    finally:
        stages.set_reporter(None)
    assert seen == [("generate", 1, 4), ("generate", 4, 4)] and fake_api.calls == []


def test_failing_artifact_api_warns_once_and_never_raises(monkeypatch, caplog):
    api = FakeApi(fail=True)
    monkeypatch.setattr(stages, "create_progress_artifact", api.create)
    art = stages.ProgressArtifact("generate", interval=0.0)
    with caplog.at_level(logging.WARNING, logger="pdeflow.tasks.orchestration"):
        for done in range(5):
            art(done, 4)
    assert art.failed and len(api.calls) == 1
    assert [r.message for r in caplog.records if "progress artifact disabled" in r.message]


def _flow_artifacts(flow_run_id):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read():
        async with get_client() as client:
            flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            return await client.read_artifacts(artifact_filter=flt)

    return asyncio.run(read())


def test_reporter_updates_a_progress_artifact_in_a_flow_run(prefect_api, monkeypatch):
    from prefect import flow

    # A long interval: only the first report and the final one reach the server.
    monkeypatch.setattr(stages, "PROGRESS_INTERVAL_S", 3600.0)
    calls = []
    for name in ("create_progress_artifact", "update_progress_artifact"):
        real = getattr(stages, name)
        monkeypatch.setattr(
            stages, name, lambda *a, _real=real, _n=name, **k: calls.append(_n) or _real(*a, **k)
        )

    @flow(name="progress-probe")
    def probe(n: int) -> None:
        progress = stages.reporter("train")
        for done in range(n + 1):
            progress(done, n)

    state = probe(6, return_state=True)
    assert state.is_completed()
    assert calls == ["create_progress_artifact", "update_progress_artifact"]
    (artifact,) = _flow_artifacts(state.state_details.flow_run_id)
    assert artifact.type == "progress" and artifact.data == 100.0
    assert artifact.description == "train: 6 of 6 epochs"


def test_flow_run_survives_a_failing_artifact_api(prefect_api, monkeypatch):
    from prefect import flow

    api = FakeApi(fail=True)
    monkeypatch.setattr(stages, "create_progress_artifact", api.create)

    @flow(name="progress-probe-failing")
    def probe() -> int:
        progress = stages.reporter("generate")
        for done in range(4):
            progress(done, 3)
        return 7

    state = probe(return_state=True)
    assert state.is_completed() and state.result() == 7 and len(api.calls) == 1


# -- plots and report of a tiny run ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_store(runs_dir):
    """The four stages of the tiny config, called directly on an in-process Dask cluster."""
    from distributed import Client

    from pdeflow.storage import RunStore
    from pdeflow.tasks.config import load_config
    from tests.conftest import TINY
    from tests.stage_helpers import generate, quantify, reduce, train

    cfg = load_config(TINY, ["store=report"])
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        generate(cfg, c)
        train(cfg)
        reduce(cfg, c)
        quantify(cfg, c)
    return cfg, RunStore.named(cfg.store)


def test_predict_samples_reproduces_the_stage_metrics(tiny_store):
    from pdeflow.tasks.report import predict_samples

    cfg, store = tiny_store
    test = store.sample_indices("test")
    out = predict_samples(cfg, store, test)
    truth = out["truth"]
    assert truth.shape == (len(test), cfg.generate.n_frames, 1, cfg.generate.grid[0])
    assert {k: v.shape for k, v in out.items()} == dict.fromkeys(out, truth.shape)
    assert set(out) == {"truth", "surrogate", "rom"}
    np.testing.assert_array_equal(out["surrogate"][:, 0], truth[:, 0])
    # The stages measured these on the same test split through their own code paths; float32
    # model and data give ~1e-7 relative rounding, so 1e-4 leaves room without hiding a mismatch.
    metrics = {s: store.record(s).metrics for s in ("train", "reduce")}
    space = truth.ndim - 3
    rollout = nrmse(out["surrogate"][:, 1:], truth[:, 1:], n_space_dims=space).mean()
    assert rollout == pytest.approx(metrics["train"]["nrmse_rollout"], rel=1e-4)
    err = np.linalg.norm((out["rom"] - truth).reshape(len(test), -1), axis=1)
    rel = err / np.linalg.norm(truth.reshape(len(test), -1), axis=1)
    assert rel.mean() == pytest.approx(metrics["reduce"]["rom_rel_error_mean"], rel=1e-4)


def test_sample_plots_use_the_rollouts_the_train_stage_stored(tiny_store, monkeypatch):
    # The report plots the test rollouts the train stage kept with its metrics instead of
    # rolling the model out again (0.4 s of a demo run's fixed cost); they must be the stage
    # model's own rollouts. Batched against per-sample float32 rollouts differ by rounding only
    # (~1e-6 of the field's scale over the rollout), so 1e-4 of the scale separates them from
    # any other model's.
    import pdeflow.tasks.report as report
    from pdeflow.tasks.stages.models import stored_rollouts

    cfg, store = tiny_store
    test = store.sample_indices("test")[:3]
    stored = stored_rollouts(store, test[::-1])  # any order in, sorted rows out
    assert stored is not None and len(stored) == len(test)
    monkeypatch.setattr(report, "stored_rollouts", lambda *args: None)  # the fallback
    fresh = report.predict_samples(cfg, store, test)["surrogate"]
    scale = np.abs(fresh).max()
    np.testing.assert_allclose(stored.reshape(fresh.shape), fresh, rtol=0, atol=1e-4 * scale)
    not_test = np.setdiff1d(np.arange(cfg.generate.n_samples), store.sample_indices("test"))
    assert stored_rollouts(store, np.concatenate([test[:1], not_test[:1]])) is None
    # The fallback for an ensemble store: the members' mean (two copies of the model here).
    from pdeflow.tasks.surrogates.ensemble import Ensemble

    model = report.load_surrogate(cfg, store)
    monkeypatch.setattr(report, "load_surrogate", lambda *args: Ensemble([model, model]))
    twice = report.predict_samples(cfg, store, test)["surrogate"]
    np.testing.assert_allclose(twice, fresh, rtol=0, atol=1e-6 * scale)


def test_write_plots_and_report_reference_them(tiny_store):
    from pdeflow.tasks.report import report_markdown, write_plots

    cfg, store = tiny_store
    with store.lock():
        written = write_plots(cfg, store)
    shown = np.sort(store.sample_indices("test")[:2])
    samples = {f"sample-{i}" for i in shown}
    assert set(written) == {"training", "rom-error-vs-rank", "sobol", "coverage"} | samples
    for name, rel in written.items():
        assert rel == f"_pdeflow/plots/{name}.png"
        _assert_png(store.plots()[name])
    md = report_markdown(cfg, store, list(written))
    for name in written:
        assert f"`_pdeflow/plots/{name}.png`" in md
        assert f"![{name}](data:image/png;base64," in md
    rec = store.record("train")
    best = min(h["val_loss"] for h in rec.details["history"])
    assert "## Surrogate training" in md and f"best val loss {best:.6g}" in md
    assert "trained from scratch" in md and "## Reduced-order model" in md
    assert "| parameter | S1 solver |" in md and "| nu |" in md
    assert md.count("## Stages") == 1 and "### quantify: complete" in md
    # Without an explicit list the report finds the PNGs already in the store.
    assert report_markdown(cfg, store) == md
    # Every error beside its trivial baselines, in the report and in the metrics table.
    rom = store.record("reduce").metrics
    assert (
        f"predicting zero 1, the training mean field {rom['baseline_mean_rel_error_mean']:.6g}"
        in md
    )
    assert "(persistence " in md
    # The reduce methods side by side: the stage's ROM marked, its measured error in the row.
    row = store.record("reduce").details["methods"]["pod-rbf"]
    assert "| method | error mean | error max |" in md
    assert f"| **pod-rbf** (used) | {row['rel_error_mean']:.6g} |" in md


def test_sample_headings_name_the_sample_their_plot_shows(tiny_store, monkeypatch):
    from pdeflow.tasks import report

    cfg, store = tiny_store
    titles = {}
    real = report.plots.sample_comparison

    def spy(*args, **kwargs):
        fig = real(*args, **kwargs)
        titles[len(titles)] = kwargs["title"]
        return fig

    monkeypatch.setattr(report.plots, "sample_comparison", spy)
    with store.lock():
        written = report._sample_plots(cfg, store, 2)
    md = report.report_markdown(cfg, store, list(written))
    test = np.sort(store.sample_indices("test")[:2])
    for k, sample in enumerate(test):
        assert titles[k].startswith(f"test sample {sample}:")
        # The heading sits directly over the plot it names.
        block = md.split(f"### sample {sample}\n", 1)[1].split("###", 1)[0]
        assert f"![sample-{sample}](data:image/png" in block


def test_metric_rows_put_each_error_beside_its_baselines():
    from pdeflow.tasks.report import metric_rows, surrogate_warnings

    metrics = {
        "train.nrmse_rollout": 0.3,
        "train.nrmse_persist_rollout": 0.2,
        "reduce.rom_rel_error_mean": 1.4,
        "reduce.baseline_zero_rel_error": 1.0,
        "reduce.baseline_mean_rel_error_mean": 0.98,
        "reduce.rank": 8,
    }
    rows = {r["metric"]: r["trivial baseline"] for r in metric_rows({"metrics": metrics})}
    assert rows["train.nrmse_rollout"] == "persistence 0.2"
    assert rows["reduce.rom_rel_error_mean"] == "zero 1, mean field 0.98"
    assert rows["reduce.rank"] == ""
    (warning,) = surrogate_warnings({"nrmse_rollout": 0.3, "nrmse_persist_rollout": 0.2})
    assert "no better than persistence (0.2" in warning and "likely cause" in warning
    assert surrogate_warnings({"nrmse_rollout": 0.1, "nrmse_persist_rollout": 0.2}) == []
