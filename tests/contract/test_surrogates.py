"""One contract over every network of the surrogate zoo (``tasks/surrogates/zoo.py``).

A new model needs one registry line to be tested like the rest. Every entry of ``MODELS``, and
the tensorised FNO as an extra case, is checked for what the training code relies on:

- ``(B, history * C, *space)`` and ``(B, P)`` in, ``(B, C, *space)`` out, for 1D, 2D and 3D grids,
  one and three frames, with and without parameters, in float32 and float64;
- it can fit: a single batch of a smooth map is overfitted to a relative L2 error below 1e-3;
- resolution invariance where it is claimed: trained on 64 points, the same weights are as
  accurate on 128 points; a model that is tied to its grid refuses another one;
- the same seed gives the same bits in this process and in a fresh one, another seed does not;
  building leaves the global RNG alone;
- a ``state_dict`` saved and loaded with ``weights_only=True`` reproduces the outputs bit for bit;
- every parameter receives a gradient.

The 1D data are finite Fourier series on ``[0, 1)``, so shifts (the exact solution of linear
advection ``u_t + c u_x = 0``) are computed in closed form on any grid.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pdeflow.tasks.surrogates import SURROGATES, FNO1d, FNO2d, FNO3d, get_surrogate
from pdeflow.tasks.surrogates.fno import FNO, FactorizedWeight, SpectralConv3d
from pdeflow.tasks.surrogates.zoo import MODELS, OPTION_NAMES, auto_model, build_net, get_model

# Small settings for the contract; each model takes the options it names.
SMALL = {"width": 8, "n_layers": 2, "modes": 4, "n_heads": 2, "n_basis": 8}
# Case id -> (registry name, options over SMALL): every registry entry, and the TFNO.
CASES = {name: (name, {}) for name in MODELS} | {
    "fno-tucker": ("fno", {"factorization": "tucker", "rank": 0.25})
}
GRIDS = {1: (16,), 2: (8, 8), 3: (8, 8, 8)}


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    # Tiny tensors: intra-op threads only add synchronisation on a shared 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build(case, *, n_dims=1, history=1, n_params=2, n_fields=2, seed=0, grid=None, **options):
    name, extra = CASES[case]
    grid = GRIDS[n_dims] if grid is None else grid
    return build_net(
        name,
        n_fields=n_fields,
        n_params=n_params,
        n_dims=n_dims,
        history=history,
        options={**SMALL, **extra, "grid_shape": grid, **options},
        generator=torch.Generator().manual_seed(seed),
    )


def random_inputs(net, grid, *, batch=3, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, net.history * net.n_fields, *grid, generator=g, dtype=dtype)
    return u, torch.randn(batch, net.n_params, generator=g, dtype=dtype)


def fourier_series(n: int, n_x: int, n_modes: int, gen: torch.Generator):
    """``f(shift)``: ``(n, 1, n_x)`` samples of ``sum_k a_k cos 2 pi k (x - s) + b_k sin(..)``.

    ``k = 1 .. n_modes`` and ``a_k, b_k ~ N(0, 1) / k``; ``shift`` is ``(n, 1)`` in domain lengths.
    """
    x = torch.arange(n_x, dtype=torch.float64) / n_x
    k = torch.arange(1, n_modes + 1, dtype=torch.float64)
    a = torch.randn(n, n_modes, generator=gen, dtype=torch.float64) / k
    b = torch.randn(n, n_modes, generator=gen, dtype=torch.float64) / k

    def at(shift: torch.Tensor) -> torch.Tensor:
        phase = 2 * math.pi * k[None, :, None] * (x[None, None, :] - shift[:, :, None])
        u = (a[:, :, None] * torch.cos(phase) + b[:, :, None] * torch.sin(phase)).sum(1)
        return u[:, None, :].float()

    return at


def relative_l2(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-sample ``||pred - true|| / ||true||`` over all but the first axis."""
    return (pred - true).flatten(1).norm(dim=1) / true.flatten(1).norm(dim=1)


