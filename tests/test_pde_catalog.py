"""``pdeflow list pdes`` reads the registry's facts from a JSON file, without torch."""

from __future__ import annotations

import subprocess
import sys

from pdeflow.tasks.pde_catalog import build_catalog, load_catalog
from pdeflow.tasks.pdes import PDES


def test_the_catalog_file_equals_the_pde_classes():
    stored, live = load_catalog(), build_catalog()
    assert [r["name"] for r in stored] == list(PDES)
    assert stored == live, (
        "tasks/pde_catalog.json no longer matches the PDE classes: regenerate it with "
        "`python -m pdeflow.tasks.pde_catalog`"
    )


def test_list_pdes_imports_no_torch():
    code = (
        "import sys; from pdeflow.flows import cli; sys.argv = ['pdeflow', 'list', 'pdes']\n"
        "try:\n    cli.app()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'prefect', 'distributed', 'zarr', 'scipy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "burgers" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:] + out.stderr
