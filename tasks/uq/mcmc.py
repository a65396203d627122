"""Random-walk Metropolis and delayed-acceptance MCMC with resumable chain states.

Delayed acceptance (DA; Christen & Fox 2005) screens each proposal with a cheap log-density
``log_screen`` (a ROM, a surrogate, a coarse grid) and evaluates the expensive ``log_target`` only
for proposals that pass; the second accept/reject step corrects for the screen's error, so the
chain targets ``log_target`` exactly whatever the screen. We write the sampler ourselves because
tinyDA, the maintained implementation, pins ``numpy<2`` and ``arviz<0.19``, which conflict with
this project's numpy 2.

A chain runs in segments (:func:`run_chain`), and everything a segment needs, the position, its
log-densities, the adaptation state and the PCG64 bit-generator state, is in :class:`ChainState`,
which round-trips through JSON exactly: a chain resumed from a saved state draws bit-identically
to one never interrupted. For that to hold on another machine too, the few operations whose
rounding could depend on the BLAS build or the CPU's vector units (the proposal's Cholesky factor
and matrix-vector product) are written as plain float arithmetic in a fixed order, and scalar
``exp``/``log`` use :mod:`math`.

References:
    Christen, J. A. & Fox, C. (2005). Markov chain Monte Carlo using an approximation. Journal of
    Computational and Graphical Statistics 14(4), 795-810.
    Haario, H., Saksman, E. & Tamminen, J. (2001). An adaptive Metropolis algorithm. Bernoulli
    7(2), 223-242.
    Andrieu, C. & Thoms, J. (2008). A tutorial on adaptive MCMC. Statistics and Computing 18(4),
    343-373.
    Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. & Buerkner, P.-C. (2021). Rank-
    normalization, folding, and localization: an improved R-hat for assessing convergence of
    MCMC. Bayesian Analysis 16(2), 667-718.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LogDensity = Callable[[np.ndarray], float]
Support = Callable[[np.ndarray], bool]

FORMAT = "pdeflow.mcmc.ChainState/1"
# Roberts, Gelman & Gilks (1997): 0.234 is the optimal acceptance rate of random-walk Metropolis
# as d grows (0.44 at d = 1). For DA the same target applies to the stage-1 (screen) rate: with
# a screen equal to the target, DA is random-walk Metropolis on it, so 0.234 is its optimum per
# step. Per fine call a lower stage-1 rate (longer jumps) would do better still, since a
# screened-out proposal costs no fine call, but the stage-2 acceptance, set by the screen's error
# between x and y, falls as jumps grow. A higher target such as 0.4 would spend fine calls on
# short moves, so we keep 0.234 for both; pass target_accept to choose otherwise.
TARGET_ACCEPT = 0.234
# Adaptation gains (Andrieu & Thoms 2008, Algorithm 4): log(scale) moves by (n + 1)^-0.6 times
# the acceptance error; the mean and covariance by (1 + n / 10)^-0.6 / 10, which starts at 0.1
# (a first draw cannot collapse the shape to rank one) and, being non-summable, forgets the
# initial cov and the burn-in transient.
_RM_EXPONENT = 0.6
_COV_WINDOW = 10.0
# Relative ridge added at each covariance update (times the mean variance): keeps the shape
# positive definite when a chain sits still, at no visible cost to the proposal.
_RIDGE = 1e-10


@dataclass(eq=False)
class ChainState:
    """Everything a chain needs to continue: position, log-densities, counters, adaptation, RNG.

    Attributes:
        x: Current position, shape ``(d,)``, float64.
        log_target: Fine log-density at ``x`` (finite).
        log_screen: Screening (coarse) log-density at ``x``; ``None`` for plain Metropolis.
        step: Steps done.
        accepted: Proposals accepted by the final (fine) decision.
        screened: Proposals passing stage 1 (DA only; equal to the fine calls after the start).
        rejected_outside: Proposals outside the support, rejected with no model call.
        fine_calls: Evaluations of ``log_target`` made by this chain, the start's included.
        screen_calls: Evaluations of ``log_screen``, the start's included.
        scale: Random-walk scale (adapted only while adapting).
        cov: Proposal shape covariance, shape ``(d, d)``, symmetric positive definite.
        mean: Running mean of the covariance adaptation, shape ``(d,)``.
        n_adapt: Draws the adaptation has seen.
        rng: ``numpy.random.PCG64().state`` of the chain's generator.
    """

    x: np.ndarray
    log_target: float
    log_screen: float | None
    step: int
    accepted: int
    screened: int
    rejected_outside: int
    fine_calls: int
    screen_calls: int
    scale: float
    cov: np.ndarray
    mean: np.ndarray
    n_adapt: int
    rng: dict

    def to_json(self) -> dict:
        """A dict of lists, floats, ints and strings that ``json.dumps`` writes as strict JSON.

        Floats keep all 17 significant digits through JSON, so :meth:`from_json` restores the
        state exactly. Non-finite floats become the strings ``"inf"``, ``"-inf"``, ``"nan"`` and
        the PCG64's 128-bit integers hexadecimal strings, which JSON readers with 64-bit
        integers (JavaScript, jq) would otherwise round.
        """
        rng = copy.deepcopy(self.rng)
        rng["state"] = {key: hex(int(value)) for key, value in rng["state"].items()}
        return {
            "format": FORMAT,
            "x": [_float_out(v) for v in self.x.tolist()],
            "log_target": _float_out(self.log_target),
            "log_screen": None if self.log_screen is None else _float_out(self.log_screen),
            **{name: int(getattr(self, name)) for name in _COUNTERS},
            "scale": _float_out(self.scale),
            "cov": [[_float_out(v) for v in row] for row in self.cov.tolist()],
            "mean": [_float_out(v) for v in self.mean.tolist()],
            "rng": rng,
        }

    @classmethod
    def from_json(cls, data: dict) -> ChainState:
        """Rebuild a state written by :meth:`to_json` (after ``json.dumps``/``json.loads``).

        Raises:
            ValueError: On a different format tag, missing keys, inconsistent shapes or a
                generator other than PCG64.
        """
        if data.get("format") != FORMAT:
            raise ValueError(f"not a chain state: format {data.get('format')!r}, need {FORMAT!r}")
        missing = [key for key in (*_FLOATS, *_COUNTERS, "log_screen", "rng") if key not in data]
        if missing:
            raise ValueError(f"chain state lacks {missing}")
        rng = copy.deepcopy(data["rng"])
        if rng.get("bit_generator") != "PCG64":
            raise ValueError(f"chain state rng must be PCG64, got {rng.get('bit_generator')!r}")
        rng["state"] = {
            key: int(value, 0) if isinstance(value, str) else int(value)
            for key, value in rng["state"].items()
        }
        x = np.array([float(v) for v in data["x"]], dtype=np.float64)
        cov = np.array([[float(v) for v in row] for row in data["cov"]], dtype=np.float64)
        mean = np.array([float(v) for v in data["mean"]], dtype=np.float64)
        if x.ndim != 1 or cov.shape != (x.size, x.size) or mean.shape != x.shape:
            raise ValueError(f"chain state shapes x {x.shape}, cov {cov.shape}, mean {mean.shape}")
        screen = data["log_screen"]
        return cls(
            x=x,
            log_target=float(data["log_target"]),
            log_screen=None if screen is None else float(screen),
            **{name: int(data[name]) for name in _COUNTERS},
            scale=float(data["scale"]),
            cov=cov,
            mean=mean,
            rng=rng,
        )

    def copy(self) -> ChainState:
        """A deep copy (arrays and the RNG state included)."""
        return copy.deepcopy(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChainState):
            return NotImplemented
        return self.to_json() == other.to_json()


_COUNTERS = (
    "step",
    "accepted",
    "screened",
    "rejected_outside",
    "fine_calls",
    "screen_calls",
    "n_adapt",
)
_FLOATS = ("x", "log_target", "scale", "cov", "mean")


def _float_out(value: float) -> float | str:
    value = float(value)
    return value if math.isfinite(value) else str(value)


def start_chain(
    x0: np.ndarray,
    log_target: LogDensity,
    log_screen: LogDensity | None = None,
    *,
    seed: int | np.random.SeedSequence,
    cov: np.ndarray | None = None,
    scale: float | None = None,
    support: Support | None = None,
) -> ChainState:
    """Evaluate the log-densities at the start and set up a chain's state.

    Args:
        x0: Starting position, shape ``(d,)``, finite, inside ``support``.
        log_target: Fine log-density (up to a constant), ``(d,) -> float``; ``-inf`` outside its
            support.
        log_screen: Screening log-density for delayed acceptance; ``None`` for plain Metropolis.
        seed: Seed of the chain's PCG64 generator, an int >= 0 or a ``SeedSequence`` (for
            example one of ``SeedSequence(seed).spawn(n_chains)``).
        cov: Proposal shape covariance, shape ``(d, d)``, symmetric positive definite; default
            the identity.
        scale: Random-walk scale, > 0; default ``2.38 / sqrt(d)`` (Roberts, Gelman & Gilks 1997).
        support: ``support(x) -> bool``; a start outside it is an error.

    Returns:
        The state before the first step (``step = 0``, ``fine_calls = 1``).

    Raises:
        ValueError: On a bad ``x0``, ``seed``, ``cov`` or ``scale``, a start outside the
            support, or a non-finite log-density at the start.
    """
    x = np.array(x0, dtype=np.float64)
    if x.ndim != 1 or x.size < 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"x0 must be a finite vector of shape (d,), d >= 1; got shape {x.shape}")
    d = x.size
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer | np.random.SeedSequence):
        raise ValueError(f"seed must be an int >= 0 or a SeedSequence, got {seed!r}")
    if not isinstance(seed, np.random.SeedSequence) and seed < 0:
        raise ValueError(f"seed must be an int >= 0 or a SeedSequence, got {seed}")
    cov = np.eye(d) if cov is None else _check_cov(cov, d)
    scale = 2.38 / math.sqrt(d) if scale is None else float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    if support is not None and not support(x):
        raise ValueError(f"x0 = {x.tolist()} is outside the support")
    x.flags.writeable = False
    lt = _evaluate(log_target, x, "log_target", start=True)
    ls = None if log_screen is None else _evaluate(log_screen, x, "log_screen", start=True)
    return ChainState(
        x=x.copy(),
        log_target=lt,
        log_screen=ls,
        step=0,
        accepted=0,
        screened=0,
        rejected_outside=0,
        fine_calls=1,
        screen_calls=0 if ls is None else 1,
        scale=scale,
        cov=cov,
        mean=x.copy(),
        n_adapt=0,
        rng=np.random.PCG64(seed).state,
    )


def run_chain(
    state: ChainState,
    n_steps: int,
    log_target: LogDensity,
    log_screen: LogDensity | None = None,
    *,
    support: Support | None = None,
    adapt: bool = False,
    target_accept: float | None = None,
) -> tuple[np.ndarray, ChainState]:
    """Run ``n_steps`` of random-walk Metropolis, or delayed acceptance if ``log_screen`` is given.

    The proposal is ``y = x + scale * L z``, ``z ~ N(0, I)``, ``L = chol(cov)``. Metropolis
    accepts with ``min(1, exp(lt(y) - lt(x)))``. Delayed acceptance (Christen & Fox 2005)
    accepts at stage 1 with ``min(1, exp(ls(y) - ls(x)))`` and only then evaluates ``lt(y)`` and
    accepts with ``min(1, exp(lt(y) - lt(x) + ls(x) - ls(y)))``. Proposals outside ``support``
    are rejected without calling either density. Every step draws ``z`` and two uniforms,
    whatever happens, so the random stream does not depend on the outcomes.

    With ``adapt=True`` (burn-in only: an adapted chain is not Markov) each step then moves
    ``log(scale)`` by Robbins-Monro towards ``target_accept``, using the step's acceptance
    probability (stage 1's for DA), and updates the running mean and ``cov`` (Haario et al.
    2001, in the form of Andrieu & Thoms 2008, Algorithm 4).

    Args:
        state: State from :func:`start_chain` or an earlier call; not modified.
        n_steps: Steps to run, an int >= 1.
        log_target: The fine log-density given to :func:`start_chain`.
        log_screen: The screening log-density given to :func:`start_chain`, or ``None``.
        support: ``support(x) -> bool``; proposals outside are rejected (``rejected_outside``).
        adapt: Adapt ``scale`` and ``cov`` (burn-in).
        target_accept: Acceptance rate the adaptation aims at, in (0, 1); default 0.234 (see
            ``TARGET_ACCEPT``).

    Returns:
        ``(draws, new_state)``: the positions after each step, shape ``(n_steps, d)``, and the
        state after the last.

    Raises:
        ValueError: On a bad ``n_steps`` or ``target_accept``, or a ``log_screen`` that does not
            match how the chain was started.
        FloatingPointError: If a log-density returns NaN or ``+inf`` at a proposal (``-inf`` is
            a legal rejection).
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int | np.integer) or n_steps < 1:
        raise ValueError(f"n_steps must be an int >= 1, got {n_steps!r}")
    target = TARGET_ACCEPT if target_accept is None else float(target_accept)
    if not 0 < target < 1:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    if (log_screen is None) != (state.log_screen is None):
        started = "without" if state.log_screen is None else "with"
        raise ValueError(f"the chain was started {started} log_screen; pass the same to run_chain")
    s = state.copy()
    d = s.x.size
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = s.rng
    chol = _cholesky(_check_cov(s.cov, d))
    draws = np.empty((n_steps, d))
    for i in range(n_steps):
        z = rng.standard_normal(d)
        u = rng.random(2)
        y = s.x + s.scale * _matvec(chol, z)
        y.flags.writeable = False
        alpha = _transition(s, y, u, log_target, log_screen, support)
        s.step += 1
        if adapt:
            _adapt(s, alpha, target)
            chol = _cholesky(s.cov)
        draws[i] = s.x
    s.rng = rng.bit_generator.state
    return draws, s


