"""Named stages of a backbone forward, for counters and profilers.

A backbone marks the parts of its forward (``with forward_stage('tokenizer'):
...``) and tools that want to attribute work to them (the overhead counter,
the profiler table of the GPU benchmark) listen while it runs. With nobody
listening a mark costs one truthiness test of a list: it dispatches nothing
and reads no tensor, so marks may stay in the hot path.
"""
from contextlib import contextmanager
from typing import Callable, Iterator, List, Tuple

#: The stages an APT forward goes through, in order. Plain backbones use
#: 'embedding', 'blocks' and 'unpack'.
STAGES: Tuple[str,
              ...] = ('tokenizer', 'embedding', 'context', 'blocks', 'unpack')

#: ``listener(name, entering)``: called with True when a stage starts and
#: with False when it ends (also when it ends with an exception).
StageListener = Callable[[str, bool], None]

_listeners: List[StageListener] = []


@contextmanager
def forward_stage(name: str) -> Iterator[None]:
    """Mark the code of the ``with`` block as stage ``name``."""
    if not _listeners:
        yield
        return
    if name not in STAGES:
        raise ValueError(f'unknown stage {name!r}; one of {STAGES}')
    for listener in list(_listeners):
        listener(name, True)
    try:
        yield
    finally:
        for listener in list(_listeners):
            listener(name, False)


@contextmanager
def listen_stages(listener: StageListener) -> Iterator[None]:
    """Call ``listener`` at every stage boundary inside the ``with`` block."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


@contextmanager
def stages_unmarked() -> Iterator[None]:
    """No listener hears the marks inside the ``with`` block: a compiled or
    captured forward runs as one piece (a listener's Python callback would
    break the graph, or run once at capture instead of every replay)."""
    saved = list(_listeners)
    _listeners.clear()
    try:
        yield
    finally:
        _listeners[:] = saved
