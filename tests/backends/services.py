"""Real PostgreSQL and single-node Slurm services for tests/backends and the benchmarks.

Each service runs from Debian's packages (``.ci/install-services`` installs them) in a fresh
temporary directory, on free ports of 127.0.0.1, each daemon in its own process group, and is
stopped with everything it started when its context exits. ``postgres_missing()`` and
``slurm_missing()`` say why a service cannot run here (a reason to skip), or None.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.e2e.prefect_server import free_port, stop_group

# PostgreSQL refuses to run as root: as root, its processes run as the Debian package's user.
PG_USER = "postgres"
PG_ROLE = "pdeflow"  # the superuser initdb creates; trust authentication, 127.0.0.1 only
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
SLURM_COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel")
MUNGE_KEY = Path("/etc/munge/munge.key")
# Every process of one Slurm instance carries this variable (daemons, jobs, slurmstepd), so that
# cleanup finds them all by it and touches nothing else on the machine.
SLURM_MARK = "PDEFLOW_TEST_SLURM"
INSTALL_HINT = "run .ci/install-services (as root) to install it"


def _which(command: str) -> str | None:
    """``command``'s path, looking in the sbin directories too (daemons live there)."""
    return shutil.which(command, path=f"{os.environ.get('PATH', '')}:{SBIN}")


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _as_user(user: str | None) -> dict:
    """Popen arguments that run the child as ``user`` when this process is root; else none."""
    if user is None or os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _service_dir(prefix: str, owner: str | None = None) -> Path:
    """A new directory under the system temp dir, owned by ``owner`` when we are root.

    Not under pytest's tmp_path: that sits below a 0700 directory the service users cannot
    enter.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    if owner is not None and os.geteuid() == 0:
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def _run(cmd: list, user: str | None = None, env: dict | None = None, timeout: float = 120):
    """Run ``cmd`` to completion (as ``user`` when root); raise with its output if it fails."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **_as_user(user),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _start(cmd: list, log: Path, user: str | None = None, env: dict | None = None):
    """Start a daemon in the foreground, in its own session, output to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            [str(c) for c in cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            **_as_user(user),
        )


def _stop(proc: subprocess.Popen, first: signal.Signals, grace: float = 15) -> None:
    """Send ``first`` to the process group, then SIGKILL what is left after ``grace`` s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, first)
    stop_group(proc, grace=grace)


