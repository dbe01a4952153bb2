"""Drawing for the tools: the patch grid a tokenizer chose on an image, and
the curves of a training log (:mod:`.training_logs`)."""
from .patch_grid import (caption_bar, draw_patch_grid, side_by_side,
                         tokenizer_from_config)

__all__ = [
    'caption_bar', 'draw_patch_grid', 'side_by_side', 'tokenizer_from_config'
]
