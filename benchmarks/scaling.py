"""Measurement 3: data generation on 1 against 2 Dask workers (strong scaling).

Only ``run_stage('generate', ...)`` is timed. Both clusters are started first, and a small
warm-up generation runs on each so that every worker has imported torch and the project (seconds per
worker process) and planned its FFTs before the clock starts; the timed calls then alternate
between the two clusters. The store template, the manifest and the metadata consolidation are
inside ``generate`` and stay in the timing: they are serial work a user waits for."""

from __future__ import annotations

from benchmarks.common import DEMO, Goal, Result, fresh_name, summarise, timed
from pdeflow.tasks.config import PipelineConfig, load_config
from pdeflow.tasks.runtime import dask_client
from pdeflow.tasks.stages import run_stage

# Generation-heavy: twice the demo grid, and many blocks so both workers stay busy.
BLOCK = 64
HEAVY = ["generate.n_x=256", f"generate.block_size={BLOCK}"]


def heavy_config(n_samples: int, n_workers: int) -> PipelineConfig:
    """The demo config, generation-heavy, on a fresh store name."""
    return load_config(
        DEMO,
        [
            *HEAVY,
            f"generate.n_samples={n_samples}",
            f"cluster.n_workers={n_workers}",
            f"store={fresh_name(f'bench-scaling-{n_workers}w')}",
        ],
    )


def generation_seconds(n_samples: int, repeats: int) -> dict[int, list[float]]:
    """Wall times of ``generate`` on warm clusters of 1 and 2 workers, each on a fresh store.

    Both clusters stay up and the timed calls alternate between them, so a burst of load from
    other processes hits both worker counts alike rather than one of them.

    Args:
        n_samples: Trajectories per timed generation.
        repeats: Timed generations per worker count.

    Returns:
        Seconds per call, by worker count.
    """
    counts = (1, 2)
    times: dict[int, list[float]] = {k: [] for k in counts}
    with (
        dask_client(heavy_config(BLOCK, 1).cluster) as one,
        dask_client(heavy_config(BLOCK, 2).cluster) as two,
    ):
        clients = dict(zip(counts, (one, two), strict=True))
        for k, client in clients.items():
            # One block per worker: imports and FFT plans happen here, off the clock.
            run_stage("generate", heavy_config(BLOCK * k, k), client=client)
        for _ in range(repeats):
            for k, client in clients.items():
                cfg = heavy_config(n_samples, k)
                times[k].append(
                    timed(lambda cfg=cfg, c=client: run_stage("generate", cfg, client=c))[0]
                )
    return times


def measure(quick: bool) -> list[Result]:
    """Speed-up of generation from 1 to 2 workers, as throughput in samples per second."""
    n_samples = 256 if quick else 1024
    # A call takes 1-3 s and single calls scatter by +-30% here: five repeats in full mode.
    times = generation_seconds(n_samples, repeats=3 if quick else 5)
    t1, stat = summarise(times[1], "best")
    t2, _ = summarise(times[2], "best")
    return [
        Result(
            name=f"generate(), 2 workers, {n_samples} samples, n_x=256",
            value=n_samples / t2,
            unit="samples/s",
            stat=f"{stat}, interleaved",
            reference=n_samples / t1,
            reference_label="same generate() with 1 worker; the ratio is the speed-up",
            goal=Goal(">=", 1.7),
            note=f"generate() wall time: 1 worker {t1:.2f} s, 2 workers {t2:.2f} s",
            details={"n_samples": n_samples, "overrides": HEAVY, "seconds": times},
        )
    ]
