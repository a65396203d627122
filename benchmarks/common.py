"""Shared pieces of the benchmarks: result rows, repeated timing, the table and the JSON file.

Every row compares a measured ``value`` with a ``reference`` through ``ratio = value /
reference``; a row with a goal passes when the ratio is on the goal's side of its target.
Values and references are chosen so that this one ratio reads naturally: an overhead factor, a
speed-up, a throughput ratio, a memory growth.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "flows" / "configs" / "demo.yaml"
# Above this share of the CPUs used by other processes, wall times on the 2-core machine are not
# comparable: torch's two OpenMP threads then slow down by up to 10x (measured on the demo's
# training: 608 s at 44% foreign load against 57 s at 6%).
NOISY_SHARE = 0.15
_counter = itertools.count()


@dataclass
class Goal:
    """A bound on a row's ratio: ``ratio <op> target``."""

    op: Literal["<=", ">="]
    target: float

    def met(self, ratio: float) -> bool:
        return ratio <= self.target if self.op == "<=" else ratio >= self.target

    def __str__(self) -> str:
        return f"ratio {self.op} {self.target:g}"


@dataclass
class Result:
    """One measurement next to its reference.

    Attributes:
        name: What was measured, one short line.
        value: The measurement, in ``unit``.
        unit: Unit of ``value`` and of a numeric ``reference``.
        stat: How repeats were reduced ("best of 3", "median of 3", "1 run").
        reference: The number it is compared with (same unit), or None.
        reference_label: Where the reference comes from.
        goal: Bound on ``value / reference``; None for an informational row.
        note: One line printed under the table (a breakdown that explains the figure).
        foreign_share: Share of the CPUs other processes used while it was measured.
        details: Everything else worth keeping (per-stage times, raw repeats, sizes).
    """

    name: str
    value: float
    unit: str
    stat: str
    reference: float | None = None
    reference_label: str = ""
    goal: Goal | None = None
    note: str = ""
    foreign_share: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.reference is None or self.reference == 0:
            return None
        return self.value / self.reference

    @property
    def status(self) -> str:
        """PASS or MISS against the goal, "info" without one; "?" when the machine was busy."""
        if self.goal is None or self.ratio is None:
            return "info"
        verdict = "PASS" if self.goal.met(self.ratio) else "MISS"
        return verdict + ("?" if self.noisy else "")

    @property
    def noisy(self) -> bool:
        return self.foreign_share is not None and self.foreign_share > NOISY_SHARE

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["goal"] = (
            None if self.goal is None else {"op": self.goal.op, "target": self.goal.target}
        )
        out.update(ratio=self.ratio, status=self.status)
        return out


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call of ``fn`` in seconds (``time.perf_counter``), and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def repeat(fn: Callable[[], Any], n: int, max_seconds: float = float("inf")) -> list[float]:
    """Wall times of up to ``n`` calls of ``fn``, in call order.

    Args:
        fn: The call to time.
        n: Calls wanted.
        max_seconds: Stop early once the calls so far took this long (at least one call runs):
            on a contended machine a second-long call can take a minute, and the run's time
            budget matters more than the third repeat.
    """
    times: list[float] = []
    while len(times) < n and sum(times) < max_seconds:
        times.append(timed(fn)[0])
    return times


def summarise(times: list[float], how: Literal["best", "median"]) -> tuple[float, str]:
    """Reduce repeated wall times to one figure and say how: ("best of 3", ...).

    Best (the minimum) estimates the undisturbed cost on a noisy machine; the median is used
    where every repeat does identical work but the first-call effects are part of the story.
    """
    value = min(times) if how == "best" else statistics.median(times)
    return value, f"{how} of {len(times)}"


def fresh_name(prefix: str) -> str:
    """A store or file name not used before in this process, so no run finds an old result."""
    return f"{prefix}-{next(_counter)}"


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    text = f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{text} {unit}".rstrip()


def table(results: list[Result]) -> str:
    """The results as a fixed-width text table, references explained below it."""
    head = ("#", "measurement", "value", "reference", "ratio", "goal", "status", "stat", "others")
    rows = [
        (
            str(i),
            r.name,
            _fmt(r.value, r.unit),
            _fmt(r.reference, r.unit),
            "-" if r.ratio is None else f"{r.ratio:.3f}",
            "-" if r.goal is None else str(r.goal),
            r.status,
            r.stat,
            "-" if r.foreign_share is None else f"{r.foreign_share:.0%}",
        )
        for i, r in enumerate(results, start=1)
    ]
    widths = [max(len(row[k]) for row in [head, *rows]) for k in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [head]]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.append("")
    lines.append(
        "others: share of the CPUs used by other processes during the measurement; "
        f'above {NOISY_SHARE:.0%} the status carries a "?": re-run before acting on it.'
    )
    for i, r in enumerate(results, start=1):
        lines.append(f"[{i}] reference: {r.reference_label}")
        if r.note:
            lines.append(f"{' ' * len(f'[{i}]')} {r.note}")
    return "\n".join(lines)


def write_json(path: Path, results: list[Result], meta: dict[str, Any]) -> None:
    """Write ``{"meta": ..., "results": [...]}`` to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "results": [r.to_json() for r in results]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
