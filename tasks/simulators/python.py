"""A simulator that is a Python function, named as ``"package.module:function"`` in a config."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pdeflow.tasks.simulators.base import Simulator


def resolve_target(target: str) -> Callable:
    """Import ``"package.module:attribute"`` (the attribute may be dotted, ``"mod:Cls.method"``).

    Raises:
        ValueError: A malformed target, a module that cannot be imported (the message keeps the
            import error, which may name a missing dependency of that module), a missing
            attribute, or one that is not callable.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"target {target!r}: cannot import module {module_name!r}: {err}") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"target {target!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"target {target!r} is a {type(obj).__name__}, not a callable")
    return obj


class PythonSimulator(Simulator):
    """Run a Python function as the simulator, a whole batch at once or one sample at a time.

    Vectorized functions (``vectorized=True``) get the whole batch,
    ``fn(params, seeds, **options) -> array (n, *output_shape)`` with ``params`` mapping names
    to float64 arrays of shape ``(n,)`` and ``seeds`` uint64 of shape ``(n,)``. An exception
    fails every sample of the batch; a non-finite or malformed row fails only its sample.

    Per-sample functions (``vectorized=False``) get
    ``fn(params_i: dict[str, float], seed: int, **options) -> array (*output_shape)``. An
    exception in one sample is recorded as that sample's failure (type and message) and the
    other samples still run.

    The function must be deterministic given its parameters and seed: draw randomness from
    ``numpy.random.default_rng(seed)``, never from global state.

    Args:
        target: ``"package.module:function"`` (importable where the Dask workers run), or the
            callable itself.
        output_shape: Per-sample shape ``(n_frames, C, *space)``.
        fields: Channel names, one per channel.
        dtype: ``"float32"`` (default) or ``"float64"``.
        vectorized: Whether ``fn`` takes the whole batch. Defaults to True.
        options: Keyword arguments passed to every call (grid sizes, end time...), so that a
            config file can set them. Defaults to none.

    Raises:
        ValueError: A setting outside its valid range, or a target that cannot be resolved.
    """

    def __init__(
        self,
        target: str | Callable,
        output_shape: Sequence[int],
        fields: Sequence[str],
        dtype: str = "float32",
        vectorized: bool = True,
        options: Mapping[str, Any] | None = None,
    ):
        super().__init__(output_shape, fields, dtype)
        if isinstance(target, str):
            self._fn = resolve_target(target)
        elif callable(target):
            self._fn = target
        else:
            raise ValueError(
                f"target must be 'package.module:function' or a callable, got {target!r}"
            )
        if not isinstance(vectorized, bool):
            raise ValueError(f"vectorized must be True or False, got {vectorized!r}")
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(f"options must map keyword names to values, got {options!r}")
        self.target = target
        self.vectorized = vectorized
        self.options = dict(options or {})

    def _run(
        self, params: dict[str, np.ndarray], seeds: np.ndarray, sample_ids: np.ndarray
    ) -> tuple[Sequence[Any], dict[int, str]]:
        n = len(seeds)
        if self.vectorized:
            return self._run_batch(params, seeds, n)
        outputs: list[Any] = [None] * n
        failures: dict[int, str] = {}
        for row in range(n):
            values = {name: float(v[row]) for name, v in params.items()}
            try:
                outputs[row] = self._fn(values, int(seeds[row]), **self.options)
            except Exception as err:  # any error of user code fails this sample only
                failures[row] = f"{type(err).__name__}: {err}"
        return outputs, failures

    def _run_batch(
        self, params: dict[str, np.ndarray], seeds: np.ndarray, n: int
    ) -> tuple[Sequence[Any], dict[int, str]]:
        try:
            batch = {name: values.copy() for name, values in params.items()}
            out = np.asarray(self._fn(batch, seeds.copy(), **self.options))
        except Exception as err:  # the batch call is all-or-nothing
            return [None] * n, dict.fromkeys(range(n), f"{type(err).__name__}: {err}")
        if out.ndim == 0 or out.shape[0] != n:
            reason = f"vectorized call returned shape {out.shape}, expected ({n}, *output_shape)"
            return [None] * n, dict.fromkeys(range(n), reason)
        return out, {}

    def __repr__(self) -> str:
        name = (
            self.target if isinstance(self.target, str) else getattr(self.target, "__name__", "?")
        )
        return (
            f"PythonSimulator({name!r}, output_shape={self.output_shape}, fields={self.fields}, "
            f"vectorized={self.vectorized})"
        )
