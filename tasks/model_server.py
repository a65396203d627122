"""A finished store's solver, surrogate or ROM as a UM-Bridge model (``pdeflow serve-model``).

UM-Bridge (Seelinger et al. 2023, "UM-Bridge: Uncertainty quantification and modeling bridge",
JOSS 8(83), 4748) lets UQ codes call a model over HTTP. Each model here takes one input vector
and returns one output vector:

- input: the design's parameters in the order of ``generate.parameter_names``, in their natural
  units (the values the store's coordinates hold), each within the design's ``[low, high]``;
- output: the whole trajectory ``(time, channel, *space)`` flattened in C order (the store's
  frames, fields and grid), or a scalar quantity of interest (``QOIS``) as a vector of length 1.

All three models start from the same initial state, so their outputs are comparable: the one the
generate stage draws (``solve.initial_state``) for the given parameters and one seed. For the
``modes`` family the state is the parameters' own sum of sine modes (the seed plays no part);
for the random families (``fourier``, ``grf``, ``steps``) and a PDE's own initial state it is
drawn from the seed, which is ``seed`` if given, else that of stored sample ``sample`` (default
0): with that sample's parameters every model then starts from the sample's stored first frame.
A user simulator (``pde: custom``) draws its own initial state from the seed; its surrogate and
ROM start from stored sample ``sample``'s first frame.

The surrogate also serves ``gradient`` and ``apply_jacobian`` by torch autograd; the solver and
the ROM claim neither.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import umbridge
from pydantic import ValidationError
from torch import Tensor
from torch.autograd import forward_ad

from pdeflow.storage import RunStore, StageNotReady
from pdeflow.tasks.config import ConfigError, GenerateConfig, PipelineConfig
from pdeflow.tasks.config_io import format_validation_error
from pdeflow.tasks.design import to_unit
from pdeflow.tasks.solve import initial_state, solve_parameters
from pdeflow.tasks.stages import hash_of
from pdeflow.tasks.stages.integrity import changed_upstream
from pdeflow.tasks.stages.models import load_rom, load_surrogate
from pdeflow.tasks.stages.quantify import final_energy
from pdeflow.tasks.surrogates.ensemble import Ensemble
from pdeflow.tasks.surrogates.training import rollout

# The stage whose record (config, files) each served model comes from.
STAGE_OF = {"solver": "generate", "surrogate": "train", "rom": "reduce"}
# Relative step of the central differences of the initial state (see ``initial_jacobian``).
INITIAL_FD_STEP = 1e-6


class InputError(ValueError):
    """A parameter vector a served model refuses; the message names the parameter and range."""


@dataclass(frozen=True)
class QoI:
    """A scalar quantity of interest of a trajectory and its derivative.

    Attributes:
        value: trajectories (n, time, channel, *space) -> (n,), float64.
        derivative: one trajectory (time, channel, *space) -> d value / d trajectory, same shape.
    """

    value: Callable[[np.ndarray], np.ndarray]
    derivative: Callable[[np.ndarray], np.ndarray]


def _final_energy_derivative(traj: np.ndarray) -> np.ndarray:
    """d/du of ``final_energy`` = 0.5 mean(u(T)^2): u(T) / n on the last frame, 0 elsewhere."""
    out = np.zeros(traj.shape, dtype=np.float64)
    out[-1] = traj[-1] / traj[-1].size
    return out


# The quantify stage's QoI (``stages.quantify.final_energy``), so served values match its tables.
QOIS = {"final_energy": QoI(final_energy, _final_energy_derivative)}


def get_qoi(name: str | None) -> QoI | None:
    """The QoI ``name``; None serves the whole field. Unknown names raise a ValueError."""
    if name is None:
        return None
    if name not in QOIS:
        raise ValueError(f"unknown QoI {name!r}; valid: {sorted(QOIS)} (or none for the field)")
    return QOIS[name]


def recorded_config(store: RunStore, stage: str) -> PipelineConfig:
    """The config ``stage`` ran with, from its record, once it is complete and current.

    Raises:
        StageNotReady: the stage is missing, not complete, or older than an upstream stage.
        ConfigError: its recorded config no longer validates.
    """
    rec = store.record(stage)
    if rec is None or rec.status != "complete":
        status = "missing" if rec is None else rec.status
        raise StageNotReady(
            f"store {store.name!r} has no complete {stage} stage ({status}); "
            f"run `pdeflow run {stage}` first"
        )
    up = changed_upstream(store, stage, rec)
    if up is not None:
        raise StageNotReady(
            f"store {store.name!r}: {up} changed since {stage} ran; run `pdeflow run {stage}`"
        )
    fields = PipelineConfig.model_fields
    try:
        sections = {k: fields[k].annotation.model_validate(v) for k, v in rec.config.items()}
    except ValidationError as err:
        raise ConfigError(
            f"store {store.name!r}: the config of its {stage} record does not validate: "
            + format_validation_error(err)
        ) from None
    # The record holds only the sections the stage depends on; the others keep their defaults,
    # unchecked against them (the default train.modes may not fit a small grid the ROM ran on).
    # The store name is a label for messages: a store given by path may have any name.
    cfg = PipelineConfig.model_construct(store=store.name, **sections)
    if hash_of(cfg, stage) != rec.config_hash:
        raise StageNotReady(
            f"store {store.name!r}: the {stage} record's config does not give its hash "
            f"{rec.config_hash}; run `pdeflow run {stage}` again"
        )
    return cfg


@dataclass(frozen=True)
class InitialState:
    """The initial state every served model of a store starts from (see the module docstring).

    Attributes:
        seed: the per-sample seed the generate stage's initial state is drawn from.
        frame: a stored first frame (channel, *space), for user simulators only, else None.
        text: one line saying which state this is.
    """

    seed: int
    frame: np.ndarray | None
    text: str

    def states(self, gen: GenerateConfig, params: np.ndarray, dtype: torch.dtype) -> Tensor:
        """Initial states (1, channel, *space) for parameters (1, n_params), on the CPU."""
        if self.frame is not None:
            return torch.as_tensor(self.frame[None], dtype=dtype)
        seeds = np.array([self.seed], dtype=np.int64)
        return initial_state(gen, params, seeds, torch.device("cpu"), dtype)


def choose_initial_state(
    store: RunStore, gen: GenerateConfig, sample: int | None, seed: int | None, uses_frame: bool
) -> InitialState:
    """The served models' initial state: drawn from ``seed``, or from stored sample ``sample``'s
    seed (default sample 0); ``uses_frame``: a user simulator's stored frame is needed.

    Raises:
        ValueError: both given, ``sample`` not in the store, or a seed where a frame is needed.
    """
    if sample is not None and seed is not None:
        raise ValueError("give --sample or --seed, not both")
    if seed is not None and uses_frame:
        raise ValueError(
            "pde custom: its simulator draws its own initial states, so the surrogate and the "
            "ROM start from a stored sample's first frame: choose it with --sample, not --seed"
        )
    ic = gen.initial_condition
    kind = "simulator's own" if ic is None else ic.kind
    if seed is not None:
        return InitialState(int(seed), None, f"the {kind} initial state drawn from seed {seed}")
    seeds = store.read_coords(["seed"])[:, 0]
    index = 0 if sample is None else sample
    if not 0 <= index < len(seeds):
        raise ValueError(
            f"--sample {index}: store {store.name!r} holds samples 0..{len(seeds) - 1}"
        )
    own = int(seeds[index])
    if uses_frame:
        frame = store.read_samples(np.array([index]))[0, 0]
        return InitialState(own, frame, f"stored sample {index}'s first frame (seed {own})")
    if kind == "modes":
        names = ", ".join(gen.parameter_names[-len(gen.modes) :])
        return InitialState(own, None, f"the modes initial state of the amplitudes {names}")
    return InitialState(
        own, None, f"the {kind} initial state drawn from seed {own} (stored sample {index}'s)"
    )


class StoreModel(umbridge.Model, metaclass=abc.ABCMeta):
    """A store's model as a UM-Bridge model: parameters in, field or QoI out.

    Args:
        name: the model's UM-Bridge name.
        gen: the generate config of the store.
        start: the initial state (``choose_initial_state``).
        qoi: serve this scalar instead of the field; None serves the field.
    """

    def __init__(self, name: str, gen: GenerateConfig, start: InitialState, qoi: QoI | None):
        super().__init__(name)
        self.gen, self.start, self.qoi = gen, start, qoi
        self.shape = (gen.n_frames, len(gen.fields), *gen.grid)

    def get_input_sizes(self, config=None) -> list[int]:
        return [len(self.gen.parameter_names)]

    def get_output_sizes(self, config=None) -> list[int]:
        return [1 if self.qoi is not None else math.prod(self.shape)]

    def supports_evaluate(self) -> bool:
        return True

    def check(self, parameters) -> np.ndarray:
        """The input as parameters (1, n_params), float64.

        Raises:
            InputError: not one vector of ``n_params`` finite numbers, each in its design range.
        """
        names, specs = self.gen.parameter_names, self.gen.parameter_specs
        if not isinstance(parameters, list | tuple) or len(parameters) != 1:
            raise InputError(f"expected one input vector ({', '.join(names)})")
        try:
            x = np.asarray(parameters[0], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"the input must be numbers ({', '.join(names)})") from None
        if x.shape != (len(names),):
            raise InputError(f"expected {len(names)} parameters ({', '.join(names)}), got {x.size}")
        for name, spec, value in zip(names, specs, x, strict=True):
            if not spec.low <= value <= spec.high:  # also refuses NaN
                raise InputError(
                    f"parameter {name} = {value:g} is outside the design's range "
                    f"[{spec.low:g}, {spec.high:g}]"
                )
        return x[None]

    @abc.abstractmethod
    def trajectory(self, params: np.ndarray) -> np.ndarray:
        """The model's trajectory (1, time, channel, *space) for parameters (1, n_params)."""

    def __call__(self, parameters, config=None) -> list[list[float]]:
        traj = self.trajectory(self.check(parameters))
        if self.qoi is not None:
            return [[float(self.qoi.value(traj)[0])]]
        return [np.asarray(traj, dtype=np.float64).reshape(-1).tolist()]


