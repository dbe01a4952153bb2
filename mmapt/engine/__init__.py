# Copyright (c) mmapt contributors. All rights reserved.
from . import checkpoint  # noqa: F401  (mmengine checkpoints on torch >= 2.6)
from .hooks import TokenStatsHook
from .layer_decay import LayerDecayOptimWrapperConstructor

__all__ = ['LayerDecayOptimWrapperConstructor', 'TokenStatsHook']
