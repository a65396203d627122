"""The layers point one way, and each owns what the design says it owns.

- Science (solvers, simulators, surrogates, ROMs, UQ, designs) imports no orchestration, no
  storage, no Zarr or xarray.
- The stage layer (``tasks/stages``) is plain Python: no Prefect, no Zarr, no xarray; the store
  is its only door to data, and no stage module imports another stage module.
- ``storage/`` is the only code that imports Zarr or xarray, and it imports nothing of pdeflow's
  other layers.
- ``flows/`` holds flows (and the two entry points that start them, the CLI and serve); each
  stage's Prefect wrapper is a thin task.
- The stage order is written once.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("generate", "train", "reduce", "quantify")
TOP_SCIENCE = ("sampling.py", "metrics.py", "fields.py", "design.py", "solve.py", "plots.py")
SCIENCE = sorted(
    p
    for p in (ROOT / "tasks").rglob("*.py")
    if (p.parent != ROOT / "tasks" and p.parent != ROOT / "tasks" / "stages")
    or p.name in TOP_SCIENCE
)
STAGE_LAYER = sorted((ROOT / "tasks" / "stages").glob("*.py"))
SOURCE = sorted(p for top in ("flows", "tasks", "storage") for p in (ROOT / top).rglob("*.py"))
ORCHESTRATION = {"prefect", "prefect_dask", "flows"}
DATA_LIBRARIES = {"zarr", "xarray"}


def _top(module: str) -> str:
    """``pdeflow.flows.cli`` -> ``flows``; ``prefect.artifacts`` -> ``prefect``."""
    parts = module.split(".")
    return parts[1] if parts[0] == "pdeflow" and len(parts) > 1 else parts[0]


def _modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, as written."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _imports(path: Path) -> set[str]:
    return {_top(m) for m in _modules(path)}


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_the_layers_are_found():
    assert len(SCIENCE) >= 30 and len(STAGE_LAYER) >= 8


@pytest.mark.parametrize("path", SCIENCE, ids=_rel)
def test_science_imports_no_orchestration_storage_or_stages(path):
    assert not (_imports(path) & (ORCHESTRATION | DATA_LIBRARIES | {"dask", "distributed"}))
    assert "storage" not in _imports(path)
    assert not any(m.startswith("pdeflow.tasks.stages") for m in _modules(path))


@pytest.mark.parametrize("path", STAGE_LAYER, ids=_rel)
def test_stage_layer_is_plain_python_behind_the_store(path):
    assert not (_imports(path) & (ORCHESTRATION | DATA_LIBRARIES))


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_module_imports_another(stage):
    others = {f"pdeflow.tasks.stages.{s}" for s in STAGES if s != stage}
    others |= {f"pdeflow.tasks.{s}" for s in STAGES if s != stage}
    for path in (ROOT / "tasks" / "stages" / f"{stage}.py", ROOT / "tasks" / f"{stage}.py"):
        assert not (_modules(path) & others), path


@pytest.mark.parametrize("path", SOURCE, ids=_rel)
def test_only_storage_imports_zarr_or_xarray(path):
    if path.parent != ROOT / "storage":
        assert not (_imports(path) & DATA_LIBRARIES)


@pytest.mark.parametrize("path", sorted((ROOT / "storage").glob("*.py")), ids=lambda p: p.name)
def test_storage_imports_no_other_layer(path):
    assert not (_imports(path) & {"flows", "prefect", "tasks"})


def _decorated_by_flow(fn: ast.FunctionDef) -> bool:
    names = [d.func if isinstance(d, ast.Call) else d for d in fn.decorator_list]
    return any(isinstance(n, ast.Name) and n.id == "flow" for n in names)


@pytest.mark.parametrize("name", ["pipeline.py", "stages.py"])
def test_flow_modules_hold_only_flows(name):
    tree = ast.parse((ROOT / "flows" / name).read_text())
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert functions and all(_decorated_by_flow(f) for f in functions)
    assert not [n for n in tree.body if isinstance(n, ast.ClassDef)]


def test_flows_folder_holds_flows_and_their_entry_points_only():
    # The flows, and what starts them: the CLI, serve, the Prefect server with its crash
    # detection (server.py), that automation alone for work pools (automations.py), and the
    # temporary server of `pdeflow run` (temporary_server.py).
    found = {p.name for p in (ROOT / "flows").glob("*.py")}
    entry_points = {"cli.py", "serve.py", "server.py", "automations.py", "temporary_server.py"}
    assert found == {"__init__.py", "pipeline.py", "stages.py", "campaign.py", *entry_points}


@pytest.mark.parametrize("stage", STAGES)
def test_stage_wrappers_are_thin_tasks(stage):
    path = ROOT / "tasks" / f"{stage}.py"
    assert len(path.read_text().splitlines()) <= 40
    tree = ast.parse(path.read_text())
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert any(
        isinstance(d, ast.Call) and getattr(d.func, "id", "") == "task" for d in fn.decorator_list
    )


def test_the_cli_offers_the_stages_in_their_order_and_the_pipeline():
    from pdeflow.flows.cli import Stage
    from pdeflow.flows.serve import FLOWS
    from pdeflow.tasks.stages import STAGES as ORDER

    assert [s.value for s in Stage] == [*ORDER, "pipeline", "campaign"]
    assert set(FLOWS) == set(Stage)


def test_the_stage_order_is_written_once():
    order = ", ".join(f'"{s}"' for s in STAGES)
    hits = [_rel(p) for p in SOURCE if f"({order})" in p.read_text().replace("\n", "")]
    assert hits == [], hits
    registry = (ROOT / "tasks" / "stages" / "registry.py").read_text()
    assert "Generate(), Train(), Reduce(), Quantify()" in registry
