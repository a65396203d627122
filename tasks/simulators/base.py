"""The contract every bring-your-own simulator follows, and the error a failed batch raises.

The generate stage calls :meth:`Simulator.run` once per block of samples, inside one Dask task.
A simulator returns the whole block or raises :class:`SimulationError` naming every failed sample
with its reason; the samples that did succeed travel on the error (``err.partial``, ``err.ok``), so
a caller can keep them and re-run only the failures.

A failure reason is text: its first line says what went wrong, further lines are detail (an
executable's last lines of stderr). The error's message groups samples that failed for the same
reason and stays short (at most ``MESSAGE_LINES`` lines, however many samples failed); the full
reasons stay in ``err.failures``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DTYPES = ("float32", "float64")
MESSAGE_LINES = 12  # lines of a SimulationError's message, at most
MAX_GROUPS = 3  # kinds of failure spelled out in a message; the rest are counted
DETAIL_LINES = 5  # last detail lines (stderr) shown per kind of failure
LINE_CHARS = 200  # a shown detail line is cut to this length
HEAD_CHARS = 400  # a shown first line of a reason is cut to this length
MAX_ID_RUNS = 8  # runs of sample ids ("3-5", "9") listed per kind of failure
# Per-sample directories are named SAMPLE_DIR_PREFIX + sample id + "-" + a random suffix; a
# reason naming one groups with the same reason naming another sample's.
SAMPLE_DIR_PREFIX = "pdeflow-sample"
_SAMPLE_DIR = re.compile(re.escape(SAMPLE_DIR_PREFIX) + r"\d+-[^\s/'\"`()]+")


class SimulationError(RuntimeError):
    """One or more samples of a batch failed; the others' results are kept on the error.

    Attributes:
        failures: Global sample id -> reason, for every failed sample.
        partial: The batch's output, shape ``(n, n_frames, C, *space)``, NaN in failed rows;
            ``None`` when the error was raised without results.
        sample_ids: Global sample ids of the batch rows, shape ``(n,)``, or ``None``.
        ok: Boolean mask of the rows that succeeded, shape ``(n,)``, or ``None``.
    """

    def __init__(
        self,
        failures: Mapping[int, str],
        partial: np.ndarray | None = None,
        sample_ids: np.ndarray | None = None,
    ):
        self.failures = {int(k): str(v) for k, v in failures.items()}
        self.partial = partial
        self.sample_ids = None if sample_ids is None else np.asarray(sample_ids)
        self.ok = (
            None
            if self.sample_ids is None
            else ~np.isin(self.sample_ids, np.fromiter(self.failures, dtype=np.int64))
        )
        super().__init__(self._message())

    def _message(self) -> str:
        return format_failures(
            self.failures, None if self.sample_ids is None else len(self.sample_ids)
        )

    def __reduce__(self):
        # Dask sends exceptions between processes by pickling; the default would call
        # cls(message) and lose the failures.
        return (self.__class__, (self.failures, self.partial, self.sample_ids))


def format_failures(failures: Mapping[int, str], n_batch: int | None = None) -> str:
    """A short message for failed samples: one line per kind of failure, with its detail's end.

    Samples whose reasons are equal once per-sample directory names are ignored form one kind,
    shown with the first sample's reason. The ``MAX_GROUPS`` most common kinds are spelled out,
    the rest counted; the message has at most ``MESSAGE_LINES`` lines.

    Args:
        failures: Sample id -> reason, non-empty.
        n_batch: Samples in the batch, for "k of n"; None when unknown.
    """
    of = "" if n_batch is None else f" of {n_batch}"
    groups = _group(failures)
    shown, rest = groups[:MAX_GROUPS], groups[MAX_GROUPS:]
    details = [failures[ids[0]].split("\n")[1:] for ids in shown]
    budget = MESSAGE_LINES - 1 - len(shown) - bool(rest)  # lines left for details
    lines = [f"{len(failures)}{of} samples failed:"]
    for k, (ids, detail) in enumerate(zip(shown, details, strict=True)):
        head = failures[ids[0]].partition("\n")[0]
        lines.append(f"  {_samples(ids)} ({len(ids)}{of}): {_clip(head, HEAD_CHARS)}")
        # Each later kind with detail keeps one line; the most common kind gets the most.
        later = sum(1 for d in details[k + 1 :] if d)
        keep = max(0, min(DETAIL_LINES, len(detail), budget - later))
        lines += [f"    {_clip(line.strip(), LINE_CHARS)}" for line in detail[len(detail) - keep :]]
        budget -= keep
    if rest:
        others = sorted(i for ids in rest for i in ids)
        lines.append(
            f"  ... and {len(rest)} more kinds of failure in {len(others)} samples "
            f"({_samples(others).partition(' ')[2]})"
        )
    return "\n".join(lines)


def _group(failures: Mapping[int, str]) -> list[list[int]]:
    """Sample ids by reason (per-sample directories ignored), the most common reason first."""
    groups: dict[str, list[int]] = {}
    for i in sorted(failures):
        groups.setdefault(_SAMPLE_DIR.sub(SAMPLE_DIR_PREFIX, failures[i]), []).append(i)
    return sorted(groups.values(), key=lambda ids: (-len(ids), ids[0]))


def _samples(ids: list[int]) -> str:
    """``"sample 4"``, ``"samples 3-5, 9"``: sorted ids as runs, at most ``MAX_ID_RUNS`` of them."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    parts = []
    for run in runs[:MAX_ID_RUNS]:
        # Up to three ids read better listed than as a range.
        parts += [f"{run[0]}-{run[-1]}"] if len(run) > 3 else [str(i) for i in run]
    if len(runs) > MAX_ID_RUNS:
        parts.append("...")
    return f"sample{'s' if len(ids) > 1 else ''} {', '.join(parts)}"


