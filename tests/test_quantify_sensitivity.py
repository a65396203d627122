"""The quantify stage's opt-in sensitivity steps (Morris screening, Sobol' index maps, polynomial
chaos) on the tiny config: what they store, and checks against the stage's own estimates."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from pdeflow.tasks.config import QuantifyConfig, load_config
from tests.conftest import TINY

OPTIONS = [
    "quantify.morris_trajectories=8",
    "quantify.field_sobol=true",
    "quantify.pce_degree_max=4",
    # 128 Monte Carlo runs put the MC standard error of the QoI's mean at ~9% of its spread.
    "quantify.n_mc=128",
    "quantify.sobol_n_base=64",
]


@pytest.fixture(scope="module")
def quantified(runs_dir):
    """The tiny config's four stages with every sensitivity option on, run once."""
    from distributed import Client

    from pdeflow.storage import RunStore
    from tests.stage_helpers import generate, quantify, reduce, train

    cfg = load_config(TINY, ["store=sensitivity", *OPTIONS])
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        generate(cfg, c)
        train(cfg)
        reduce(cfg, c)
        summary = quantify(cfg, c)
    store = RunStore.named(cfg.store)
    return cfg, store, summary.metrics, store.read_group("quantify")


def test_options_are_off_by_default_and_validated():
    from pdeflow.tasks.stages.quantify import STEP_NAMES, active_steps

    assert [name for name, _ in active_steps(load_config(TINY))] == list(STEP_NAMES)
    on = load_config(TINY, OPTIONS)
    names = [name for name, _ in active_steps(on)]
    assert names[3:6] == ["Morris screening", "Sobol index maps", "polynomial chaos"]
    # Off, the options leave the stage's identity (and so existing stores' names) unchanged.
    assert "field_sobol" not in QuantifyConfig().identity()
    assert QuantifyConfig(field_sobol=True).identity()["field_sobol"] is True
    for field, value, words in (
        ("morris_trajectories", 1, "0 \\(off\\) or >= 2"),
        ("morris_trajectories", -2, "greater than or equal to 0"),
        ("pce_degree_max", 9, "less than or equal to 8"),
        ("field_sobol", "maybe", "valid boolean"),
    ):
        with pytest.raises(ValidationError, match=f"(?s){field}.*{words}"):
            QuantifyConfig(**{field: value})


def test_options_refused_for_a_simulator_with_its_own_initial_states():
    from pdeflow.tasks.stages.quantify import Quantify
    from tests.conftest import ROOT

    custom = ROOT / "tests" / "configs" / "custom_python.yaml"
    Quantify().check(load_config(custom))
    with pytest.raises(ValueError, match="quantify.field_sobol: .* makes its own"):
        Quantify().check(load_config(custom, ["quantify.field_sobol=true"]))


def test_morris_stores_effects_and_ranks_the_dominant_parameter(quantified):
    cfg, _, metrics, res = quantified
    names = cfg.generate.parameter_names
    for model in ("surrogate", "rom"):
        for key in ("mu_star", "mu", "sigma", "mu_star_conf"):
            var = res[f"morris_{key}_{model}"]
            assert var.dims == ("parameter",) and var.shape == (len(names),)
        mu_star = res[f"morris_mu_star_{model}"].values
        assert np.all(mu_star >= 0) and np.all(np.abs(res[f"morris_mu_{model}"].values) <= mu_star)
        for p, value in zip(names, mu_star, strict=True):
            assert metrics[f"morris_mu_star_{model}_{p}"] == pytest.approx(value)
    # In the tiny problem the first amplitude a1 dominates the QoI of the solver and the ROM
    # (the stage's total indices, ~0.7 against <= 0.25 for the others): the ROM's screening
    # ranks it first. The surrogate (two epochs of training) spreads its variance over the
    # three amplitudes and ignores nu (its PCE total index is below 0.05): nu comes last.
    dominant = names.index("a1")
    for ref in ("solver", "rom"):
        st = np.sort(res[f"ST_{ref}"].values)
        assert np.argmax(res[f"ST_{ref}"].values) == dominant and st[-1] > 2 * st[-2]
    assert np.argmax(res["morris_mu_star_rom"].values) == dominant
    st_surrogate = res["pce_ST_surrogate"].values
    weak, strong = st_surrogate < 0.05, st_surrogate > 0.2
    assert weak.any() and strong.any()
    mu_star = res["morris_mu_star_surrogate"].values
    assert mu_star[weak].max() < mu_star[strong].min()


