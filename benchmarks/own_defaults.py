"""Every registered PDE through the whole pipeline from its own defaults.

The config names only the PDE, the sample count and the design (plus a split and a
``quantify.alpha`` that 16 samples can calibrate, and a short training); grid, domain, step,
horizon, frames, initial state and coefficient ranges are the PDE's own. Each PDE runs the four
stages on one local Dask cluster, with the FNO of its dimension. A steady PDE (Darcy) has no
time step to learn, and its input field is random: it runs generate alone.

Usage::

    .venv/bin/python -m benchmarks.own_defaults                 # all 15 PDEs
    .venv/bin/python -m benchmarks.own_defaults --pde burgers navier_stokes_3d
"""

from __future__ import annotations

import argparse
import time

from benchmarks.run import isolate_environment


def config(name: str, n_samples: int, epochs: int):
    from pdeflow.tasks.config import PipelineConfig

    return PipelineConfig.model_validate(
        {
            "store": f"own-{name}",
            "cluster": {"kind": "local", "n_workers": 2},
            "generate": {
                "pde": name,
                "n_samples": n_samples,
                "design": "random",
                "block_size": 8,
                "chunk_size": 8,
                # Of 16 samples, 7 train, 2 validate, 2 test and 5 calibrate a 75% band (the
                # conformal rank needs >= 3); the seeded split of 0.5/0.125/0.125/0.25 left no
                # test sample.
                "split": {"train": 0.4, "val": 0.1, "test": 0.2, "calibration": 0.3},
            },
            "train": {"epochs": epochs, "width": 16, "modes": 8, "n_layers": 3},
            "reduce": {"max_rank": 8},
            "quantify": {"alpha": 0.25, "n_mc": 16, "sobol_n_base": 8, "n_resplits": 20},
        }
    )


def run_one(name: str, n_samples: int, epochs: int) -> dict:
    from pdeflow.tasks.runtime import dask_client
    from pdeflow.tasks.stages import run_stage

    cfg = config(name, n_samples, epochs)
    stages = (
        ("generate",)
        if cfg.generate.problem.stationary
        else ("generate", "train", "reduce", "quantify")
    )
    row: dict = {
        "pde": name,
        "grid": "x".join(map(str, cfg.generate.grid)),
        "frames": cfg.generate.n_frames,
        "stages": {},
    }
    with dask_client(cfg.cluster) as client:
        for stage in stages:
            t0 = time.perf_counter()
            summary = run_stage(stage, cfg, client=None if stage == "train" else client)
            row["stages"][stage] = {"s": time.perf_counter() - t0, "metrics": summary.metrics}
    return row


def _fmt(row: dict) -> str:
    st = row["stages"]
    train = st.get("train", {}).get("metrics", {})
    red = st.get("reduce", {}).get("metrics", {})
    one = train.get("nrmse_one_step")
    persist = train.get("nrmse_persist_one_step")
    learned = "-" if one is None else f"{one:.3g} vs {persist:.3g}"
    rom = red.get("rom_rel_error_mean", float("nan"))
    secs = " ".join(f"{k[:3]} {v['s']:.0f}s" for k, v in st.items())
    return f"| {row['pde']} | {row['grid']} | {row['frames']} | {learned} | {rom:.3g} | {secs} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pde", nargs="+", default=None, help="PDE names (default: all)")
    parser.add_argument("--n-samples", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    isolate_environment()
    from pdeflow.tasks.environment import configure_environment
    from pdeflow.tasks.pdes import PDES

    configure_environment()
    print("| pde | grid | frames | FNO one-step nRMSE vs persistence | ROM error | time |")
    print("|---|---|---|---|---|---|")
    for name in args.pde or list(PDES):
        print(_fmt(run_one(name, args.n_samples, args.epochs)), flush=True)


if __name__ == "__main__":
    main()
