"""Measurement 5: what verification adds to a resume, as a share of generating the store.

A generate stage is run on a fresh store (a warm 2-worker cluster, the stage runner exactly as a
flow calls it), then run again: the second run computes nothing but checks every block's
chunk files (sizes and CRC32s), the template, and the record, then returns. The goal is that
this resume costs at most 5% of the generation. The verification alone (every chunk's CRC32),
also with the page cache dropped where the machine allows it, is in the details.
"""

from __future__ import annotations

import subprocess
import time

from benchmarks.common import DEMO, Goal, Result, fresh_name, summarise
from pdeflow.storage import RunStore
from pdeflow.tasks.config import PipelineConfig, load_config
from pdeflow.tasks.runtime import dask_client
from pdeflow.tasks.stages import run_stage

# The solver benchmark's grid: generation-heavy, 101 frames of 1024 points per sample.
GRID = ["generate.n_x=1024", "generate.n_frames=101", "generate.t_end=1.0", "generate.dt=0.002"]


def _config(n_samples: int) -> PipelineConfig:
    over = [*GRID, f"generate.n_samples={n_samples}", "cluster.n_workers=2"]
    return load_config(DEMO, [*over, f"store={fresh_name('bench-verify')}"])


def _drop_page_cache() -> bool:
    """Drop the OS page cache (root only); whether it worked."""
    proc = subprocess.run(["sh", "-c", "sync && echo 3 > /proc/sys/vm/drop_caches"],
                          capture_output=True)  # fmt: skip
    return proc.returncode == 0


def measure(quick: bool) -> list[Result]:
    """Resume of a complete generate stage against its generation, on the same cluster."""
    n_samples = 128 if quick else 512
    gen_s, resume_s, verify_s, cold_s = [], [], [], []
    with dask_client(_config(64).cluster) as client:
        run_stage("generate", _config(64), client=client)  # imports and FFT plans, off the clock
        for _ in range(2 if quick else 3):
            cfg = _config(n_samples)
            t0 = time.perf_counter()
            run_stage("generate", cfg, client=client)
            gen_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            again = run_stage("generate", cfg, client=client)
            resume_s.append(time.perf_counter() - t0)
            assert again.computed == 0
            store = RunStore.named(cfg.store)
            t0 = time.perf_counter()
            assert store.verify() == {}
            verify_s.append(time.perf_counter() - t0)
            if _drop_page_cache():
                t0 = time.perf_counter()
                store.verify()
                cold_s.append(time.perf_counter() - t0)
    gen, stat = summarise(gen_s, "median")
    resume, _ = summarise(resume_s, "median")
    verify, _ = summarise(verify_s, "median")
    mb = n_samples * 101 * 1024 * 4 / 1e6
    cold = f", {mb / min(cold_s):.0f} MB/s from disk" if cold_s else ", page cache not droppable"
    return [
        Result(
            name=f"generate resume (verify {mb:.0f} MB, compute nothing), {n_samples} samples",
            value=resume,
            unit="s",
            stat=stat,
            reference=gen,
            reference_label="generating the same store (2 workers, n_x=1024, 101 frames)",
            goal=Goal("<=", 0.05),
            note=f"CRC32 of every chunk alone: {verify:.3f} s ({mb / verify:.0f} MB/s warm{cold})",
            details={
                "generate_s": gen_s,
                "resume_s": resume_s,
                "verify_s": verify_s,
                "verify_cold_s": cold_s,
                "mb": mb,
            },  # fmt: skip
        )
    ]
