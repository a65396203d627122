"""Cluster settings: validation per kind, the keyword arguments of each cluster class, GPU routing.

The optional packages (dask-cuda, dask-jobqueue, dask-kubernetes) are not needed here: what each
kind builds is checked on the pure ``cluster_kwargs``; the real SLURMCluster is built when
dask-jobqueue is importable, and its job script checked (no Slurm installation needed).
"""

from __future__ import annotations

import importlib.util
import pickle
from types import SimpleNamespace

import pytest
from pydantic import BaseModel, ValidationError

from pdeflow.tasks.clusters import (
    ClusterConfig,
    ClusterError,
    CudaSettings,
    KubernetesSettings,
    SlurmSettings,
    check_cluster_available,
    task_resources,
)
from pdeflow.tasks.config import ConfigError, load_config
from pdeflow.tasks.runtime import (
    cluster_kwargs,
    dask_client,
    job_of,
    kubernetes_spec,
    scaling_kwargs,
)

SLURM = {"kind": "slurm", "slurm": {"cores": 8, "memory": "16GB"}}
K8S = {
    "kind": "kubernetes",
    "kubernetes": {"image": "registry.example/pdeflow:0.1", "runs_volume_claim": "pdeflow-runs"},
}


def _cluster(**data) -> ClusterConfig:
    return ClusterConfig.model_validate(data)


@pytest.mark.parametrize("model", [ClusterConfig, CudaSettings, SlurmSettings, KubernetesSettings])
def test_every_field_is_documented_and_the_model_frozen(model: type[BaseModel]):
    for name, field in model.model_fields.items():
        assert field.description and len(field.description) > 10, name
    assert model.model_config["frozen"] and model.model_config["extra"] == "forbid"
    schema = ClusterConfig.model_json_schema()  # what the Prefect UI renders as a form
    assert schema["properties"]["kind"]["enum"] == [
        "local",
        "address",
        "cuda",
        "slurm",
        "kubernetes",
    ]


