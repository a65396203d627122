"""Where a run's Dask work executes: the ``cluster`` section of a pipeline config.

Only the settings live here (plain pydantic, so the Prefect UI renders them as a form); building
the cluster from them is ``pdeflow.tasks.runtime.dask_client``. Five kinds:

- ``local``: a LocalCluster on this machine (``n_workers``, ``threads_per_worker``).
- ``address``: the scheduler of a running cluster (``address: tcp://host:port``).
- ``cuda``: a dask-cuda LocalCUDACluster, one worker per visible GPU (section ``cuda``).
- ``slurm``: a dask-jobqueue SLURMCluster that submits worker jobs (section ``slurm``).
- ``kubernetes``: a dask-kubernetes operator KubeCluster (section ``kubernetes``).

Every Dask server pdeflow starts on this machine (scheduler, workers, dashboard) listens on
127.0.0.1 unless ``host`` and ``dashboard`` say otherwise: Dask has no authentication.

Settings of the kinds not selected are ignored, not rejected: one file can hold a Slurm and a
local profile and switch between them with ``--set cluster.kind=...``. Unknown keys are still
rejected, and every kind's required settings are checked when the config is loaded.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ClusterKind = Literal["local", "address", "cuda", "slurm", "kubernetes"]

_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
_ADDRESS = re.compile(rf"^tcp://{_HOST}:(?P<port>[0-9]{{1,5}})$")
# Slurm's time formats used for job limits: [D-]HH:MM:SS.
_WALLTIME = re.compile(r"^([0-9]+-)?[0-9]{1,3}:[0-5][0-9]:[0-5][0-9]$")
# What dask.utils.parse_bytes accepts, as written in job scripts: a number and a unit.
_BYTES = re.compile(r"^[0-9]+(\.[0-9]+)?\s*(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
# Kubernetes resource quantities: CPUs ("2", "500m") and memory ("8Gi", "512Mi").
_K8S_CPU = re.compile(r"^[0-9]+(\.[0-9]+)?m?$")
_K8S_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

# The package each kind needs, and the pdeflow extra that installs it.
EXTRAS = {
    "cuda": ("dask_cuda", "dask-cuda", "gpu"),
    "slurm": ("dask_jobqueue", "dask-jobqueue", "hpc"),
    "kubernetes": ("dask_kubernetes", "dask-kubernetes", "k8s"),
}


class ClusterError(ValueError):
    """A cluster that cannot start here: a missing optional package or no GPU."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class CudaSettings(_Section):
    """kind 'cuda': dask-cuda's LocalCUDACluster, one single-threaded worker per GPU."""

    visible_devices: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9-]+(,[A-Za-z0-9-]+)*$",
        description="GPUs to use, as CUDA_VISIBLE_DEVICES: indices '0,1' or GPU UUIDs; "
        "default every GPU this process sees.",
    )
    n_workers: int | None = Field(
        None, ge=1, le=1024, description="Use only the first n of the visible GPUs; default all."
    )


