"""The flow's Dask cluster closes in the background while the flow publishes its report."""

from __future__ import annotations

import threading

from pdeflow.tasks import runtime
from pdeflow.tasks.clusters import ClusterConfig


class _Cluster:
    """Stands in for LocalCluster: its close blocks until the test lets it finish."""

    def __init__(self, **kwargs) -> None:
        self.release, self.closed, self.closer = threading.Event(), threading.Event(), None

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
