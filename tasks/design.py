"""The sampling design of a generate config: parameters, seeds and splits of every sample.

The unit-cube design (``pdeflow.tasks.sampling``) is mapped to the parameters by each marginal's
inverse CDF, and back by its CDF (the surrogate and the ROM see parameters on the unit cube).
Every function is indexed by sample, so a store grown from n to m samples keeps the first n
samples' parameters, seeds and splits (the design continues; see ``sampling.sample_unit``).
"""

from __future__ import annotations

import numpy as np

from pdeflow.tasks.config import GenerateConfig
from pdeflow.tasks.sampling import MARGINALS, sample_seeds, sample_unit, split_codes

SPLITS = ("train", "val", "test", "calibration")


def to_physical(gen: GenerateConfig, unit: np.ndarray) -> np.ndarray:
    """Map design points in [0, 1)^d to parameters, shape (n, d), columns ``parameter_names``."""
    cols = [
        MARGINALS[spec.distribution](spec.low, spec.high).ppf(unit[:, j])
        for j, spec in enumerate(gen.parameter_specs)
    ]
    return np.stack(cols, axis=1) if cols else np.zeros((len(unit), 0))


def to_unit(gen: GenerateConfig, params: np.ndarray) -> np.ndarray:
    """Inverse of ``to_physical``: parameters (n, d) to the unit cube via the marginals' CDFs."""
    cols = [
        MARGINALS[spec.distribution](spec.low, spec.high).cdf(params[:, j])
        for j, spec in enumerate(gen.parameter_specs)
    ]
    return np.stack(cols, axis=1) if cols else np.zeros((len(params), 0))


def split_labels(gen: GenerateConfig, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Seeded split of samples ``start:stop``, codes index ``SPLITS``; shape (stop - start,)."""
    s = gen.split
    fractions = (s.train, s.val, s.test, s.calibration)
    stop = gen.n_samples if stop is None else stop
    codes = split_codes(fractions, s.seed, start, min(stop, max(start, gen.n_design)))
    # Chosen points (``generate.points``) are all for training.
    chosen = np.full(max(0, stop - max(start, gen.n_design)), SPLITS.index("train"))
    return np.concatenate([codes, chosen]).astype(codes.dtype)


def design_parameters(gen: GenerateConfig, start: int = 0) -> np.ndarray:
    """Parameters of samples ``start .. n_samples - 1``, shape (n, len(parameter_names))."""
    n, names = gen.n_samples - start, gen.parameter_names
    if not names:
        return np.zeros((n, 0))
    n_design = max(0, gen.n_design - start)
    unit = np.zeros((0, len(names)))
    if n_design:
        unit = sample_unit(gen.design, n_design, len(names), gen.seed, start=start)
    if gen.points:  # the chosen points follow the design's samples
        chosen = np.asarray(gen.points, dtype=np.float64)[max(0, start - gen.n_design) :]
        unit = np.concatenate([unit.reshape(n_design, len(names)), chosen])
    return to_physical(gen, unit)


def design_seeds(gen: GenerateConfig, start: int = 0) -> np.ndarray:
    """Per-sample seeds of samples ``start .. n_samples - 1``, shape (n,)."""
    return sample_seeds(gen.seed, np.arange(start, gen.n_samples))