class SlurmSettings(_Section):
    """kind 'slurm': dask-jobqueue's SLURMCluster; each batch job runs Dask workers.

    The flow process hosts the scheduler; jobs run ``python -m distributed.cli.dask_worker`` with
    this process's interpreter, so the project and the runs directory must sit on a file system
    the compute nodes share, at the same path.
    """

    queue: str | None = Field(
        None, min_length=1, description="Partition (sbatch -p); default the site's default."
    )
    account: str | None = Field(
        None, min_length=1, description="Account charged (sbatch -A); default the user's."
    )
    cores: int | None = Field(
        None, ge=1, le=4096, description="CPU cores per job (sbatch --cpus-per-task); required."
    )
    memory: str | None = Field(
        None,
        pattern=_BYTES.pattern,
        description="Memory per job, e.g. '16GB' or '64GiB' (sbatch --mem); required.",
    )
    processes: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Dask worker processes per job, sharing its cores; default one "
        "single-threaded worker per core, as for kind 'local'.",
    )
    walltime: str = Field("01:00:00", description="Time limit per job, [D-]HH:MM:SS (sbatch -t).")
    job_extra_directives: tuple[str, ...] = Field(
        (),
        max_length=64,
        description="Extra sbatch options, one per entry, e.g. '--qos=normal' or "
        "'--constraint=cpu'; written as '#SBATCH <entry>'.",
    )
    job_script_prologue: tuple[str, ...] = Field(
        (),
        max_length=64,
        description="Shell lines run in each job before the worker starts, e.g. "
        "'module load python/3.11'.",
    )
    local_directory: str | None = Field(
        None, min_length=1, description="Node-local scratch for worker spill files, e.g. '$TMPDIR'."
    )
    interface: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Network interface of scheduler and workers, e.g. 'ib0'; default the "
        "hostname's address.",
    )
    minimum_jobs: int = Field(
        0, ge=0, le=10_000, description="Adaptive scaling: jobs kept running while idle."
    )
    maximum_jobs: int = Field(
        4, ge=1, le=10_000, description="Adaptive scaling: most jobs queued or running at once."
    )

    @field_validator("walltime")
    @classmethod
    def _slurm_time(cls, v: str) -> str:
        if not _WALLTIME.match(v):
            raise ValueError(f"must be [D-]HH:MM:SS, e.g. '02:00:00' or '1-00:00:00' (got {v!r})")
        return v

    @field_validator("job_extra_directives")
    @classmethod
    def _sbatch_options(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [d for d in v if not d.startswith("-") or "\n" in d]
        if bad:
            raise ValueError(f"each entry is one sbatch option starting with '-' (got {bad})")
        return v

    @model_validator(mode="after")
    def _check_counts(self) -> SlurmSettings:
        if self.cores is not None and self.processes is not None and self.processes > self.cores:
            raise ValueError(
                f"processes ({self.processes}) must not exceed cores ({self.cores}): "
                "each worker process needs at least one core"
            )
        if self.minimum_jobs > self.maximum_jobs:
            raise ValueError(
                f"minimum_jobs ({self.minimum_jobs}) must not exceed maximum_jobs "
                f"({self.maximum_jobs})"
            )
        return self


class KubernetesSettings(_Section):
    """kind 'kubernetes': a DaskCluster resource of the dask-kubernetes operator.

    Workers mount the persistent volume claim that holds the runs directory at ``runs_mount``;
    the Prefect worker's pods must mount the same claim at the same path, with
    ``PDEFLOW_RUNS_DIR`` pointing there, because stores are addressed by absolute path.
    """

    image: str | None = Field(
        None,
        min_length=1,
        description="Container image with pdeflow installed (deploy/Dockerfile); required.",
    )
    namespace: str | None = Field(
        None,
        pattern=_DNS_LABEL.pattern,
        description="Namespace of the Dask cluster; default the current one.",
    )
    n_workers: int = Field(
        2, ge=0, le=10_000, description="Workers at start (fixed size when not adaptive)."
    )
    minimum_workers: int = Field(
        0, ge=0, le=10_000, description="Adaptive scaling: fewest workers (with maximum set)."
    )
    maximum_workers: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Adaptive scaling: most workers; unset keeps n_workers fixed.",
    )
    cpu: str = Field(
        "1",
        pattern=_K8S_CPU.pattern,
        description="CPU request and limit per worker pod, e.g. '1' or '500m'.",
    )
    memory: str = Field(
        "4Gi",
        pattern=_K8S_MEMORY.pattern,
        description="Memory request and limit per worker pod, e.g. '4Gi'.",
    )
    runs_volume_claim: str | None = Field(
        None,
        pattern=_DNS_LABEL.pattern,
        description="PersistentVolumeClaim (ReadWriteMany) holding the runs directory; required.",
    )
    runs_mount: str = Field(
        "/runs",
        pattern=r"^/[A-Za-z0-9_./-]*$",
        description="Absolute path the claim is mounted at; PDEFLOW_RUNS_DIR of the workers.",
    )

    @model_validator(mode="after")
    def _check_scaling(self) -> KubernetesSettings:
        if self.maximum_workers is not None and self.minimum_workers > self.maximum_workers:
            raise ValueError(
                f"minimum_workers ({self.minimum_workers}) must not exceed maximum_workers "
                f"({self.maximum_workers})"
            )
        return self


# Settings each kind cannot start without: (section, field, what it is).
_REQUIRED = {
    "address": [(None, "address", "the scheduler, tcp://host:port")],
    "slurm": [("slurm", "cores", "CPU cores per job"), ("slurm", "memory", "memory per job")],
    "kubernetes": [
        ("kubernetes", "image", "a container image with pdeflow installed"),
        ("kubernetes", "runs_volume_claim", "the claim holding the runs directory"),
    ],
}