def test_field_sobol_maps_have_the_field_layout_and_s1_below_st(quantified):
    cfg, store, metrics, res = quantified
    gen, d = cfg.generate, len(cfg.generate.parameter_names)
    data = store.open_dataset()
    field = data[list(store.layout().fields)[0]]
    assert field.dims[1:] == ("time", "x")  # the store's sample layout, channel a variable
    for model in ("surrogate", "rom"):
        for key in ("S1", "ST"):
            var = res[f"field_{key}_{model}"]
            assert var.dims == ("parameter", "time", "channel", "x")
            assert var.shape == (d, gen.n_frames, 1, gen.grid[0])
        s1, st = res[f"field_S1_{model}"].values, res[f"field_ST_{model}"].values
        finite = np.isfinite(s1) & np.isfinite(st)
        assert finite.mean() > 0.9
        # S1 <= ST holds for the true indices; the two estimators differ by Monte Carlo error,
        # whose 95% bootstrap half-width averages field_S1_conf_mean over the map.
        conf = metrics[f"field_S1_conf_mean_{model}"]
        assert 0 < conf < 0.5
        assert np.mean(s1[finite] <= st[finite] + conf) > 0.95
        assert np.all(res[f"field_S1_agg_{model}"].values <= res[f"field_ST_agg_{model}"] + 0.05)
        # The QoI's indices from the maps' runs estimate what the sobol step estimates, on an
        # independent design: they agree within both estimates' 95% half-widths.
        for key in ("S1", "ST"):
            diff = np.abs(res[f"field_qoi_{key}_{model}"].values - res[f"{key}_{model}"].values)
            assert np.all(diff <= 2 * res[f"{key}_conf_{model}"].values + 0.05), (model, key)


def test_field_sobol_initial_frame_matches_the_analytic_maps(quantified):
    """Frame 0 of the surrogate's rollout is its input, u0(x) = sum_k a_k sin(k x) with
    independent a_k ~ U(-0.5, 0.5): additive, so S1 = ST = sin^2(k x) / sum_j sin^2(j x) for
    a_k, and exactly 0 for nu, which does not enter u0 (f(A_B^nu) = f(A) to the bit)."""
    cfg, store, _, res = quantified
    gen = cfg.generate
    x = store.open_dataset()["x"].values
    waves = np.array([np.sin(2 * np.pi * k * x / gen.domain_length) ** 2 for k in gen.modes])
    inside = waves.sum(axis=0) > 1e-6  # at x = 0 and pi, u0 is 0 (or round-off) in every run
    exact = waves[:, inside] / waves[:, inside].sum(axis=0)
    s1 = res["field_S1_surrogate"].values[:, 0, 0][:, inside]
    st = res["field_ST_surrogate"].values[:, 0, 0][:, inside]
    assert gen.parameter_names == ["nu", "a1", "a2", "a3"]
    np.testing.assert_array_equal(s1[0], 0.0)
    np.testing.assert_array_equal(st[0], 0.0)
    # Jansen's ST differences runs that share every other amplitude, so for a linear model
    # its only error is the sampling of Var(a_k) by 64 scrambled Sobol' points: ~1e-3 here
    # (measured), 0.02 leaves a wide margin. Saltelli's S1 carries the spread of the other
    # amplitudes too: its 95% half-width averages ~0.13 over the map (field_S1_conf_mean).
    np.testing.assert_allclose(st[1:], exact, atol=0.02)
    assert np.mean(np.abs(s1[1:] - exact)) < 0.1


def test_pce_moments_agree_with_monte_carlo(quantified):
    cfg, _, metrics, res = quantified
    for model in ("surrogate", "rom"):
        assert 1 <= metrics[f"pce_degree_{model}"] <= 4
        # The PCE's mean and variance are nearly exact (its cross-validated error, a fraction
        # of the QoI's variance, is below 1%: 4e-5 and 2e-3 measured), so their difference
        # from the Monte Carlo sample's is that sample's error, normal by the CLT with the
        # stored standard error. |z| <= 4 fails wrongly with probability < 1e-4.
        degree = metrics[f"pce_degree_{model}"]
        assert res[f"pce_cv_error_{model}"].values[degree] < 0.01
        assert abs(metrics[f"pce_mean_z_{model}"]) <= 4
        assert abs(metrics[f"pce_variance_z_{model}"]) <= 4
        # The standard error is the sample's: sd / sqrt(n_mc).
        se = np.sqrt(metrics[f"mc_qoi_variance_{model}"] / cfg.quantify.n_mc)
        assert metrics[f"mc_qoi_mean_se_{model}"] == pytest.approx(se)
        for key in ("S1", "ST"):
            var = res[f"pce_{key}_{model}"]
            assert var.dims == ("parameter",)
        # PCE indices on the very runs of the sobol step's Saltelli design: within that
        # step's 95% half-widths (the PCE's own error is far smaller).
        conf = max(res[f"S1_conf_{model}"].values.max(), res[f"ST_conf_{model}"].values.max())
        assert metrics[f"pce_sobol_max_abs_diff_{model}"] <= 2 * conf
        assert res[f"pce_cv_error_{model}"].dims == ("degree",)


