"""Bayesian inversion: delayed acceptance (the ROM screens) against Metropolis on the solver.

Run alone: ``python -m benchmarks.infer [--steps N] [--out DIR]`` (about 10 minutes on 2 cores
with the defaults).

A Burgers store like the demo's (viscosity log-uniform on [0.05, 0.5], three sine amplitudes;
256 samples at 128 points, POD-RBF ROM) is generated and reduced; then ``pdeflow run infer``'s
stage samples the posterior of the four parameters given a held-out test sample observed at 8
sensors and 4 saved frames with 2% noise, by both samplers with the same chains, steps and
starting points. Printed per sampler: acceptance rates, solver calls, ArviZ's bulk ESS (the
smallest over the parameters), ESS per solver call, R-hat; then their ratio, and the posterior
against the truth. The posterior plot goes to ``--out``.

Both samplers share the solver, so ESS per solver call is what delayed acceptance changes: the
ROM decides where the solver is called. It is measured, not timed, so the machine's noise does
not enter the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "flows" / "configs" / "demo.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.infer", description=__doc__)
    parser.add_argument("--steps", type=int, default=2000, help="kept steps per chain")
    parser.add_argument("--burn-in", type=int, default=500, help="burn-in steps per chain")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.02, help="relative noise")
    parser.add_argument(
        "--inflation", type=float, default=1.0, help="infer.error_inflation of the screen"
    )
    parser.add_argument("--out", default=tempfile.gettempdir(), help="where the plot goes")
    args = parser.parse_args(argv)
    runs = Path(tempfile.mkdtemp(prefix="pdeflow-infer-bench-"))
    os.environ["PDEFLOW_RUNS_DIR"] = str(runs)
    from pdeflow.tasks.environment import configure_environment

    configure_environment()
    from distributed import Client, LocalCluster

    from pdeflow.storage import RunStore
    from pdeflow.tasks.config import load_config
    from pdeflow.tasks.report_infer import PLOT, infer_section, write_infer_plot
    from pdeflow.tasks.stages import run_stage

    cfg = load_config(
        DEMO,
        [
            "store=infer-bench",
            "generate.n_samples=256",
            f"infer.n_chains={args.chains}",
            f"infer.burn_in={args.burn_in}",
            f"infer.n_steps={args.steps}",
            "infer.checkpoint_every=250",
            f"infer.noise={args.noise}",
            f"infer.error_inflation={args.inflation}",
        ],
    )
    try:
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as lc,
            Client(lc) as client,
        ):
            for stage in ("generate", "reduce", "infer"):
                t0 = time.perf_counter()
                summary = run_stage(stage, cfg, client=client)
                print(f"{stage}: {time.perf_counter() - t0:.1f} s", flush=True)
        store = RunStore.named(cfg.store)
        rec = store.record("infer")
        for method, row in rec.details["methods"].items():
            ess = {n: round(p["ess_bulk"]) for n, p in row["parameters"].items()}
            print(f"{method}: bulk ESS per parameter {ess}")
        print("\n".join(infer_section(rec)))
        for note in summary.notes:
            print("note:", note)
        with store.lock("benchmark"):
            rel = write_infer_plot(cfg, store)
        out = Path(args.out) / f"{PLOT}.png"
        shutil.copy(store.path / rel, out)
        print(f"posterior plot: {out}")
    finally:
        shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
