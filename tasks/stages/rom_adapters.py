"""The reduce methods beyond the POD regressions, on the run store; and the adapter registry.

Each adapter maps the stage's data to its core's ``fit`` (unit-cube or physical parameters,
trajectories in memory, the PDE's operators) and says, before any compute, why a config cannot
use it (``refusal``): a ROM of the parameters alone cannot follow a random initial state, an
intrusive ROM needs the PDE's own right-hand side, the certified basis an affine operator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pdeflow.tasks.config import PipelineConfig
from pdeflow.tasks.design import to_physical
from pdeflow.tasks.rom.factory import POD_REGRESSIONS
from pdeflow.tasks.rom.methods import get_method
from pdeflow.tasks.stages.rom_methods import (
    Adapter,
    PodRegression,
    ReduceData,
    initial_state_is_random,
    rank_ladder,
    relative_errors,
)

__all__ = ["ADAPTERS", "SavedCore", "adapter_for"]

# BOP-DMD's bagging trials (Sashidhar & Kutz 2022 use 100; 20 keeps the fit in seconds while
# still giving an eigenvalue spread).
BOP_TRIALS = 20


class SavedCore(Adapter):
    """A method whose fitted core saves itself as arrays (``to_arrays`` / ``from_arrays``) in
    the stage's group ``reduce_model``, and whose floor is its ``projection_errors``.
    Subclasses name the core's class and build it in ``fit``."""

    core: str  # "module:Class" under pdeflow.tasks.rom, imported when first used

    def core_class(self) -> type:
        import importlib

        module, cls = self.core.split(":")
        return getattr(importlib.import_module(f"pdeflow.tasks.rom.{module}"), cls)

    def floor(self, model, truth):
        return model.projection_errors(truth)

    def to_arrays(self, model) -> tuple[dict[str, np.ndarray], dict]:
        """The fitted state for the store."""
        return model.to_arrays()

    def from_arrays(self, cfg: PipelineConfig, arrays: dict, attrs: dict) -> Any:
        """The fitted core back from ``to_arrays``' output."""
        return self.core_class().from_arrays(arrays, attrs)


class CoreAdapter(SavedCore):
    """A saved core that maps unit-cube parameters alone to trajectories
    (``predict(params)``), so it cannot follow a random initial state."""

    random_initial_advice = "use pod-rbf with reduce.initial_modes instead"

    def refusal(self, cfg):
        if why := super().refusal(cfg):
            return why
        if initial_state_is_random(cfg.generate):
            return (
                f"{self.name} maps the parameters alone to a trajectory, but each sample's "
                f"initial state is drawn at random from its seed; {self.random_initial_advice}"
            )
        return None

    def predict(self, model, data, indices, truth):
        return model.predict(data.p_unit[indices])

    def predictor(self, model, cfg):
        return lambda params, initial_states=None: model.predict(params)


class DMDAdapter(CoreAdapter):
    """Parametric DMD (PyDMD) on the training trajectories in memory, unit-cube parameters."""

    name = "dmd"
    core = "dmd:ParametricDMDRom"
    random_initial_advice = (
        "use pod-rbf with reduce.initial_modes, or pod-galerkin, which take the initial state"
    )

    def fit(self, data: ReduceData):
        rc = data.cfg.reduce
        rom = self.core_class()(
            svd_rank=rc.dmd_rank,
            dmd=rc.dmd_variant,
            num_trials=BOP_TRIALS if rc.dmd_variant == "bop" else 0,
            seed=data.cfg.generate.seed,
        )
        return rom.fit(data.p_unit[data.train], data.trajectories(data.train), dt=data.frame_dt)


class GalerkinAdapter(SavedCore):
    """POD-Galerkin (with DEIM) of the PDE's own semi-discrete form; physical parameters."""

    name = "pod-galerkin"
    core = "galerkin:PODGalerkin"

    def refusal(self, cfg):
        if why := super().refusal(cfg):
            return why
        problem = cfg.generate.problem
        if not hasattr(getattr(problem, "cls", None), "semi_discrete"):
            return (
                f"pod-galerkin projects the PDE's own right-hand side, which "
                f"{cfg.generate.pde} does not give (1D spectral PDEs do: burgers, allen_cahn, "
                "fisher_kpp, ...)"
            )
        return None

    def fit(self, data: ReduceData):
        gen, rc = data.cfg.generate, data.cfg.reduce
        rom = self.core_class()(rank=rc.galerkin_rank, deim_points=rc.deim_points or None)
        return rom.fit(
            data.physical(data.train),
            data.trajectories(data.train),
            pde=gen.pde,
            grid=gen.grid_spec,
            dt=gen.internal_dt,
            times=data.times,
            coefficient_names=gen.parameter_names,
            constants=dict(gen.constants),
        )

    def predict(self, model, data, indices, truth):
        return model.predict(data.physical(indices), truth[:, 0])

    def predictor(self, model, cfg):
        gen = cfg.generate
        return lambda params, initial_states=None: model.predict(
            to_physical(gen, params), initial_states
        )

    def uses_initial_state(self, model) -> bool:
        return True


