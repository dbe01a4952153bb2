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
"""
from contextlib import contextmanager
from typing import Iterator, List, TypeVar

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
