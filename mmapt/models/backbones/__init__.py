from .apt_eva02 import APTEVA02
from .eva02 import EVA02
from .token_observer import (TokenCounter, TokenObservable, count_tokens,
                             is_token_observable)

__all__ = [
    'EVA02', 'APTEVA02', 'TokenObservable', 'TokenCounter', 'count_tokens',
    'is_token_observable'
]