def _clip(text: str, n_chars: int) -> str:
    return text if len(text) <= n_chars else text[: n_chars - 3] + "..."


class Simulator(ABC):
    """A black-box simulator: parameters and seeds in, one trajectory per sample out.

    Subclasses implement :meth:`_run`; :meth:`run` checks each sample's output (shape, a real
    numeric dtype, finite values), casts it to ``dtype`` and assembles the batch.

    Args:
        output_shape: Per-sample shape ``(n_frames, C, *space)``: frames >= 1, one channel per
            field, 1 to 3 spatial dimensions, every size >= 1.
        fields: Names of the output channels, in channel order, unique and non-empty.
        dtype: ``"float32"`` (default) or ``"float64"``: precision of the returned batch.

    Raises:
        ValueError: A setting outside its valid range; the message names it.
    """

    def __init__(
        self,
        output_shape: Sequence[int],
        fields: Sequence[str],
        dtype: str = "float32",
    ):
        self.output_shape = _check_shape(output_shape)
        self.fields = _check_fields(fields, self.output_shape[1])
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.dtype = dtype

    @abstractmethod
    def _run(
        self, params: dict[str, np.ndarray], seeds: np.ndarray, sample_ids: np.ndarray
    ) -> tuple[Sequence[Any], dict[int, str]]:
        """Simulate a batch.

        Returns:
            Per-row outputs (anything ``np.asarray`` accepts; ``None`` for a failed row) and the
            failures keyed by row position in the batch (0 .. n-1), not by sample id.
        """

    def run(
        self, params: Mapping[str, np.ndarray], seeds: np.ndarray, sample_ids: np.ndarray
    ) -> np.ndarray:
        """Simulate one batch of samples.

        Args:
            params: Parameter name -> values, each of shape ``(n,)``.
            seeds: Per-sample seeds, shape ``(n,)``, non-negative integers (uint64).
            sample_ids: Global sample indices of the rows, shape ``(n,)``, used in messages.

        Returns:
            Array of shape ``(n, *output_shape)`` in ``dtype``.

        Raises:
            ValueError: Inputs of inconsistent shapes (before anything runs).
            SimulationError: One or more samples failed; ``err.partial`` holds the batch with
                the failed rows NaN and ``err.ok`` marks the rows that succeeded.
        """
        params, seeds, sample_ids = _check_batch(params, seeds, sample_ids)
        outputs, failed = self._run(params, seeds, sample_ids)
        batch = np.full((len(seeds), *self.output_shape), np.nan, dtype=self.dtype)
        reasons: dict[int, str] = {}
        for row in range(len(seeds)):
            reason = failed.get(row)
            if reason is None:
                value, reason = self.check_sample(outputs[row])
                if value is not None:
                    batch[row] = value
            if reason is not None:
                reasons[int(sample_ids[row])] = reason
        if reasons:
            raise SimulationError(reasons, partial=batch, sample_ids=sample_ids)
        return batch

    def check_sample(self, value: Any) -> tuple[np.ndarray | None, str | None]:
        """Validate one sample's output: ``(array in dtype, None)`` or ``(None, reason)``."""
        try:
            arr = np.asarray(value)
        except Exception as err:  # a user object np.asarray cannot convert
            return None, f"output is not an array: {type(err).__name__}: {err}"
        if arr.dtype.kind not in "fiu":
            return None, f"output dtype {arr.dtype} is not a real number type"
        if arr.shape != self.output_shape:
            return None, f"wrong output shape: expected {self.output_shape}, got {arr.shape}"
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: caught
            arr = arr.astype(self.dtype, copy=False)
        finite = np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1)
        if not finite.all():
            n_bad = arr.size - np.count_nonzero(np.isfinite(arr))
            frame = int(np.argmin(finite))
            return None, f"{n_bad} non-finite values (NaN or inf), first in frame {frame}"
        return arr, None


