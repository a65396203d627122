"""The Dask cluster a flow run computes on.

``cluster_kwargs`` turns a ``ClusterConfig`` into the keyword arguments of the kind's cluster
class (a pure function, testable without the optional packages); ``dask_client`` builds that
cluster for one flow run, turns on adaptive scaling where configured, and yields a client.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import dask
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from pdeflow.tasks.clusters import (
    EXTRAS,
    ClusterConfig,
    ClusterError,
    KubernetesSettings,
    check_cluster_available,
    local_workers,
)

# glibc's allocator settings for the worker processes pdeflow starts. Dask's nanny starts every
# worker with MALLOC_TRIM_THRESHOLD_=65536 (to hand freed memory back to the OS). Setting that
# variable at all turns off glibc's dynamic mmap threshold: every allocation over 128 KiB became a
# fresh mmap, page faults and munmap, and a training epoch took 2.3x its time in process. Without
# it, a unit still took 1.20x: a task runs in a thread of its own, whose allocations come from a
# per-thread arena, and glibc shrinks (madvise) and unmaps those heaps whenever their free top
# passes the trim threshold, so every batch faulted its pages in again (860k minor faults and
# 16% kernel time in the training thread, against 7k and 1% for the same unit in process, where
# the main arena grows once). A fixed mmap threshold at glibc's maximum (32 MiB: a batch's
# activations come from the heaps) and a trim threshold above a thread heap's size (64 MiB: the
# heaps are kept) took the worker's faults to 190k and the unit to 1.00x (28.3 s against
# 28.4 s, python -m benchmarks.train_units). Freed memory stays with the worker, up to its peak
# of blocks under 32 MiB; a value exported by the user still reaches the workers instead.
WORKER_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20),
}
# Dask's own background work in the processes pdeflow starts. Each worker samples its task
# thread's stack every 10 ms for the dashboard's profile page, and every process's event loop
# wakes every 20 ms to time itself. On a machine whose cores all run tasks (an ensemble on as
# many workers as cores) each wake-up takes a core and the GIL from a running task: four
# training units on 2 workers of 2 cores took 7% less time (stage median 17.8 s against
# 19.3 s, 4 interleaved pairs, every pair faster) without the profiler and with a 200-ms tick.
# The profile page stays empty; the tick only times the event loop (a blocked loop is still
# reported, at 3 s). A value set in the user's Dask config or environment wins.
WORKER_DASK_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "200ms",
}
# The same for Slurm jobs, whose workers read their Dask config on the compute node.
_JOB_PROLOGUE = [
    f"export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__{k}={v}"
    for k, v in WORKER_MALLOC_ENV.items()
] + [
    f"export DASK_{key.upper().replace('.', '__').replace('-', '_')}={value}"
    for key, value in WORKER_DASK_CONFIG.items()
]


def use_worker_defaults() -> None:
    """Give the workers this process starts pdeflow's allocator settings and quieter Dask
    background work (see above).

    Called wherever pdeflow builds a cluster; it stays set (not a context), because an
    adaptive cluster starts more workers later. Code that builds its own ``LocalCluster``
    (the benchmarks) calls it first. The nanny passes on a variable exported in its own
    environment instead.
    """
    dask.config.set(
        {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC_ENV.items()}
    )
    # As defaults: where the user's config already differs from Dask's default, it stays.
    dask.config.update_defaults(_nested(WORKER_DASK_CONFIG))


def _nested(flat: dict) -> dict:
    """``{"a.b.c": v}`` as ``{"a": {"b": {"c": v}}}`` (Dask's config layout)."""
    out: dict = {}
    for key, value in flat.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out


_log = logging.getLogger("pdeflow.runtime")


class FastExitPlugin(WorkerPlugin):
    """Worker processes of a cluster pdeflow started end without the interpreter's teardown
    once their worker has closed (``tasks.fast_exit``): closing a local cluster took 1.2 s
    after a pipeline, 1.1 s of it the workers freeing torch and SciPy on both cores while the
    flow drew its report; 0.05 s without.

    Only a worker started by a nanny, in a process of its own, is armed: a worker running in
    the flow's (or a test's) process leaves that process's exit alone.
    """

    name = "pdeflow-fast-exit"
    idempotent = True

    def teardown(self, worker) -> None:
        import multiprocessing

        if worker.nanny is not None and multiprocessing.parent_process() is not None:
            from pdeflow.tasks.fast_exit import exit_fast_when_done

            exit_fast_when_done()


def _local_servers(cluster: ClusterConfig) -> dict:
    """Where a local or cuda cluster's servers listen: ``cluster.host`` and ``dashboard``
    (by default 127.0.0.1 and a free port, so a second run beside the first never fights over
    8787)."""
    # Workers' own logs only for what is fatal to them: a task's failure comes back to the flow
    # as its exception (naming the block and samples), not as a second report on stderr.
    return {
        "host": cluster.host,
        "dashboard_address": cluster.dashboard,
        "silence_logs": logging.CRITICAL,
    }


def cluster_kwargs(cluster: ClusterConfig, name: str | None = None) -> dict:
    """Keyword arguments of the cluster class of ``cluster.kind``; builds nothing.

    The classes: ``distributed.Client`` (address), ``distributed.LocalCluster`` (local),
    ``dask_cuda.LocalCUDACluster`` (cuda), ``dask_jobqueue.SLURMCluster`` (slurm),
    ``dask_kubernetes.operator.KubeCluster`` (kubernetes).

    Args:
        cluster: the run's cluster settings.
        name: kind 'kubernetes' only: the DaskCluster's name; default ``pdeflow-<random>``,
            one cluster per flow run.
    """
    if cluster.kind == "address":
        return {"address": cluster.address}
    if cluster.kind == "local":
        return {
            "n_workers": local_workers(cluster),
            "threads_per_worker": cluster.threads_per_worker,
            "processes": True,
            **_local_servers(cluster),
        }
    if cluster.kind == "cuda":
        kwargs = {
            "n_workers": cluster.cuda.n_workers,
            "CUDA_VISIBLE_DEVICES": cluster.cuda.visible_devices,
            # One task per GPU at a time: tasks that need a GPU ask for this resource
            # (pdeflow.tasks.clusters.task_resources), and each worker holds exactly one.
            "resources": {"GPU": 1},
            "threads_per_worker": 1,
            **_local_servers(cluster),
        }
        return {k: v for k, v in kwargs.items() if v is not None or k == "dashboard_address"}
    if cluster.kind == "slurm":
        return _slurm_kwargs(cluster)
    k8s = cluster.kubernetes
    spec = kubernetes_spec(k8s, name or f"pdeflow-{uuid.uuid4().hex[:10]}")
    kwargs = {"custom_cluster_spec": spec, "namespace": k8s.namespace, "shutdown_on_close": True}
    return {k: v for k, v in kwargs.items() if v is not None}


def _slurm_kwargs(cluster: ClusterConfig) -> dict:
    s = cluster.slurm
    kwargs = {
        "queue": s.queue,
        "account": s.account,
        "cores": s.cores,
        "memory": s.memory,
        "processes": s.processes or s.cores,
        "walltime": s.walltime,
        "job_name": "pdeflow-worker",
        "job_extra_directives": list(s.job_extra_directives),
        "job_script_prologue": [*_JOB_PROLOGUE, *s.job_script_prologue],
        "local_directory": s.local_directory,
        "interface": s.interface,
        # The scheduler listens where the jobs can reach it (``interface``); its dashboard
        # stays on this machine unless ``cluster.dashboard`` says otherwise.
        "scheduler_options": {"dashboard_address": cluster.dashboard},
        "silence_logs": "error",
    }
    return {k: v for k, v in kwargs.items() if v is not None}


def job_of(processes: int, worker) -> str:
    """The batch job a dask-jobqueue worker runs in: its name without the per-process suffix.

    A job of ``processes`` > 1 names its workers ``<job>-0 .. <job>-(processes-1)``; one of a
    single process names it ``<job>``. Adaptive scaling retires workers in these groups, so it
    never cancels a job while one of its workers still runs a task: retiring the idle worker
    alone cancelled the whole job, and with it the busy one (a training unit, killed and
    restarted four times until Dask gave up).
    """
    name = str(worker.name)
    return name.rsplit("-", 1)[0] if processes > 1 else name


def scaling_kwargs(cluster: ClusterConfig) -> dict | None:
    """Arguments of ``cluster.adapt(...)``, or None for a cluster of fixed size."""
    if cluster.kind == "slurm":
        s = cluster.slurm
        processes = s.processes or s.cores or 1
        return {
            "minimum_jobs": s.minimum_jobs,
            "maximum_jobs": s.maximum_jobs,
            "worker_key": partial(job_of, processes),
        }
    if cluster.kind == "kubernetes" and cluster.kubernetes.maximum_workers is not None:
        k8s = cluster.kubernetes
        return {"minimum": k8s.minimum_workers, "maximum": k8s.maximum_workers}
    return None


def kubernetes_spec(k8s: KubernetesSettings, name: str) -> dict:
    """A ``DaskCluster`` resource (kubernetes.dask.org/v1) for the Dask operator.

    Workers run ``dask worker`` from the project image with the runs volume mounted and
    ``PDEFLOW_RUNS_DIR`` set; the scheduler's service exposes the ports the operator's
    ``KubeCluster`` looks up by name (``tcp-comm``, ``http-dashboard``).
    """
    # One thread per requested core (at least one): solve_block sizes torch's pool to it.
    threads = max(1, math.floor(_cpu_cores(k8s.cpu)))
    quantities = {"cpu": k8s.cpu, "memory": k8s.memory}
    worker = {
        "name": "worker",
        "image": k8s.image,
        "command": ["dask", "worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", str(threads)]
        + ["--dashboard", "--dashboard-address", "8788"],
        "env": [{"name": "PDEFLOW_RUNS_DIR", "value": k8s.runs_mount}],
        "resources": {"requests": quantities, "limits": quantities},
        "volumeMounts": [{"name": "runs", "mountPath": k8s.runs_mount}],
        "ports": [{"name": "http-dashboard", "containerPort": 8788, "protocol": "TCP"}],
    }
    health = {"httpGet": {"port": "http-dashboard", "path": "/health"}}
    scheduler = {
        "name": "scheduler",
        "image": k8s.image,
        "command": ["dask", "scheduler", "--host", "0.0.0.0"],
        "ports": [
            {"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
            {"name": "http-dashboard", "containerPort": 8787, "protocol": "TCP"},
        ],
        "readinessProbe": {**health, "periodSeconds": 2},
        "livenessProbe": {**health, "initialDelaySeconds": 15, "periodSeconds": 20},
    }
    service_ports = [
        {"name": p["name"], "protocol": "TCP", "port": p["containerPort"], "targetPort": p["name"]}
        for p in scheduler["ports"]
    ]
    volume = {"name": "runs", "persistentVolumeClaim": {"claimName": k8s.runs_volume_claim}}
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": {"name": name},
        "spec": {
            "worker": {
                "replicas": k8s.n_workers,
                "spec": {"containers": [worker], "volumes": [volume]},
            },
            "scheduler": {
                "spec": {"containers": [scheduler]},
                "service": {
                    "type": "ClusterIP",
                    "selector": {
                        "dask.org/cluster-name": name,
                        "dask.org/component": "scheduler",
                    },
                    "ports": service_ports,
                },
            },
        },
    }


def _cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _cluster_class(kind: str):
    """The cluster class of an optional kind, imported only when that kind is used."""
    module, _, extra = EXTRAS[kind]
    try:
        if kind == "cuda":
            from dask_cuda import LocalCUDACluster as cls
        elif kind == "slurm":
            from dask_jobqueue import SLURMCluster as cls
        else:
            from dask_kubernetes.operator import KubeCluster as cls
    except ImportError as err:  # installed but broken: say which extra to reinstall
        raise ClusterError(
            f"cluster.kind '{kind}' could not import {module} ({err}): "
            f'pip install "pdeflow[{extra}]"'
        ) from err
    return cls


@contextmanager
def dask_client(cluster: ClusterConfig) -> Iterator[Client]:
    """A Dask client for one flow run, on a cluster of ``cluster.kind`` started for it.

    Kind 'address' connects to a running scheduler and leaves it running; every other kind
    starts a cluster and shuts it down (jobs and pods included) when the block exits. A cluster
    per flow run is the safer default: attaching many runs to one long-lived scheduler leaks
    scheduler memory (prefect #21697).

    Raises:
        ClusterError: the kind's optional package is missing or no GPU is visible, raised
            before anything starts.
    """
    check_cluster_available(cluster)
    kwargs = cluster_kwargs(cluster)
    if cluster.kind == "address":
        with Client(**kwargs) as client:
            yield client
        return
    cls = LocalCluster if cluster.kind == "local" else _cluster_class(cluster.kind)
    use_worker_defaults()
    dask_cluster = _take_prestarted(cluster) or cls(**kwargs)
    try:
        scaling = scaling_kwargs(cluster)
        if scaling is not None:
            dask_cluster.adapt(**scaling)
        with Client(dask_cluster) as client:
            yield client
            # After the work, not before: the workers import this module to run it, which on
            # the way in delayed the first stage by 0.3 s. A failed run ends the slow way.
            with contextlib.suppress(Exception):
                client.register_plugin(FastExitPlugin())
    finally:
        close_in_background(dask_cluster)


# Local clusters started ahead of their flow (``prestart``): config JSON -> (thread, holder).
_PRESTARTED: dict[str, tuple[threading.Thread, dict]] = {}


def prestart(cluster: ClusterConfig) -> None:
    """Start the local cluster a flow of this process is about to open, in a thread, now.

    The CLI calls it once the run is accepted and its flow loaded: the workers start while
    Prefect creates the flow run (about 1.5 s on 2 cores, ``python -m benchmarks.overhead``);
    the flow's ``dask_client`` of the same settings takes it over. Kinds other than 'local'
    start in the flow, as they always did (jobs and pods belong to a flow run). A cluster no
    flow took is closed at exit; one that failed to start is started again by the flow, which
    then reports the error.
    """
    if cluster.kind != "local":
        return
    use_worker_defaults()
    holder: dict = {}

    def start() -> None:
        try:
            holder["cluster"] = LocalCluster(**cluster_kwargs(cluster))
        except Exception as err:  # the flow starts its own, and says why that failed
            holder["error"] = err

    thread = threading.Thread(target=start, name="dask-cluster-prestart", daemon=True)
    thread.start()
    _PRESTARTED[cluster.model_dump_json()] = (thread, holder)


def _take_prestarted(cluster: ClusterConfig):
    """The prestarted cluster of these settings (once), or None."""
    item = _PRESTARTED.pop(cluster.model_dump_json(), None)
    if item is None:
        return None
    thread, holder = item
    thread.join()
    return holder.get("cluster")


def _close_unused() -> None:
    while _PRESTARTED:
        _, (thread, holder) = _PRESTARTED.popitem()
        thread.join()
        if holder.get("cluster") is not None:
            with contextlib.suppress(Exception):
                holder["cluster"].close()


atexit.register(_close_unused)  # nothing to do unless a prestarted cluster was never taken


def close_in_background(dask_cluster) -> threading.Thread:
    """Close a cluster (workers, jobs, pods) in a thread: the flow goes on meanwhile (it
    publishes its report, 1-5 s, while the workers stop, 1-4 s, on 2 cores). The thread is not
    a daemon, so the process exits only once the cluster is closed.

    Returns:
        The closing thread (tests join it).
    """

    def close() -> None:
        try:
            dask_cluster.close()
        except Exception as err:  # the run's results are safe; say what may be left running
            _log.warning(f"closing the Dask cluster failed ({err!r}); workers may linger")

    thread = threading.Thread(target=close, name="dask-cluster-close")
    thread.start()
    return thread