class SolverModel(StoreModel):
    """The store's PDE solver (or user simulator), one sample per call."""

    def trajectory(self, params: np.ndarray) -> np.ndarray:
        seeds = np.array([self.start.seed], dtype=np.int64)
        return solve_parameters(self.gen, params, seeds)


class RomModel(StoreModel):
    """The reduce stage's ROM, given the unit-cube parameters (and the initial state if it
    takes one), as the quantify stage calls it."""

    def __init__(self, name, gen, start, qoi, rom):
        super().__init__(name, gen, start, qoi)
        self.rom = rom

    def trajectory(self, params: np.ndarray) -> np.ndarray:
        initial = None
        if self.rom.uses_initial_state:
            u0 = self.start.states(self.gen, params, getattr(torch, self.gen.dtype))
            initial = u0.numpy().reshape(1, -1)
        flat = self.rom.predict(to_unit(self.gen, params), initial)
        return flat.reshape(1, flat.shape[1], *self.shape[1:])


# The CDF of each marginal (``sampling.MARGINALS``) in torch, for the gradient's chain rule.
_UNIT = {
    "uniform": lambda x, lo, hi: (x - lo) / (hi - lo),
    "loguniform": lambda x, lo, hi: (torch.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo)),
}


def _with_tangent(value: Tensor, graph: Tensor) -> Tensor:
    """``value`` exactly, with the derivatives of ``graph`` (which computes the same thing)."""
    return value + (graph - graph.detach())


