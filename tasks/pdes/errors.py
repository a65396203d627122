"""Errors raised by PDE solvers when a rollout stops being trustworthy.

Both exceptions carry structured data (which samples of the batch failed, and when) so a caller
can drop or re-run those samples instead of parsing a message. They define ``__reduce__``
because the pipeline moves them between Dask workers by pickling, and an exception whose
``__init__`` takes more than the message cannot be rebuilt from ``self.args`` alone.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence


class BlowUpError(RuntimeError):
    """A rollout produced non-finite values (NaN or inf).

    Args:
        samples: Indices into the batch dimension of the samples that failed.
        time: Simulation time at which the failure was detected, in the PDE's time unit.
        reason: Short description of what was detected, used in the message.

    Attributes:
        samples: ``list[int]``, the failed batch indices, ascending.
        time: ``float``, the detection time.
    """

    def __init__(
        self, samples: Sequence[int], time: float, reason: str = "non-finite values"
    ) -> None:
        self.samples = [int(s) for s in samples]
        self.time = float(time)
        self.reason = reason
        super().__init__(f"{reason} in samples {self.samples} at t={self.time:.6g}")

    def __reduce__(self):
        return (type(self), (self.samples, self.time, self.reason))


class CFLViolation(BlowUpError):
    """The advective CFL number ``max|u| dt / dx`` exceeded the solver's stability limit.

    Args:
        samples: Indices into the batch dimension of the offending samples.
        time: Simulation time at which the violation was detected.
        cfl: CFL number of each offending sample, in the order of ``samples`` (dimensionless).
        cfl_max: The limit that was exceeded (dimensionless).

    Attributes:
        samples: ``list[int]``, the offending batch indices, ascending.
        time: ``float``, the detection time.
        cfl: ``list[float]``, the offending CFL numbers.
        cfl_max: ``float``, the limit.
    """

    def __init__(
        self, samples: Sequence[int], time: float, cfl: Sequence[float], cfl_max: float
    ) -> None:
        self.cfl = [float(c) for c in cfl]
        self.cfl_max = float(cfl_max)
        shown = ", ".join(f"{c:.3g}" for c in self.cfl)
        super().__init__(samples, time, f"CFL number(s) [{shown}] above cfl_max={self.cfl_max:g}")

    def __reduce__(self):
        return (type(self), (self.samples, self.time, self.cfl, self.cfl_max))


def check_rollout_counts(n_frames: object, steps_per_frame: object) -> None:
    """The ``rollout`` arguments every solver takes: both integers >= 1 (ValueError naming it)."""
    for name, value in (("n_frames", n_frames), ("steps_per_frame", steps_per_frame)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
