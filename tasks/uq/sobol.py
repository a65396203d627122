"""Variance-based (Sobol') sensitivity indices of a scalar quantity of interest, via SALib.

The design is Saltelli's cross-sampling of two Sobol' point sets A and B (Saltelli 2002;
Saltelli et al. 2010): ``n_base`` rows of A, of B, and of each A_B^(i) (A with column i from B),
so ``n_eval = n_base * (n_params + 2)`` model runs, or ``n_base * (2 n_params + 2)`` with
second-order indices. SALib estimates first-order indices with Saltelli et al. (2010)'s
``mean(f(B) (f(A_B^i) - f(A))) / V`` and total indices with Jansen (1999)'s
``mean((f(A) - f(A_B^i))^2) / (2 V)``, and confidence intervals by bootstrap over the rows.

References:
    Jansen, M. J. W. (1999). Analysis of variance designs for model output. Computer Physics
    Communications 117, 35-43.
    Saltelli, A., Annoni, P., Azzini, I., Campolongo, F., Ratto, M. & Tarantola, S. (2010).
    Variance based sensitivity analysis of model output. Design and estimator for the total
    sensitivity index. Computer Physics Communications 181, 259-270.
"""

from __future__ import annotations

import numpy as np
from SALib.analyze import sobol as salib_analyze
from SALib.sample import sobol as salib_sample


class SobolAnalysis:
    """Sobol' indices from a Saltelli design (Saltelli et al. 2010; Jansen 1999).

    Usage: ``u = SobolAnalysis(1024).sample(d)``; map ``u`` (unit cube) to physical parameters
    with each marginal's ``ppf``; run the model on every row, in order; ``analyze(y)``.

    Args:
        n_base: Rows of each base matrix; a power of 2, since the base matrices are one Sobol'
            point set whose balance needs it.
        calc_second_order: Also estimate second-order indices ``S2`` (costs ``n_params * n_base``
            more runs).
        seed: Non-negative seed of the Sobol' scrambling and of the bootstrap.
        n_bootstrap: Bootstrap resamples for the 95% confidence intervals.

    Attributes:
        S1_: First-order indices, shape ``(n_params,)``.
        ST_: Total indices, shape ``(n_params,)``.
        S1_conf_: Half-widths of the 95% bootstrap intervals of ``S1_``, shape ``(n_params,)``.
        ST_conf_: Same for ``ST_``.
        S2_: Second-order indices, shape ``(n_params, n_params)``, upper triangle (NaN elsewhere);
            only with ``calc_second_order``.
        S2_conf_: Same for the intervals of ``S2_``.
        n_params_: Number of parameters of the last analysis.
    """

    def __init__(
        self, n_base: int, calc_second_order: bool = False, seed: int = 0, n_bootstrap: int = 200
    ) -> None:
        self.n_base = n_base
        self.calc_second_order = calc_second_order
        self.seed = seed
        self.n_bootstrap = n_bootstrap

    def n_eval(self, n_params: int) -> int:
        """Number of model runs of the design for ``n_params`` parameters."""
        return self.n_base * ((2 if self.calc_second_order else 1) * n_params + 2)

    def sample(self, n_params: int) -> np.ndarray:
        """The Saltelli design in the unit cube.

        Args:
            n_params: Number of parameters, >= 1.

        Returns:
            Points of shape ``(n_eval, n_params)`` in ``[0, 1)``; ``n_eval`` as :meth:`n_eval`.
        """
        self._check_settings()
        if n_params < 1:
            raise ValueError(f"n_params must be >= 1, got {n_params}")
        return salib_sample.sample(
            _problem(n_params),
            self.n_base,
            calc_second_order=self.calc_second_order,
            scramble=True,
            seed=self.seed,
        )

    def analyze(self, Y: np.ndarray) -> dict[str, np.ndarray]:
        """Estimate the indices from the model outputs on the rows of :meth:`sample`.

        Args:
            Y: Model outputs in the order of the design's rows, shape ``(n_eval,)``; the number
                of parameters is inferred from ``n_eval``.

        Returns:
            Dict of arrays ``S1``, ``ST``, ``S1_conf``, ``ST_conf`` (shape ``(n_params,)``), and
            ``S2``, ``S2_conf`` (shape ``(n_params, n_params)``) with second order; also stored
            as the attributes ``S1_`` etc.

        Raises:
            ValueError: If ``n_base`` is not a power of 2, ``Y`` has the wrong shape or length,
                or is not finite.
        """
        self._check_settings()
        Y = np.asarray(Y, dtype=float)
        n_params = self._infer_n_params(Y)
        if not np.all(np.isfinite(Y)):
            raise ValueError("Y has non-finite values: indices would be NaN")
        # SALib falls back to numpy's global RNG when its seed is falsy (0 included); a Generator
        # is always truthy and keeps the bootstrap reproducible from this object's seed alone.
        bootstrap_rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1,)))
        result = salib_analyze.analyze(
            _problem(n_params),
            Y,
            calc_second_order=self.calc_second_order,
            num_resamples=self.n_bootstrap,
            conf_level=0.95,
            print_to_console=False,
            seed=bootstrap_rng,
        )
        keys = ["S1", "ST", "S1_conf", "ST_conf"]
        if self.calc_second_order:
            keys += ["S2", "S2_conf"]
        indices = {key: np.asarray(result[key], dtype=float) for key in keys}
        for key, value in indices.items():
            setattr(self, key + "_", value)
        self.n_params_ = n_params
        return indices

    def _infer_n_params(self, Y: np.ndarray) -> int:
        if Y.ndim != 1:
            raise ValueError(f"Y must have shape (n_eval,), got {Y.shape}")
        per_param = 2 if self.calc_second_order else 1
        rows, rest = divmod(Y.size, self.n_base)
        n_params, odd = divmod(rows - 2, per_param)
        if rest or odd or n_params < 1:
            formula = "(2 n_params + 2)" if self.calc_second_order else "(n_params + 2)"
            raise ValueError(
                f"len(Y)={Y.size} is not n_base * {formula} with n_base={self.n_base} and an "
                "integer n_params >= 1: Y must hold one output per row of sample()"
            )
        return n_params

    def _check_settings(self) -> None:
        n = self.n_base
        if not isinstance(n, int | np.integer) or n < 2 or n & (n - 1):
            raise ValueError(
                f"n_base must be a power of 2 (>= 2) for a balanced Sobol' design, got {n}"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.n_bootstrap < 2:
            raise ValueError(f"n_bootstrap must be >= 2, got {self.n_bootstrap}")


def _problem(n_params: int) -> dict:
    return {
        "num_vars": n_params,
        "names": [f"x{i}" for i in range(n_params)],
        "bounds": [[0.0, 1.0]] * n_params,
    }
