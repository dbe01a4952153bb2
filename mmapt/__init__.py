"""mmapt: Adaptive Patch Transformers for dense prediction in OpenMMLab."""
from .version import __version__

__all__ = ['__version__']
