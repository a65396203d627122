"""Launch data-parallel training (``pdeflow.tasks.surrogates.ddp.train_rank``) on Dask workers.

One rank runs on each chosen worker, pinned there (``workers=[address]``,
``allow_other_workers=False``): a rank's process holds its torch.distributed process group and,
on a GPU cluster, its GPU. Rank 0's worker hosts the rendezvous at ``tcp://host:port``, with
``host`` taken from that worker's Dask address and ``port`` a free one found on that worker.

The call never waits on a failed run: as soon as one rank raises, the others are given
``grace_s`` seconds to report (they stop within one batch, see the ranks' failure exchange),
whatever is still running is cancelled, and the call raises the first rank's own error, not the
``PeerRankFailed`` of the ranks that stopped because of it.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable

from distributed import Client, Future
from distributed.comm.addressing import get_address_host

from pdeflow.tasks.surrogates.ddp import Dataset, DDPSettings, PeerRankFailed, train_rank

# Seconds between two looks at the ranks' futures; small next to any training step.
POLL_S = 0.05
# Seconds between two progress reports (``run_ranks``' ``on_poll``) while the ranks run.
REPORT_S = 2.0


def free_port(host: str) -> int:
    """A TCP port that is free on ``host`` now (the OS picks it), for rank 0's rendezvous.

    Another process could take it before rank 0 binds it; the rendezvous then fails at once
    with "address already in use" rather than hanging.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def choose_workers(client: Client, device: str, n_ranks: int | None) -> tuple[list[str], bool]:
    """Addresses of the workers that run ranks 0, 1, ..., in address order.

    With ``device`` 'cuda', workers that declare a ``GPU`` resource (kind 'cuda' clusters give
    each worker ``resources={"GPU": 1}``) are the candidates when there are any, one rank per
    GPU worker; otherwise every worker is.

    Args:
        client: Client of the cluster.
        device: 'cpu' or 'cuda', as ``DDPSettings.device``.
        n_ranks: Ranks wanted; None: one per candidate worker.

    Returns:
        ``(addresses, gpu)``: ``n_ranks`` worker addresses, and whether they are GPU workers
        (each rank then holds the worker's ``GPU`` resource while it runs).
    """
    workers = client.scheduler_info(n_workers=-1)["workers"]
    candidates = sorted(workers)
    gpus = [a for a in candidates if workers[a].get("resources", {}).get("GPU", 0) >= 1]
    gpu = device == "cuda" and bool(gpus)
    if gpu:
        candidates = gpus
    n = len(candidates) if n_ranks is None else n_ranks
    if not 1 <= n <= len(candidates):
        raise ValueError(
            f"n_ranks={n_ranks} needs between 1 and {len(candidates)} ranks: the cluster has "
            f"{len(candidates)} eligible worker(s) for device {device!r}"
        )
    return candidates[:n], gpu


def rendezvous(client: Client, address: str) -> str:
    """``tcp://host:port`` for rank 0 on the worker at ``address``: its host, a port free there.

    The port is looked up by a small task on that worker, since only it can tell.
    """
    host = get_address_host(address)
    port = client.submit(
        free_port, host, workers=[address], allow_other_workers=False, pure=False
    ).result(timeout=60)
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def train_ddp(
    client: Client,
    build_model: Callable,
    load_shard: Callable[[int, int], Dataset],
    settings: DDPSettings,
    n_ranks: int | None = None,
    *,
    grace_s: float = 10.0,
    timeout_s: float | None = None,
) -> dict:
    """Train one model with ``train_rank`` on ``n_ranks`` Dask workers and gather the ranks.

    Args:
        client: Client of the cluster; each chosen worker must be its own process.
        build_model: Picklable callable returning the model (see ``train_rank``).
        load_shard: Picklable callable ``(rank, world_size) -> (u, p, u_next)``.
        settings: Schedule and communication settings; ``settings.batch_size`` must be a
            multiple of the number of ranks (checked before anything is submitted).
        n_ranks: Ranks (= workers) to use; default every eligible worker (see
            ``choose_workers``).
        grace_s: Seconds the other ranks get to report once one has failed.
        timeout_s: Seconds the whole run may take before it is cancelled and ``TimeoutError``
            raised; default None (no limit, the ranks' own ``settings.timeout_s`` still bounds
            every wait on a silent peer).

    Returns:
        dict with ``world_size``, ``workers`` (address of rank r at index r), ``init_method``,
        ``epoch_losses``, ``step_losses``, ``steps``, ``n_samples`` and ``state_dict`` (all as
        ``train_rank`` returns them, rank 0's), ``seconds`` (the slowest rank's epochs),
        ``rank_seconds`` and ``setup_seconds`` (per rank), and ``wall_seconds`` (this call).

    Raises:
        ValueError: ``n_ranks`` does not divide the global batch or exceeds the workers.
        Exception: the first failing rank's own error, re-raised here, with a note naming the
            rank and its worker.
        TimeoutError: ``timeout_s`` passed.
    """
    start = time.perf_counter()
    if n_ranks is not None:
        settings.check_world_size(n_ranks)
    workers, _ = choose_workers(client, settings.device, n_ranks)
    world_size = len(workers)
    settings.check_world_size(world_size)
    results, workers, init_method = run_ranks(
        client, train_rank, (build_model, load_shard, settings), settings.device, world_size,
        grace_s=grace_s, timeout_s=timeout_s,
    )  # fmt: skip
    first = results[0]
    if any(r["step_losses"] != first["step_losses"] for r in results):
        raise RuntimeError("ranks disagree on the batch losses; their exchanges are out of step")
    return {
        "world_size": world_size,
        "workers": workers,
        "init_method": init_method,
        "epoch_losses": first["epoch_losses"],
        "step_losses": first["step_losses"],
        "steps": first["steps"],
        "n_samples": first["n_samples"],
        "state_dict": first["state_dict"],
        "seconds": max(r["seconds"] for r in results),
        "rank_seconds": [r["seconds"] for r in results],
        "setup_seconds": [r["setup_seconds"] for r in results],
        "wall_seconds": time.perf_counter() - start,
    }


