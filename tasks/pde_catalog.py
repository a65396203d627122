"""The PDE registry's facts as a JSON file, so that ``pdeflow list pdes`` needs no torch.

Every PDE class imports torch, and importing torch costs 1 to 3 s on 2 cores: most of what
``pdeflow list pdes`` took. The facts it prints (``PdeProblem.describe()`` of every registered
PDE) are plain data, so they are written once to ``pde_catalog.json`` beside this module and read
from there. ``tests/test_pde_catalog.py`` rebuilds the facts from the classes and fails, naming the
command below, whenever the file no longer equals them, so it cannot go stale unnoticed.

Regenerate after changing a PDE's facts::

    python -m pdeflow.tasks.pde_catalog
"""

from __future__ import annotations

import json
from pathlib import Path

CATALOG = Path(__file__).with_name("pde_catalog.json")


def load_catalog() -> list[dict]:
    """The rows ``pdeflow list pdes --json`` prints, in registry order, without torch."""
    return json.loads(CATALOG.read_text())


def build_catalog() -> list[dict]:
    """The same rows computed from the PDE classes (imports torch)."""
    from pdeflow.tasks.problems import all_problems

    # Through JSON, so tuples and lists compare equal with what load_catalog returns.
    return json.loads(json.dumps([problem.describe() for problem in all_problems()]))


def write_catalog() -> Path:
    CATALOG.write_text(json.dumps(build_catalog(), indent=1) + "\n")
    return CATALOG


if __name__ == "__main__":
    print(f"wrote {write_catalog()}")