def _wait(ready, what: str, procs: dict[str, tuple], timeout: float) -> None:
    """Poll ``ready()`` until true; fail early with the logs when a daemon exits.

    Args:
        ready: returns True once the service answers.
        what: the service, for the error message.
        procs: name -> (Popen, log path) of the daemons that must stay alive.
        timeout: seconds.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        for name, (proc, log) in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{log.read_text()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}:\n{lg.read_text()[-3000:]}" for n, (_, lg) in procs.items())
            raise RuntimeError(f"{what} not ready after {timeout:.0f} s\n{logs}")
        time.sleep(0.25)


# --- PostgreSQL ----------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb, or None."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if not found:
        return None

    def version(bindir: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in bindir.parent.name.split(".") if n.isdigit())

    return max(found, key=version)


def postgres_missing() -> str | None:
    """Why no PostgreSQL server can start here, or None."""
    if postgres_bin() is None:
        return f"PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): {INSTALL_HINT}"
    if os.geteuid() == 0 and not _user_exists(PG_USER):
        return f"running as root and there is no user {PG_USER!r} to run PostgreSQL as"
    return None


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL server and the database made for the test."""

    bindir: Path
    port: int
    database: str

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (asyncpg driver) Prefect's server takes as
        ``PREFECT_API_DATABASE_CONNECTION_URL``."""
        return f"postgresql+asyncpg://{PG_ROLE}@127.0.0.1:{self.port}/{self.database}"

    def query(self, sql: str) -> list[list[str]]:
        """Rows of ``sql`` run by psql, each a list of column texts."""
        out = _run(
            [self.bindir / "psql", "-h", "127.0.0.1", "-p", self.port, "-U", PG_ROLE]
            + ["-d", self.database, "-AtX", "-F", "\t", "-c", sql]
        ).stdout
        return [line.split("\t") for line in out.splitlines()]


@contextlib.contextmanager
def postgres_server(database: str = "prefect") -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1 and a free port, holding an empty ``database``.

    Yields:
        The server, once it accepts connections and the database exists.
    """
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError(postgres_missing())
    base = _service_dir("pdeflow-pg-", owner=PG_USER)
    try:
        data = base / "data"
        initdb = [bindir / "initdb", "-D", data, "-U", PG_ROLE, "--auth=trust", "-E", "UTF8"]
        _run([*initdb, "--locale=C"], user=PG_USER)
        port = free_port()
        log = base / "postgres.log"
        # -k: the Unix socket in our directory, not /run/postgresql (absent without the
        # package's service, and shared with any other server on the machine).
        cmd = [bindir / "postgres", "-D", data, "-h", "127.0.0.1", "-p", port, "-k", base]
        proc = _start(cmd, log, user=PG_USER)
        try:
            isready = [bindir / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]
            _wait(
                lambda: subprocess.run(isready, check=False).returncode == 0,
                "PostgreSQL",
                {"postgres": (proc, log)},
                timeout=60,
            )
            _run([bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", PG_ROLE, database])
            yield Postgres(bindir=bindir, port=port, database=database)
        finally:
            # SIGINT is PostgreSQL's fast shutdown: it does not wait for clients to leave.
            _stop(proc, signal.SIGINT)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- Slurm ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slurm:
    """A running single-node Slurm: its config file and the environment its clients need."""

    conf: Path
    env: dict[str, str]
    partition: str
    logs: Path


def slurm_missing() -> str | None:
    """Why no single-node Slurm can start here, or None."""
    absent = [c for c in SLURM_COMMANDS if _which(c) is None]
    if absent:
        return f"Slurm/munge not installed (missing {', '.join(absent)}): {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "a single-node Slurm needs root (slurmd starts jobs as their users)"
    if not _user_exists("munge"):
        return "there is no user 'munge' to run munged as"
    if not MUNGE_KEY.is_file():
        return f"no munge key at {MUNGE_KEY} (the munge package creates it)"
    return None


def slurm_conf(base: Path, cpus: int, memory_mb: int, partition: str) -> str:
    """A slurm.conf for one node, ``localhost``, with every path inside ``base``."""
    lines = {
        "ClusterName": "pdeflow-test",
        "SlurmctldHost": "localhost",
        "SlurmctldPort": free_port(),
        "SlurmdPort": free_port(),
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        # Our own munged, not the machine's (/run/munge may hold another one, or nothing).
        "AuthInfo": f"socket={base / 'munge' / 'munge.socket'}",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core_Memory",
        "ReturnToService": 2,
        "MpiDefault": "none",
        "MailProg": "/bin/true",
        "JobCompType": "jobcomp/none",
        "AccountingStorageType": "accounting_storage/none",
        "StateSaveLocation": base / "state",
        "SlurmdSpoolDir": base / "spool",
        "SlurmctldPidFile": base / "slurmctld.pid",
        "SlurmdPidFile": base / "slurmd.pid",
        "SlurmctldLogFile": base / "slurmctld.log",
        "SlurmdLogFile": base / "slurmd.log",
        "NodeName": f"localhost CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        "PartitionName": f"{partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def _start_munged(base: Path, env: dict) -> tuple[subprocess.Popen, Path]:
    munge = base / "munge"
    # munged insists that everyone may enter the socket's directory (clients run as any user).
    munge.mkdir(mode=0o755)
    pw = pwd.getpwnam("munge")
    os.chown(munge, pw.pw_uid, pw.pw_gid)
    log = base / "munged.out"
    cmd = [_which("munged"), "--foreground", "--key-file", MUNGE_KEY]
    cmd += ["--socket", munge / "munge.socket", "--pid-file", munge / "munged.pid"]
    cmd += ["--log-file", munge / "munged.log", "--seed-file", munge / "munged.seed"]
    proc = _start(cmd, log, user="munge", env=env)
    _wait(lambda: (munge / "munge.socket").exists(), "munged", {"munged": (proc, log)}, 30)
    return proc, log


def _node_idle(env: dict) -> bool:
    out = subprocess.run(
        [_which("sinfo"), "-h", "-n", "localhost", "-o", "%T"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    return out.returncode == 0 and out.stdout.strip() == "idle"


@contextlib.contextmanager
def slurm_cluster(
    cpus: int = 2, memory_mb: int = 8000, partition: str = "debug"
) -> Iterator[Slurm]:
    """munged, slurmctld and slurmd on localhost, one node of ``cpus`` and ``memory_mb``.

    Yields once ``sinfo`` shows the node idle. At exit, every job is cancelled and every process
    of this instance (daemons, job steps, whatever the jobs started) is gone.
    """
    base = _service_dir("pdeflow-slurm-")
    conf = base / "slurm.conf"
    env = {**os.environ, "SLURM_CONF": str(conf), SLURM_MARK: str(base)}
    daemons: dict[str, tuple] = {}
    try:
        (base / "state").mkdir()
        (base / "spool").mkdir()
        conf.write_text(slurm_conf(base, cpus, memory_mb, partition))
        daemons["munged"] = _start_munged(base, env)
        for daemon in ("slurmctld", "slurmd"):
            log = base / f"{daemon}.out"
            daemons[daemon] = (_start([_which(daemon), "-D", "-f", conf], log, env=env), log)
        _wait(lambda: _node_idle(env), "the Slurm node", daemons, timeout=60)
        yield Slurm(conf=conf, env=env, partition=partition, logs=base)
    finally:
        _cancel_jobs(env)
        _kill_marked(str(base))
        for proc, _ in reversed(daemons.values()):
            _stop(proc, signal.SIGTERM, grace=10)
        shutil.rmtree(base, ignore_errors=True)


def _cancel_jobs(env: dict, timeout: float = 30) -> None:
    """Cancel every job of this instance; wait until the queue is empty."""
    scancel = [_which("scancel"), "--full", "--user", "root"]
    if subprocess.run(scancel, env=env, capture_output=True).returncode:
        return  # controller already gone: _kill_marked ends the jobs' processes
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            [_which("squeue"), "-h", "-o", "%i"], capture_output=True, text=True, env=env
        )
        if out.returncode != 0 or not out.stdout.strip():
            return
        time.sleep(0.5)


def _kill_marked(mark: str) -> None:
    """SIGKILL every process, but ours and the daemons', whose environment carries ``mark``."""
    daemons_and_us = {os.getpid()}
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(SLURM_MARK) != mark:
                continue
            if proc.name() in ("munged", "slurmctld", "slurmd"):
                daemons_and_us.add(proc.pid)  # stopped after this, with SIGTERM
                continue
            if proc.pid not in daemons_and_us:
                proc.kill()
