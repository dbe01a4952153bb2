from .apt_eva02 import APTEVA02
from .eva02 import EVA02
from .vit import ViT

__all__ = ['EVA02', 'APTEVA02', 'ViT']
