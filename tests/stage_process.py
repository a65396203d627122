"""A stage (or a campaign) in a process of its own, for tests that SIGKILL it mid-way.

``python -m tests.stage_process infer|campaign CONFIG.json`` runs ``run_stage`` (or
``Campaign``) on a LocalCluster of two single-threaded worker processes, without the CLI's
temporary Prefect server: what the kill tests check is the store's resume, which is the same
whichever way the work was started (the CLI's own path is tested elsewhere).
"""

from __future__ import annotations

import sys
from pathlib import Path

# The command line of this module (run in the repository root, which the tests run from).
COMMAND = [sys.executable, "-m", "tests.stage_process"]


def main(what: str, config: str) -> None:
    from pdeflow.tasks.environment import configure_environment

    configure_environment()
    from distributed import Client, LocalCluster

    from pdeflow.tasks.campaign import Campaign
    from pdeflow.tasks.config import PipelineConfig
    from pdeflow.tasks.runtime import use_worker_defaults
    from pdeflow.tasks.stages import run_stage

    use_worker_defaults()  # the workers pdeflow starts for a run
    cfg = PipelineConfig.model_validate_json(Path(config).read_text())
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        if what == "campaign":

            def run(name, rcfg, first):
                return run_stage(name, rcfg, client=client).model_dump()

            Campaign(cfg, run).run()
        else:
            run_stage(what, cfg, client=client)


if __name__ == "__main__":
    main(*sys.argv[1:])
