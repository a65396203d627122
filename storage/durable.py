"""``DurableLocalStore``: zarr's ``LocalStore`` with atomic, fsynced writes.

Every file write is a temporary file, fsync and rename (zarr's own ``LocalStore`` renames, but
never fsyncs), so a power cut leaves each file either old or new, never torn. Its own module so
that importing ``pdeflow.storage`` does not import zarr (``pdeflow show`` reads JSON only).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from zarr.storage import LocalStore

from pdeflow.storage.fsio import write_durable

__all__ = ["DurableLocalStore"]


def _put(path: Path, value, exclusive: bool) -> None:
    if exclusive and path.exists():
        raise FileExistsError(path)
    write_durable(path, value.as_buffer_like())


class DurableLocalStore(LocalStore):
    """``LocalStore`` with atomic, fsynced writes (see the module docstring)."""

    async def set(self, key: str, value) -> None:
        await self._durable_set(key, value, exclusive=False)

    async def set_if_not_exists(self, key: str, value) -> None:
        try:
            await self._durable_set(key, value, exclusive=True)
        except FileExistsError:
            pass

    def set_sync(self, key: str, value) -> None:
        self._check_writable()
        _put(self.root / key, value, exclusive=False)

    async def _durable_set(self, key: str, value, exclusive: bool) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        await asyncio.to_thread(_put, self.root / key, value, exclusive)
