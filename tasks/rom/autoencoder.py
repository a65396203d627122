"""Nonlinear-manifold reduced-order model: a convolutional autoencoder and a latent regression.

A linear reduction (POD) approximates the solution set by a linear space; for transport-dominated
problems (advection, shocks) its error decays slowly with the rank, because the Kolmogorov
n-width of a family of translated profiles decays slowly (Ohlberger & Rave 2016, "Reduced basis
methods: success, limitations and future challenges", Proc. ALGORITMY). A pulse translated by a
speed ``c`` for a time ``t`` is a one-parameter curve of snapshots, yet needs ~one POD mode per
grid cell it travels. An autoencoder learns a nonlinear manifold of dimension ``latent_dim``
instead: the decoder maps a latent code to a snapshot (Lee & Carlberg 2020, "Model reduction of
dynamical systems on nonlinear manifolds using deep convolutional autoencoders", J. Comput.
Phys. 404).

The ROM is non-intrusive, as in DL-ROM (Fresca, Dede & Manzoni 2021, "A comprehensive deep
learning-based approach to reduced order modeling of nonlinear time-dependent parametrized
PDEs", J. Sci. Comput. 87:61): a network ``phi`` maps (parameters, time) to the latent code and is
trained jointly with the autoencoder on DL-ROM's loss, the sum of two mean squared errors (in
standardised field units): the prediction ``dec(phi(mu, t)) - u`` and the latent mismatch
``phi(mu, t) - enc(u)``. The encoder is needed in training only (and for the floor
``dec(enc(u))``, :meth:`AutoencoderROM.projection_errors`); a prediction is ``dec(phi(mu, t))``.
On the translating pulse of ``benchmarks/rom_autoencoder.py`` this loss gave as low a held-out
error as adding a reconstruction term ``dec(enc(u)) - u`` (0.049 against 0.047 at 40 epochs),
with one decoder pass per step instead of two.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from torch import Tensor, nn

__all__ = ["AutoencoderROM"]

MAX_LEVELS = 4  # halvings of the grid in the encoder (each doubles the receptive field)
MIN_COARSE = 4  # points per axis left on the coarsest level
CHUNK = 4096  # snapshots per forward pass in predict and projection_errors (bounds memory)


def _levels(space: tuple[int, ...]) -> int:
    """Number of times every axis of ``space`` can be halved, at most MAX_LEVELS."""
    levels = 0
    while levels < MAX_LEVELS and all(
        n % 2 ** (levels + 1) == 0 and n // 2 ** (levels + 1) >= MIN_COARSE for n in space
    ):
        levels += 1
    return levels


def _init_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """PyTorch's default uniform(+-1/sqrt(fan_in)) initialisation, drawn from ``generator``."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear | nn.Conv1d | nn.Conv2d):
                bound = 1.0 / math.sqrt(layer.weight[0].numel())
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
    return module


class _Autoencoder(nn.Module):
    """Convolutional encoder and decoder for fields ``(batch, channels, *space)``, 1D or 2D.

    Encoder: a 5-point (5x5) convolution, then ``levels`` stride-2 convolutions, then a linear
    map of the coarse grid to the latent code. The decoder mirrors it with nearest-neighbour
    upsampling followed by convolutions (no transposed convolutions: they leave checkerboard
    artefacts). ELU activations, as in Lee & Carlberg 2020.
    """

    def __init__(self, field_shape: tuple[int, ...], latent_dim: int, width: int, periodic: bool):
        super().__init__()
        channels, space = field_shape[0], tuple(field_shape[1:])
        conv = {1: nn.Conv1d, 2: nn.Conv2d}[len(space)]
        pad = {"kernel_size": 5, "padding": 2, "padding_mode": "circular" if periodic else "zeros"}
        levels = _levels(space)
        self.coarse = (width, *(n // 2**levels for n in space))
        encoder = [conv(channels, width, **pad), nn.ELU()]
        for _ in range(levels):
            encoder += [conv(width, width, stride=2, **pad), nn.ELU()]
        self.encoder = nn.Sequential(
            *encoder, nn.Flatten(), nn.Linear(math.prod(self.coarse), latent_dim)
        )
        decoder: list[nn.Module] = [nn.Linear(latent_dim, math.prod(self.coarse)), nn.ELU()]
        decoder.append(nn.Unflatten(1, self.coarse))
        for _ in range(levels):
            decoder += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                conv(width, width, **pad),
                nn.ELU(),
            ]
        self.decoder = nn.Sequential(*decoder, conv(width, channels, **pad))

    def encode(self, u: Tensor) -> Tensor:
        return self.encoder(u)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)


