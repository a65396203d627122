"""Sampling designs and marginal distributions for the parameters of a PDE.

A campaign draws its parameters in two steps: :func:`sample_unit` gives points of a design in the
unit cube ``[0, 1)^d``, and each parameter's marginal (:class:`Uniform`, :class:`LogUniform`) maps
its column to physical units with ``ppf``. Designs are indexed: point ``i`` of a design depends
only on ``(design, seed, i)`` for the extendable designs ("sobol", "random"), so a campaign can be
extended later and any single sample can be regenerated alone, e.g. to re-run a failed solve.
:func:`sample_seeds` gives each sample its own seed for the sample's own randomness (random
initial conditions, forcing), with the same property.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

DESIGNS = ("sobol", "lhs", "random")


class SobolBalanceWarning(UserWarning):
    """A Sobol' design was drawn whose size is not a power of 2 (it loses its balance)."""


def sample_unit(
    design: str, n_samples: int, n_params: int, seed: int, start: int = 0
) -> np.ndarray:
    """Points ``start .. start + n_samples - 1`` of a design in the unit cube.

    Designs:
        - ``"sobol"``: scrambled Sobol' sequence (Joe & Kuo 2008 directions, linear matrix
          scrambling and digital shift after Matousek 1998, via ``scipy.stats.qmc.Sobol``),
          fast-forwarded to ``start``. A call with
          ``start=n`` continues a call with ``start=0`` and ``n_samples=n`` exactly. Its
          low-discrepancy (balance) properties hold for a design of ``2**m`` points, so a call
          with ``start=0`` and a size that is not a power of 2 emits
          :class:`SobolBalanceWarning`. A call with ``start > 0`` extends or regenerates part of
          a larger design whose final size this function cannot know, so it does not warn.
        - ``"random"``: independent uniform points; point ``i`` comes from its own PCG64
          generator seeded with ``SeedSequence(seed, spawn_key=(i,))``, so it is extendable and
          regenerable like the Sobol' design. Costs one generator per point (~35 us,
          so 10^6 points take about half a minute).
        - ``"lhs"``: Latin hypercube (McKay, Beckman & Conover 1979) via
          ``scipy.stats.qmc.LatinHypercube``. Its strata depend on the design size, so an LHS
          cannot be extended without changing its earlier points: ``start`` must be 0.

    Args:
        design: One of :data:`DESIGNS`.
        n_samples: Number of points to return, >= 1.
        n_params: Dimension of the parameter space, >= 1.
        seed: Non-negative integer seed of the whole design.
        start: Index of the first point returned, >= 0.

    Returns:
        Array of shape ``(n_samples, n_params)``, float64, values in ``[0, 1)``.

    Raises:
        ValueError: For an unknown design (the message lists :data:`DESIGNS`), non-positive
            counts, a negative seed or start, or ``start > 0`` with ``"lhs"``.
    """
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; valid designs: {', '.join(DESIGNS)}")
    for name, value, low in (
        ("n_samples", n_samples, 1),
        ("n_params", n_params, 1),
        ("seed", seed, 0),
        ("start", start, 0),
    ):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    n_samples, n_params, seed, start = int(n_samples), int(n_params), int(seed), int(start)
    if design == "sobol":
        return _sobol(n_samples, n_params, seed, start)
    if design == "random":
        return _random(n_samples, n_params, seed, start)
    if start > 0:
        raise ValueError(
            f"design 'lhs' cannot be extended (start={start}): its strata depend on the total "
            "design size, so adding points changes the earlier ones; draw the whole design at "
            "once with start=0, or use 'sobol' or 'random' for an extendable campaign"
        )
    from scipy.stats import qmc  # 0.5 s of imports: only where a design is drawn

    return qmc.LatinHypercube(n_params, seed=seed).random(n_samples)


def _sobol(n_samples: int, n_params: int, seed: int, start: int) -> np.ndarray:
    if start == 0 and n_samples & (n_samples - 1):
        warnings.warn(
            f"a Sobol' design of {n_samples} points is not balanced: its low-discrepancy "
            f"properties need a power of 2 (e.g. {1 << (n_samples - 1).bit_length()}); extend "
            "it later with start=n_samples to reach one",
            SobolBalanceWarning,
            stacklevel=3,
        )
    from scipy.stats import qmc

    engine = qmc.Sobol(n_params, scramble=True, seed=seed)
    if start > 0:
        engine.fast_forward(start)
    with warnings.catch_warnings():
        # scipy judges balance by this call's size alone; the check that knows whether this call
        # starts a design or continues one is the SobolBalanceWarning above.
        warnings.filterwarnings("ignore", message="The balance properties of Sobol")
        return engine.random(n_samples)


def _random(n_samples: int, n_params: int, seed: int, start: int) -> np.ndarray:
    out = np.empty((n_samples, n_params))
    for row, index in enumerate(range(start, start + n_samples)):
        out[row] = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,))).random(
            n_params
        )
    return out