def _check_shape(output_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in output_shape)
        exact = all(int(s) == s for s in output_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"output_shape must be a sequence of integers, got {output_shape!r}"
        ) from None
    if not exact or not 3 <= len(shape) <= 5 or min(shape) < 1:
        raise ValueError(
            "output_shape must be (n_frames, n_channels, *space) with 1 to 3 spatial "
            f"dimensions and every size >= 1, got {output_shape!r}"
        )
    return shape


def _check_fields(fields: Sequence[str], n_channels: int) -> tuple[str, ...]:
    if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
        raise ValueError(f"fields must be a sequence of non-empty names, got {fields!r}")
    fields = tuple(fields)
    if len(set(fields)) != len(fields):
        raise ValueError(f"fields must be unique, got {fields!r}")
    if len(fields) != n_channels:
        raise ValueError(
            f"fields has {len(fields)} names but output_shape has {n_channels} channels "
            "(output_shape[1]); give one name per channel"
        )
    return fields


def _check_batch(
    params: Mapping[str, np.ndarray], seeds: np.ndarray, sample_ids: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    seeds, sample_ids = np.asarray(seeds), np.asarray(sample_ids)
    if seeds.ndim != 1 or seeds.dtype.kind not in "iu" or (seeds < 0).any():
        raise ValueError(f"seeds must be non-negative integers of shape (n,), got {seeds!r}")
    n = len(seeds)
    if sample_ids.shape != (n,) or sample_ids.dtype.kind not in "iu":
        raise ValueError(f"sample_ids must be integers of shape ({n},), got {sample_ids!r}")
    if not isinstance(params, Mapping):
        raise ValueError(f"params must map names to arrays, got {type(params).__name__}")
    out = {}
    for name, values in params.items():
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (n,):
            raise ValueError(f"params[{name!r}] must have shape ({n},), got {values.shape}")
        out[str(name)] = values
    return out, seeds.astype(np.uint64), sample_ids.astype(np.int64)
