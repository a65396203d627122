"""What can go wrong with a store, as exception types the CLI maps to exit codes.

``StoreError`` and its subclasses are refusals of bad input or of a store in the wrong state
(exit 2): nothing was computed or changed. ``StoreDamaged`` means bytes on disk differ from what
was recorded (a re-run of generate recomputes them; ``pdeflow verify --repair`` reopens them).
"""


class StoreError(RuntimeError):
    """The store cannot be used as asked; the message says why and what to do."""


class ConfigMismatch(StoreError):
    """The store holds results of a different configuration."""


class StoreBusy(StoreError):
    """Another process holds the store's lock; the message says who and what to do."""


class StoreNested(StoreError):
    """A store name that lies inside another store, or would contain one."""


class StageNotReady(StoreError):
    """A stage's upstream stage is missing, unfinished, stale or damaged."""


class StoreDamaged(RuntimeError):
    """Stored bytes differ from what the manifest recorded: missing, truncated or changed."""


class NonFiniteData(ValueError):
    """Values with NaN or inf: refused, never stored as finished."""
