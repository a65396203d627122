"""Processes end without the interpreter's teardown, but with their threads, exit handlers and
exit status; Dask workers of a cluster pdeflow started do so once they have closed."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from pdeflow.tasks import fast_exit, runtime
from pdeflow.tasks.clusters import ClusterConfig

# A script that leaves three marks: an exit handler, a non-daemon thread finishing after the
# main thread, and an object freed only by the module teardown.
_SCRIPT = """
import atexit, os, sys, threading, time
from pdeflow.tasks.fast_exit import exit_fast_when_done

FD = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)


class FreedAtTeardown:
    def __del__(self, write=os.write, fd=FD):
        write(fd, b"teardown\\n")


KEEP = FreedAtTeardown()
atexit.register(os.write, FD, b"handler\\n")
threading.Thread(target=lambda: (time.sleep(0.3), os.write(FD, b"thread\\n"))).start()
if sys.argv[2] == "fast":
    exit_fast_when_done()
{body}
"""


def _run(tmp_path: Path, mode: str, body: str = "sys.exit(3)") -> tuple[int, list[str]]:
    marks = tmp_path / f"marks-{mode}"
    script = _SCRIPT.format(body=textwrap.dedent(body))
    done = subprocess.run([sys.executable, "-c", script, str(marks), mode], timeout=60)
    return done.returncode, marks.read_text().split()


def test_the_normal_exit_frees_modules_at_teardown(tmp_path):
    # The control: without the fast exit, the script's teardown mark is written.
    code, marks = _run(tmp_path, "normal")
    assert code == 3
    assert marks == ["thread", "handler", "teardown"]


def test_fast_exit_keeps_threads_handlers_and_status_and_skips_the_teardown(tmp_path):
    code, marks = _run(tmp_path, "fast")
    assert code == 3
    assert marks == ["thread", "handler"]


def test_sys_exit_in_a_thread_still_ends_that_thread_only(tmp_path):
    body = """
    t = threading.Thread(target=sys.exit, args=(5,))
    t.start(); t.join()
    os.write(FD, b"main\\n")
    sys.exit(0)
    """
    code, marks = _run(tmp_path, "fast", body)
    assert code == 0
    assert marks == ["main", "thread", "handler"]


def test_a_message_exits_with_status_1_as_sys_exit_does(tmp_path):
    code, marks = _run(tmp_path, "fast", 'sys.exit("stopped")')
    assert (code, marks) == (1, ["thread", "handler"])


def test_only_a_nanny_worker_in_its_own_process_is_armed(monkeypatch):
    armed = []
    monkeypatch.setattr(fast_exit, "exit_fast_when_done", lambda: armed.append(True))
    plugin = runtime.FastExitPlugin()
    plugin.teardown(SimpleNamespace(nanny=None))  # a worker without a nanny
    plugin.teardown(SimpleNamespace(nanny="tcp://127.0.0.1:1"))  # this process has no parent
    assert armed == []
    assert sys.exit is fast_exit._real_exit


def _leave_marks(path: str) -> int:
    """Run on a worker: an exit handler's mark, and one written only by the module teardown."""
    import atexit
    import os

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    atexit.register(os.write, fd, f"handler {os.getpid()}\n".encode())

    class FreedAtTeardown:
        def __del__(self, write=os.write):
            write(fd, f"teardown {os.getpid()}\n".encode())

    sys.modules["__main__"].pdeflow_test_keep = FreedAtTeardown()
    return os.getpid()


@pytest.mark.parametrize("finish", ["completed", "failed"])
def test_workers_of_a_finished_flow_end_fast_and_of_a_failed_one_as_before(
    tmp_path, monkeypatch, finish
):
    closing: list[threading.Thread] = []
    real_close = runtime.close_in_background
    monkeypatch.setattr(runtime, "close_in_background", lambda c: closing.append(real_close(c)))
    marks = tmp_path / "marks"
    with pytest.raises(RuntimeError) if finish == "failed" else contextlib.nullcontext():
        with runtime.dask_client(ClusterConfig(n_workers=2)) as client:
            pids = set(client.run(_leave_marks, str(marks)).values())
            if finish == "failed":
                raise RuntimeError("the flow failed")
    closing[0].join(60)
    lines = marks.read_text().splitlines()
    assert sorted(lines) == sorted(
        [f"handler {pid}" for pid in pids]
        + ([f"teardown {pid}" for pid in pids] if finish == "failed" else [])
    )