class SurrogateModel(StoreModel):
    """The train stage's surrogate rolled out from the initial state, with derivatives.

    The derivatives follow the whole map: physical parameters -> unit cube (the marginals'
    CDFs) -> the network's parameter input, and -> the initial state when it depends on them
    (the ``modes`` amplitudes; its Jacobian by ``initial_jacobian``) -> the rollout.
    """

    def __init__(self, name, gen, start, qoi, model):
        super().__init__(name, gen, start, qoi)
        self.model = model
        self.members = model.members if isinstance(model, Ensemble) else [model]
        for member in self.members:
            member.eval().requires_grad_(False)
        self.dtype = next(model.parameters()).dtype

    def supports_gradient(self) -> bool:
        return True

    def supports_apply_jacobian(self) -> bool:
        return True

    def trajectory(self, params: np.ndarray) -> np.ndarray:
        """As the quantify stage's predictor: ``training.rollout``, the members' mean for an
        ensemble."""
        u0 = self.start.states(self.gen, params, self.dtype)
        p = torch.as_tensor(to_unit(self.gen, params), dtype=self.dtype)
        n = self.gen.n_frames - 1
        if isinstance(self.model, Ensemble):
            return self.model.rollout(u0, p, n)[0].numpy()
        return rollout(self.model, u0, p, n).numpy()

    def _graph(self, x: Tensor) -> Tensor:
        """The trajectory (time, channel, *space) as a differentiable function of ``x``, the
        physical parameters (n_params,) in float64; its value equals ``trajectory``'s."""
        params = x.detach().numpy()[None]
        specs = self.gen.parameter_specs
        cdf = [_UNIT[s.distribution](x[j], s.low, s.high) for j, s in enumerate(specs)]
        unit = _with_tangent(
            torch.as_tensor(to_unit(self.gen, params)[0]), torch.stack(cdf) if cdf else x
        )
        u0 = self.start.states(self.gen, params, self.dtype)[0]
        if self.start.frame is None:
            jac = torch.as_tensor(initial_jacobian(self.gen, params, self.start.seed))
            u0 = _with_tangent(u0.double(), u0.double() + torch.tensordot(x, jac, dims=1))
        u0, p = u0.to(self.dtype)[None], unit.to(self.dtype)[None]
        trajs = [_rollout_graph(m, u0, p, self.gen.n_frames - 1) for m in self.members]
        return torch.stack(trajs).mean(0)[0].double()

    def _sensitivity(self, traj: Tensor, sens: np.ndarray) -> Tensor:
        """The cotangent of the trajectory for an output cotangent ``sens``."""
        if self.qoi is None:
            return torch.as_tensor(sens.reshape(traj.shape))
        return torch.as_tensor(sens[0] * self.qoi.derivative(traj.detach().numpy()))

    def gradient(self, out_wrt, in_wrt, parameters, sens, config=None) -> list[float]:
        """``sens^T J``: J = d output / d parameters, shape (n_params,)."""
        x = torch.as_tensor(self.check(parameters)[0]).requires_grad_(True)
        traj = self._graph(x)
        cotangent = self._sensitivity(traj, np.asarray(sens, dtype=np.float64))
        (grad,) = torch.autograd.grad(traj, x, grad_outputs=cotangent)
        return grad.tolist()

    def apply_jacobian(self, out_wrt, in_wrt, parameters, vec, config=None) -> list[float]:
        """``J vec`` by forward-mode AD: shape (output size,)."""
        x = torch.as_tensor(self.check(parameters)[0])
        v = torch.as_tensor(np.asarray(vec, dtype=np.float64))
        if v.shape != x.shape:
            raise InputError(f"vec must have {len(x)} entries, got {v.numel()}")
        with forward_ad.dual_level():
            traj = self._graph(forward_ad.make_dual(x, v))
            value, tangent = forward_ad.unpack_dual(traj)
        if tangent is None:  # no parameter reaches the output
            tangent = torch.zeros_like(value)
        if self.qoi is None:
            return tangent.reshape(-1).tolist()
        return [float((self.qoi.derivative(value.numpy()) * tangent.numpy()).sum())]


