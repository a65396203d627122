"""deploy/: the compose files, the Dockerfile, the Slurm and Kubernetes recipes hold together.

Without a Docker engine (and compose plugin) here, the compose files are checked as YAML for
what they must contain, after resolving ``${VAR}`` the way compose does with the example env
file; ``docker compose config`` runs too where it is available.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from pdeflow.flows.automations import DEFAULT_HEARTBEAT_S
from pdeflow.tasks.config import load_config
from pdeflow.tasks.runtime import cluster_kwargs, scaling_kwargs
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
PROJECT_SERVICES = ("prefect-server", "prefect-worker", "dask-scheduler", "dask-worker")
_VAR = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def _env_example() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (DEPLOY / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$`` escapes."""

    def sub(match: re.Match) -> str:
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        if op == "?":
            raise AssertionError(f"required variable {name} is unset: {arg}")
        return arg or ""

    return _VAR.sub(sub, text.replace("$$", "\0")).replace("\0", "$")


def _compose(*names: str) -> dict:
    """The named compose files, interpolated and merged service by service (shallow per key)."""
    merged: dict = {"services": {}}
    for name in names:
        doc = yaml.safe_load(_interpolate((DEPLOY / name).read_text(), _env_example()))
        for service, body in doc.pop("services").items():
            merged["services"].setdefault(service, {}).update(body)
        merged.update(doc)
    return merged


@pytest.fixture(scope="module")
def compose() -> dict:
    return _compose("compose.yaml")


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def _mounts(service: dict) -> dict[str, str]:
    return dict(v.split(":")[:2] for v in service.get("volumes", []))


def test_services_and_volumes(compose):
    assert set(compose["services"]) == {"postgres", *PROJECT_SERVICES}
    assert {"postgres-data", "runs"} <= set(compose["volumes"])


