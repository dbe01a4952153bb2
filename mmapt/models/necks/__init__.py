# Copyright (c) mmapt contributors. All rights reserved.
from .ln2d import LN2d
from .simple_fpn import SimpleFPN
from .vit_pyramid import ViTPyramidNeck

__all__ = ['LN2d', 'SimpleFPN', 'ViTPyramidNeck']
