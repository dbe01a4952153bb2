# Copyright (c) mmapt contributors. All rights reserved.
from .hooks import TokenStatsHook
from .layer_decay import LayerDecayOptimWrapperConstructor

__all__ = ['LayerDecayOptimWrapperConstructor', 'TokenStatsHook']