def run_ranks(
    client: Client,
    fn: Callable,
    args: tuple,
    device: str,
    n_ranks: int | None,
    *,
    grace_s: float = 10.0,
    timeout_s: float | None = None,
    on_poll: Callable[[], None] | None = None,
    name: str = "ddp",
) -> tuple[list, list[str], str]:
    """Run ``fn(rank, world_size, init_method, *args)`` once per rank, each on its own worker.

    Rank r runs pinned to the r-th worker of ``choose_workers`` (and holds its ``GPU`` resource
    on a GPU cluster); rank 0's worker hosts the rendezvous ``init_method``.

    Args:
        on_poll: called about every ``REPORT_S`` seconds while the ranks run (progress).
        name: the tasks' key prefix, as the dashboard shows them.

    Returns:
        ``(results, workers, init_method)``: every rank's return value and worker, by rank.

    Raises:
        The first failing rank's own error (see ``train_ddp``), or ``TimeoutError``.
    """
    start = time.perf_counter()
    workers, gpu = choose_workers(client, device, n_ranks)
    init_method = rendezvous(client, workers[0])
    run = uuid.uuid4().hex[:8]
    futures = [
        client.submit(
            fn, rank, len(workers), init_method, *args,
            workers=[address], resources={"GPU": 1} if gpu else None,
            key=f"{name}-{run}-rank-{rank}", allow_other_workers=False, pure=False,
        )
        for rank, address in enumerate(workers)
    ]  # fmt: skip
    results = _gather_ranks(client, futures, workers, grace_s, timeout_s, start, on_poll)
    return results, workers, init_method


def _gather_ranks(
    client: Client,
    futures: list[Future],
    workers: list[str],
    grace_s: float,
    timeout_s: float | None,
    start: float,
    on_poll: Callable[[], None] | None = None,
) -> list:
    """Every rank's result, or the root-cause error once one rank has failed."""
    failed_at, reported = None, start
    while True:
        if on_poll is not None and time.perf_counter() - reported >= REPORT_S:
            on_poll()
            reported = time.perf_counter()
        states = [f.status for f in futures]
        if all(s == "finished" for s in states):
            return [f.result() for f in futures]
        now = time.perf_counter()
        if failed_at is None and any(s not in ("pending", "finished") for s in states):
            failed_at = now
        if failed_at is not None and ("pending" not in states or now - failed_at > grace_s):
            break
        if failed_at is None and timeout_s is not None and now - start > timeout_s:
            client.cancel(futures)
            raise TimeoutError(f"DDP training on {len(futures)} ranks exceeded {timeout_s} s")
        time.sleep(POLL_S)
    client.cancel([f for f in futures if f.status == "pending"])
    raise _root_cause(futures, workers)


def _root_cause(futures: list[Future], workers: list[str]) -> BaseException:
    """The lowest rank's own error (not a ``PeerRankFailed``), noted with its rank and worker.

    Ranks that raised come before ranks whose task was cancelled or lost.
    """
    raised = [(r, f.exception()) for r, f in enumerate(futures) if f.status == "error"]
    own = [(r, e) for r, e in raised if not isinstance(e, PeerRankFailed)]
    others = [
        (r, RuntimeError(f"rank {r}'s task ended as {f.status}"))
        for r, f in enumerate(futures)
        if f.status not in ("error", "finished")
    ]
    rank, error = (own + raised + others)[0]
    error.add_note(f"raised by DDP rank {rank} of {len(futures)} on worker {workers[rank]}")
    for r, _ in others:
        if r != rank:
            error.add_note(
                f"rank {r} on worker {workers[r]} never returned: its worker died or left"
            )
    return error