def _regressor(n_inputs: int, width: int, latent_dim: int) -> nn.Sequential:
    """MLP (parameters, time) -> latent code: three hidden ELU layers of ``width``."""
    layers: list[nn.Module] = []
    for n_in in (n_inputs, width, width):
        layers += [nn.Linear(n_in, width), nn.ELU()]
    return nn.Sequential(*layers, nn.Linear(width, latent_dim))


def _check_data(params, trajectories) -> tuple[np.ndarray, np.ndarray]:
    params = np.asarray(params, dtype=np.float64)
    if params.ndim != 2 or params.shape[0] < 1:
        raise ValueError(f"params must have shape (n_samples, n_params), got {params.shape}")
    trajectories = np.asarray(trajectories, dtype=np.float64)
    if trajectories.ndim != 3 or trajectories.shape[0] != params.shape[0]:
        raise ValueError(
            f"trajectories must have shape ({params.shape[0]}, n_time, n_features) to match "
            f"params, got {trajectories.shape}"
        )
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(trajectories))):
        raise ValueError("params and trajectories must be finite (no NaN or inf)")
    return params, trajectories


def _field_shape(field_shape, n_features: int) -> tuple[int, ...]:
    shape = (1, n_features) if field_shape is None else tuple(int(n) for n in field_shape)
    if len(shape) not in (2, 3) or math.prod(shape) != n_features or min(shape) < 1:
        raise ValueError(
            f"field_shape must be (channels, n_x) or (channels, n_x, n_y) with {n_features} "
            f"values in all, got {field_shape}"
        )
    return shape


def _check_setting(name: str, value, integer: bool, low: float, strict: bool = False) -> None:
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (strict and value == low):
        what = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {what} {'>' if strict else '>='} {low}, got {value!r}")


