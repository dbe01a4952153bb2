"""Small synthetic data sets in the COCO and ADE20K layouts, generated so
the real dataset configs can be trained and tested without downloads
(``tools/misc/make_toy_coco.py``, ``tools/misc/make_toy_ade.py``)."""
from .ade import write_toy_ade
from .coco import write_toy_coco

__all__ = ['write_toy_ade', 'write_toy_coco']
