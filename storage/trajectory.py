"""The run store as a PyTorch dataset of trajectory windows, and as an xarray dataset.

``TrajectoryDataset`` serves windows of ``history + horizon`` consecutive saved frames of every
trajectory of one split, streaming: each read goes through the store's checked chunk reader
(``storage.dataset.iter_chunks``: every chunk file's size and CRC32 against the block manifest),
and a small per-process LRU cache keeps the last decoded chunks, so that the windows of one chunk
decode it once. ``ChunkOrderSampler`` shuffles chunks, then windows within each chunk, so a
shuffled epoch decodes each chunk about once per loader worker. ``open_run`` opens the dataset
lazily through xarray with its split indices, for analysis outside a training loop.

This module imports torch; ``pdeflow.storage`` loads it only on first use of its names.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pdeflow.storage import dataset as data
from pdeflow.storage import groups
from pdeflow.storage.errors import StoreDamaged, StoreError
from pdeflow.storage.manifest import BlockEntry
from pdeflow.storage.store import RunStore

if TYPE_CHECKING:
    import xarray as xr

CACHE_CHUNKS = 2


def as_store(store: RunStore | str | Path) -> RunStore:
    """A store handle from a handle, a path to a store directory, or a store name.

    As on the command line: an existing directory is a path, anything else a name under the
    runs directory (``$PDEFLOW_RUNS_DIR`` or ``./runs``).

    Raises:
        StoreError: the name escapes the runs directory or nests in another store.
    """
    if isinstance(store, RunStore):
        return store
    path = Path(store)
    return RunStore(path.resolve()) if path.is_dir() else RunStore.named(str(store))


def _require_layout(store: RunStore) -> data.Layout:
    layout = store.layout()
    if layout is not None:
        return layout
    if not store.exists():
        raise StoreError(f"no pdeflow store at {store.path}")
    raise StoreDamaged(f"store {store.name!r} has no complete dataset (run generate first)")


def _split_names(store: RunStore) -> list[str]:
    """The split names, in code order (the ``split`` coordinate's ``flag_meanings``)."""
    return groups.array_attrs(store.path, "split")["flag_meanings"].split()


def open_run(store: RunStore | str | Path) -> tuple[xr.Dataset, dict[str, np.ndarray]]:
    """The store's trajectories as a lazy xarray Dataset, and its splits' sample indices.

    The dataset is ``store.open_dataset()`` with its attributes decoded
    (``storage.groups.decode_attrs``; ``store.open_dataset()`` itself is the netCDF-ready form):
    one variable per field with dims ``(sample, time, *space)`` (``attrs["fields"]`` gives the
    channel order), the parameters, seeds and split as per-sample coordinates. xarray reads
    chunk files directly, without the CRC32 check of ``TrajectoryDataset`` (``pdeflow verify``
    checks them), and samples of a block not yet written read as NaN.

    Args:
        store: a ``RunStore``, the path of a store directory, or a store name.

    Returns:
        ``(ds, splits)``: ``splits`` maps every split the store names (``train``, ``val``,
        ``test`` and ``calibration``) to its sorted sample indices, shape ``(n_split,)``; the
        splits partition ``0 .. n_samples - 1``.

    Raises:
        StoreError: there is no store there.
        StoreDamaged: the store has no complete dataset template.
    """
    handle = as_store(store)
    _require_layout(handle)
    return groups.decode_dataset(handle.open_dataset()), {
        name: handle.sample_indices(name) for name in _split_names(handle)
    }


def _float_dtype(dtype) -> np.dtype:
    """A numpy floating dtype from a numpy or torch dtype, else ValueError."""
    if isinstance(dtype, torch.dtype):
        dtype = torch.empty(0, dtype=dtype).numpy().dtype
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype={dtype} is not a floating dtype (float16, float32, float64)")
    return dtype


def _check_count(name: str, value, low: int, high: int | None, why: str = "") -> int:
    """``value`` as an int in ``low .. high`` (``high`` None: no upper bound), else ValueError."""
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if ok and value >= low and (high is None or value <= high):
        return int(value)
    span = f"{low} .. {high}" if high is not None else f">= {low}"
    raise ValueError(f"{name}={value!r} is out of range: {name} must be an integer {span}{why}")


class _ProcessState:
    """What one process holds: manifest entries it read and its LRU cache of decoded chunks."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.entries: dict[int, BlockEntry] = {}
        self.chunks: OrderedDict[int, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0


class TrajectoryDataset(Dataset):
    """Windows of consecutive saved frames of one split's trajectories, read from a run store.

    Item ``i`` is window ``w = i % windows_per_sample`` of the ``i // windows_per_sample``-th
    sample of the split (samples in ascending order). A window starts at frame
    ``t0 = w * stride`` and holds frames ``t0 .. t0 + history + horizon - 1``: the first
    ``history`` are the input, the next ``horizon`` the target, so no input frame is ever a
    target. ``len(ds) = n_samples_in_split * windows_per_sample`` with
    ``windows_per_sample = (n_frames - history - horizon) // stride + 1``.

    Items are dicts of tensors:

    - ``"input"``: ``(history, C, *space)``, frames ``t0 .. t0 + history - 1``;
    - ``"target"``: ``(horizon, C, *space)``, frames ``t0 + history .. t0 + history + horizon - 1``;
    - ``"params"``: ``(n_params,)``, the sample's parameters in physical units, in the order of
      ``parameter_names`` (the store's ``attrs["parameters"]``);
    - ``"sample"``: the sample's index in the store (int64 scalar);
    - ``"time"``: the index of the first target frame, ``t0 + history`` (int64 scalar).

    ``C`` is ``len(fields)``. ``DataLoader``'s default collate stacks them into
    ``(batch, history, C, *space)`` and so on.

    Streaming and memory: the constructor reads the layout, the split's sample indices and its
    parameters (``n_split * n_params`` numbers), never trajectories. Each process (the main one,
    each loader worker) reads a chunk when an item needs it, through the checked chunk reader,
    and keeps the last ``cache_chunks`` decoded chunks, restricted to the split's samples and to
    ``fields``: at most ``cache_chunks * chunk_size * n_frames * C * prod(space) * itemsize``
    bytes, plus one raw chunk of one field (``layout.chunk_nbytes``) while a chunk is decoded.
    For the demo store (chunks of 16 samples, 21 frames, 128 points, float32) that is 2 x 172 kB
    per process. Nothing that cannot be pickled is opened in ``__init__``: the cache and the
    manifest entries are made lazily in each process, so the dataset works with
    ``DataLoader(num_workers=...)`` under fork and spawn alike.

    Args:
        store: a ``RunStore``, the path of a store directory, or a store name.
        split: the split to serve (``train``, ``val``, ``test`` or ``calibration``).
        history: input frames per window, ``1 .. n_frames - horizon``.
        horizon: target frames per window, ``1 .. n_frames - history``.
        fields: channels to serve, by name, in this order; default every stored field in stored
            order (``layout.fields``).
        stride: frames between the starts of consecutive windows of one sample, ``>= 1``.
        dtype: numpy (or torch) floating dtype of ``input``, ``target`` and ``params``.
        cache_chunks: decoded chunks kept per process, ``>= 1``.

    Raises:
        ValueError: an unknown split or field (the valid ones are listed), or ``history``,
            ``horizon``, ``stride`` or ``cache_chunks`` out of range (the range is named).
        StoreError: there is no store there.
        StoreDamaged: the store has no complete dataset; on reads, a chunk whose block is not
            complete or whose bytes differ from the manifest.
    """

    def __init__(
        self,
        store: RunStore | str | Path,
        split: str = "train",
        history: int = 1,
        horizon: int = 1,
        fields: Sequence[str] | str | None = None,
        stride: int = 1,
        dtype=np.float32,
        cache_chunks: int = CACHE_CHUNKS,
    ):
        self.store = as_store(store)
        self.layout = _require_layout(self.store)
        self.split = split
        self.fields = self._check_fields(fields)
        self.history, self.horizon = self._check_window(history, horizon)
        self.stride = _check_count("stride", stride, 1, None)
        self.cache_chunks = _check_count("cache_chunks", cache_chunks, 1, None)
        self.dtype = _float_dtype(dtype)
        self.indices = self._split_indices(split)
        self.parameter_names = list(self.store.attrs().get("parameters", []))
        params = self.store.read_coords(self.parameter_names)[self.indices]
        self.params = np.ascontiguousarray(params, dtype=self.dtype)
        n_free = self.layout.n_frames - self.history - self.horizon
        self.windows_per_sample = n_free // self.stride + 1
        self._chunk_of = self.indices // self.layout.chunk_size
        self._state: _ProcessState | None = None

    # -- checks --------------------------------------------------------------------------------
    def _check_fields(self, fields) -> tuple[str, ...]:
        stored = self.layout.fields
        if fields is None:
            return tuple(stored)
        names = (fields,) if isinstance(fields, str) else tuple(fields)
        unknown = [f for f in names if f not in stored]
        if unknown or not names or len(set(names)) != len(names):
            what = f"unknown {unknown}" if unknown else f"{list(names)} (empty or repeated)"
            raise ValueError(f"fields: {what}; valid: {list(stored)}, each at most once")
        return names

    def _check_window(self, history, horizon) -> tuple[int, int]:
        n = self.layout.n_frames
        why = f" (the store saves {n} frames per sample)"
        if n < 2:
            raise ValueError(f"history, horizon: a window needs 2 frames or more{why}")
        history = _check_count("history", history, 1, n - 1, why)
        horizon = _check_count("horizon", horizon, 1, n - history, f"{why} with history={history}")
        return history, horizon

    def _split_indices(self, split: str) -> np.ndarray:
        valid = _split_names(self.store)
        if split not in valid:
            raise ValueError(f"split: unknown {split!r}; valid: {valid}")
        return np.asarray(self.store.sample_indices(split), dtype=np.int64)

    # -- the map-style dataset -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.indices) * self.windows_per_sample

    def __getitem__(self, i) -> dict[str, torch.Tensor]:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"item {i} out of range for {n} windows")
        pos, w = divmod(i % n, self.windows_per_sample)
        rows = self._chunk_rows(pos)
        t0 = w * self.stride
        mid, end = t0 + self.history, t0 + self.history + self.horizon
        return {
            # Copies: the cached chunk is shared by every item of its chunk and must not change.
            "input": torch.from_numpy(rows[t0:mid].copy()),
            "target": torch.from_numpy(rows[mid:end].copy()),
            "params": torch.from_numpy(self.params[pos].copy()),
            "sample": torch.tensor(int(self.indices[pos]), dtype=torch.int64),
            "time": torch.tensor(mid, dtype=torch.int64),
        }

    def __getstate__(self) -> dict:
        # Each process builds its own cache: pickled copies (spawned workers) start empty.
        return {**self.__dict__, "_state": None}

    # -- chunks ----------------------------------------------------------------------------------
    def chunk_groups(self) -> list[np.ndarray]:
        """Item indices grouped by stored chunk, chunks ascending; each group ascending.

        Returns:
            One int64 array per chunk that holds samples of the split.
        """
        w = self.windows_per_sample
        _, starts = np.unique(self._chunk_of, return_index=True)
        stops = np.append(starts[1:], len(self._chunk_of))
        return [np.arange(a * w, b * w, dtype=np.int64) for a, b in zip(starts, stops, strict=True)]

    def cache_info(self) -> dict[str, int]:
        """This process's cache: ``hits``, ``misses`` (decodes), ``chunks`` held, ``nbytes``."""
        s = self._process_state()
        nbytes = sum(a.nbytes for a in s.chunks.values())
        return {"hits": s.hits, "misses": s.misses, "chunks": len(s.chunks), "nbytes": nbytes}

    def _process_state(self) -> _ProcessState:
        # A forked worker inherits the parent's state: it starts its own (its pid differs).
        if self._state is None or self._state.pid != os.getpid():
            self._state = _ProcessState()
        return self._state

    def _chunk_rows(self, pos: int) -> np.ndarray:
        """Split position ``pos``'s trajectory ``(time, C, *space)``, from the cached chunk."""
        s = self._process_state()
        chunk = int(self._chunk_of[pos])
        values = s.chunks.get(chunk)
        if values is None:
            s.misses += 1
            values = self._decode(s, chunk)
            s.chunks[chunk] = values
            while len(s.chunks) > self.cache_chunks:
                s.chunks.popitem(last=False)
        else:
            s.hits += 1
            s.chunks.move_to_end(chunk)
        first = int(np.searchsorted(self._chunk_of, chunk))
        return values[pos - first]

    def _decode(self, s: _ProcessState, chunk: int) -> np.ndarray:
        """The split's samples of ``chunk``, ``(n_in_chunk, time, C, *space)``, checked.

        Reads one manifest entry (the chunk's block) instead of the whole manifest that
        ``RunStore.iter_chunks`` reads per call, and only the selected fields' chunk files.
        """
        lay = self.layout
        block = lay.block_of_chunk(chunk)
        if block not in s.entries:
            entry = self.store.complete_block(block, lay)
            if entry is None:
                raise StoreDamaged(f"block {block} is not complete: its samples cannot be read")
            s.entries[block] = entry
        rows = self.indices[self._chunk_of == chunk]
        entries = {block: s.entries[block]}
        if self.fields == lay.fields:
            parts = [next(data.iter_chunks(self.store.path, lay, entries, rows))[1]]
        else:
            parts = [
                next(data.iter_chunks(self.store.path, lay, entries, rows, field=name))[1][
                    :, :, None
                ]
                for name in self.fields
            ]
        values = np.concatenate(parts, axis=2).astype(self.dtype, copy=False)
        values.flags.writeable = False
        return values


class ChunkOrderSampler(Sampler[int]):
    """Item order for shuffled training that keeps reads chunk by chunk.

    Each pass draws a permutation of the dataset's chunks, then a permutation of the windows
    within each chunk (``TrajectoryDataset.chunk_groups``), and yields every item once. With the
    dataset's per-process cache this decodes each chunk about once per loader worker and pass,
    where a uniform shuffle would decode one for nearly every item. The order is random across
    chunks and within a chunk, not across chunk boundaries: a batch mixes at most a few chunks.

    Args:
        dataset: the dataset whose items to order.
        generator: the source of randomness, a ``torch.Generator`` or an int seed; each pass
            advances it, so successive epochs differ and repeat from the same seed.
    """

    def __init__(self, dataset: TrajectoryDataset, generator: torch.Generator | int):
        super().__init__()
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        self.generator = generator
        self.groups = [torch.from_numpy(g) for g in dataset.chunk_groups()]
        self._n = sum(len(g) for g in self.groups)

    def __iter__(self) -> Iterator[int]:
        for k in torch.randperm(len(self.groups), generator=self.generator).tolist():
            group = self.groups[k]
            yield from group[torch.randperm(len(group), generator=self.generator)].tolist()

    def __len__(self) -> int:
        return self._n


def chunk_order_sampler(
    dataset: TrajectoryDataset, generator: torch.Generator | int
) -> ChunkOrderSampler:
    """A ``ChunkOrderSampler`` over ``dataset``: pass it as ``DataLoader(sampler=...)``."""
    return ChunkOrderSampler(dataset, generator)