@pytest.mark.parametrize(
    "address", ["tcp://127.0.0.1:8786", "tcp://dask-scheduler:8786", "tcp://[::1]:1"]
)
def test_valid_addresses(address):
    assert cluster_kwargs(_cluster(kind="address", address=address)) == {"address": address}


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1:8786", "http://host:8786", "tcp://host", "tcp://host:0", "tcp://host:65536"]
    + ["tcp://:8786", "tcp://host:8786/path", "tcp://ho st:1"],
)
def test_malformed_addresses_are_refused(address):
    with pytest.raises(ValidationError, match=r"tcp://host:port with a port in 1-65535"):
        _cluster(kind="address", address=address)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["cluster.kind=address"], "cluster.address"),
        (["cluster.kind=slurm", "cluster.slurm.memory=4GB"], "cluster.slurm.cores"),
        (["cluster.kind=slurm", "cluster.slurm.cores=4"], "cluster.slurm.memory"),
        (
            ["cluster.kind=kubernetes", "cluster.kubernetes.runs_volume_claim=r"],
            "cluster.kubernetes.image",
        ),
        (
            ["cluster.kind=kubernetes", "cluster.kubernetes.image=i"],
            "cluster.kubernetes.runs_volume_claim",
        ),
    ],
)
def test_each_kind_names_its_missing_setting(overrides, field):
    with pytest.raises(ConfigError, match=rf"needs {field}"):
        load_config(None, overrides)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"slurm": {"walltime": "90 minutes"}}, r"\[D-\]HH:MM:SS"),
        ({"slurm": {"memory": "lots"}}, "should match pattern"),
        ({"slurm": {"job_extra_directives": ["#SBATCH --qos=high"]}}, "starting with '-'"),
        ({"slurm": {"cores": 2, "processes": 4}}, r"processes \(4\) must not exceed cores"),
        ({"slurm": {"minimum_jobs": 5, "maximum_jobs": 2}}, r"minimum_jobs \(5\)"),
        ({"slurm": {"maximum_jobs": 0}}, "greater than or equal to 1"),
        ({"kubernetes": {"minimum_workers": 3, "maximum_workers": 1}}, r"minimum_workers \(3\)"),
        ({"kubernetes": {"namespace": "Bad_Name"}}, "should match pattern"),
        ({"kubernetes": {"cpu": "two"}}, "should match pattern"),
        ({"cuda": {"visible_devices": "0;1"}}, "should match pattern"),
        ({"n_workers": 0}, "greater than or equal to 1"),
        ({"slurm": {"partition": "gpu"}}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_refused_whatever_the_kind(data, fragment):
    with pytest.raises(ValidationError, match=fragment):
        _cluster(**data)


def test_settings_of_other_kinds_are_ignored():
    """One file can carry several profiles; ``kind`` picks the one used."""
    both = {**SLURM, "n_workers": 3, "kind": "local"}
    assert cluster_kwargs(_cluster(**both))["n_workers"] == 3
    assert scaling_kwargs(_cluster(**both)) is None
    as_slurm = cluster_kwargs(_cluster(**{**both, "kind": "slurm"}))
    assert as_slurm["cores"] == 8 and "n_workers" not in as_slurm


def test_local_kwargs():
    kw = cluster_kwargs(_cluster(n_workers=3, threads_per_worker=2))
    assert kw["n_workers"] == 3 and kw["threads_per_worker"] == 2 and kw["processes"]
    # Loopback only, and never the fixed 8787 a second run would fight for.
    assert kw["dashboard_address"] == "127.0.0.1:0" and kw["host"] == "127.0.0.1"
    exposed = cluster_kwargs(_cluster(host="0.0.0.0", dashboard=None))
    assert exposed["host"] == "0.0.0.0" and exposed["dashboard_address"] is None
    assert cluster_kwargs(_cluster())["n_workers"] >= 1  # one per physical core


def test_cuda_kwargs_give_each_worker_one_gpu_resource():
    kw = cluster_kwargs(_cluster(kind="cuda", cuda={"visible_devices": "0,2", "n_workers": 1}))
    assert kw["CUDA_VISIBLE_DEVICES"] == "0,2" and kw["n_workers"] == 1
    assert kw["resources"] == {"GPU": 1} and kw["threads_per_worker"] == 1
    plain = cluster_kwargs(_cluster(kind="cuda"))
    assert "CUDA_VISIBLE_DEVICES" not in plain and "n_workers" not in plain  # all visible GPUs


@pytest.mark.parametrize(
    ("kind", "device", "expected"),
    [
        ("cuda", "cuda", {"GPU": 1}),
        ("cuda", "cpu", None),
        ("local", "cuda", None),
        ("local", "cpu", None),
    ],
)
def test_task_resources(kind, device, expected):
    assert task_resources(_cluster(kind=kind), device) == expected


def test_task_resources_refuses_unknown_device():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        task_resources(_cluster(), "tpu")


def test_slurm_kwargs_and_adaptive_scaling():
    cfg = load_config(
        None,
        [
            "cluster.kind=slurm",
            "cluster.slurm={cores: 8, memory: 16GB, queue: compute, account: proj42, "
            "walltime: '02:30:00', job_extra_directives: ['--qos=normal'], "
            "minimum_jobs: 1, maximum_jobs: 6}",
        ],
    )
    kw = cluster_kwargs(cfg.cluster)
    assert kw["queue"] == "compute" and kw["account"] == "proj42" and kw["cores"] == 8
    assert kw["memory"] == "16GB" and kw["walltime"] == "02:30:00"
    assert kw["processes"] == 8  # one single-threaded worker per core, as kind local
    assert kw["job_extra_directives"] == ["--qos=normal"]
    scaling = scaling_kwargs(cfg.cluster)
    assert {k: scaling[k] for k in ("minimum_jobs", "maximum_jobs")} == {
        "minimum_jobs": 1, "maximum_jobs": 6,
    }  # fmt: skip
    # Adaptive scaling retires a job's workers together: one idle worker of a job whose other
    # worker runs a task is not retired (that cancelled the job, and the busy worker with it).
    key = scaling["worker_key"]
    workers = [SimpleNamespace(name=n) for n in ("SLURMCluster-0-0", "SLURMCluster-0-7",
                                                   "SLURMCluster-12-3")]  # fmt: skip
    assert [key(w) for w in workers] == ["SLURMCluster-0", "SLURMCluster-0", "SLURMCluster-12"]
    assert pickle.loads(pickle.dumps(key))(workers[2]) == "SLURMCluster-12"  # sent to the scheduler
    assert job_of(1, SimpleNamespace(name="SLURMCluster-3")) == "SLURMCluster-3"


def test_slurm_job_script_holds_the_settings():
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue (extra 'hpc') is not installed")
    from dask_jobqueue import SLURMCluster

    cfg = _cluster(
        kind="slurm",
        slurm={
            "cores": 8,
            "memory": "16GB",
            "processes": 4,
            "queue": "compute",
            "account": "proj42",
            "walltime": "1-02:30:00",
            "job_extra_directives": ["--qos=normal"],
            "job_script_prologue": ["module load python/3.11"],
        },
    )
    kw = cluster_kwargs(cfg)
    # Only the scheduler starts (in this process, on loopback); no job is submitted.
    kw["scheduler_options"] = {**kw["scheduler_options"], "host": "127.0.0.1"}
    with SLURMCluster(**kw) as cluster:
        script = cluster.job_script()
    for line in (
        "#SBATCH -p compute",
        "#SBATCH -A proj42",
        "#SBATCH -t 1-02:30:00",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --qos=normal",
        "#SBATCH -J pdeflow-worker",
        "module load python/3.11",
    ):
        assert line in script.splitlines(), (line, script)
    assert "--nworkers 4" in script and "--nthreads 2" in script


def test_kubernetes_spec_mounts_the_runs_volume():
    cfg = _cluster(**{**K8S, "kubernetes": {**K8S["kubernetes"], "cpu": "2", "namespace": "sim"}})
    kw = cluster_kwargs(cfg, name="pdeflow-test")
    assert kw["namespace"] == "sim" and kw["shutdown_on_close"]
    spec = kw["custom_cluster_spec"]
    assert spec["kind"] == "DaskCluster" and spec["metadata"]["name"] == "pdeflow-test"
    worker_pod = spec["spec"]["worker"]["spec"]
    assert spec["spec"]["worker"]["replicas"] == 2
    (worker,) = worker_pod["containers"]
    assert worker["image"] == "registry.example/pdeflow:0.1"
    assert worker["command"][:2] == ["dask", "worker"] and "--nthreads" in worker["command"]
    assert worker["command"][worker["command"].index("--nthreads") + 1] == "2"
    assert worker["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert worker["volumeMounts"] == [{"name": "runs", "mountPath": "/runs"}]
    assert {"name": "PDEFLOW_RUNS_DIR", "value": "/runs"} in worker["env"]
    assert worker_pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "pdeflow-runs"}
    service = spec["spec"]["scheduler"]["service"]
    # KubeCluster finds the scheduler's ports by these names.
    assert {p["name"] for p in service["ports"]} == {"tcp-comm", "http-dashboard"}
    assert service["selector"]["dask.org/cluster-name"] == "pdeflow-test"
    assert scaling_kwargs(cfg) is None
    assert cluster_kwargs(cfg)["custom_cluster_spec"]["metadata"]["name"].startswith("pdeflow-")


def test_kubernetes_adaptive_scaling():
    settings = {**K8S["kubernetes"], "minimum_workers": 1, "maximum_workers": 8}
    assert scaling_kwargs(_cluster(kind="kubernetes", kubernetes=settings)) == {
        "minimum": 1,
        "maximum": 8,
    }
    spec = kubernetes_spec(KubernetesSettings(**settings, cpu="500m"), "x")
    command = spec["spec"]["worker"]["spec"]["containers"][0]["command"]
    assert command[command.index("--nthreads") + 1] == "1"  # at least one thread


@pytest.mark.parametrize(
    ("data", "module", "extra"),
    [
        ({"kind": "cuda"}, "dask_cuda", "gpu"),
        (SLURM, "dask_jobqueue", "hpc"),
        (K8S, "dask_kubernetes", "k8s"),
    ],
)
def test_missing_package_names_the_extra(monkeypatch, data, module, extra):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a)
    )
    cfg = _cluster(**data)
    with pytest.raises(ClusterError, match=rf'pip install "pdeflow\[{extra}\]"'):
        check_cluster_available(cfg)
    with pytest.raises(ClusterError, match=module.replace("_", "-")):  # before anything starts
        with dask_client(cfg):
            pass


def test_cuda_without_gpu_is_refused(monkeypatch):
    import torch

    if torch.cuda.device_count() > 0:
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    with pytest.raises(ClusterError, match=r"needs 1 GPU\(s\), this machine shows 0"):
        check_cluster_available(_cluster(kind="cuda"))


def test_local_and_address_need_nothing_extra():
    check_cluster_available(_cluster())
    check_cluster_available(_cluster(kind="address", address="tcp://127.0.0.1:8786"))


def test_cuda_cluster_routes_gpu_tasks():
    """On a machine with GPUs and dask-cuda: one worker per GPU, each holding one GPU."""
    pytest.importorskip("dask_cuda", reason="dask-cuda (extra 'gpu') is not installed")
    import torch

    if torch.cuda.device_count() == 0:
        pytest.skip("no CUDA GPU on this machine")
    cfg = _cluster(kind="cuda")
    with dask_client(cfg) as client:
        workers = client.scheduler_info()["workers"].values()
        assert len(workers) == torch.cuda.device_count()
        assert all(w["resources"] == {"GPU": 1} for w in workers)
        fut = client.submit(torch.cuda.is_available, resources=task_resources(cfg, "cuda"))
        assert fut.result(timeout=120)
