from .eva02_convert import (ConversionError, convert_eva02_state_dict,
                            unwrap_state_dict)
from .vit_convert import convert_vit_state_dict, vit_arch_hint

__all__ = [
    'ConversionError', 'convert_eva02_state_dict', 'unwrap_state_dict',
    'convert_vit_state_dict', 'vit_arch_hint'
]
