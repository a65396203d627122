"""How much of the machine a measurement had: CPU used by this process tree and by everyone else.

The development machine is shared and has 2 cores; torch's OpenMP threads slow down many times
over when another process takes a core. A wall time is only worth comparing with another taken
under a similar foreign load, so the long measurements record it next to their figures.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psutil


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot, all cores (steal excluded)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def _group(proc: psutil.Process, me: int) -> str:
    """Which part of the stack a process of our tree is: main, the Prefect server, or Dask."""
    if proc.pid == me:
        return "main"
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "other"
    if "prefect.server" in cmd or "uvicorn" in cmd:
        return "prefect server"
    # LocalCluster starts its nannies and workers with multiprocessing's spawn.
    return "dask" if "multiprocessing" in cmd else "other"


def _cpu(proc: psutil.Process) -> float | None:
    try:
        t = proc.cpu_times()
        return t.user + t.system
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class CpuMeter:
    """Context manager measuring wall time, own CPU and foreign CPU over its block.

    Own CPU is this process and all its descendants (Dask workers, the Prefect server, split by
    ``own_cpu_by_process_s``), sampled
    every ``interval`` seconds so processes that exit inside the block still count (up to their
    last sample). Foreign CPU is the machine's busy time minus own CPU.

    Args:
        interval: Seconds between samples of the process tree.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.result: dict[str, Any] = {}
        self._me = psutil.Process()
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._groups: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self._me, *self._me.children(recursive=True)]
        except psutil.NoSuchProcess:
            return [self._me]

    def _sample(self) -> None:
        for proc in self._tree():
            cpu = _cpu(proc)
            if cpu is not None:
                self._last[proc.pid] = cpu
                if proc.pid not in self._groups:
                    self._groups[proc.pid] = _group(proc, self._me.pid)
                self._start.setdefault(proc.pid, 0.0)  # born inside the block: counts from 0

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._sample()
        self._start = dict(self._last)
        self._t0, self._busy0 = time.perf_counter(), _busy_seconds()
        self._steal0 = getattr(psutil.cpu_times(), "steal", 0.0)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = time.perf_counter() - self._t0
        by_group: dict[str, float] = {}
        for pid, start in self._start.items():
            group = self._groups.get(pid, "other")
            by_group[group] = by_group.get(group, 0.0) + self._last[pid] - start
        own = sum(by_group.values())
        busy = _busy_seconds() - self._busy0
        cores = os.cpu_count() or 1
        self.result = {
            "wall_s": wall,
            "own_cpu_s": own,
            "own_cpu_by_process_s": by_group,
            "foreign_cpu_s": max(busy - own, 0.0),
            "foreign_share": max(busy - own, 0.0) / (wall * cores),
            "steal_s": getattr(psutil.cpu_times(), "steal", 0.0) - self._steal0,
        }
