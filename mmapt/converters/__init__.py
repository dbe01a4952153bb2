"""Checkpoint converters: official EVA-02 (classification, detectron2
detection, mmseg 0.x segmentation) and timm ViT weights to mmapt keys."""
from .eva02_convert import (ConversionError, convert_eva02_state_dict,
                            load_checkpoint_file, unwrap_state_dict)
from .eva02_seg_convert import (RELEASED_CONFIGS, SegModelInfo, config_for,
                                convert_eva02_seg_checkpoint)
from .vit_convert import convert_vit_state_dict, vit_arch_hint

__all__ = [
    'ConversionError', 'convert_eva02_state_dict', 'load_checkpoint_file',
    'unwrap_state_dict', 'RELEASED_CONFIGS', 'SegModelInfo', 'config_for',
    'convert_eva02_seg_checkpoint', 'convert_vit_state_dict', 'vit_arch_hint'
]
