"""Named stages of a backbone forward, for counters and profilers.

A backbone marks the parts of its forward (``with forward_stage(self,
'tokenizer'): ...``) and tools that want to attribute
work to them (the overhead counter, the stage timers, the profiler table of
the GPU benchmark) listen to that model while it runs::

    with listen_stages(model, lambda name, entering: ...):
        model(images)

Listeners belong to a module instance (:mod:`mmapt.models.observers`): a
second model in the same process is not heard. With nobody listening a mark
costs one dictionary lookup: it dispatches nothing and reads no tensor, so
marks may stay in the hot path.
"""
from contextlib import contextmanager
from typing import Callable, Iterator, Tuple

from torch import nn
from torch.utils.hooks import RemovableHandle

from .observers import HandleGroup, add_observer, attach_to_modules

#: The stages an APT forward goes through, in order. Plain backbones use
#: 'embedding', 'blocks' and 'unpack'.
STAGES: Tuple[str,
              ...] = ('tokenizer', 'embedding', 'context', 'blocks', 'unpack')

#: ``listener(name, entering)``: called with True when a stage starts and
#: with False when it ends (also when it ends with an exception).
StageListener = Callable[[str, bool], None]

_LISTENERS = '_stage_listeners'
_MUTED = '_stages_muted'


class StageMarks:
    """Mixin for modules whose forward marks its stages.

    Example:
        >>> handle = backbone.register_stage_listener(
        ...     lambda name, entering: print(name, entering))
        >>> backbone(images)            # tokenizer True, tokenizer False...
        >>> handle.remove()
    """

    def register_stage_listener(self,
                                listener: StageListener) -> RemovableHandle:
        """Call ``listener(name, entering)`` at every stage boundary of this
        module's forwards; ``handle.remove()`` stops it."""
        if not callable(listener):
            raise TypeError(
                f'stage listener must be callable, got {listener!r}')
        return add_observer(self, _LISTENERS, listener)


@contextmanager
def forward_stage(owner: object, name: str) -> Iterator[None]:
    """Mark the code of the ``with`` block as stage ``name`` of ``owner``'s
    forward (a :class:`StageMarks` module; any other object has no
    listeners, so the mark does nothing)."""
    listeners = owner.__dict__.get(_LISTENERS)
    if not listeners or owner.__dict__.get(_MUTED):
        yield
        return
    if name not in STAGES:
        raise ValueError(f'unknown stage {name!r}; one of {STAGES}')
    listeners = list(listeners.values())
    for listener in listeners:
        listener(name, True)
    try:
        yield
    finally:
        for listener in listeners:
            listener(name, False)


@contextmanager
def stages_unmarked(owner: object) -> Iterator[None]:
    """``owner``'s listeners hear none of its marks inside the ``with``
    block: a compiled or captured forward runs as one piece (a listener's
    Python callback would break the graph, or run once at capture instead of
    every replay). Listeners registered meanwhile are kept."""
    saved = owner.__dict__.get(_MUTED, False)
    object.__setattr__(owner, _MUTED, True)
    try:
        yield
    finally:
        object.__setattr__(owner, _MUTED, saved)


def observe_stages(model: nn.Module, listener: StageListener) -> HandleGroup:
    """Register ``listener`` on every module of ``model`` that marks stages
    (its backbone(s)); the returned handle detaches it from all of them.

    Raises:
        TypeError: ``model`` holds no module that marks stages.
    """
    return attach_to_modules(model, 'register_stage_listener', listener,
                             'forward stages')


@contextmanager
def listen_stages(model: nn.Module, listener: StageListener) -> Iterator[None]:
    """Call ``listener`` at every stage boundary of ``model``'s forwards
    inside the ``with`` block (:func:`observe_stages`)."""
    with observe_stages(model, listener):
        yield
