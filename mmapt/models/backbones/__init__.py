from .apt_eva02 import APTEVA02
from .apt_vit import APTViT
from .base_vit import BaseViT
from .eva02 import EVA02
from .token_observer import (TokenCounter, TokenObservable, count_tokens,
                             is_token_observable)
from .vit import ViT

__all__ = [
    'BaseViT', 'EVA02', 'APTEVA02', 'ViT', 'APTViT', 'TokenObservable',
    'TokenCounter', 'count_tokens', 'is_token_observable'
]