def test_report_shows_the_options(quantified):
    from pdeflow.tasks.report import report_markdown, write_plots

    cfg, store, _, _ = quantified
    written = write_plots(cfg, store, n_samples=0)
    assert {"morris", "sobol-maps-surrogate", "sobol-maps-rom"} <= set(written)
    text = report_markdown(cfg, store, list(written))
    assert "Morris screening of the QoI" in text and "PCE (degree" in text
    assert "index maps (S1 / ST of the whole field" in text


def _wide_figures():
    """The sensitivity figures with wide labels: long parameter names, 4-digit times and
    coordinates, three channels, NaN points."""
    from pdeflow.tasks import plots_sensitivity

    rng = np.random.default_rng(0)
    names = [f"amplitude_{k}" for k in range(3)]
    maps_1d = rng.uniform(-0.05, 1.05, (3, 40, 3, 48))
    maps_1d[:, :, :, 0] = np.nan
    maps_2d = rng.uniform(0, 1, (3, 4, 2, 20, 20))
    effects = {m: rng.uniform(0, 12345.0, 3) for m in ("surrogate", "rom")}
    return {
        "maps 1d": plots_sensitivity.sobol_maps(
            names,
            maps_1d,
            maps_1d,
            1,
            ["rho", "u", "p"],
            time=np.linspace(0, 1000, 40),
            x=np.linspace(-1000, 1000, 48),
            title="Sobol index maps of the surrogate",
        ),  # fmt: skip
        "maps 2d": plots_sensitivity.sobol_maps(
            names, maps_2d, maps_2d, 2, ["u", "v"], title="Sobol index maps of the rom"
        ),
        "morris": plots_sensitivity.morris_bars(names, effects, effects),
    }


@pytest.mark.parametrize("which", list(_wide_figures()))
def test_sensitivity_figures_fit_in_the_fixed_margins(which):
    from pdeflow.tasks import plots

    fig = _wide_figures()[which]
    assert fig.get_layout_engine() is None
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    page = fig.bbox
    drawn = [(ax.get_title(), ax.get_tightbbox(renderer)) for ax in fig.axes if ax.get_visible()]
    if fig._suptitle is not None:
        drawn.append(("suptitle", fig._suptitle.get_window_extent(renderer)))
    for what, box in drawn:  # all inside the page (1 px of rounding)
        assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, (which, what)
        assert page.y0 - 1 <= box.y0 and box.y1 <= page.y1 + 1, (which, what)
    panels = [ax for ax in fig.axes if ax.get_title()]
    for a in fig.axes:  # no panel's or colorbar's labels run into another panel
        reach = a.get_tightbbox(renderer)
        for b in panels:
            if b is not a:
                overlap = reach.intersection(reach, b.get_window_extent(renderer))
                assert overlap is None or overlap.width < 1 or overlap.height < 1, (
                    which,
                    a.get_title(),
                    b.get_title(),
                )
    assert plots.png_bytes(fig)[:8] == plots.PNG_SIGNATURE


def test_sobol_maps_panels_show_the_maps():
    from pdeflow.tasks import plots_sensitivity

    maps = np.random.default_rng(1).uniform(0, 1, (2, 5, 1, 16))
    fig = plots_sensitivity.sobol_maps(["nu", "a1"], maps, 1 - maps, 1, ["u"])
    by_title = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert set(by_title) == {"S1 nu (u)", "ST nu (u)", "S1 a1 (u)", "ST a1 (u)"}
    np.testing.assert_array_equal(by_title["S1 a1 (u)"].images[0].get_array(), maps[1, :, 0])
    np.testing.assert_array_equal(by_title["ST nu (u)"].images[0].get_array(), 1 - maps[0, :, 0])
    with pytest.raises(ValueError, match="d=2"):
        plots_sensitivity.sobol_maps(["nu", "a1"], maps[:1], maps[:1], 1)