def test_postgres_is_healthchecked_and_the_server_waits_for_it(compose):
    pg, server = compose["services"]["postgres"], compose["services"]["prefect-server"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert _mounts(pg) == {"postgres-data": "/var/lib/postgresql/data"}
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = _env(server)["PREFECT_API_DATABASE_CONNECTION_URL"]
    password = _env_example()["POSTGRES_PASSWORD"]
    assert url == f"postgresql+asyncpg://prefect:{password}@postgres:5432/prefect"
    assert _env(pg)["POSTGRES_PASSWORD"] == password


def test_basic_auth_from_the_env_file(compose):
    services = compose["services"]
    auth = _env_example()["PREFECT_AUTH_STRING"]
    assert re.fullmatch(r"[^:]+:.+", auth)
    assert _env(services["prefect-server"])["PREFECT_SERVER_API_AUTH_STRING"] == auth
    assert _env(services["prefect-worker"])["PREFECT_API_AUTH_STRING"] == auth
    raw = (DEPLOY / "compose.yaml").read_text()
    # Unset secrets stop compose instead of starting an open server.
    assert "${PREFECT_AUTH_STRING:?" in raw and "${POSTGRES_PASSWORD:?" in raw


def test_published_ports_bind_to_loopback(compose):
    ports = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert ports and all(str(p).startswith("127.0.0.1:") for p in ports)
    assert "127.0.0.1:4200:4200" in compose["services"]["prefect-server"]["ports"]


def test_runs_volume_at_the_same_path_in_worker_and_dask_containers(compose):
    services = compose["services"]
    paths = {
        name: _mounts(services[name]).get("runs") for name in ("prefect-worker", "dask-worker")
    }
    assert set(paths.values()) == {"/runs"}, paths
    for name in paths:
        assert _env(services[name])["PDEFLOW_RUNS_DIR"] == "/runs"
    assert services["prefect-worker"]["command"][:3] == ["prefect", "worker", "start"]
    assert "process" in services["prefect-worker"]["command"]
    assert "tcp://dask-scheduler:8786" in services["dask-worker"]["command"]


@pytest.mark.parametrize("files", [("compose.yaml",), ("compose.yaml", "compose.gpu.yaml")])
def test_project_services_share_one_image_and_build(files):
    services = _compose(*files)["services"]
    images = {services[name]["image"] for name in PROJECT_SERVICES}
    builds = {yaml.safe_dump(services[name]["build"]) for name in PROJECT_SERVICES}
    assert len(images) == 1 and len(builds) == 1, (images, builds)
    build = services["dask-worker"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert set(build["args"]) <= {"TORCH_SPEC", "TORCH_INDEX_URL", "EXTRAS"}


def test_gpu_override_reserves_devices_for_cuda_workers():
    services = _compose("compose.yaml", "compose.gpu.yaml")["services"]
    worker = services["dask-worker"]
    assert worker["command"][:3] == ["dask", "cuda", "worker"]
    assert worker["command"][worker["command"].index("--resources") + 1] == "GPU=1"
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert worker["build"]["args"]["EXTRAS"] == "gpu"
    assert "/cu" in worker["build"]["args"]["TORCH_INDEX_URL"]  # a CUDA build of torch


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    instructions = [line for line in lines if not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    assert 'ARG TORCH_SPEC="torch==2.13.0"' in instructions
    assert any(line.startswith("ARG TORCH_INDEX_URL=") and "/whl/cpu" in line for line in lines)
    assert re.search(r'pip install "\$\{TORCH_SPEC\}" --index-url "\$\{TORCH_INDEX_URL\}"', text)
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "useradd" in text and users[-1] in text.split("useradd", 1)[1].split("\n", 1)[0]
    assert instructions[-1] == 'CMD ["pdeflow", "--help"]'
    assert not any(line.startswith("ENTRYPOINT") for line in instructions)
    for path in re.findall(r"^COPY (\S+)", text, flags=re.M):
        assert (ROOT / path).exists(), path


def test_slurm_script_parses_and_starts_a_worker():
    script = DEPLOY / "slurm" / "prefect-worker.sbatch"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert re.search(r"^#SBATCH --time=\d+:\d\d:\d\d$", text, flags=re.M)
    assert 'prefect" worker start --pool' in text and "--type process" in text


def test_slurm_config_is_adaptive():
    cfg = load_config(DEPLOY / "slurm" / "pipeline.yaml")
    assert cfg.cluster.kind == "slurm"
    kw = cluster_kwargs(cfg.cluster)
    assert kw["cores"] and kw["memory"] and kw["walltime"]
    scaling = scaling_kwargs(cfg.cluster)
    assert scaling["minimum_jobs"] < scaling["maximum_jobs"]


def test_kubernetes_config_matches_its_resources():
    cfg = load_config(DEPLOY / "kubernetes" / "pipeline.yaml")
    k8s = cfg.cluster.kubernetes
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "resources.yaml").read_text()))
    (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == k8s.runs_volume_claim
    assert claim["metadata"]["namespace"] == k8s.namespace
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # workers on many nodes write
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert any("daskclusters" in rule["resources"] for rule in role["rules"])
    assert scaling_kwargs(cfg.cluster) == {"minimum": 1, "maximum": 16}
    readme = (DEPLOY / "kubernetes" / "README.md").read_text()
    assert "--type kubernetes" in readme and "dask-kubernetes-operator" in readme


def _has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    proc = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return proc.returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="`docker compose version` fails here")
@pytest.mark.parametrize("files", [("compose.yaml",), ("compose.yaml", "compose.gpu.yaml")])
def test_docker_compose_config(files):
    args = [arg for name in files for arg in ("-f", str(DEPLOY / name))]
    proc = subprocess.run(
        ["docker", "compose", "--env-file", str(DEPLOY / "env.example"), *args, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


# Crash detection: every flow run sends heartbeats at pdeflow's period, and whatever starts the
# deployment creates the automation that marks a silent run Crashed.
HEARTBEAT = str(DEFAULT_HEARTBEAT_S)


def test_compose_sends_heartbeats_and_creates_crash_detection(compose):
    services = compose["services"]
    for name in ("prefect-server", "prefect-worker"):
        # The server's window is derived from the period the worker's flow runs use.
        assert _env(services[name])["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == HEARTBEAT, name
    assert services["prefect-server"]["command"][:3] == ["pdeflow", "server", "start"]
    assert _env(services["prefect-server"])["PREFECT_UI_API_URL"].endswith("/api")


def test_work_pool_runs_send_heartbeats():
    spec = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env == {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": HEARTBEAT}, deployment["name"]
    assert "python -m pdeflow.flows.automations" in (DEPLOY / "prefect.yaml").read_text()


def test_slurm_worker_sends_heartbeats_and_creates_crash_detection():
    text = (DEPLOY / "slurm" / "prefect-worker.sbatch").read_text()
    assert (
        f'PREFECT_FLOWS_HEARTBEAT_FREQUENCY="${{PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-{HEARTBEAT}}}"'
        in text
    )
    ensure = text.index("-m pdeflow.flows.automations")
    assert text.index("export PREFECT_FLOWS_HEARTBEAT_FREQUENCY") < ensure < text.index("exec ")


def test_kubernetes_readme_sends_heartbeats_and_creates_crash_detection():
    readme = (DEPLOY / "kubernetes" / "README.md").read_text()
    assert f'"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "{HEARTBEAT}"' in readme
    assert (
        f"PREFECT_FLOWS_HEARTBEAT_FREQUENCY={HEARTBEAT} python -m pdeflow.flows.automations"
        in readme
    )


def test_automations_module_refuses_without_a_server(monkeypatch):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    proc = subprocess.run(
        [sys.executable, "-m", "pdeflow.flows.automations"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "PREFECT_API_URL is not set" in proc.stderr
    assert "Traceback" not in proc.stderr