def _transition(s, y, u, log_target, log_screen, support) -> float:
    """One accept/reject decision on ``s`` in place; the acceptance probability adapted on."""
    if support is not None and not support(y):
        s.rejected_outside += 1
        return 0.0
    if log_screen is None:
        lt = _evaluate(log_target, y, "log_target")
        s.fine_calls += 1
        log_alpha = lt - s.log_target
        if _accepts(u[0], log_alpha):
            s.x, s.log_target = y.copy(), lt
            s.accepted += 1
        return _probability(log_alpha)
    ls = _evaluate(log_screen, y, "log_screen")
    s.screen_calls += 1
    log_alpha1 = ls - s.log_screen
    if _accepts(u[0], log_alpha1):
        s.screened += 1
        lt = _evaluate(log_target, y, "log_target")
        s.fine_calls += 1
        if _accepts(u[1], lt - s.log_target + s.log_screen - ls):
            s.x, s.log_target, s.log_screen = y.copy(), lt, ls
            s.accepted += 1
    return _probability(log_alpha1)


def _adapt(s: ChainState, alpha: float, target: float) -> None:
    """Robbins-Monro step on log(scale) and Haario-style running mean and covariance."""
    n = s.n_adapt
    s.scale = s.scale * math.exp((n + 1.0) ** -_RM_EXPONENT * (alpha - target))
    gain = (1.0 + n / _COV_WINDOW) ** -_RM_EXPONENT / _COV_WINDOW
    dx = s.x - s.mean
    ridge = _RIDGE * sum(float(v) for v in np.diag(s.cov)) / s.x.size
    # (1 - g) C + g (dx dx^T + eps I): positive definite whenever C is, and exactly symmetric
    # since elementwise products commute.
    s.cov = (1.0 - gain) * s.cov + gain * (np.outer(dx, dx) + ridge * np.eye(s.x.size))
    s.mean = s.mean + gain * dx
    s.n_adapt = n + 1


