"""Append-only JSON-lines event logs inside the store (for example the training log).

One line per event with ``event``, ``pid`` and wall-clock ``time`` (s since the epoch). Lines
are appended with one ``write`` each; a reader skips a last line that is still being written
(no newline yet), so a log can be polled while it grows and survives a kill mid-line.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class EventLog:
    """An append-only log file; its directory is created on the first write."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, event: str, **fields) -> None:
        line = {"event": event, "pid": os.getpid(), "time": time.time(), **fields}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(line) + "\n")

    def read(self) -> list[dict]:
        """Every complete line written so far, oldest first; [] without a log."""
        if not self.path.is_file():
            return []
        *complete, _partial = self.path.read_text().split("\n")
        out = []
        for line in complete:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a kill, then appended after
                continue
        return out