class AutoencoderROM(BaseEstimator):
    """Convolutional-autoencoder ROM with a latent regression (Lee & Carlberg 2020; DL-ROM).

    ``fit`` trains, jointly, the autoencoder on every snapshot and the regression
    ``(parameters, time) -> latent code`` on the DL-ROM loss (Fresca, Dede & Manzoni 2021);
    ``predict`` decodes the regressed code at every training time. The networks run in float32
    on standardised fields (each channel's mean and standard deviation over the training
    snapshots); inputs to the regression are the parameters mapped to [-1, 1] by the training
    min/max, and the time index mapped to [-1, 1]. Adam with a cosine learning-rate decay to
    ``lr / 100``; batches are drawn by a ``torch.Generator`` seeded with ``seed``, which also
    draws the initial weights, so a fit on the CPU repeats bit for bit. The fitted networks are
    kept on the CPU, where ``predict`` runs, so the estimator pickles and restores anywhere.

    Args:
        latent_dim: Dimension of the latent code (the manifold's), >= 1.
        epochs: Passes over the training snapshots, >= 1.
        lr: Initial Adam learning rate, > 0.
        batch_size: Snapshots per optimiser step, >= 1.
        width: Channels of every convolution, >= 1.
        regressor_width: Width of the regression MLP's three hidden layers, >= 1.
        periodic: Circular padding (a periodic grid); else zero padding.
        seed: Seed of the initial weights and of the batch order.
        device: Torch device of the training, e.g. ``"cpu"`` or ``"cuda"``.

    Attributes:
        autoencoder_: The trained encoder and decoder (``torch.nn.Module``, on the CPU).
        regressor_: The trained regression MLP.
        field_shape_: ``(channels, *space)`` of a snapshot.
        n_params_: Number of parameters.
        n_time_: Frames per trajectory.
        n_features_: Values per snapshot, ``prod(field_shape_)``.
        param_low_, param_span_: Training min and max - min of each parameter, ``(n_params,)``.
        field_mean_, field_scale_: Each channel's mean and standard deviation, ``(channels,)``.
        loss_history_: Per-epoch mean of the two loss terms (prediction, latent mismatch),
            shape ``(epochs, 2)``.

    Example:
        >>> rom = AutoencoderROM(latent_dim=4).fit(params, trajectories)  # (n, p), (n, t, f)
        >>> u = rom.predict(new_params)                                  # (m, t, f)
    """

    uses_initial_state = False

    def __init__(
        self,
        latent_dim: int = 4,
        epochs: int = 300,
        lr: float = 5e-3,
        batch_size: int = 64,
        width: int = 16,
        regressor_width: int = 64,
        periodic: bool = True,
        seed: int = 0,
        device: str = "cpu",
    ):
        self.latent_dim = latent_dim
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.width = width
        self.regressor_width = regressor_width
        self.periodic = periodic
        self.seed = seed
        self.device = device

    def _check_settings(self) -> torch.device:
        for name in ("latent_dim", "epochs", "batch_size", "width", "regressor_width"):
            _check_setting(name, getattr(self, name), integer=True, low=1)
        _check_setting("lr", self.lr, integer=False, low=0.0, strict=True)
        _check_setting("seed", self.seed, integer=True, low=0)
        if not isinstance(self.periodic, bool | np.bool_):
            raise ValueError(f"periodic must be a bool, got {self.periodic!r}")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(
                f"device must name a torch device, e.g. 'cpu', got {self.device!r}"
            ) from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for, but CUDA is not available")
        return device

    def _build(self, field_shape: tuple[int, ...], n_params: int) -> tuple[nn.Module, nn.Module]:
        autoencoder = _Autoencoder(field_shape, self.latent_dim, self.width, bool(self.periodic))
        return autoencoder, _regressor(n_params + 1, self.regressor_width, self.latent_dim)

    def fit(self, params, trajectories, field_shape=None, **context) -> AutoencoderROM:
        """Train the autoencoder and the latent regression.

        Args:
            params: Parameters, shape ``(n_samples, n_params)`` (the unit cube, or any range).
            trajectories: Solutions, shape ``(n_samples, n_time, n_features)``, each snapshot
                all fields flattened in ``(channel, *space)`` order.
            field_shape: ``(channels, n_x)`` or ``(channels, n_x, n_y)``, the snapshot's layout;
                default ``(1, n_features)``: one 1D field.
            **context: What the reduce stage gives every method; not used here.

        Returns:
            self, fitted.

        Raises:
            ValueError: If a setting or the data is invalid (shapes, NaN or inf).
            FloatingPointError: If the training loss becomes NaN or inf (lower ``lr``).
        """
        device = self._check_settings()
        params, trajectories = _check_data(params, trajectories)
        # A refit starts from nothing: no state of an earlier fit survives a failed one.
        for name in [k for k in vars(self) if k.endswith("_")]:
            delattr(self, name)
        n_samples, n_time, n_features = trajectories.shape
        shape = _field_shape(field_shape, n_features)
        fields = trajectories.reshape(n_samples * n_time, *shape)
        axes = (0, *range(2, fields.ndim))
        self.field_mean_ = fields.mean(axis=axes)
        scale = fields.std(axis=axes)
        # A constant channel carries nothing to learn; scale 1 keeps it exact and finite.
        self.field_scale_ = np.where(scale > 0, scale, 1.0)
        self.param_low_ = params.min(axis=0)
        span = params.max(axis=0) - self.param_low_
        self.param_span_ = np.where(span > 0, span, 1.0)
        self.field_shape_, self.n_params_ = shape, params.shape[1]
        self.n_time_, self.n_features_ = n_time, n_features
        generator = torch.Generator().manual_seed(int(self.seed))
        modules = [_init_(m, generator) for m in self._build(shape, params.shape[1])]
        data = self._inputs(params), self._standardise(fields)
        # Assigned only once trained, so a failed fit leaves no half-trained model to predict.
        self.loss_history_ = _train(self, *modules, *data, generator, device)
        self.autoencoder_, self.regressor_ = (m.cpu().eval() for m in modules)
        return self

    def _inputs(self, params: np.ndarray) -> Tensor:
        """Regression inputs for every (sample, time), ``(n * n_time_, n_params_ + 1)``."""
        unit = 2.0 * (params - self.param_low_) / self.param_span_ - 1.0
        times = np.linspace(-1.0, 1.0, self.n_time_) if self.n_time_ > 1 else np.zeros(1)
        both = np.column_stack([np.repeat(unit, self.n_time_, axis=0), np.tile(times, len(unit))])
        return torch.from_numpy(both.astype(np.float32))

    def _channel(self, values: np.ndarray) -> np.ndarray:
        return values.reshape(1, -1, *([1] * (len(self.field_shape_) - 1)))

    def _standardise(self, fields: np.ndarray) -> Tensor:
        scaled = (fields - self._channel(self.field_mean_)) / self._channel(self.field_scale_)
        return torch.from_numpy(scaled.astype(np.float32))

    def _physical(self, fields: Tensor, n: int) -> np.ndarray:
        out = fields.double().numpy() * self._channel(self.field_scale_)
        return (out + self._channel(self.field_mean_)).reshape(n, -1, self.n_features_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "autoencoder_"):
            raise NotFittedError(
                "This AutoencoderROM instance is not fitted yet; call 'fit' or 'from_arrays'."
            )

    def predict(self, params, initial_states=None) -> np.ndarray:
        """Predict whole trajectories on the training time grid.

        Args:
            params: Parameters, shape ``(n, n_params)``, in the units of ``fit``.
            initial_states: Ignored (this ROM does not take them; ``uses_initial_state`` is
                False); accepted so that every ROM core is called alike.

        Returns:
            Trajectories, shape ``(n, n_time, n_features)``, float64.
        """
        self._check_fitted()
        params = np.asarray(params, dtype=np.float64)
        if params.ndim != 2 or params.shape[1] != self.n_params_:
            raise ValueError(f"params must have shape (n, {self.n_params_}), got {params.shape}")
        if not np.all(np.isfinite(params)):
            raise ValueError("params must be finite (no NaN or inf)")
        inputs = self._inputs(params)
        with torch.no_grad():
            fields = [
                self.autoencoder_.decode(self.regressor_(inputs[i : i + CHUNK]))
                for i in range(0, len(inputs), CHUNK)
            ]
        return self._physical(torch.cat(fields), len(params))

    def projection_errors(self, trajectories) -> np.ndarray:
        """Per-sample relative error of encoding and decoding alone, the autoencoder's floor.

        This is the error of the manifold as the encoder finds points on it, without the
        regression. It is not a strict lower bound on :meth:`predict`'s error: the DL-ROM loss
        trains the decoder on the regressed codes and the encoder only to match them, so the
        regressed code can decode slightly better than the encoded one (on the benchmark's
        advection family at latent dimension 4: 0.031 for the ROM against 0.035 here).

        Args:
            trajectories: Solutions, shape ``(n, n_time, n_features)``.

        Returns:
            ``||dec(enc(u)) - u||_F / ||u||_F`` over time and space, shape ``(n,)``.
        """
        self._check_fitted()
        u = np.asarray(trajectories, dtype=np.float64)
        if u.ndim != 3 or u.shape[2] != self.n_features_ or not np.all(np.isfinite(u)):
            raise ValueError(
                f"trajectories must be finite with shape (n, n_time, {self.n_features_}), "
                f"got {u.shape}"
            )
        fields = self._standardise(u.reshape(-1, *self.field_shape_))
        with torch.no_grad():
            parts = [
                self.autoencoder_.decode(self.autoencoder_.encode(fields[i : i + CHUNK]))
                for i in range(0, len(fields), CHUNK)
            ]
        error = (self._physical(torch.cat(parts), len(u)) - u).reshape(len(u), -1)
        norms = np.linalg.norm(u.reshape(len(u), -1), axis=1)
        if np.any(norms == 0):
            raise ValueError("a trajectory is all zeros; its relative error is undefined")
        return np.linalg.norm(error, axis=1) / norms

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """The fitted state as named arrays (the networks' weights, the scalings) and attrs.

        Returns:
            ``(arrays, attrs)``: arrays named ``"autoencoder.<weight>"``, ``"regressor.<weight>"``
            (the torch ``state_dict`` entries, float32), ``"param_low"``, ``"param_span"``,
            ``"field_mean"``, ``"field_scale"``, ``"loss_history"``; attrs ``{"settings":
            get_params(), "field_shape", "n_params", "n_time"}``, all JSON-able.
        """
        self._check_fitted()
        arrays = {
            f"{name}.{key}": value.detach().cpu().numpy().copy()
            for name in ("autoencoder", "regressor")
            for key, value in getattr(self, f"{name}_").state_dict().items()
        }
        for name in ("param_low", "param_span", "field_mean", "field_scale", "loss_history"):
            arrays[name] = np.array(getattr(self, f"{name}_"))
        attrs = {
            "settings": self.get_params(),
            "field_shape": list(self.field_shape_),
            "n_params": int(self.n_params_),
            "n_time": int(self.n_time_),
        }
        return arrays, attrs

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], attrs: dict) -> AutoencoderROM:
        """A fitted AutoencoderROM from the output of :meth:`to_arrays`, without training.

        Raises:
            ValueError: If an array is missing or its shape does not fit the settings.
        """
        rom = cls(**attrs["settings"])
        rom.field_shape_ = tuple(int(n) for n in attrs["field_shape"])
        rom.n_params_, rom.n_time_ = int(attrs["n_params"]), int(attrs["n_time"])
        rom.n_features_ = math.prod(rom.field_shape_)
        modules = rom._build(rom.field_shape_, rom.n_params_)
        for name, module in zip(("autoencoder", "regressor"), modules, strict=True):
            prefix = f"{name}."
            state = {
                key[len(prefix) :]: torch.from_numpy(np.array(value))
                for key, value in arrays.items()
                if key.startswith(prefix)
            }
            try:
                module.load_state_dict(state)
            except RuntimeError as error:
                raise ValueError(
                    f"the stored {name} weights do not fit the settings: {error}"
                ) from error
        rom.autoencoder_, rom.regressor_ = (m.eval() for m in modules)
        for name in ("param_low", "param_span", "field_mean", "field_scale", "loss_history"):
            if name not in arrays:
                raise ValueError(f"arrays lack {name!r}")
            setattr(rom, f"{name}_", np.array(arrays[name], dtype=np.float64))
        return rom


