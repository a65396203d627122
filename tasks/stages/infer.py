"""Stage ``infer``: the posterior of the sampled parameters given observations of the field.

``pdeflow run infer`` on a store whose generate and reduce stages are complete. The prior is the
generate config's parameter distribution, so in the unit cube (each parameter through its
marginal's CDF, ``design.to_unit``) it is uniform, and the chains walk there: a proposal outside
the cube is rejected without a model call. The likelihood is Gaussian, with one noise standard
deviation for every observation. The observations are a stored sample's trajectory at sensor
points and saved frames with seeded Gaussian noise (``synthetic``: the sample's parameters are
the truth the posterior is compared with), or a user's file of positions, times and values.

Two samplers, both on the solver, each in ``n_chains`` chains on the Dask workers:

- ``da``, delayed acceptance (Christen & Fox 2005): the reduce stage's ROM screens each proposal,
  and only those it accepts are solved; the second acceptance step corrects for the ROM's error,
  so the chain targets the solver's posterior exactly;
- ``mh``, random-walk Metropolis on the solver alone, the baseline.

Each chain runs in segments of ``checkpoint_every`` steps, one Dask task per segment chained on
the previous one's state; a segment's draws and the chain's state (RNG included) are written to
the store before the next starts. The stage's units are these segments: a killed run resumes
every chain after its last saved segment, and resumed chains equal uninterrupted ones draw for
draw. Acceptance rates, solver calls, the effective sample size per solver call, R-hat (ArviZ)
and the posterior against the truth go to the record; the draws to the ``infer`` group.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg

from pdeflow.storage import RunStore, StageRecord
from pdeflow.storage.fsio import read_checked, write_checked
from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.design import to_physical
from pdeflow.tasks.stages.base import Outcome, Stage, StageRun
from pdeflow.tasks.stages.infer_observations import Observations, load_observations
from pdeflow.tasks.stages.integrity import UPSTREAM, record_problems

GROUP = "infer"
METHOD_TEXT = {"da": "delayed acceptance (ROM screens)", "mh": "Metropolis (solver only)"}
# Seeds of the chains' starting points and generators, per method: the two methods start their
# chain c at the same point, and draw their proposals from different streams.
_START_STREAM, _METHOD_STREAM = 1, {"da": 2, "mh": 3}
# The warm start (``warm_start``): ROM evaluations on a Sobol' pool, then ROM-only steps.
WARM_POOL, WARM_STEPS = 256, 2000
# What a segment counts over its kept steps, from the chain state's counter of each.
KEPT_COUNTERS = {
    "accepted": "accepted",
    "screened": "screened",
    "fine_calls": "fine_calls",
    "screen_calls": "screen_calls",
    "outside": "rejected_outside",
}


class InferenceError(RuntimeError):
    """A chain could not go on (a solver failure or a NaN log-likelihood), named."""


def _units(cfg: PipelineConfig) -> list[tuple[str, int, int]]:
    ic = cfg.infer
    return [(m, c, s) for m in ic.methods for c in range(ic.n_chains) for s in range(ic.n_segments)]


def chain_key(cfg: PipelineConfig, store: RunStore) -> str:
    """What a saved segment belongs to: this stage's settings and the exact upstream records
    (a refitted ROM screens differently, so its segments cannot be reused)."""
    from pdeflow.tasks.stages import hash_of

    ups = {up: store.record(up).digest() for up in UPSTREAM[GROUP] if store.record(up)}
    text = json.dumps({"hash": hash_of(cfg, GROUP), "upstream": ups}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def segment_path(store: RunStore, method: str, chain: int, segment: int) -> Path:
    return (
        store.work_dir(GROUP) / "chains" / f"{method}-{chain:03d}" / f"segment-{segment:06d}.json"
    )


def read_segment(store: RunStore, method: str, chain: int, segment: int, key: str) -> dict | None:
    """A saved segment of this key, checked; None when absent, damaged or of another config."""
    return read_checked(segment_path(store, method, chain, segment), key)


def _steps(cfg: PipelineConfig, segment: int) -> tuple[int, int]:
    ic = cfg.infer
    start = segment * ic.checkpoint_every
    return start, min(start + ic.checkpoint_every, ic.burn_in + ic.n_steps)


@dataclass
class Posterior:
    """A store's inverse problem, built once per worker process (``_posterior``).

    Attributes:
        rom_error: mean and variance of the ROM's error at each observation, measured on the
            store's test samples (``rom_error``): the screening likelihood adds the mean to the
            ROM's prediction and the variance to the noise's (an approximation error model,
            after Kaipio & Somersalo 2007; Cui, Fox & O'Sullivan 2011 use one for delayed
            acceptance). Without it a ROM whose error exceeds the noise would screen out the
            solver's posterior, and the second stage would reject most of what passed.
    """

    cfg: PipelineConfig
    obs: Observations
    solver: object
    rom: object
    rom_error: tuple[np.ndarray, np.ndarray]

    def residual(self, model, u: np.ndarray) -> np.ndarray:
        traj = model.trajectory(to_physical(self.cfg.generate, u[None]))[0]
        return self.obs.observe(traj) - self.obs.values

    def log_likelihood(self, u: np.ndarray) -> float:
        """The solver's Gaussian log-likelihood (up to a constant)."""
        r = self.residual(self.solver, u) / self.obs.sigma
        return float(-0.5 * np.dot(r, r))

    def log_screen(self, u: np.ndarray, error: tuple[np.ndarray, np.ndarray] | None = None):
        """The ROM's log-likelihood with an approximation error model (mean, variance per
        observation of solver minus ROM); default: ``rom_error``'s."""
        return self.screen_of(self.residual(self.rom, u), error or self.rom_error)

    def screen_of(self, rom_residual: np.ndarray, error) -> float:
        """The screening log-likelihood given an error model: (mean, variance per
        observation), or (mean, lower Cholesky factor of noise plus error covariance)."""
        mean, spread = error
        r = rom_residual + mean
        if spread.ndim == 1:
            return float(-0.5 * np.sum(r * r / (self.obs.sigma**2 + spread)))
        z = scipy.linalg.solve_triangular(spread, r, lower=True)
        return float(-0.5 * np.dot(z, z))


