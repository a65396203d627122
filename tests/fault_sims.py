"""Test support: the heat-rod simulator with injectable faults and a log of every call.

Used as a ``pde: custom`` Python simulator (``target: tests.fault_sims:heat_rod_with_faults``),
so fault-injection tests need no hook in production code. Two files, both named in the
simulator's ``options``:

- ``log``: one JSON line per call, ``{"pid": ..., "seeds": [...]}``, written before solving, so
  a test counts how often each block was solved (a block is identified by its samples' seeds,
  ``pdeflow.tasks.sampling.sample_seeds``), killed attempts included.
- ``marker``: a JSON fault order; without the file the function is the plain heat rod.
  ``{"action": "kill" | "raise", "seed": S}`` faults the call whose batch holds seed ``S``;
  ``{"action": "raise", "after_calls": N}`` faults every call made once the log holds at least
  ``N`` earlier lines (the quantify stage's solves, after the generate stage's ``N`` blocks).
  ``kill`` removes the marker first, then SIGKILLs its own process (a Dask worker dies
  mid-block, once); ``raise`` keeps the marker, so the fault repeats until the test removes it.
  ``{"action": "sleep", "seconds": S}`` slows every call down by S seconds (a run that lasts
  long enough to be watched or raced). ``{"action": "hold", "until": PATH}`` keeps every call
  waiting until the file PATH exists (at most 300 s): a run that stays busy, whatever the
  machine's load, until the test releases it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np

from pdeflow.tasks.simulators.examples.heat_rod import heat_rod

HOLD_MAX_S = 300.0


class InjectedFault(RuntimeError):
    """The failure a ``raise`` marker asks for."""


def heat_rod_with_faults(params, seeds, *, log: str, marker: str, **options) -> np.ndarray:
    """``heat_rod(params, seeds, **options)``, after logging the call and obeying the marker."""
    seeds = np.asarray(seeds)
    log_path = Path(log)
    earlier = len(log_path.read_text().splitlines()) if log_path.is_file() else 0
    line = json.dumps({"pid": os.getpid(), "seeds": [int(s) for s in seeds]}) + "\n"
    # One write of a short line to a file opened for appending: concurrent workers' lines do
    # not interleave.
    with open(log_path, "a") as fh:
        fh.write(line)
    order = _read_order(Path(marker))
    if order is not None and order["action"] == "sleep":
        time.sleep(float(order["seconds"]))
    elif order is not None and order["action"] == "hold":
        deadline = time.monotonic() + HOLD_MAX_S
        while not Path(order["until"]).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    elif order is not None and _applies(order, seeds, earlier):
        if order["action"] == "kill":
            Path(marker).unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFault(f"injected fault ({order})")
    return heat_rod(params, seeds, **options)


def _read_order(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _applies(order: dict, seeds: np.ndarray, earlier: int) -> bool:
    if "seed" in order:
        return int(order["seed"]) in seeds
    return earlier >= int(order["after_calls"])


def solves_per_block(log: Path, seed_to_block: dict[int, int]) -> dict[int, int]:
    """How many calls each block got, from the log; seeds not in the map are ignored."""
    counts: dict[int, int] = {}
    if not log.is_file():
        return counts
    for line in log.read_text().splitlines():
        seeds = json.loads(line)["seeds"]
        blocks = {seed_to_block[s] for s in seeds if s in seed_to_block}
        for b in blocks:
            counts[b] = counts.get(b, 0) + 1
    return counts
