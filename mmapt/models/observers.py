# Copyright (c) mmapt contributors. All rights reserved.
"""Per-instance observers: the one way a model reports what its forward did.

Token counts, stage marks and attention calls all follow one pattern: a
module keeps its own ordered registry of callbacks (created lazily, outside
``nn.Module``'s state, so it is neither saved nor copied into a state dict),
``register`` returns a :class:`~torch.utils.hooks.RemovableHandle`, and the
forward reads the registry of the instance it runs on. Nothing is global:
two models in one process never hear each other's calls.

:func:`attach_to_modules` registers one callback on every module of a model
that reports a kind of event (e.g. every backbone of a detector) and returns
one handle for all of them.
"""
from collections import OrderedDict
from typing import Callable, Dict, Iterator, List, Optional

from torch import nn
from torch.utils.hooks import RemovableHandle


def observer_dict(owner: object, attr: str) -> Dict[int, object]:
    """The registry ``owner.__dict__[attr]``, created empty on first use.

    ``object.__setattr__`` keeps ``nn.Module`` from treating it as state.
    """
    observers = owner.__dict__.get(attr)
    if observers is None:
        observers = OrderedDict()
        object.__setattr__(owner, attr, observers)
    return observers


def add_observer(owner: object, attr: str, entry: object) -> RemovableHandle:
    """Append ``entry`` to ``owner``'s registry ``attr``; the handle takes
    it out again."""
    observers = observer_dict(owner, attr)
    handle = RemovableHandle(observers)
    observers[handle.id] = entry
    return handle


class HandleGroup:
    """Several :class:`RemovableHandle` removed together; a context manager
    that removes them on exit."""

    def __init__(self, handles: List[RemovableHandle]) -> None:
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __len__(self) -> int:
        return len(self.handles)

    def __enter__(self) -> 'HandleGroup':
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def modules_with(model: nn.Module, method: str) -> Iterator[nn.Module]:
    """The modules of ``model`` (itself included) that have ``method``."""
    for module in model.modules():
        if callable(getattr(module, method, None)):
            yield module


def attach_to_modules(model: nn.Module,
                      method: str,
                      fn: Callable,
                      what: Optional[str] = None) -> HandleGroup:
    """Call ``module.<method>(fn)`` on every module of ``model`` that has it.

    Args:
        model (nn.Module): A backbone or a whole detector / segmentor.
        method (str): The registration method, e.g.
            ``'register_stage_listener'``.
        fn (Callable): The observer.
        what (str, optional): What the modules report, for the error.

    Returns:
        HandleGroup: One handle per module; ``remove()`` detaches them all.

    Raises:
        TypeError: No module of ``model`` has ``method``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'observers attach to an nn.Module (a backbone or a '
                        f'whole model), got {type(model).__name__}')
    handles = [getattr(m, method)(fn) for m in modules_with(model, method)]
    if not handles:
        raise TypeError(
            f'{type(model).__name__} has no module that reports '
            f'{what or method} (none has {method}); pass an mmapt backbone '
            '(EVA02, ViT, APTEVA02, APTViT) or a model holding one')
    return HandleGroup(handles)