def fit(net, u, p, target, steps: int, lr: float) -> float:
    """Full-batch Adam on the mean relative L2 error with cosine decay to 0; the final error."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        optimizer.zero_grad()
        relative_l2(net(u, p), target).mean().backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        return relative_l2(net(u, p), target).mean().item()


def state_digest(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in net.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


# --- the registry ------------------------------------------------------------------------------


def test_registry_names_and_errors():
    assert set(MODELS) == {"fno", "unet", "transformer", "deeponet"}
    with pytest.raises(ValueError, match="deeponet, fno, transformer, unet"):
        get_model("resnet")
    with pytest.raises(ValueError, match="unknown model option.*n_modes"):
        build_net("fno", n_fields=1, n_params=0, n_dims=1, options={"n_modes": 4}, generator=None)
    with pytest.raises(ValueError, match="grid_shape"):
        build_net("deeponet", n_fields=1, n_params=0, n_dims=1, options={}, generator=None)
    # Another model's option is left out, not an error: one option dict serves every model.
    gen = torch.Generator().manual_seed(0)
    net = build_net("unet", n_fields=1, n_params=0, n_dims=1, options=SMALL, generator=gen)
    assert net.width == SMALL["width"]
    # The legacy names keep resolving.
    assert get_surrogate("fno1d") is FNO1d and get_surrogate("fno3d") is FNO3d
    assert SURROGATES == {"fno1d": FNO1d, "fno2d": FNO2d, "fno3d": FNO3d}
    for n_dims in (1, 2, 3):
        assert auto_model(n_dims, stationary=False) == auto_model(n_dims, stationary=True) == "fno"
    with pytest.raises(ValueError, match="n_dims"):
        auto_model(4, stationary=False)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registry_entry_matches_its_class(name):
    info = MODELS[name]
    assert info.description and "\n" not in info.description
    assert isinstance(info.cls.resolution_invariant, bool)
    assert info.resolution_invariant is info.cls.resolution_invariant
    params = inspect.signature(info.cls.__init__).parameters
    assert list(params)[1:4] == ["n_fields", "n_params", "n_dims"]
    keywords = {k for k, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY}
    # Every constructor option is reachable from the common dict, and nothing else is claimed.
    assert info.options == keywords - {"history", "generator"}
    assert {"width", "n_layers"} <= info.options <= OPTION_NAMES


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_fno_equals_the_fixed_dimension_fnos(n_dims):
    legacy = {1: FNO1d, 2: FNO2d, 3: FNO3d}[n_dims]
    old = legacy(2, 3, 6, 3, 2, padding=1, generator=torch.Generator().manual_seed(7))
    new = FNO(
        2,
        3,
        n_dims,
        width=6,
        modes=3,
        n_layers=2,
        padding=1,
        generator=torch.Generator().manual_seed(7),
    )
    old_state, new_state = old.state_dict(), new.state_dict()
    assert list(old_state) == list(new_state)
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    u, p = random_inputs(new, GRIDS[n_dims])
    assert torch.equal(old(u, p), new(u, p))


# --- one contract, every model -----------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
class TestSurrogateContract:
    @pytest.mark.parametrize("n_dims", [1, 2, 3])
    @pytest.mark.parametrize("history", [1, 3])
    @pytest.mark.parametrize("n_params", [0, 2])
    def test_shapes(self, case, n_dims, history, n_params):
        net = build(case, n_dims=n_dims, history=history, n_params=n_params)
        assert (net.n_dims, net.n_fields, net.n_params, net.history) == (
            n_dims,
            2,
            n_params,
            history,
        )
        u, p = random_inputs(net, GRIDS[n_dims])
        out = net(u, p)
        assert out.shape == (3, 2, *GRIDS[n_dims]) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
        with pytest.raises(ValueError, match="u must be"):
            net(u[:, :1], p)  # one channel short of history * n_fields

    def test_float64(self, case):
        net = build(case, history=2).double()
        u, p = random_inputs(net, GRIDS[1], dtype=torch.float64)
        assert net(u, p).dtype == torch.float64

    def test_same_seed_same_bits_other_seed_differs(self, case):
        rng_before = torch.get_rng_state()
        a, b, c = build(case, seed=0), build(case, seed=0), build(case, seed=1)
        assert torch.equal(torch.get_rng_state(), rng_before)  # seeds are passed in, not set
        assert state_digest(a) == state_digest(b) != state_digest(c)
        u, p = random_inputs(a, GRIDS[1])
        assert torch.equal(a(u, p), b(u, p))
        assert not torch.equal(a(u, p), c(u, p))

    def test_state_dict_round_trip(self, case):
        net = build(case, n_dims=2, history=2, seed=0)
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        buffer.seek(0)
        fresh = build(case, n_dims=2, history=2, seed=5)
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
        u, p = random_inputs(net, GRIDS[2])
        assert torch.equal(fresh(u, p), net(u, p))

    def test_gradient_reaches_every_parameter(self, case):
        net = build(case, n_dims=2, history=2)
        u, p = random_inputs(net, GRIDS[2])
        target = torch.randn(3, 2, *GRIDS[2], generator=torch.Generator().manual_seed(2))
        (net(u, p) - target).square().mean().backward()
        for name, param in net.named_parameters():
            assert param.grad is not None, name
            assert torch.isfinite(param.grad).all() and param.grad.abs().max() > 0, name


def test_same_seed_same_weights_in_a_fresh_process():
    # The weights depend on the generator seed alone, not on what this process drew before.
    torch.rand(17)  # move the global RNG here only
    here = {case: state_digest(build(case, seed=3)) for case in sorted(CASES)}
    script = (
        "import torch\n"
        "from tests.contract.test_surrogates import CASES, build, state_digest\n"
        "for case in sorted(CASES):\n"
        "    print(case, state_digest(build(case, seed=3)))\n"
    )
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root
    )
    there = dict(line.split() for line in run.stdout.splitlines())
    assert there == here


# --- it can learn ------------------------------------------------------------------------------

OVERFIT_OPTIONS = {
    "width": 16,
    "n_layers": 2,
    "modes": 8,
    "n_heads": 2,
    "n_basis": 16,
    "channel_mults": (1, 2),
    "grid_shape": (32,),
}
# Registry name -> (options over OVERFIT_OPTIONS, Adam steps, peak learning rate). The error
# falls below 1e-3 only as the cosine schedule anneals the step size (Adam's jitter is of the
# order of the learning rate), after about 85 % of the steps. Measured final errors over
# initialisation seeds 1-3 (seed 1 is the one below), and seconds on one idle core: fno
# 2.3-3.1e-4 (3 s), transformer 1.3-2.6e-4 (4 s), deeponet 0.3-2.0e-4 (1 s); the U-Net costs
# ~10 ms a step, so it gets a wider, shallower net and fewer steps: 2.6-4.0e-4 (5 s). The bound
# 1e-3 leaves a 2.5x margin or more, and it discriminates: an FNO with modes=1, which has no
# wavenumber to shift, ends at 0.45-0.51.
OVERFIT_BUDGET = {
    "fno": ({}, 1500, 1e-2),
    "unet": ({"width": 32, "n_layers": 1}, 500, 2e-3),
    "transformer": ({}, 1500, 3e-2),
    "deeponet": ({}, 1000, 1e-2),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_overfits_a_single_batch(name):
    # Four smooth fields on 32 points; the target, a shift by 3 cells plus the parameter, is a
    # fixed smooth map of the input that every model can represent.
    gen = torch.Generator().manual_seed(0)
    u = fourier_series(4, 32, 3, gen)(torch.zeros(4, 1, dtype=torch.float64))
    p = 2 * torch.rand(4, 1, generator=gen) - 1
    target = torch.roll(u, 3, dims=-1) + p[:, :, None]
    extra, steps, lr = OVERFIT_BUDGET.get(name, ({}, 1000, 1e-2))
    net = build_net(
        name,
        n_fields=1,
        n_params=1,
        n_dims=1,
        options={**OVERFIT_OPTIONS, **extra},
        generator=torch.Generator().manual_seed(1),
    )
    start = relative_l2(net(u, p), target).mean().item()
    final = fit(net, u, p, target, steps, lr)
    assert final < 1e-3, (start, final)


# --- resolution invariance ---------------------------------------------------------------------

DT = 0.05  # advection speeds c in [0.5, 1.5] shift the field by 0.025 .. 0.075 domain lengths


def advection(n: int, n_x: int, seed: int):
    """Initial states ``(n, 1, n_x)``, normalised speeds ``(n, 1)``, exact states after ``DT``.

    The same seed gives the same functions on any grid: four Fourier modes, speeds
    ``c ~ U[0.5, 1.5]`` normalised to zero mean and unit variance.
    """
    gen = torch.Generator().manual_seed(seed)
    series = fourier_series(n, n_x, 4, gen)
    c = 0.5 + torch.rand(n, 1, generator=gen, dtype=torch.float64)
    return series(0 * c), ((c - 1) * math.sqrt(12)).float(), series(c * DT)


@pytest.mark.parametrize("case", sorted(CASES))
def test_resolution_invariance(case):
    name, extra = CASES[case]
    options = {**SMALL, **extra, "width": 16, "modes": 8, "grid_shape": (64,)}
    net = build_net(
        name,
        n_fields=1,
        n_params=1,
        n_dims=1,
        options=options,
        generator=torch.Generator().manual_seed(1),
    )
    u128, p128, next128 = advection(32, 128, seed=5)
    if not MODELS[name].resolution_invariant:
        try:
            net(u128, p128)
        except ValueError as err:
            assert "(64,)" in str(err) and "(128,)" in str(err)  # names the expected grid
            return
        pytest.skip(f"{name} runs on any grid but its kernels span grid cells (not invariant)")
    # Trained on 64 points: 64 samples, 300 full-batch Adam steps (2-5 s).
    u, p, target = advection(64, 64, seed=0)
    fit(net, u, p, target, steps=300, lr=1e-2)
    u64, p64, next64 = advection(32, 64, seed=5)  # the same held-out functions on both grids
    with torch.no_grad():
        out64, out128 = net(u64, p64), net(u128, p128)
    err64 = relative_l2(out64, next64).mean().item()
    err128 = relative_l2(out128, next128).mean().item()
    persistence = relative_l2(u64, next64).mean().item()  # 0.58
    # It learned (the claim below is about a trained operator, not an idle one).
    assert err64 < 0.5 * persistence, (err64, persistence)
    # The inputs hold wavenumbers <= 4, so both grids give the spectral layers the same
    # coefficients, and the Galerkin average is a spectrally accurate quadrature of the same
    # integral; what differs is only aliasing of the pointwise nonlinearities' harmonics above
    # the 64-point Nyquist and quadrature error. Measured at the shared points: 8e-8 (FNO, TFNO,
    # float32 round-off) and 5e-5 (transformer); 1e-3 leaves a 20x margin, while the U-Net,
    # whose 3-cell kernels see a different stencil, misses it by 1000x (test below).
    assert relative_l2(out128[..., ::2], out64).mean() < 1e-3
    # On the new (odd) points too the error is the model's, not the grid's: measured equal to
    # err64 to 3 digits; 5 % allows for a smooth error field sampled at twice the points.
    assert abs(err128 - err64) <= 0.05 * err64, (err64, err128)
    if name == "fno":
        # Measured 8.7e-3 (dense) and 1.6e-2 (Tucker, rank 0.25) against 0.58 for persistence.
        assert err128 < 0.03, err128


def test_resolution_check_is_not_blind():
    # The same check on a model that is not resolution invariant must fail by far.
    net = build("unet", n_params=1, n_fields=1, width=16)
    u64, p64, _ = advection(8, 64, seed=5)
    u128, p128, _ = advection(8, 128, seed=5)
    with torch.no_grad():
        gap = relative_l2(net(u128, p128)[..., ::2], net(u64, p64)).mean()
    assert gap > 0.1, gap  # measured 1.4


# --- model-specific promises -------------------------------------------------------------------


@pytest.mark.parametrize("factorization", ["tucker", "cp"])
def test_tfno_parameter_count_and_equivalence(factorization):
    def count(net):
        return sum(p.numel() for p in net.parameters())

    g = torch.Generator().manual_seed(4)
    dense = FNO(1, 1, 3, width=8, modes=4, n_layers=2, generator=g)
    tfno = FNO(
        1, 1, 3, width=8, modes=4, n_layers=2, factorization=factorization, rank=0.25, generator=g
    )
    # The spectral weights (2 x 8 x 8 x 8 x 8 x 4 complex) dominate the 3D model.
    ratio = count(tfno) / count(dense)
    assert ratio < 0.30, ratio
    layer = tfno.spectral[0]
    factor_entries = sum(p.numel() for p in layer.parameters()) // 2  # (real, imag) pairs
    assert factor_entries <= 0.25 * layer.complex_weight().numel()

    # Independent rebuild of the weight from its factors by one einsum.
    factors = [torch.view_as_complex(f) for f in layer.factorized.factors]
    rows, cols = "abcde", "ABCDE"
    if factorization == "tucker":
        spec = rows + "," + ",".join(f"{c}{r}" for r, c in zip(rows, cols, strict=True))
        expected = torch.einsum(
            f"{spec}->{cols}", torch.view_as_complex(layer.factorized.core), *factors
        )
    else:
        expected = torch.einsum(",".join(f"{c}z" for c in cols) + f"->{cols}", *factors)
    torch.testing.assert_close(layer.complex_weight(), expected, atol=1e-6, rtol=1e-5)

    # The factors are drawn so that the rebuilt entries have the dense initialisation's mean
    # square in expectation (here set to 1). Entries share factors, so one draw scatters
    # (measured standard deviation 0.41 for Tucker, 0.10 for CP); over 64 seeds the bound 0.2
    # is 3.8 standard errors for Tucker and 16 for CP.
    def mean_square(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        weight = FactorizedWeight(layer.factorized.shape, factorization, 0.25, 1.0, gen)
        return weight().abs().square().mean()

    assert abs(torch.stack([mean_square(s) for s in range(64)]).mean() - 1) < 0.2

    # The layer works: a dense layer given the rebuilt weight computes the same map.
    reference = SpectralConv3d(8, 8, modes=4, generator=g)
    with torch.no_grad():
        reference.weight.copy_(torch.view_as_real(layer.complex_weight()))
    x = torch.randn(2, 8, 8, 8, 8, generator=g)
    torch.testing.assert_close(layer(x), reference(x), atol=1e-6, rtol=1e-5)
    u, p = random_inputs(tfno, GRIDS[3])
    assert tfno(u, p).shape == (3, 1, *GRIDS[3])


@pytest.mark.parametrize("grid", [(18,), (10, 12)])
def test_unet_grid_handling(grid):
    # Three levels halve the grid twice; 18 and 10 are not multiples of 4.
    net = build("unet", n_dims=len(grid), grid=grid, channel_mults=(1, 2, 2))
    u, p = random_inputs(net, grid)
    assert net(u, p).shape == (3, 2, *grid)
    with pytest.raises(ValueError, match=r"every size >= 4; got a grid \(2,"):
        net(*random_inputs(net, (2, *grid[1:])))
    # Periodic padding keeps the map equivariant to shifts by the coarsest cell on a grid that
    # needs no padding (a check that the skip connections line up with their levels).
    net = build("unet", n_dims=1, grid=(16,), channel_mults=(1, 2, 2)).double()
    u, p = random_inputs(net, (16,), dtype=torch.float64)
    torch.testing.assert_close(
        net(torch.roll(u, 4, -1), p), torch.roll(net(u, p), 4, -1), atol=1e-12, rtol=0
    )


# The width each built network has: the FNO, U-Net and transformer keep it as ``width``,
# DeepONet as the size of its MLPs' hidden layers.
_BUILT_WIDTH = {
    "fno": lambda net: net.width,
    "unet": lambda net: net.width,
    "transformer": lambda net: net.width,
    "deeponet": lambda net: net.branch[0].out_features,
}


@pytest.mark.parametrize(
    ("name", "scale"), [("fno", 1), ("unet", 1), ("transformer", 2), ("deeponet", 8)]
)
def test_a_run_builds_each_model_width_scale_times_its_configured_width(name, scale):
    # train.width is the FNO's; the others are built wider, to comparable accuracy (see zoo).
    from pdeflow.tasks.config import load_config
    from pdeflow.tasks.surrogates.factory import build_model

    root = Path(__file__).resolve().parents[2]
    sets = [f"train.surrogate={name}", "train.width=12"]
    cfg = load_config(root / "flows" / "configs" / "demo.yaml", sets)
    n_p = len(cfg.generate.parameter_names)
    stats = {"field_mean": [0.0], "field_std": [1.0], "delta_std": [1.0],
             "param_mean": [0.5] * n_p, "param_std": [0.3] * n_p}  # fmt: skip
    assert get_model(name).width_scale == scale
    assert _BUILT_WIDTH[name](build_model(cfg, stats).net) == 12 * scale