def _fit_autoencoder(rom, params: np.ndarray, trajectories: np.ndarray, field_shape):
    """Dask task: train the autoencoder ROM on a worker (a plain function of arrays)."""
    return rom.fit(params, trajectories, field_shape=field_shape)


class AutoencoderAdapter(CoreAdapter):
    """A convolutional autoencoder and a regression to its latent code, trained on a Dask
    worker when the stage has a cluster; unit-cube parameters."""

    name = "autoencoder"
    core = "autoencoder:AutoencoderROM"

    def fit(self, data: ReduceData):
        gen, rc = data.cfg.generate, data.cfg.reduce
        rom = self.core_class()(latent_dim=rc.latent_dim, epochs=rc.ae_epochs, seed=gen.seed)
        rom.set_params(periodic=gen.problem.boundary == "periodic")
        args = (data.p_unit[data.train], data.trajectories(data.train))
        shape = (len(gen.fields), *gen.grid)
        if data.client is None:
            return _fit_autoencoder(rom, *args, shape)
        future = data.client.submit(_fit_autoencoder, rom, *args, shape, pure=False)
        return future.result()


class ReducedBasisAdapter(SavedCore):
    """The certified reduced basis of an affine elliptic problem (the thermal blocks);
    physical parameters, the error bound in the energy norm."""

    name = "rb"
    core = "rb:ReducedBasis"

    def refusal(self, cfg):
        from pdeflow.tasks.pdes.thermal_block import ThermalBlock

        cls = getattr(cfg.generate.problem, "cls", None)
        if not (isinstance(cls, type) and issubclass(cls, ThermalBlock)):
            return (
                f"rb needs an affinely parametrized elliptic problem, A(mu) = sum_q mu_q A_q; "
                f"{cfg.generate.pde} is not one (thermal_block_2x2 and thermal_block_3x2 are)"
            )
        if set(cfg.generate.parameter_names) != set(cls.info.coefficients):
            return "rb needs every block's mu sampled (generate.parameters mu_1 .. mu_Q)"
        return None

    @staticmethod
    def operator(cfg: PipelineConfig):
        from pdeflow.tasks.pdes.thermal_block import affine_operator

        gen = cfg.generate
        return affine_operator(gen.problem.cls.blocks, gen.grid[0], gen.domain_length)

    def _mu(self, cfg: PipelineConfig, params_unit: np.ndarray) -> np.ndarray:
        """Physical mu in the block order (mu_1 .. mu_Q), whatever the config's column order."""
        gen = cfg.generate
        physical = to_physical(gen, params_unit)
        order = [gen.parameter_names.index(c) for c in gen.problem.cls.info.coefficients]
        return physical[:, order]

    def fit(self, data: ReduceData):
        rc, train = data.cfg.reduce, data.train
        rb = self.core_class()(
            n_basis=rc.rb_max_basis,
            tol=rc.rb_tol,
            training_size=rc.rb_training_size,
            seed=data.cfg.generate.seed,
        )
        mu = self._mu(data.cfg, data.p_unit[train])
        data.operator = self.operator(data.cfg)  # reused by the evaluation's energy norms
        return rb.fit(mu, data.trajectories(train), operator=data.operator)

    def predict(self, model, data, indices, truth):
        return model.predict(self._mu(data.cfg, data.p_unit[indices]))

    def estimate(self, model, data, indices, truth):
        mu = self._mu(data.cfg, data.p_unit[indices])
        measured = model.energy_errors(mu, truth, operator=data.operator)
        return model.error_estimate(mu), measured

    def rank_errors(self, model, data, indices, truth):
        mu = self._mu(data.cfg, data.p_unit[indices])
        return {
            n: (float(relative_errors(model.predict(mu, n_basis=n), truth).mean()), None)
            for n in rank_ladder(model.n_basis_)
        }

    def floor(self, model, truth):
        return None  # no projection floor: the a posteriori bound is its certificate

    def predictor(self, model, cfg):
        return lambda params, initial_states=None: model.predict(self._mu(cfg, params))


_OTHERS = (DMDAdapter(), GalerkinAdapter(), AutoencoderAdapter(), ReducedBasisAdapter())
ADAPTERS: dict[str, Adapter] = {name: PodRegression(name) for name in POD_REGRESSIONS} | {
    a.name: a for a in _OTHERS
}


def adapter_for(name: str) -> Any:
    """The adapter of reduce method ``name``.

    Raises:
        ValueError: unknown name (lists the valid ones).
    """
    get_method(name)
    return ADAPTERS[name]