def _train(rom, autoencoder, regressor, inputs, fields, generator, device) -> np.ndarray:
    """Adam on the DL-ROM loss; per-epoch means of its two terms, ``(epochs, 2)``."""
    autoencoder, regressor = autoencoder.to(device), regressor.to(device)
    inputs, fields = inputs.to(device), fields.to(device)
    weights = [*autoencoder.parameters(), *regressor.parameters()]
    optimizer = torch.optim.Adam(weights, lr=rom.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, rom.epochs, rom.lr / 100)
    n, history = len(fields), np.zeros((rom.epochs, 2))
    for epoch in range(rom.epochs):
        order = torch.randperm(n, generator=generator).to(device)
        totals = torch.zeros(2, device=device)
        for start in range(0, n, rom.batch_size):
            batch = order[start : start + rom.batch_size]
            u, phi = fields[batch], regressor(inputs[batch])
            prediction = ((autoencoder.decode(phi) - u) ** 2).mean()
            terms = torch.stack([prediction, ((phi - autoencoder.encode(u)) ** 2).mean()])
            optimizer.zero_grad()
            terms.sum().backward()
            optimizer.step()
            totals += terms.detach() * len(batch)
        history[epoch] = (totals / n).cpu().numpy()
        if not np.all(np.isfinite(history[epoch])):
            raise FloatingPointError(
                f"AutoencoderROM training diverged: non-finite loss {history[epoch].tolist()} at "
                f"epoch {epoch}; lower lr (now {rom.lr:g})"
            )
        schedule.step()
    return history
