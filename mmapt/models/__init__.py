"""mmapt models: backbones (EVA02, APTEVA02), their layers, the necks and
the detectron2-faithful detection heads."""
from . import necks, roi_heads  # noqa: F401  (registration)
from .backbones import APTEVA02, EVA02
from .layers import VarlenPlan, varlen_attention

__all__ = ['EVA02', 'APTEVA02', 'VarlenPlan', 'varlen_attention']
