from .eva02_convert import (ConversionError, convert_eva02_state_dict,
                            unwrap_state_dict)

__all__ = ['ConversionError', 'convert_eva02_state_dict', 'unwrap_state_dict']
