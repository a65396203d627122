"""The flow's Dask cluster closes in the background while the flow publishes its report."""

from __future__ import annotations

import threading

import pytest

from pdeflow.tasks import runtime
from pdeflow.tasks.clusters import ClusterConfig


class _Cluster:
    """Stands in for LocalCluster: its close blocks until the test lets it finish."""

    def __init__(self, **kwargs) -> None:
        self.release, self.closed, self.closer = threading.Event(), threading.Event(), None
        self.n_workers = kwargs.get("n_workers")

    def close(self) -> None:
        self.closer = threading.current_thread().name
        assert self.release.wait(30)
        self.closed.set()


class _Client:
    def __init__(self, cluster) -> None:
        self.cluster = cluster

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def test_leaving_dask_client_does_not_wait_for_the_cluster_to_close(monkeypatch):
    made: list[_Cluster] = []
    monkeypatch.setattr(runtime, "LocalCluster", lambda **kw: made.append(_Cluster()) or made[-1])
    monkeypatch.setattr(runtime, "Client", _Client)
    with runtime.dask_client(ClusterConfig(kind="local", n_workers=1)) as client:
        assert client.cluster is made[0]
    # Back in the flow while the cluster is still closing: it could not have got here if the
    # close ran in this thread (it blocks until released).
    cluster = made[0]
    assert not cluster.closed.is_set()
    cluster.release.set()
    assert cluster.closed.wait(30) and cluster.closer == "dask-cluster-close"


def test_a_failing_close_is_a_warning_not_an_error(caplog):
    class Broken:
        def close(self) -> None:
            raise OSError("scheduler gone")

    runtime.close_in_background(Broken()).join(30)
    assert any("scheduler gone" in r.getMessage() for r in caplog.records)


def test_a_prestarted_cluster_is_taken_by_the_flow_of_its_settings_only(monkeypatch):
    # The CLI starts the local cluster while Prefect creates the flow run (runtime.prestart);
    # the flow's dask_client of the same settings takes it over once, another one starts its
    # own, and a cluster no flow took is closed at exit.
    made: list[_Cluster] = []
    monkeypatch.setattr(
        runtime, "LocalCluster", lambda **kw: made.append(_Cluster(**kw)) or made[-1]
    )
    monkeypatch.setattr(runtime, "Client", _Client)
    monkeypatch.setattr(runtime, "_PRESTARTED", {})
    ours, other = ClusterConfig(kind="local", n_workers=1), ClusterConfig(kind="local", n_workers=2)
    runtime.prestart(ours)
    runtime.prestart(other)
    with runtime.dask_client(ours) as first:
        assert first.cluster.n_workers == 1  # the prestarted one
    with runtime.dask_client(ours) as second:  # a second flow (a retry): a cluster of its own
        assert second.cluster.n_workers == 1 and second.cluster is not first.cluster
    runtime._PRESTARTED[other.model_dump_json()][0].join()
    assert len(made) == 3
    for cluster in made:
        cluster.release.set()
    assert list(runtime._PRESTARTED) == [other.model_dump_json()]
    runtime._close_unused()
    unused = next(c for c in made if c.n_workers == 2)
    assert unused.closed.is_set() and not runtime._PRESTARTED


def test_a_prestart_that_failed_leaves_the_flow_to_start_and_report(monkeypatch):
    calls = []

    def failing(**kw):
        calls.append(kw)
        raise OSError("no ports left")

    monkeypatch.setattr(runtime, "LocalCluster", failing)
    monkeypatch.setattr(runtime, "_PRESTARTED", {})
    cfg = ClusterConfig(kind="local", n_workers=1)
    runtime.prestart(cfg)
    with pytest.raises(OSError, match="no ports left"), runtime.dask_client(cfg):
        pass
    assert len(calls) == 2  # the prestart, then the flow's own start, whose error is raised


def _refaulted_pages() -> tuple[int, int]:
    """Pages faulted in by 20 rounds of three 6 MiB arrays made and freed in this thread (after
    one warm-up round), and the pages one round touches."""
    import resource

    import numpy as np

    n = 6 * 2**20 // 8

    def one_round() -> None:
        arrays = [np.ones(n) for _ in range(3)]
        del arrays

    one_round()
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(20):
        one_round()
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before, 3 * n * 8 // 4096


def test_worker_threads_reuse_their_heap_instead_of_faulting_it_in_again(monkeypatch):
    # A task runs in a thread with its own glibc arena. With glibc's defaults (or Dask's
    # MALLOC_TRIM_THRESHOLD_=65536) the arena hands freed blocks back to the OS, and the next
    # batch faults every page in again: a training unit took 1.20x (2.3x with Dask's value) its
    # time in process. pdeflow's workers keep their heaps. With the defaults this counts about
    # 20 x 4,600 pages; kept heaps fault in well under a tenth of that (measured: < 100).
    for name in runtime.WORKER_MALLOC_ENV:
        monkeypatch.delenv(name, raising=False)
    with runtime.dask_client(ClusterConfig(kind="local", n_workers=1)) as client:
        env = client.run(
            lambda: {k: __import__("os").environ.get(k) for k in runtime.WORKER_MALLOC_ENV}
        )
        faults, pages = client.submit(_refaulted_pages, pure=False).result()
    assert list(env.values()) == [runtime.WORKER_MALLOC_ENV]
    assert faults < 20 * pages / 10, (faults, pages)
    slurm = ClusterConfig.model_validate({"kind": "slurm", "slurm": {"cores": 2, "memory": "4GB"}})
    script = runtime.cluster_kwargs(slurm)["job_script_prologue"]
    assert [line.split("__")[-1] for line in script[:2]] == [
        f"{k}={v}" for k, v in runtime.WORKER_MALLOC_ENV.items()
    ]


def test_workers_start_without_the_profiler_and_with_a_slow_tick_unless_the_user_says():
    """Dask's 10-ms stack sampler and 20-ms tick took a core and the GIL from running tasks
    (see ``runtime.WORKER_DASK_CONFIG``); a user's own Dask setting still reaches the
    workers."""
    import dask

    keys = list(runtime.WORKER_DASK_CONFIG)

    def seen(client) -> list:
        return list(client.run(lambda: [dask.config.get(k) for k in keys]).values())

    with runtime.dask_client(ClusterConfig(kind="local", n_workers=1)) as client:
        assert seen(client) == [list(runtime.WORKER_DASK_CONFIG.values())]
    with (
        dask.config.set({"distributed.admin.tick.interval": "50ms"}),  # the user's own
        runtime.dask_client(ClusterConfig(kind="local", n_workers=1)) as client,
    ):
        assert seen(client) == [[False, "50ms"]]
    slurm = ClusterConfig.model_validate({"kind": "slurm", "slurm": {"cores": 2, "memory": "4GB"}})
    script = runtime.cluster_kwargs(slurm)["job_script_prologue"]
    assert script[2:4] == [
        "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False",
        "export DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL=200ms",
    ]


def test_a_users_allocator_setting_reaches_the_workers(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with runtime.dask_client(ClusterConfig(kind="local", n_workers=1)) as client:
        seen = client.run(lambda: __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert list(seen.values()) == ["65536"]
