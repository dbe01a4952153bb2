"""mmapt models: backbones (EVA02, APTEVA02, ViT), layers and necks."""
from . import necks  # noqa: F401  (registration)
from .backbones import APTEVA02, EVA02, ViT
from .layers import VarlenPlan, varlen_attention

__all__ = ['EVA02', 'APTEVA02', 'ViT', 'VarlenPlan', 'varlen_attention']