class ClusterConfig(BaseModel):
    """Where the Dask work runs; only the settings of the selected ``kind`` are used."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: ClusterKind = Field(
        "local",
        description="local: a LocalCluster on this machine; address: a running scheduler; "
        "cuda: one worker per GPU (extra 'gpu'); slurm: batch jobs (extra 'hpc'); "
        "kubernetes: the Dask operator (extra 'k8s').",
    )
    address: str | None = Field(
        None, description="kind 'address': the scheduler, tcp://host:port (port 1-65535)."
    )
    n_workers: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="kind 'local': worker processes; default one per physical core.",
    )
    threads_per_worker: int = Field(
        1, ge=1, le=256, description="kind 'local': threads per worker process."
    )
    host: str = Field(
        "127.0.0.1",
        pattern=rf"^{_HOST}$",
        description="kinds 'local' and 'cuda': the address the scheduler and workers listen "
        "on. 127.0.0.1 (default) keeps them on this machine; 0.0.0.0 exposes them on every "
        "interface, unauthenticated.",
    )
    dashboard: str | None = Field(
        "127.0.0.1:0",
        pattern=rf"^{_HOST}?:[0-9]{{1,5}}$",
        description="The Dask dashboard's host:port (port 0: any free port); null: no "
        "dashboard. Default 127.0.0.1:0, this machine only.",
    )
    cuda: CudaSettings = Field(CudaSettings(), description="Settings of kind 'cuda'.")
    slurm: SlurmSettings = Field(SlurmSettings(), description="Settings of kind 'slurm'.")
    kubernetes: KubernetesSettings = Field(
        KubernetesSettings(), description="Settings of kind 'kubernetes'."
    )

    @field_validator("address")
    @classmethod
    def _address_form(cls, v: str | None) -> str | None:
        if v is None:
            return v
        match = _ADDRESS.match(v)
        if not match or not 1 <= int(match["port"]) <= 65535:
            raise ValueError(f"must be tcp://host:port with a port in 1-65535 (got {v!r})")
        return v

    @model_validator(mode="after")
    def _check_required(self) -> ClusterConfig:
        for section, name, what in _REQUIRED.get(self.kind, ()):
            owner = getattr(self, section) if section else self
            if getattr(owner, name) is None:
                field = f"cluster.{section}.{name}" if section else f"cluster.{name}"
                raise ValueError(f"kind '{self.kind}' needs {field}, {what} (got no value)")
        return self


def check_cluster_available(cluster: ClusterConfig) -> None:
    """Fail fast, before any compute, when ``cluster`` cannot start on this machine.

    Raises:
        ClusterError: the kind's optional package is missing (the message names the pdeflow
            extra that installs it), or kind 'cuda' sees fewer GPUs than it asks for.
    """
    if cluster.kind in EXTRAS:
        module, package, extra = EXTRAS[cluster.kind]
        if importlib.util.find_spec(module) is None:
            raise ClusterError(
                f"cluster.kind '{cluster.kind}' needs {package}, which is not installed: "
                f'pip install "pdeflow[{extra}]"'
            )
    if cluster.kind == "cuda":
        import torch

        found = torch.cuda.device_count()
        wanted = cluster.cuda.n_workers or 1
        if found < wanted:
            raise ClusterError(
                f"cluster.kind 'cuda' needs {wanted} GPU(s), this machine shows {found} "
                "(check the driver and CUDA_VISIBLE_DEVICES)"
            )


def task_resources(cluster: ClusterConfig, device: str) -> dict[str, float] | None:
    """Worker resources a task on ``device`` must hold, for ``client.map(..., resources=...)``.

    Kind 'cuda' starts every worker with ``resources={"GPU": 1}``, so a task that asks for one
    GPU runs on its own GPU and never shares it with a second task. Other kinds advertise no
    resources (a task asking for one would wait forever), so they get None.

    Args:
        cluster: the run's cluster settings.
        device: the torch device the task computes on, 'cpu' or 'cuda'.

    Returns:
        ``{"GPU": 1}`` for a 'cuda' task on kind 'cuda', else None.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda' (got {device!r})")
    if cluster.kind == "cuda" and device == "cuda":
        return {"GPU": 1}
    return None


def local_workers(cluster: ClusterConfig) -> int:
    """Worker processes of kind 'local': ``n_workers``, else one per physical core."""
    import psutil

    return cluster.n_workers or psutil.cpu_count(logical=False) or os.cpu_count() or 1
