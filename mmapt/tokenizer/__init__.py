"""Entropy-driven multi-scale patch selection, packing and unpacking."""
from .entropy import entropy_maps, images_to_gray, patch_entropy
from .layout import PatchLayout, build_layout, select_patches
from .tokenizer import (IMAGENET_MEAN, IMAGENET_STD, PatchTokenizer,
                        check_thresholds)

__all__ = [
    'entropy_maps', 'images_to_gray', 'patch_entropy', 'PatchLayout', 'build_layout',
    'select_patches', 'PatchTokenizer', 'check_thresholds', 'IMAGENET_MEAN',
    'IMAGENET_STD'
]