# Solver-ROM pairs a chain's own error model needs before it replaces the test split's.
MIN_PAIRS = 20


# Observations up to which the error model keeps a full covariance (a matrix of this size per
# chain in every saved segment); beyond, variances only.
FULL_COVARIANCE_MAX = 512


class ErrorModel:
    """A chain's own approximation error model: the running mean and covariance (Welford) of
    the solver's minus the ROM's prediction at the observations, over the proposals both
    evaluated during the burn-in, where the chain is (the adaptive error model of Cui, Fox &
    O'Sullivan 2011; the enhanced error model of Kaipio & Somersalo 2007 uses the covariance).
    Frozen after the burn-in, so the kept chain is Markov and delayed acceptance exact. Until
    ``MIN_PAIRS`` pairs, the test split's (``rom_error``), measured over the whole prior.

    The covariance matters: the ROM's error is a smooth field, so its values at neighbouring
    sensors move together, and a model of independent errors lets their coherent part shift
    the screening posterior away from the solver's. On the demo's Burgers (benchmarks/infer.py)
    variances alone left chains stuck along (a2, nu): 5x fewer effective samples per step than
    Metropolis for 5x fewer solver calls, a gain per solver call of 1.06x; with the covariance
    the gain is 2.4x. The sample covariance is shrunk towards its diagonal with weight
    m / (n + m) (m observations, n pairs), as it is estimated from few pairs."""

    def __init__(self, prior, n: int = 0, mean=None, m2=None, inflation: float = 1.0):
        self.prior, self.n, self.inflation = prior, n, inflation
        size = len(prior[0])
        self.full = size <= FULL_COVARIANCE_MAX
        shape = (size, size) if self.full else (size,)
        self.mean = np.zeros(size) if mean is None else np.asarray(mean, dtype=np.float64)
        self.m2 = np.zeros(shape) if m2 is None else np.asarray(m2, dtype=np.float64)
        self._factor = None

    def update(self, d: np.ndarray) -> None:
        self.n += 1
        delta = d - self.mean
        self.mean = self.mean + delta / self.n
        after = d - self.mean
        self.m2 = self.m2 + (np.outer(delta, after) if self.full else delta * after)
        self._factor = None

    def current(self, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """(mean, variances) or (mean, Cholesky factor of sigma^2 I + covariance)."""
        if self.n < MIN_PAIRS:
            return self.prior
        cov = self.m2 / (self.n - 1) * self.inflation
        if not self.full:
            return self.mean, cov
        if self._factor is None:
            m = len(self.mean)
            weight = m / (self.n + m)
            shrunk = (1 - weight) * cov + weight * np.diag(np.diag(cov))
            self._factor = np.linalg.cholesky(shrunk + sigma**2 * np.eye(m))
        return self.mean, self._factor

    def to_json(self) -> dict:
        return {"n": self.n, "mean": self.mean.tolist(), "m2": self.m2.tolist()}


# Test samples the ROM's error model is measured on, at most.
ERROR_SAMPLES = 64


def rom_error(store: RunStore, gen, obs: Observations, rom_model) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance, per observation, of (stored trajectory - ROM prediction) over the
    test split (each sample from its own initial state); zeros when it holds fewer than 2."""
    from pdeflow.tasks.design import to_unit

    test = store.sample_indices("test")[:ERROR_SAMPLES]
    m = len(obs.values)
    if len(test) < 2:
        return np.zeros(m), np.zeros(m)
    truth = store.read_samples(test).astype(np.float64)
    params = store.read_coords(list(gen.parameter_names))[test]
    rom = rom_model.rom
    initial = truth[:, 0].reshape(len(test), -1) if rom.uses_initial_state else None
    flat = rom.predict(to_unit(gen, params), initial)
    pred = flat.reshape(truth.shape)
    errors = np.stack([obs.observe(t) - obs.observe(p) for t, p in zip(truth, pred, strict=True)])
    return errors.mean(axis=0), errors.var(axis=0, ddof=1)


@functools.lru_cache(maxsize=4)
def _posterior(path: str, name: str, cfg_json: str) -> Posterior:
    from pdeflow.tasks.model_server import build_model

    cfg = PipelineConfig.model_validate_json(cfg_json)
    store = RunStore(path, name)
    obs = load_observations(cfg, store)
    # Every model starts from the observed sample's initial state (its seed, or its stored
    # first frame for a user simulator), as serve-model's models do.
    solver = build_model(store, "solver", sample=obs.sample)
    rom = build_model(store, "rom", sample=obs.sample)
    return Posterior(cfg, obs, solver, rom, rom_error(store, cfg.generate, obs, rom))


def inside(u: np.ndarray) -> bool:
    """The prior's support in the unit cube (open: the marginals' quantiles are finite)."""
    return bool(np.all((u > 0.0) & (u < 1.0)))


def warm_start(path: str, name: str, cfg_json: str, key: str) -> dict:
    """Dask task: every chain's starting point and first proposal, from the ROM alone.

    Both samplers start there, so neither pays the solver for the walk from a prior draw to the
    posterior. The ROM's log-likelihood is evaluated on ``WARM_POOL`` scrambled Sobol' points of
    the unit cube, and an adaptive Metropolis chain on the ROM's posterior runs ``WARM_STEPS``
    steps from the best; its adapted scale and covariance are the chains' first proposal, and
    ``n_chains`` of its draws, evenly spaced over its second half, their starting points. The
    solver's posterior differs from the ROM's by the ROM's error, which the burn-in adapts to.
    """
    from scipy.stats import qmc

    from pdeflow.tasks.uq import mcmc

    post = _posterior(path, name, cfg_json)
    ic, d = post.cfg.infer, len(post.cfg.generate.parameter_names)

    rom = post.log_screen

    pool = qmc.Sobol(d, scramble=True, seed=np.random.default_rng([ic.seed, _START_STREAM]))
    points = np.clip(pool.random(WARM_POOL), 1e-6, 1 - 1e-6)
    values = np.array([rom(p) for p in points])
    if not np.any(np.isfinite(values)):
        raise InferenceError("the ROM's log-likelihood is not finite at any of the warm-up points")
    best = points[int(np.nanargmax(np.where(np.isfinite(values), values, -np.inf)))]
    seed = int(np.random.SeedSequence([ic.seed, _START_STREAM, 1]).generate_state(1)[0])
    state = mcmc.start_chain(best, rom, seed=seed, scale=0.1, support=inside)
    draws, state = mcmc.run_chain(state, WARM_STEPS, rom, support=inside, adapt=True)
    half = draws[WARM_STEPS // 2 :]
    starts = half[np.linspace(0, len(half) - 1, ic.n_chains).round().astype(int)]
    return {
        "key": key,
        "starts": starts.tolist(),
        "cov": state.cov.tolist(),
        "scale": state.scale,
        "rom_calls": WARM_POOL + state.fine_calls,
        "rom_acceptance": state.accepted / WARM_STEPS,
    }


def warm_path(store: RunStore) -> Path:
    return store.work_dir(GROUP) / "warm-start.json"


def run_segment(
    path: str, name: str, cfg_json: str, key: str, method: str, chain: int, segment: int, state
) -> dict:
    """Dask task: run one segment of one chain from ``state`` (the previous segment's result,
    or None for the first), save it, and return what the next segment needs."""
    from pdeflow.tasks.pdes.errors import BlowUpError
    from pdeflow.tasks.uq import mcmc

    post = _posterior(path, name, cfg_json)
    cfg, store = post.cfg, RunStore(path, name)
    blow_ups, adapting = [0], [False]
    saved = (state or {}).get("error_model") or {}
    errors = ErrorModel(
        post.rom_error, saved.get("n", 0), saved.get("mean"), saved.get("m2"),
        inflation=cfg.infer.error_inflation,
    )  # fmt: skip
    last_screen: dict = {}  # the ROM's residual at the last screened proposal

    def fine(u):
        try:
            r = post.residual(post.solver, u)
        except BlowUpError:
            # The solver cannot evaluate here: reject, and say how often in the record.
            blow_ups[0] += 1
            return -np.inf
        if adapting[0] and last_screen.get("u") == u.tobytes():
            errors.update(r - last_screen["r"])
        r = r / post.obs.sigma
        return float(-0.5 * np.dot(r, r))

    def screen(u):
        r = post.residual(post.rom, u)
        last_screen.update(u=u.tobytes(), r=r)
        return post.screen_of(r, errors.current(post.obs.sigma))

    screen = screen if method == "da" else None
    t0 = time.perf_counter()
    if state is None:
        warm = read_checked(warm_path(store), key)
        if warm is None:
            raise InferenceError("the warm start is missing from the store")
        seed = np.random.SeedSequence([cfg.infer.seed, _METHOD_STREAM[method], chain])
        chain_state = mcmc.start_chain(
            np.asarray(warm["starts"][chain]), fine, screen,
            seed=int(seed.generate_state(1)[0]), cov=np.asarray(warm["cov"]),
            scale=warm["scale"], support=inside,
        )  # fmt: skip
    else:
        chain_state = mcmc.ChainState.from_json(state["state"])
    start, stop = _steps(cfg, segment)
    burn = cfg.infer.burn_in
    draws = []
    kept = dict.fromkeys(("steps", *KEPT_COUNTERS), 0)
    for lo, hi, adapt in ((start, min(stop, burn), True), (max(start, burn), stop, False)):
        if hi <= lo:
            continue
        if screen is not None:
            # The error model may have moved since the chain's screen value was computed.
            chain_state = chain_state.copy()
            chain_state.log_screen = screen(chain_state.x)
            chain_state.screen_calls += 1
        adapting[0] = adapt
        before = chain_state
        try:
            part, chain_state = mcmc.run_chain(
                chain_state, hi - lo, fine, screen, support=inside, adapt=adapt
            )
        except FloatingPointError as err:
            raise InferenceError(f"{method} chain {chain}, steps {lo}-{hi}: {err}") from None
        draws.append(part)
        if not adapt:
            kept["steps"] += hi - lo
            for name, counter in KEPT_COUNTERS.items():
                kept[name] += getattr(chain_state, counter) - getattr(before, counter)
    payload = {
        "key": key,
        "method": method,
        "chain": chain,
        "segment": segment,
        "steps": [start, stop],
        "draws": np.concatenate(draws).tolist(),
        "state": chain_state.to_json(),
        "kept": kept,
        "error_model": errors.to_json(),
        "blow_ups": blow_ups[0],
        "seconds": time.perf_counter() - t0,
    }
    write_checked(segment_path(store, method, chain, segment), payload)
    return payload


def _chain_segments(run: StageRun) -> dict[tuple[str, int], list[int]]:
    """Per chain, the segments still to run: from its first one not saved intact on (a saved
    segment after a missing one was run from a state now lost, so it runs again)."""
    key = run.state.setdefault("key", chain_key(run.cfg, run.store))
    ic, out = run.cfg.infer, {}
    for method in ic.methods:
        for chain in range(ic.n_chains):
            first = ic.n_segments
            for s in range(ic.n_segments):
                if read_segment(run.store, method, chain, s, key) is None:
                    first = s
                    break
            if first < ic.n_segments:
                out[(method, chain)] = list(range(first, ic.n_segments))
    return out


class Infer(Stage):
    name = "infer"
    upstream = UPSTREAM["infer"]
    unit = "segments"

    def check(self, cfg: PipelineConfig) -> None:
        if not cfg.generate.parameter_names:
            raise ValueError(
                "generate.parameters: infer samples the posterior of the sampled parameters, "
                "and this config samples none"
            )
        store = RunStore.named(cfg.store)
        if store.layout() is not None and store.record("generate") is not None:
            load_observations(cfg, store)  # a bad file or sample is refused before any compute

    def problems(self, run: StageRun, record: StageRecord, deep: bool = True) -> list[str]:
        return record_problems(run.store, self.name, record, deep)

    def total(self, run: StageRun) -> int:
        return len(_units(run.cfg))

    def pending(self, run: StageRun) -> list[int]:
        todo = _chain_segments(run)
        run.state["todo"] = todo
        units = _units(run.cfg)
        return [i for i, (m, c, s) in enumerate(units) if s in todo.get((m, c), ())]

    def compute(self, run: StageRun, units: list[int]) -> None:
        from distributed import as_completed

        cfg, store = run.cfg, run.store
        todo, key = run.state["todo"], run.state["key"]
        cfg_json = cfg.model_dump_json()
        total = self.total(run)
        done = total - len(units)
        run.report(done, total)
        if todo and read_checked(warm_path(store), key) is None:
            fut = run.client.submit(
                warm_start, str(store.path), store.name, cfg_json, key, pure=False
            )
            write_checked(warm_path(store), fut.result())
        futures = []
        for (method, chain), segments in todo.items():
            state = None
            if segments[0] > 0:
                state = read_segment(store, method, chain, segments[0] - 1, key)
            for s in segments:
                state = run.client.submit(
                    run_segment,
                    str(store.path), store.name, cfg_json, key, method, chain, s, state,
                    pure=False,
                    key=f"infer-{method}-{chain}-{s}-{key}-{time.time_ns()}",
                )  # fmt: skip
                futures.append(state)
        errors = []
        for fut in as_completed(futures):
            if fut.status == "error":
                errors.append(str(fut.exception()))
            else:
                done += 1
                run.report(done, total)
        if errors:
            raise InferenceError(f"{len(errors)} segment(s) failed; the first: {sorted(errors)[0]}")
        run.state["computed"] = len(units)

    def finish(self, run: StageRun) -> Outcome:
        from pdeflow.tasks.stages.infer_results import summarize

        return summarize(run)
