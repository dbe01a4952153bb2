# Copyright (c) mmapt contributors. All rights reserved.
"""Detection heads with detectron2's test-time rules (mmdet subclasses).

The classes live in :mod:`.d2_cascade_roi_head`, which imports mmdet. Here
they are registered as builders that import that module on first use, so
``import mmapt`` needs no mmdet while ``type='D2CascadeRoIHead'`` and
``type='D2RoIExtractor'`` work in any mmdet config.
"""
from mmapt.registry import MODELS

__all__ = ['D2CascadeRoIHead', 'D2RoIExtractor']


def _register_lazy(name: str) -> None:

    def build(*args, **kwargs):
        from . import d2_cascade_roi_head
        return getattr(d2_cascade_roi_head, name)(*args, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f'Build :class:`.d2_cascade_roi_head.{name}` (mmdet).'
    MODELS.register_module(name=name, module=build)


for _name in __all__:
    _register_lazy(_name)


def __getattr__(name: str):
    """``from mmapt.models.roi_heads import D2CascadeRoIHead`` gives the
    class itself (importing mmdet)."""
    if name in __all__:
        from . import d2_cascade_roi_head
        return getattr(d2_cascade_roi_head, name)
    raise AttributeError(name)