def _rollout_graph(model, u0: Tensor, p: Tensor, n_steps: int) -> Tensor:
    """``training.rollout`` for history 1 with the autograd graph kept: (B, n_steps + 1, C,
    *space)."""
    frames = [u0]
    for _ in range(n_steps):
        frames.append(model(frames[-1], p))
    return torch.stack(frames, dim=1)


def initial_jacobian(gen: GenerateConfig, params: np.ndarray, seed: int) -> np.ndarray:
    """d u0 / d parameters of the generate stage's initial state: (n_params, channel, *space).

    Central differences of ``solve.initial_state`` in float64, step ``INITIAL_FD_STEP`` times each
    parameter's range: exact to rounding for the ``modes`` amplitudes (u0 is linear in them) and
    zero for parameters the state does not depend on (all of them for the seeded families).
    """
    seeds = np.array([seed], dtype=np.int64)
    cpu = torch.device("cpu")
    out = []
    for j, spec in enumerate(gen.parameter_specs):
        h = INITIAL_FD_STEP * (spec.high - spec.low)
        up, down = params.copy(), params.copy()
        up[0, j] += h
        down[0, j] -= h
        diff = initial_state(gen, up, seeds, cpu, torch.float64)
        diff = diff - initial_state(gen, down, seeds, cpu, torch.float64)
        out.append(diff[0].numpy() / (2 * h))
    shape = (len(gen.fields), *gen.grid)
    return np.stack(out) if out else np.zeros((0, *shape))


def build_model(
    store: RunStore,
    kind: str,
    qoi: str | None = None,
    sample: int | None = None,
    seed: int | None = None,
) -> StoreModel:
    """The ``kind`` model (solver, surrogate or rom) of a finished store, named ``kind``.

    Args:
        store: the run store.
        kind: ``solver``, ``surrogate`` or ``rom``.
        qoi: a name in ``QOIS`` to serve that scalar; None serves the whole trajectory.
        sample: the stored sample whose seed (or, for ``pde: custom``, first frame) gives the
            initial state; default 0.
        seed: the seed to draw the initial state from instead.

    Raises:
        ValueError: an unknown kind or QoI, a bad sample or seed choice, a surrogate trained on
            several frames.
        StoreError: the stage is not complete and current (``StageNotReady``).
        StoreDamaged: the model's files fail their checks.
    """
    if kind not in STAGE_OF:
        raise ValueError(f"unknown model {kind!r}; valid: {list(STAGE_OF)}")
    quantity = get_qoi(qoi)
    cfg = recorded_config(store, STAGE_OF[kind])
    gen = cfg.generate
    if kind == "surrogate" and cfg.train.history > 1:
        raise ValueError(
            f"train.history = {cfg.train.history}: the surrogate needs the first "
            f"{cfg.train.history} frames of every trajectory, which only the solver makes; "
            "serve-model serves surrogates trained with history 1"
        )
    uses_frame = kind != "solver" and not gen.problem.draws_initial_states
    start = choose_initial_state(store, gen, sample, seed, uses_frame)
    if kind == "solver":
        return SolverModel(kind, gen, start, quantity)
    if kind == "surrogate":
        return SurrogateModel(kind, gen, start, quantity, load_surrogate(cfg, store))
    return RomModel(kind, gen, start, quantity, load_rom(cfg, store))
