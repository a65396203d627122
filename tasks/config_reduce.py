"""Stage 3's config: which reduce methods run, and each one's settings.

``method`` is the stage's ROM (the one quantify uses); ``compare`` adds others to the stage's
side-by-side table. The registry of methods is ``pdeflow.tasks.rom.methods.METHODS``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pdeflow.tasks.config_form import _Frozen

__all__ = ["TABLE_COLUMNS", "MethodName", "ReduceConfig"]

# The names of pdeflow.tasks.rom.methods.METHODS (a test checks that the two agree).
MethodName = Literal["pod-rbf", "pod-gpr", "pod-nn", "dmd", "pod-galerkin", "autoencoder", "rb"]
# The field's old name (before the method registry) and the method each of its values meant.
OLD_APPROXIMATIONS = {"rbf": "pod-rbf", "gpr": "pod-gpr"}
# Settings added with the method registry (see ReduceConfig.identity).
ADDED_WITH_REGISTRY = (
    "compare", "incremental", "nn_hidden", "dmd_rank", "dmd_variant", "galerkin_rank",
    "deim_points", "latent_dim", "ae_epochs", "rb_max_basis", "rb_tol", "rb_training_size",
)  # fmt: skip


# The reduce stage's side-by-side table of methods (CLI, report, UI; here because the CLI's
# `show` reads it without importing the ROM code): heading and key of each column in a
# method's row of the reduce record; a row lacks the keys its method has no figure for.
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("error mean", "rel_error_mean"),
    ("error max", "rel_error_max"),
    ("projection floor", "floor_mean"),
    ("estimate max", "estimate_max"),
    ("effectivity mean", "effectivity_mean"),
    ("effectivity max", "effectivity_max"),
    ("offline s", "offline_s"),
    ("online s / eval", "online_s_per_eval"),
    ("speedup", "speedup"),
)


class ReduceConfig(_Frozen):
    """Stage 3: reduced-order models from the training snapshots, compared on the test split."""

    method: MethodName = Field(
        "pod-rbf",
        description="The stage's ROM (used by quantify): pod-rbf, pod-gpr, pod-nn (POD + a "
        "regression of the coefficients on the parameters), dmd (parametric DMD), pod-galerkin "
        "(intrusive, with DEIM; 1D Burgers, Allen-Cahn, Fisher-KPP), autoencoder (nonlinear "
        "manifold), rb (certified reduced basis; thermal-block problems).",
    )
    compare: tuple[MethodName, ...] = Field(
        (), description="More methods fitted and reported beside `method` (not used downstream)."
    )
    energy: float = Field(
        0.9999, gt=0, le=1, description="Fraction of snapshot energy the POD basis keeps, (0, 1]."
    )
    max_rank: int = Field(64, ge=1, le=4096, description="Upper bound on the POD rank.")
    center: bool = Field(True, description="Subtract the mean snapshot before the SVD.")
    svd: Literal["tsqr", "randomized"] = Field(
        "tsqr", description="Out-of-core SVD: tall-skinny QR (exact) or randomized (approximate)."
    )
    incremental: bool = Field(
        True,
        description="When the store has grown since its last reduce (extend_by, a campaign), "
        "update the POD basis from the new snapshots alone (Brand's incremental SVD) instead "
        "of recomputing it from all of them.",
    )
    rbf_kernel: Literal[
        "thin_plate_spline", "cubic", "quintic", "linear", "multiquadric", "gaussian"
    ] = Field("thin_plate_spline", description="pod-rbf: kernel (scipy's RBFInterpolator).")
    smoothing: float = Field(0.0, ge=0, le=1e6, description="pod-rbf: smoothing; 0 interpolates.")
    initial_modes: int = Field(
        8,
        ge=0,
        le=256,
        description="When each sample's initial state is drawn at random (initial_condition "
        "kind fourier, grf, steps, or a PDE's own seeded state) and so is not a parameter: "
        "leading POD coefficients of the initial state added to the ROM's inputs, at most "
        "n_train - n_params - 2. 0: the parameters alone (the ROM then cannot predict the "
        "field, and says so).",
    )
    nn_hidden: tuple[int, ...] = Field(
        (64, 64), min_length=1, max_length=8, description="pod-nn: hidden layer widths, each >= 1."
    )
    dmd_rank: int = Field(
        0,
        ge=0,
        le=1024,
        description="dmd: SVD rank of each trajectory's DMD; 0 picks it by the "
        "optimal hard threshold (Gavish & Donoho 2014).",
    )
    dmd_variant: Literal["exact", "bop"] = Field(
        "exact", description="dmd: exact DMD, or BOP-DMD (bagging, with eigenvalue uncertainty)."
    )
    galerkin_rank: int = Field(
        16, ge=1, le=512, description="pod-galerkin: POD rank of the Galerkin basis."
    )
    deim_points: int = Field(
        32,
        ge=0,
        le=4096,
        description="pod-galerkin: DEIM interpolation points m (>= galerkin_rank), or 0 for "
        "no DEIM (the nonlinear term evaluated on the whole grid).",
    )
    latent_dim: int = Field(4, ge=1, le=256, description="autoencoder: latent dimension.")
    ae_epochs: int = Field(300, ge=1, le=100_000, description="autoencoder: training epochs.")
    rb_max_basis: int = Field(
        30, ge=1, le=500, description="rb: largest reduced basis N the weak greedy builds."
    )
    rb_tol: float = Field(
        1e-6,
        gt=0,
        lt=1,
        description="rb: the greedy stops once the largest relative error "
        "bound over its training set is below this.",
    )
    rb_training_size: int = Field(
        1000, ge=10, le=1_000_000, description="rb: random parameters in the greedy's training set."
    )

    @model_validator(mode="before")
    @classmethod
    def _old_approximation(cls, data: Any) -> Any:
        """``approximation: rbf|gpr`` (before the method registry) means ``method: pod-rbf|gpr``."""
        if not isinstance(data, dict) or "approximation" not in data:
            return data
        data = dict(data)
        old = data.pop("approximation")
        if old not in OLD_APPROXIMATIONS:
            raise ValueError(f"approximation (now `method`) must be 'rbf' or 'gpr', got {old!r}")
        if data.setdefault("method", OLD_APPROXIMATIONS[old]) != OLD_APPROXIMATIONS[old]:
            raise ValueError(
                f"approximation={old!r} and method={data['method']!r} disagree; give `method` alone"
            )
        return data

    @model_validator(mode="after")
    def _compare_others(self) -> ReduceConfig:
        if self.method in self.compare or len(set(self.compare)) != len(self.compare):
            raise ValueError(
                f"compare lists each method once and not `method` itself ({self.method!r}); "
                f"got {list(self.compare)}"
            )
        if 0 < self.deim_points < self.galerkin_rank:
            raise ValueError(
                f"deim_points must be 0 (no DEIM) or >= galerkin_rank={self.galerkin_rank} "
                f"(got {self.deim_points})"
            )
        return self

    def identity(self) -> dict:
        """The settings naming the stage's results. Stores reduced before the method registry
        keep their names: the fields added with it are left out while at their defaults, and
        ``pod-rbf`` / ``pod-gpr`` are written as the old ``approximation: rbf`` / ``gpr``, so an
        unchanged config finds its finished reduce stage instead of recomputing it."""
        out = self.model_dump(mode="json")
        defaults = type(self)()
        for name in ADDED_WITH_REGISTRY:
            if getattr(self, name) == getattr(defaults, name):
                out.pop(name)
        old = {v: k for k, v in OLD_APPROXIMATIONS.items()}.get(self.method)
        if old is not None:
            out["approximation"] = old
            out.pop("method")
        return out

    @property
    def methods(self) -> tuple[str, ...]:
        """``method`` first, then ``compare``."""
        return (self.method, *self.compare)