def _evaluate(fn: LogDensity, x: np.ndarray, name: str, start: bool = False) -> float:
    value = np.asarray(fn(x), dtype=np.float64)
    if value.shape != ():
        raise ValueError(f"{name} must return a scalar, got shape {value.shape}")
    value = float(value)
    if start and not math.isfinite(value):
        raise ValueError(f"{name}(x0) = {value}: the start needs a finite log-density")
    if math.isnan(value) or value == math.inf:
        raise FloatingPointError(
            f"{name} returned {value} at x = {x.tolist()}: a log-density must be finite or -inf "
            "(a solver failure there must be fixed, not rejected silently)"
        )
    return value


def _accepts(u: float, log_alpha: float) -> bool:
    return (math.log(u) if u > 0 else -math.inf) < log_alpha


def _probability(log_alpha: float) -> float:
    return 1.0 if log_alpha >= 0 else math.exp(log_alpha)


def _check_cov(cov: np.ndarray, d: int) -> np.ndarray:
    cov = np.array(cov, dtype=np.float64)
    if cov.shape != (d, d) or not np.all(np.isfinite(cov)):
        raise ValueError(f"cov must be a finite ({d}, {d}) matrix, got shape {cov.shape}")
    if not np.allclose(cov, cov.T, rtol=1e-10, atol=0.0):
        raise ValueError("cov must be symmetric")
    cov = 0.5 * (cov + cov.T)
    _cholesky(cov)
    return cov


