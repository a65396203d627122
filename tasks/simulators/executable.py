"""A simulator that is an external program: one process per sample, files in, a .npy file out.

Protocol, per sample, in a fresh temporary directory (also the process's working directory):

1. pdeflow writes ``params.json``: ``{"sample": id, "seed": seed, "parameters": {name: value}}``
   (``sample`` and ``seed`` are integers, parameter values floats).
2. It runs the command, a list of strings run without a shell, after replacing the tokens
   ``{params}`` and ``{output}`` by the paths of ``params.json`` and ``output.npy``.
3. The program writes ``output.npy`` (``numpy.save``) of shape ``(n_frames, C, *space)`` and
   exits 0. Anything else fails the sample: a non-zero exit (the reason names the command, its
   exit code and the last lines of stderr), a time-out, a missing or unreadable file, a wrong
   shape, NaN/inf.

The program leads its own process group, killed whole on a time-out, and does not outlive
pdeflow: ``pdeflow.tasks.processes`` says how, and what escapes.

``tasks/simulators/examples/reaction_diffusion.py`` is a template of such a program.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pdeflow.tasks import processes
from pdeflow.tasks.simulators.base import SAMPLE_DIR_PREFIX, Simulator

PLACEHOLDERS = ("{params}", "{output}")
STDERR_LINES = 20  # lines of stderr kept in a failure reason (a message shows fewer)
_TAIL_HEADER = "; last lines of stderr:"
_COMMAND_CHARS = 200  # a command longer than this is cut in failure reasons
_TAIL_BYTES = 64 * 1024  # read at most this much of a log to find its last lines
_MAX_PARALLEL = 256


class ExecutableSimulator(Simulator):
    """Run an external program once per sample (see the module docstring for the protocol).

    Args:
        command: Program and arguments, e.g.
            ``["python", "-m", "pdeflow.tasks.simulators.examples.reaction_diffusion", "{params}",
            "{output}"]``. ``command[0]`` must be an executable file or a program on ``PATH``.
        output_shape: Per-sample shape ``(n_frames, C, *space)``.
        fields: Channel names, one per channel.
        dtype: ``"float32"`` (default) or ``"float64"``.
        timeout_s: Wall-clock limit per sample in seconds, > 0. Defaults to 600. A process
            past it is killed together with the processes it started.
        workdir: Directory under which the per-sample temporary directories are made (a local
            scratch disk, say). Defaults to the system's temporary directory.
        max_parallel: Samples of a batch run at once, 1 to 256. Defaults to 1; raise it when
            the program is single-threaded and the worker owns several cores.
        keep_failed: Keep a failed sample's directory (params.json, stdout.log, stderr.log,
            output.npy) for debugging; its path is in the failure reason. Defaults to False.

    Raises:
        ValueError: A setting outside its valid range; the message names it.
    """

    def __init__(
        self,
        command: Sequence[str],
        output_shape: Sequence[int],
        fields: Sequence[str],
        dtype: str = "float32",
        timeout_s: float = 600.0,
        workdir: str | None = None,
        max_parallel: int = 1,
        keep_failed: bool = False,
    ):
        super().__init__(output_shape, fields, dtype)
        self.command = check_command(command)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, numbers.Real):
            raise ValueError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
        if not 0 < timeout_s < float("inf"):
            raise ValueError(f"timeout_s must be a finite number of seconds > 0, got {timeout_s!r}")
        if workdir is not None and not Path(workdir).is_dir():
            raise ValueError(f"workdir must be an existing directory, got {workdir!r}")
        if (
            isinstance(max_parallel, bool)
            or not isinstance(max_parallel, numbers.Integral)
            or not 1 <= max_parallel <= _MAX_PARALLEL
        ):
            raise ValueError(
                f"max_parallel must be an integer in [1, {_MAX_PARALLEL}], got {max_parallel!r}"
            )
        if not isinstance(keep_failed, bool):
            raise ValueError(f"keep_failed must be True or False, got {keep_failed!r}")
        self.timeout_s = float(timeout_s)
        # Absolute: the command runs inside the sample directory and gets paths within it.
        self.workdir = None if workdir is None else str(Path(workdir).resolve())
        self.max_parallel = int(max_parallel)
        self.keep_failed = keep_failed

    def _run(
        self, params: dict[str, np.ndarray], seeds: np.ndarray, sample_ids: np.ndarray
    ) -> tuple[Sequence[Any], dict[int, str]]:
        jobs = [
            (int(sample_ids[row]), int(seeds[row]), {k: float(v[row]) for k, v in params.items()})
            for row in range(len(seeds))
        ]
        workers = min(self.max_parallel, len(jobs))
        if workers <= 1:
            results = [self._run_one(*job) for job in jobs]
        else:
            # Threads suffice: each one only waits on its own process.
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda job: self._run_one(*job), jobs))
        failures = {row: reason for row, (_, reason) in enumerate(results) if reason is not None}
        return [value for value, _ in results], failures

    def _run_one(
        self, sample_id: int, seed: int, values: dict[str, float]
    ) -> tuple[np.ndarray | None, str | None]:
        """One sample in its own directory: ``(output, None)`` or ``(None, reason)``."""
        prefix = f"{SAMPLE_DIR_PREFIX}{sample_id}-"  # SimulationError groups reasons without it
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=self.workdir))
        try:
            value, reason = self._simulate_in(tmp, sample_id, seed, values)
        except Exception as err:  # e.g. a full disk: this sample fails, the batch goes on
            value, reason = None, f"{type(err).__name__}: {err}"
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if reason is None or not self.keep_failed:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            reason = _add_note(reason, f"files kept in {tmp}")
        return (value if reason is None else None), reason

    def _simulate_in(
        self, tmp: Path, sample_id: int, seed: int, values: dict[str, float]
    ) -> tuple[np.ndarray | None, str | None]:
        params_path, output_path = tmp / "params.json", tmp / "output.npy"
        payload = {"sample": sample_id, "seed": seed, "parameters": values}
        params_path.write_text(json.dumps(payload, indent=2))
        cmd = [
            tok.replace("{params}", str(params_path)).replace("{output}", str(output_path))
            for tok in self.command
        ]
        reason = self._execute(cmd, tmp)
        if reason is not None:
            return None, reason
        value, reason = _load_output(output_path)
        if reason is not None:
            return None, reason
        # Checked here as well as in run(), so that keep_failed keeps these failures too.
        return self.check_sample(value)

    def _execute(self, cmd: list[str], cwd: Path) -> str | None:
        """Run ``cmd`` in ``cwd`` with the time-out; None on exit code 0, else the reason."""
        shown = _shown_command(self.command)
        stderr_path = cwd / "stderr.log"
        with open(cwd / "stdout.log", "wb") as out, open(stderr_path, "wb") as err:
            try:
                # Its own session and process group, so that a time-out kills it with every
                # process it started and nothing else; a parent-death signal, so that it dies
                # with pdeflow even when pdeflow is SIGKILLed.
                proc = subprocess.Popen(
                    cmd,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    preexec_fn=processes.child_preexec(),
                )
            except (OSError, subprocess.SubprocessError) as exc:
                return f"cannot start {shown}: {type(exc).__name__}: {exc}"
            # Waited on in the thread that started it: the parent-death signal is tied to this
            # thread. Leaving the block kills the group unless the process exited by itself.
            with processes.group_killed_on_exit(proc):
                try:
                    code = proc.wait(timeout=self.timeout_s)
                except subprocess.TimeoutExpired:
                    code = None
        if code == 0:
            return None
        if code is None:
            how = f"timed out after {self.timeout_s:g} s (process group killed)"
        elif code < 0:
            how = f"was killed by signal {_signal_name(-code)}"
        else:
            how = f"failed with exit code {code}"
        return f"command {shown} {how}" + _tail(stderr_path)


def _shown_command(command: Sequence[str]) -> str:
    """The command template in backticks, each token shell-quoted except ``{params}`` and
    ``{output}``, which are shown as written (they are the per-sample paths)."""
    text = " ".join(tok if tok in PLACEHOLDERS else shlex.quote(tok) for tok in command)
    if len(text) > _COMMAND_CHARS:
        text = text[: _COMMAND_CHARS - 3] + "..."
    return f"`{text}`"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name
        return str(number)


def _add_note(reason: str, note: str) -> str:
    """``reason`` with ``" (note)"`` closing its first line, before any stderr header."""
    head, sep, rest = reason.partition("\n")
    body = head.removesuffix(_TAIL_HEADER)
    return f"{body} ({note}){head[len(body) :]}{sep}{rest}"


def check_command(command: Sequence[str]) -> tuple[str, ...]:
    if isinstance(command, str) or not isinstance(command, Sequence) or not command:
        raise ValueError(
            "command must be a non-empty list of strings (program, then arguments), "
            f"got {command!r}"
        )
    if not all(isinstance(tok, str) for tok in command):
        raise ValueError(f"command must hold only strings, got {command!r}")
    for tok in command:
        # Only identifier-like braces are placeholders: a shell group "{ cmd; }" is not one.
        unknown = [p for p in re.findall(r"\{\w+\}", tok) if p not in PLACEHOLDERS]
        if unknown:
            raise ValueError(
                f"command token {tok!r} has unknown placeholder(s) {unknown}; "
                f"valid: {', '.join(PLACEHOLDERS)}"
            )
    if shutil.which(command[0]) is None:
        raise ValueError(
            f"command[0] {command[0]!r} is neither an executable file nor a program on PATH"
        )
    return tuple(command)


def _load_output(path: Path) -> tuple[np.ndarray | None, str | None]:
    if not path.is_file():
        return None, f"the command exited 0 but wrote no {path.name}"
    try:
        value = np.load(path, allow_pickle=False)
    except Exception as err:  # any malformed file is this sample's failure
        return None, f"cannot read {path.name}: {type(err).__name__}: {err}"
    if not isinstance(value, np.ndarray):  # an .npz archive under the .npy name
        value.close()
        return None, f"{path.name} holds an .npz archive, expected one array (numpy.save)"
    return value, None


def _tail(path: Path) -> str:
    """The last ``STDERR_LINES`` lines of a log, indented, or '' when it is empty."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - _TAIL_BYTES))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = text.rstrip().splitlines()[-STDERR_LINES:]
    if not lines:
        return ""
    return _TAIL_HEADER + "\n" + "\n".join(f"    | {line}" for line in lines)
