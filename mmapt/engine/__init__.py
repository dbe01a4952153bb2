# Copyright (c) mmapt contributors. All rights reserved.
from .amp import (AmpTestLoop, AmpValLoop, apply_amp_test_cfg, autocast_model,
                  resolve_amp_dtype)
from .checkpoint import safe_checkpoint_loading, trusted_checkpoints
from .hooks import TokenStatsHook
from .layer_decay import LayerDecayOptimWrapperConstructor
from .safe_checkpoint import SafeCheckpointHook

__all__ = [
    'LayerDecayOptimWrapperConstructor', 'TokenStatsHook',
    'SafeCheckpointHook', 'AmpTestLoop', 'AmpValLoop', 'autocast_model',
    'apply_amp_test_cfg', 'resolve_amp_dtype', 'safe_checkpoint_loading',
    'trusted_checkpoints'
]