def _cholesky(a: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor by the Cholesky-Banachiewicz loop in Python floats.

    LAPACK's result may differ in the last bit between BLAS builds and CPUs; a resumed chain on
    another worker must factor the covariance exactly as the first one did. ``d`` is the number
    of parameters, so the ``d^3 / 6`` Python operations cost microseconds.
    """
    d = a.shape[0]
    rows = a.tolist()
    low = [[0.0] * d for _ in range(d)]
    for i in range(d):
        for j in range(i + 1):
            acc = rows[i][j]
            for k in range(j):
                acc -= low[i][k] * low[j][k]
            if i == j:
                if not acc > 0:
                    raise ValueError("cov must be positive definite (its Cholesky factor failed)")
                low[i][i] = math.sqrt(acc)
            else:
                low[i][j] = acc / low[j][j]
    return np.array(low)


def _matvec(low: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``low @ z`` summed column by column in a fixed order (no BLAS, see :func:`_cholesky`)."""
    out = low[:, 0] * z[0]
    for j in range(1, z.size):
        out = out + low[:, j] * z[j]
    return out


def gaussian_posterior(
    prior_mean: np.ndarray,
    prior_cov: np.ndarray,
    G: np.ndarray,  # noqa: N803 - the forward operator's usual name
    noise_cov: np.ndarray,
    y: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of ``u ~ N(m, C)`` given ``y = G u + e``, ``e ~ N(0, Gamma)``: the reference.

    ``K = C G^T (G C G^T + Gamma)^-1``, mean ``m + K (y - G m)``, covariance ``C - K G C``
    (the Kalman form, which needs no inverse of ``C``).

    Args:
        prior_mean: ``m``, shape ``(d,)``.
        prior_cov: ``C``, shape ``(d, d)``, symmetric positive definite.
        G: Forward operator, shape ``(n_obs, d)``.
        noise_cov: ``Gamma``, shape ``(n_obs, n_obs)``, symmetric positive definite.
        y: Data, shape ``(n_obs,)``.

    Returns:
        ``(mean, cov)``, shapes ``(d,)`` and ``(d, d)``.

    Raises:
        ValueError: On inconsistent shapes.
    """
    m, c = np.asarray(prior_mean, float), np.asarray(prior_cov, float)
    g, gamma, y = np.asarray(G, float), np.asarray(noise_cov, float), np.asarray(y, float)
    d, n_obs = m.size, y.size
    if (m.shape, c.shape, g.shape, gamma.shape, y.shape) != (
        (d,),
        (d, d),
        (n_obs, d),
        (n_obs, n_obs),
        (n_obs,),
    ):
        raise ValueError(
            f"shapes prior_mean {m.shape}, prior_cov {c.shape}, G {g.shape}, noise_cov "
            f"{gamma.shape}, y {y.shape} do not fit (d,), (d, d), (n_obs, d), (n_obs, n_obs), "
            "(n_obs,)"
        )
    gain = np.linalg.solve(g @ c @ g.T + gamma, g @ c).T
    cov = c - gain @ g @ c
    return m + gain @ (y - g @ m), 0.5 * (cov + cov.T)


def diagnostics(chains: np.ndarray, names: list[str]) -> dict:
    """ArviZ's convergence diagnostics and summaries of several chains, per parameter.

    Args:
        chains: Draws, shape ``(n_chains, n_draws, d)``, burn-in removed; ``n_draws >= 4``.
        names: ``d`` distinct parameter names.

    Returns:
        ``{name: {"ess_bulk", "ess_tail", "r_hat", "mcse_mean", "mean", "sd", "q05", "q50",
        "q95"}}`` as floats: bulk and tail effective sample sizes and the rank-normalised split
        R-hat (Vehtari et al. 2021), the Monte Carlo standard error of the mean, and the mean,
        standard deviation (ddof=1) and 5/50/95% quantiles of the pooled draws.

    Raises:
        ValueError: On a bad shape, non-finite draws or names that do not match.
    """
    chains = np.asarray(chains, dtype=np.float64)
    if chains.ndim != 3 or chains.shape[1] < 4:
        raise ValueError(f"chains must have shape (n_chains, n_draws >= 4, d), got {chains.shape}")
    if len(names) != chains.shape[2] or len(set(names)) != len(names):
        raise ValueError(f"need {chains.shape[2]} distinct names, got {names}")
    if not np.all(np.isfinite(chains)):
        raise ValueError("chains contain non-finite draws")
    az = _arviz()
    data = az.convert_to_dataset({name: chains[:, :, i] for i, name in enumerate(names)})
    ess_bulk, ess_tail = az.ess(data, method="bulk"), az.ess(data, method="tail")
    r_hat, mcse = az.rhat(data), az.mcse(data, method="mean")
    out = {}
    for i, name in enumerate(names):
        pooled = chains[:, :, i].ravel()
        q05, q50, q95 = np.quantile(pooled, [0.05, 0.5, 0.95])
        out[name] = {
            "ess_bulk": float(ess_bulk[name]),
            "ess_tail": float(ess_tail[name]),
            "r_hat": float(r_hat[name]),
            "mcse_mean": float(mcse[name]),
            "mean": float(pooled.mean()),
            "sd": float(pooled.std(ddof=1)),
            "q05": float(q05),
            "q50": float(q50),
            "q95": float(q95),
        }
    return out


def _arviz():
    """ArviZ, imported on first use (it pulls in matplotlib, a second or so)."""
    with warnings.catch_warnings():
        # ArviZ 0.23 announces its 1.0 refactor with a FutureWarning once a day.
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz
