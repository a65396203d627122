"""Ending a process without the interpreter's teardown, once everything it wrote is complete.

After a pipeline run, Python's own teardown (freeing the modules of torch, SciPy, Prefect and
Dask, in C) took 1.5 s in the CLI process and 1.1 s in each Dask worker process, which nothing
needed: every store file is written whole (temporary file, fsync, rename) before the task that
writes it returns, so no destructor is left with work to do. In a worker, that teardown ran on
both cores while the flow drew its report (``python -m benchmarks.overhead``).

``exit_now`` does what a normal exit does first, in its order: join the non-daemon threads, run
the exit handlers (logging's flush, Prefect's log shipping, zarr's loop, the process-group
reaper of ``tasks.processes``), flush stdout and stderr; then it ends the process. Standard
library only: the CLI imports it at start-up.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading

_real_exit = sys.exit


def exit_status(code) -> int:
    """The status ``sys.exit(code)`` ends a process with (a message is printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code=None) -> None:
    """End the process with ``sys.exit(code)``'s status, after the threads and exit handlers,
    skipping the module teardown."""
    threading._shutdown()  # the interpreter's own first step (executors' workers stop too)
    atexit._run_exitfuncs()
    status = exit_status(code)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _exit_from_main_thread(code=None) -> None:
    if threading.current_thread() is not threading.main_thread():
        _real_exit(code)  # SystemExit in a thread ends that thread only, as always
    exit_now(code)


def exit_fast_when_done() -> None:
    """From now on, ``sys.exit`` in the main thread ends the process through ``exit_now``.

    For a Dask worker process once its worker has closed: the process then returns to
    multiprocessing's ``spawn_main``, which calls ``sys.exit(exitcode)`` (a forked process
    already ends with ``os._exit``). Its exit status is kept.
    """
    sys.exit = _exit_from_main_thread
