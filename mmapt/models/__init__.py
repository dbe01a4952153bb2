"""mmapt models: backbones (EVA02, APTEVA02), their layers, and the necks."""
from . import necks  # noqa: F401  (registration)
from .backbones import APTEVA02, EVA02
from .layers import VarlenPlan, varlen_attention

__all__ = ['EVA02', 'APTEVA02', 'VarlenPlan', 'varlen_attention']