def sample_seeds(seed: int, indices: np.ndarray) -> np.ndarray:
    """Per-sample seeds, each derivable alone from the campaign seed and the sample's index.

    Seed ``i`` is ``SeedSequence(seed, spawn_key=(i,)).generate_state(1)[0]``. These are 32-bit
    values: by the birthday bound two of ``n`` samples share a seed with probability about
    ``n**2 / 2**33`` (1% at 9,000 samples, 50% at 77,000), so a solver that needs guaranteed
    distinct streams for very large campaigns should build ``SeedSequence(seed, spawn_key=(i,))``
    itself. The same ``SeedSequence`` also seeds point ``i`` of the "random" design; the two
    outputs go through different hashes (PCG64 seeding vs. one word), so they are not related in
    any usable way.

    Args:
        seed: Non-negative campaign seed.
        indices: Sample indices, shape ``(n,)``, non-negative integers.

    Returns:
        Seeds of shape ``(n,)``, dtype uint32.

    Raises:
        ValueError: If the seed or an index is negative, or indices are not integers.
    """
    indices = np.asarray(indices)
    if indices.ndim != 1:
        raise ValueError(f"indices must have shape (n,), got {indices.shape}")
    if indices.size and (not np.issubdtype(indices.dtype, np.integer) or indices.min() < 0):
        raise ValueError("indices must be non-negative integers")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.array(
        [np.random.SeedSequence(seed, spawn_key=(int(i),)).generate_state(1)[0] for i in indices],
        dtype=np.uint32,
    )


def _check_bounds(low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"low and high must be finite, got low={low}, high={high}")
    if not low < high:
        raise ValueError(f"low must be < high, got low={low}, high={high}")


@dataclass(frozen=True)
class Uniform:
    """Uniform distribution on ``[low, high]`` (physical units of the parameter).

    Attributes:
        low: Lower bound.
        high: Upper bound, > ``low``.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_bounds(self.low, self.high)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """Map unit-cube values ``u`` (any shape, in [0, 1]) to physical values, same shape."""
        return self.low + np.asarray(u, dtype=float) * (self.high - self.low)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """Map physical values ``x`` (any shape) to [0, 1], same shape; clipped outside bounds."""
        return np.clip((np.asarray(x, dtype=float) - self.low) / (self.high - self.low), 0.0, 1.0)


@dataclass(frozen=True)
class LogUniform:
    """Log-uniform distribution on ``[low, high]``: ``log(x)`` uniform on ``[log low, log high]``.

    The usual prior for a positive coefficient known to within orders of magnitude (a viscosity,
    a diffusivity).

    Attributes:
        low: Lower bound, > 0.
        high: Upper bound, > ``low``.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_bounds(self.low, self.high)
        if not self.low > 0:
            raise ValueError(f"low must be > 0 for a log-uniform marginal, got low={self.low}")

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """Map unit-cube values ``u`` (any shape, in [0, 1]) to physical values, same shape."""
        log_low, log_high = math.log(self.low), math.log(self.high)
        return np.exp(log_low + np.asarray(u, dtype=float) * (log_high - log_low))

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """Map physical values ``x`` (any shape) to [0, 1], same shape; clipped outside bounds."""
        log_low, log_high = math.log(self.low), math.log(self.high)
        # Clip first so that x <= 0 gives 0 instead of log's nan and warning.
        x = np.clip(np.asarray(x, dtype=float), self.low, self.high)
        return np.clip((np.log(x) - log_low) / (log_high - log_low), 0.0, 1.0)


MARGINALS = {"uniform": Uniform, "loguniform": LogUniform}


# Splits are assigned in consecutive groups of this many samples, each group a seeded
# permutation of the same composition: the labels of the first n samples never depend on the
# campaign's final size, so an extended store keeps every earlier sample's split.
SPLIT_GROUP = 20


def split_codes(
    fractions: tuple[float, float, float, float], seed: int, start: int, stop: int
) -> np.ndarray:
    """Seeded split of samples ``start:stop`` into (train, val, test, calibration) codes 0-3.

    Each group of ``SPLIT_GROUP`` samples holds the fractions rounded by largest remainder, so a
    whole group matches them exactly (0.6/0.1/0.15/0.15 gives 12/2/3/3).
    """
    fractions = np.asarray(fractions, dtype=float) * SPLIT_GROUP
    counts = np.floor(fractions).astype(int)
    short = SPLIT_GROUP - counts.sum()
    counts[np.argsort(counts - fractions, kind="stable")[:short]] += 1
    composition = np.repeat(np.arange(4, dtype=np.int8), counts)
    groups = range(start // SPLIT_GROUP, -(-stop // SPLIT_GROUP))
    labels = np.concatenate(
        [
            np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(g,))).permutation(
                composition
            )
            for g in groups
        ]
    )
    offset = groups.start * SPLIT_GROUP
    return labels[start - offset : stop - offset]
