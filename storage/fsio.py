"""Durable, atomic file writes and streaming checksums for the run store.

A file is written to a temporary name in its own directory, fsynced, renamed into place and its
directory fsynced, so a reader (or the next run after a kill or a power cut) sees the old file
or the new one, never a torn one. Temporary files carry ``TMP_MARK`` in their name, so that the
next run can remove what a killed one left (``sweep_temp``). Checksums are CRC32 (``zlib``,
which releases the GIL and streams at GB/s) over a file's exact bytes, with its size.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

TMP_MARK = ".pdeflow-tmp-"
# zarr-python's LocalStore writes through "<name>.<uuid>.partial" files: a kill leaves them.
ZARR_PARTIAL = ".partial"
_READ_BLOCK = 8 << 20


class FileEntry(NamedTuple):
    """Size in bytes and CRC32 of one file's contents, as recorded in manifests and records."""

    size: int
    crc32: int

    @classmethod
    def of_bytes(cls, data) -> FileEntry:
        view = memoryview(data).cast("B")
        return cls(view.nbytes, zlib.crc32(view))

    @classmethod
    def from_json(cls, value: Iterable[int]) -> FileEntry:
        size, crc = value
        return cls(int(size), int(crc))


def temp_path(target: Path) -> Path:
    """A fresh temporary name beside ``target`` (same directory, so the rename is atomic)."""
    return target.with_name(f"{TMP_MARK}{target.name}.{os.getpid()}.{secrets.token_hex(4)}")


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now, without waiting (Linux
    ``sync_file_range``), so that the fsync that follows later finds most of it done."""
    libc = _libc()
    if libc is not None:
        libc.sync_file_range(fd, ctypes.c_int64(0), ctypes.c_int64(0), _SYNC_FILE_RANGE_WRITE)


_SYNC_FILE_RANGE_WRITE = 2
_LIBC: list = []


def _libc():
    if not _LIBC:
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            lib.sync_file_range  # noqa: B018 (Linux only)
            _LIBC.append(lib)
        except (OSError, AttributeError):
            _LIBC.append(None)
    return _LIBC[0]


def write_temp(target: Path, data, fsync: bool = True) -> Path:
    """Write ``data`` (bytes-like) to a temporary file beside ``target``; not renamed yet.

    Args:
        fsync: fsync the file before returning; False starts its writeback only (the caller
            fsyncs it later with ``fsync_file``, after other work overlapped the disk).

    Returns:
        The temporary path.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    view = memoryview(data).cast("B")
    try:
        with open(tmp, "wb") as fh:
            fh.write(view)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
            else:
                _start_writeback(fh.fileno())
    except BaseException:  # a full disk: leave no half-written temporary file behind
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def fsync_file(path: Path) -> None:
    """Make ``path``'s contents durable (its writeback may have started already)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(target: Path, data) -> FileEntry:
    """Atomically and durably replace ``target`` with ``data``; returns its entry."""
    tmp, entry = write_temp(target, data), FileEntry.of_bytes(data)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return entry


def write_json(target: Path, payload: Any) -> FileEntry:
    """``write_durable`` of ``payload`` as indented JSON with sorted keys."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    return write_durable(target, text.encode())


def _crc_of(payload: Any) -> int:
    return zlib.crc32(json.dumps(payload, sort_keys=True).encode())


def write_checked(target: Path, payload: dict) -> FileEntry:
    """``write_json`` of ``payload`` with the CRC32 of its canonical JSON beside it, so that
    ``read_checked`` tells an intact file from a damaged one that still parses."""
    return write_json(target, {"payload": payload, "crc32": _crc_of(payload)})


def read_checked(path: Path, key: str) -> dict | None:
    """The payload ``write_checked`` wrote, if it holds ``key`` under "key"; None when the file
    is absent, not JSON, damaged (its CRC32 differs) or of another key."""
    try:
        data = read_json(path)
    except ValueError:  # truncated or not JSON
        return None
    if not isinstance(data, dict) or not isinstance(data.get("payload"), dict):
        return None
    payload = data["payload"]
    if data.get("crc32") != _crc_of(payload) or payload.get("key") != key:
        return None
    return payload


def read_json(path: Path) -> Any | None:
    """The JSON value in ``path``; None when the file does not exist.

    Raises:
        ValueError: the file exists but is not valid JSON (a damaged record).
    """
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


def file_entry(path: Path) -> FileEntry:
    """Size and CRC32 of ``path``, streamed in 8 MiB reads (never the whole file in memory)."""
    crc, size = 0, 0
    buf = bytearray(_READ_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            crc = zlib.crc32(view[:n], crc)
            size += n
    return FileEntry(size, crc)


def check_file(path: Path, expected: FileEntry, deep: bool = True) -> str | None:
    """Why ``path`` does not hold what ``expected`` records, or None when it does.

    Args:
        deep: also compare the CRC32 (reads the file); False compares the size only (a stat).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if size != expected.size:
        return f"wrong size ({size} bytes, recorded {expected.size})"
    if deep and file_entry(path).crc32 != expected.crc32:
        return "wrong CRC32 (contents changed)"
    return None


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root``, depth first (``os.scandir``: one syscall per dir)."""
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield Path(entry.path)


def is_temp(path: Path) -> bool:
    return path.name.startswith(TMP_MARK) or path.name.endswith(ZARR_PARTIAL)


def sweep_temp(root: Path) -> list[Path]:
    """Remove the temporary files that killed writers left under ``root``; returns them.

    Call only while holding the store's lock: a live writer's temporary file would go too.
    """
    removed = []
    for path in iter_files(root):
        if is_temp(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
