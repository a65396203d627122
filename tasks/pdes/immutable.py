"""The immutability every PDE solver promises: settings go in at construction, never later."""

from __future__ import annotations


class Immutable:
    """Refuses attribute assignment and deletion after ``__init__``.

    ``__init__`` of a subclass sets its attributes with ``object.__setattr__``; precomputed
    operators then always match the grid, coefficients and ``dt`` they were built for.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; construct a new one instead")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; construct a new one instead")
