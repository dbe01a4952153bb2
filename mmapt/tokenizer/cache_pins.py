"""Cache entries a captured graph reads stay alive as long as the graph.

A CUDA graph replays kernels on the raw addresses its capture saw. Tensors
a forward takes from a cache (layout slot tables, RoPE tables, resampled
position maps) were made before or during the capture; a cache that evicts
such an entry later (every cache here is bounded) would free memory the
graph still reads, and a replay would read whatever the allocator put
there since. The rule: every cache hands each value it returns to
:func:`pin`, and whoever captures a graph opens :func:`pin_cached_values`
around the capture and keeps the returned list for the graph's life. A
cache may then evict whatever it likes: the graph's list holds the pinned
tensors, so their storage is never freed or reused while the graph lives.

:class:`BoundedCache` is the one cache of the forward (layout constants,
RoPE tables and, through ``ParamCache``, values derived from parameters):
bounded, least recently used out first, every value pinned.
"""
from contextlib import contextmanager
from typing import Any, Callable, Dict, Hashable, Iterator, List, TypeVar

import torch

T = TypeVar('T')

_scopes: List[List[object]] = []


@contextmanager
def pin_cached_values() -> Iterator[List[object]]:
    """Collect every cached value returned inside the ``with`` block.

    Yields:
        list: The values (tensors, tuples and dicts of tensors, as the
        caches hold them), in the order they were returned; keep it as long
        as anything (a captured graph) uses their memory.
    """
    pins: List[object] = []
    _scopes.append(pins)
    try:
        yield pins
    finally:  # by identity: two scopes' lists may be equal
        del _scopes[next(i for i, s in enumerate(_scopes) if s is pins)]


def pin(value: T) -> T:
    """Record ``value`` in every open :func:`pin_cached_values` scope and
    return it (a list append per scope; nothing without a scope)."""
    for pins in _scopes:
        pins.append(value)
    return value


class BoundedCache:
    """``compute()`` results by key, at most ``max_entries`` of them.

    The least recently used entry goes first when full (clearing all
    would make the next forward rebuild what it had just used). Under
    ``torch.compile`` / ``torch.export`` values are computed afresh, so the
    trace holds them as constants and no cache state enters the guards.
    Every value returned is :func:`pin` ned.

    Args:
        max_entries (int): Entries kept. Defaults to 8 (a few input sizes).
    """

    def __init__(self, max_entries: int = 8) -> None:
        if max_entries < 1:
            raise ValueError(f'max_entries must be >= 1, got {max_entries}')
        self.max_entries = max_entries
        self._store: Dict[Hashable, Any] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, from the cache when ``key`` was seen (a key that
        includes everything the value depends on: shapes, device, ...)."""
        if torch.compiler.is_compiling():
            return compute()
        value = self._store.pop(key, None)
        if value is None:
            if len(self._store) >= self.max_entries:
                del self._store[next(iter(self._store))]
            value = compute()
        self._store[key] = value  # most recently used last
        return pin(value)

    def values(self) -> List[Any]:
        """The values held now, least recently used first."""
        return list(self._store.values())

    def clear(self) -> None:
        self._store.clear()

    def __len__(self) -> int:
        return len(self._store)
