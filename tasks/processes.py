"""Child processes that end with pdeflow, however pdeflow ends.

An external simulator runs as the leader of its own session and process group, so that a
time-out kills it together with every process it started, and nothing else. The price: a kill of
pdeflow's own process group (a terminal's Ctrl-C, ``kill -9 -PGID``) no longer reaches it, and an
orphaned simulator would run on. Three mechanisms end it instead:

1. **Parent-death signal** (:func:`set_parent_death_signal`, Linux's
   ``prctl(PR_SET_PDEATHSIG)``): the kernel sends the child SIGKILL when its parent dies, even
   when the parent is SIGKILLed (a machine crash, the OOM killer, ``kill -9``) and no Python code
   runs. The kernel fires it when the *thread* that forked the child exits, not the process, so a
   child must be started and waited on by one thread that outlives it: the simulators start and
   wait in the same thread.
2. **Exit hook** (:func:`kill_live_groups`, registered with :mod:`atexit` on first use): a normal
   exit, ``sys.exit`` or an uncaught exception kills the whole group of every child still running,
   the processes it started included.
3. **Run-path clean-up** (:func:`group_killed_on_exit`): the code waiting on a child kills its
   group when the wait ends by a time-out or by any exception (KeyboardInterrupt, Prefect's
   TerminationSignal).

No signal handler is installed: Dask and Prefect install their own for SIGTERM and SIGINT, and
replacing them would break their shut-down. SIGINT becomes KeyboardInterrupt, so 3 and 2 run;
Prefect turns SIGTERM into an exception; under the default SIGTERM action, as under SIGKILL, only 1
acts. :func:`kill_live_groups` takes no lock and waits for nothing, so a handler a user installs
may call it.

Limitations:
    * The parent-death signal reaches the direct child only: the kernel clears it in the child's
      own children. When pdeflow dies without running Python code (SIGKILL, a crash, the default
      SIGTERM), processes the simulator started survive unless the simulator ends them itself
      (its own parent-death signal, or noticing it was orphaned). Only 2 and 3 kill the group.
    * A process that leaves the simulator's group (``setsid``, ``setpgid``, a daemonizing
      launcher) escapes 2 and 3 as well.
    * The kernel clears the parent-death signal when the child executes a set-user-ID or
      set-group-ID program, or one with file capabilities.
    * Python joins non-daemon threads before atexit hooks run: a child waited on by such a
      thread (a ``ThreadPoolExecutor`` worker) runs until it exits or times out before 2 acts.
    * Processes a simulator leaves running after it exited are not tracked.
    * Elsewhere than Linux, 1 is a no-op; 2 and 3 need POSIX process groups.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

# Process group ids of running children. Only single set operations touch it, atomic under the
# GIL, so a signal handler can read it without a lock that the interrupted thread might hold.
_live: set[int] = set()
_hook_lock = threading.Lock()
_hooked = False


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, or None off Linux or without a loadable libc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    return libc.prctl


def set_parent_death_signal(sig: int = signal.SIGKILL, parent_pid: int | None = None) -> bool:
    """Have the kernel send ``sig`` to the calling process when its parent thread exits.

    If the parent already died (between fork and this call), the process kills itself with
    ``sig``: the kernel would never send it, as the new parent is another process.

    Args:
        sig: Signal to receive. Defaults to SIGKILL, which no program can ignore.
        parent_pid: The parent's pid, captured before the fork; defaults to the current parent,
            which misses a parent that died before this call.

    Returns:
        True if the signal was set, False where the platform has no ``prctl`` (a no-op).

    Raises:
        OSError: ``prctl`` refused (an invalid signal number).
    """
    prctl = _prctl()
    if prctl is None:
        return False
    expected = os.getppid() if parent_pid is None else parent_pid
    if prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    if os.getppid() != expected:
        os.kill(os.getpid(), sig)
        os._exit(128 + int(sig))  # the signal was caught or ignored: end anyway
    return True


def child_preexec(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: a new session, then a parent-death signal.

    The new session makes the child the leader of its own process group, as
    ``start_new_session=True`` does (do not pass both). Create it in the thread that starts the
    child and waits on it: the signal is sent when that thread exits.

    Args:
        sig: Parent-death signal. Defaults to SIGKILL.

    Returns:
        A function of no arguments, for ``Popen(..., preexec_fn=child_preexec())``.
    """
    parent = os.getpid()  # captured before the fork, to catch a parent dying before prctl
    _prctl()  # load libc here: the child, between fork and exec, should not have to

    def preexec() -> None:
        os.setsid()
        set_parent_death_signal(sig, parent_pid=parent)

    return preexec


def register_group(pgid: int) -> None:
    """Record a running child's process group; the exit hook kills it if it is still there."""
    global _hooked
    with _hook_lock:
        if not _hooked:
            atexit.register(kill_live_groups)
            _hooked = True
    _live.add(pgid)


def unregister_group(pgid: int) -> None:
    """Forget a process group (its leader was reaped)."""
    _live.discard(pgid)


def kill_live_groups(sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to every registered process group and forget them.

    Takes no lock and waits for nothing, so it is safe in an exit hook or a signal handler; the
    threads waiting on the children reap them.

    Returns:
        The process group ids signalled.
    """
    signalled = []
    for pgid in list(_live):
        _live.discard(pgid)
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):  # already gone
            continue
        signalled.append(pgid)
    return signalled


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group ``proc`` leads, then reap ``proc``."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass
    proc.wait()


@contextlib.contextmanager
def group_killed_on_exit(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Track the group ``proc`` leads while the block runs; kill it unless ``proc`` was reaped.

    ``proc`` must lead its own group (:func:`child_preexec` or ``start_new_session=True``).
    """
    register_group(proc.pid)
    try:
        yield proc
    finally:
        try:
            if proc.returncode is None:  # a time-out or an exception ended the wait
                kill_group(proc)
        finally:
            # Between the reap and this line the exit hook could signal a reused pid's group; a
            # reused pid leading a new group within that instant is not worth a WNOWAIT dance.
            unregister_group(proc.pid)
