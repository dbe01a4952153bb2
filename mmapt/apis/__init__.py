"""Helpers for the tools and the demo: image decoding shared with the data
pipeline, reading a user's folders, the test pipelines' views of a photo,
output checks, drawing at the saved size."""
from .images import (DEFAULT_DECODE_BACKEND, ImageDecodeError, ImageReadError,
                     decode_image, list_images, load_rgb,
                     pipeline_decode_backend, read_image, sample_photo_paths)

__all__ = [
    'DEFAULT_DECODE_BACKEND', 'ImageDecodeError', 'ImageReadError',
    'decode_image', 'list_images', 'load_rgb', 'pipeline_decode_backend',
    'read_image', 'sample_photo_paths'
]
