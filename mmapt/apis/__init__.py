"""Helpers for the tools and the demo: image decoding shared with the data
pipeline, output checks, drawing at the saved size."""
from .images import (DEFAULT_DECODE_BACKEND, ImageDecodeError, decode_image,
                     pipeline_decode_backend)

__all__ = [
    'DEFAULT_DECODE_BACKEND', 'ImageDecodeError', 'decode_image',
    'pipeline_decode_backend'
]
