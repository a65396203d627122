"""One lock per store: a second run on the same store is refused, never run beside the first.

The lock is ``fcntl.flock`` on ``<store>/_pdeflow/lock``. The kernel drops it when the holding
process ends, also on SIGKILL, so a crashed run never leaves a stale lock. The file holds who
holds it (pid, host, since, what), for the refusal message; it is never deleted, not even by
``--overwrite``, so two processes can never lock two different files of one store.

Within one process the lock is re-entrant: the CLI takes it before its checks, and the flow,
then each stage, take it again in the same process. Dask workers write blocks under the lock of
the flow process that sent them the work; they never take it.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pdeflow.storage.errors import StoreBusy

_HELD: dict[str, list] = {}  # lock path -> [fd, depth], this process's locks
_GUARD = threading.Lock()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return "another process"
    return (
        f"pid {info.get('pid')} on {info.get('host')}, running {info.get('what')!r} since "
        f"{info.get('since')}"
    )


def _acquire(path: Path, store: str, what: str) -> None:
    key = str(path)
    with _GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StoreBusy(
                f"store {store!r} is in use by another pdeflow run ({holder}); wait for it to "
                "finish, or use another store name"
            ) from None
        since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": since, "what": what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _HELD[key] = [fd, 1]


def _release(path: Path) -> None:
    key = str(path)
    with _GUARD:
        held = _HELD[key]
        held[1] -= 1
        if held[1]:
            return
        del _HELD[key]
        os.ftruncate(held[0], 0)
        fcntl.flock(held[0], fcntl.LOCK_UN)
        os.close(held[0])


@contextmanager
def hold(path: Path, store: str, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` of store ``store`` for the block; re-entrant per process.

    Raises:
        StoreBusy: another process holds it.
    """
    _acquire(path, store, what)
    try:
        yield
    finally:
        _release(path)


def held(path: Path) -> bool:
    """Whether this process holds the lock file ``path``."""
    with _GUARD:
        return str(path) in _HELD
