from .apt_eva02 import APTEVA02
from .eva02 import EVA02

__all__ = ['EVA02', 'APTEVA02']
