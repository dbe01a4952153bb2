"""mmapt models: EVA02, ViT and their APT backbones, layers, necks and the
detectron2-faithful detection heads."""
from . import data_preprocessors, distillers, necks, roi_heads  # noqa: F401
from .backbones import APTEVA02, EVA02, APTViT, ViT
from .layers import VarlenPlan, varlen_attention

__all__ = [
    'EVA02', 'APTEVA02', 'ViT', 'APTViT', 'VarlenPlan', 'varlen_attention'
]
