"""Decode an image file exactly as the models' data pipelines do.

The configs load images with mmcv's ``LoadImageFromFile`` (``color_type=
'color'``; ``imdecode_backend='cv2'`` unless a pipeline says ``'pillow'``),
i.e. ``mmcv.imfrombytes(bytes, flag='color', backend=...)``, and the data
preprocessor turns BGR into RGB. :func:`decode_image` makes that same call,
so the analysis tools and the demo see the pixels the model sees: EXIF
orientation applied, 16-bit files scaled to 8 bits (OpenCV) instead of
clipped, alpha dropped, CMYK and gray converted to RGB.

Without mmcv (the GPU benchmark needs torch only) the ``cv2`` backend makes
the OpenCV call that ``mmcv.imfrombytes`` makes; ``pillow`` needs mmcv.
Without OpenCV too, Pillow decodes, with a warning.
"""
import functools
import os
import warnings
from typing import Any, Callable, Mapping, Optional

import numpy as np

#: mmcv ``LoadImageFromFile``'s default backend, used by every training
#: pipeline of the configs.
DEFAULT_DECODE_BACKEND = 'cv2'
DECODE_BACKENDS = ('cv2', 'pillow')


class ImageDecodeError(ValueError):
    """The file's bytes are not an image the backend can decode."""


def _bgr_decoder(backend: str) -> Callable[[bytes], Optional[np.ndarray]]:
    """LoadImageFromFile's call, BGR out (``channel_order='rgb'`` would make
    OpenCV convert None in place and raise on an undecodable file)."""
    try:
        import mmcv
    except ImportError:
        mmcv = None
    if mmcv is not None:
        return functools.partial(
            mmcv.imfrombytes, flag='color', backend=backend)
    if backend != 'cv2':
        raise ImportError(f'decoding with the {backend!r} backend needs mmcv '
                          '(pip install mmcv); the cv2 backend does not')
    try:
        import cv2
    except ImportError:
        return _pillow_fallback
    return lambda content: cv2.imdecode(
        np.frombuffer(content, np.uint8), cv2.IMREAD_COLOR)


def _pillow_fallback(content: bytes) -> np.ndarray:
    """Neither mmcv nor OpenCV (a bare GPU benchmark machine): what mmcv's
    ``pillow`` backend does, with a warning, since 16-bit files then differ
    from the pipeline's decoding."""
    import io

    from PIL import Image, ImageOps
    warnings.warn(
        'OpenCV is not installed: images are decoded with Pillow (EXIF '
        'orientation applied, 16-bit files clipped), not as the data '
        'pipeline decodes them; pip install opencv-python for that')
    with Image.open(io.BytesIO(content)) as image:
        rgb = np.asarray(ImageOps.exif_transpose(image).convert('RGB'))
    return rgb[..., ::-1]


def _truncated_jpeg(content: bytes) -> bool:
    """A JPEG whose last scan has no end-of-image marker after it. OpenCV
    decodes such a file, grey where the data stops; the tools skip it. (The
    markers cannot occur inside entropy-coded data, and an EXIF thumbnail's
    own end marker comes before the main image's scan.)"""
    return content[:2] == b'\xff\xd8' and \
        content.rfind(b'\xff\xd9') < content.rfind(b'\xff\xda')


def decode_image(path: str,
                 backend: str = DEFAULT_DECODE_BACKEND,
                 channel_order: str = 'rgb') -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, as the data pipeline loads it.

    Args:
        path (str): Image file.
        backend (str): ``'cv2'`` (default) or ``'pillow'``: the pipeline's
            ``imdecode_backend`` (:func:`pipeline_decode_backend`).
        channel_order (str): ``'rgb'`` (default) or ``'bgr'``, the order
            ``LoadImageFromFile`` hands on (no copy).

    Raises:
        IsADirectoryError: ``path`` is a folder.
        FileNotFoundError: ``path`` does not exist.
        ImageDecodeError: the bytes are not an image the backend decodes,
            or a JPEG is truncated.
    """
    if backend not in DECODE_BACKENDS:
        raise ValueError(f'image decode backend must be one of '
                         f'{DECODE_BACKENDS}, got {backend!r}')
    if channel_order not in ('rgb', 'bgr'):
        raise ValueError(f'channel_order must be \'rgb\' or \'bgr\', got '
                         f'{channel_order!r}')
    decode = _bgr_decoder(backend)
    if os.path.isdir(path):
        raise IsADirectoryError(f'{path} is a directory, not an image file')
    if not os.path.exists(path):
        raise FileNotFoundError(f'{path}: no such file')
    with open(path, 'rb') as f:
        content = f.read()
    if not content:
        raise ImageDecodeError(f'{path}: empty file (0 bytes)')
    if _truncated_jpeg(content):
        raise ImageDecodeError(f'{path}: the JPEG data is truncated (no '
                               'end-of-image marker)')
    try:
        bgr = decode(content)
    except Exception as err:  # PIL's and OpenCV's errors alike
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageDecodeError(f'{path}: not an image file {backend} can '
                               f'decode ({first})') from None
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ImageDecodeError(f'{path}: not an image file {backend} (the '
                               'data pipeline\'s decoder) can decode')
    if channel_order == 'bgr':
        return np.ascontiguousarray(bgr)  # pillow's BGR is a reversed view
    return np.ascontiguousarray(bgr[..., ::-1])


def pipeline_decode_backend(cfg: Mapping[str, Any],
                            split: str = 'test') -> str:
    """The ``imdecode_backend`` of the ``LoadImageFromFile`` step of a
    config's ``{split}_dataloader`` pipeline (its default, ``'cv2'``, when
    the step or the pipeline is not found)."""
    loader = cfg.get(f'{split}_dataloader') or {}
    dataset = loader.get('dataset') or {}
    while 'pipeline' not in dataset and 'dataset' in dataset:
        dataset = dataset['dataset']  # dataset wrappers
    for step in dataset.get('pipeline') or ():
        kind = str(step.get('type', ''))
        if kind.split('.')[-1] == 'LoadImageFromFile':
            return step.get('imdecode_backend', DEFAULT_DECODE_BACKEND)
    return DEFAULT_DECODE_BACKEND
