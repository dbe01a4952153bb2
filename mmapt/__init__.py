"""mmapt: Adaptive Patch Transformers for dense prediction in OpenMMLab.

``import mmapt`` registers every mmapt module (backbones, necks, optimizer
constructor, hooks) in mmengine's root registries, so a config needs only::

    custom_imports = dict(imports=['mmapt'], allow_failed_imports=False)

It needs torch and mmengine only; mmcv, mmdet and mmseg are imported where a
module is built from a config that uses them.
"""
from . import datasets, engine, models, tokenizer  # noqa: F401  (registration)
from .version import __version__

__all__ = ['__version__', 'datasets', 'engine', 'models', 'tokenizer']
