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

The tools read a user's files with :func:`read_image` (one-line errors that
name the file and the fix) and find them with :func:`list_images`.
"""
import functools
import os
import warnings
from typing import Any, Callable, List, Mapping, Optional

import numpy as np

#: mmcv ``LoadImageFromFile``'s default backend, used by every training
#: pipeline of the configs.
DEFAULT_DECODE_BACKEND = 'cv2'
DECODE_BACKENDS = ('cv2', 'pillow')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.npy')
# The real photographs scikit-image ships (no synthetic or microscopy
# images), RGB and gray: what the analysis tools are measured on.
SAMPLE_PHOTOS = ('astronaut.png', 'camera.png', 'chelsea.png', 'coffee.png',
                 'rocket.jpg', 'motorcycle_left.png', 'hubble_deep_field.jpg',
                 'moon.png')


class ImageDecodeError(ValueError):
    """The file's bytes are not an image the backend can decode."""


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message is one line that
    names the file and the problem."""


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


def sample_photo_paths() -> List[str]:
    """Paths of :data:`SAMPLE_PHOTOS` inside the installed scikit-image."""
    try:
        import skimage
    except ImportError as err:
        raise FileNotFoundError(
            'the sample photographs come with scikit-image, which is not '
            'installed: pass a folder of images instead (write one on a '
            'machine with scikit-image: python tools/misc/sample_photos.py '
            'DIR)') from err
    source = os.path.join(os.path.dirname(skimage.__file__), 'data')
    return [os.path.join(source, name) for name in SAMPLE_PHOTOS]


def list_images(path: str) -> List[str]:
    """An image file, or every image in a folder (sorted)."""
    if os.path.isdir(path):
        files = [
            os.path.join(path, name) for name in sorted(os.listdir(path))
            if name.lower().endswith(IMAGE_EXTENSIONS)
        ]
        if not files:
            raise FileNotFoundError(
                f'no images ({", ".join(IMAGE_EXTENSIONS)}) in folder {path}')
        return files
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path} is neither an image nor a folder')
    return [path]


def load_rgb(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB: :func:`decode_image` with the default backend
    (EXIF orientation, 16-bit, alpha, gray and CMYK as the model sees them).

    ``.npy`` files hold an (H, W), (H, W, 3) or (H, W, 4) uint8 array (RGB).
    """
    if not path.lower().endswith('.npy'):
        return decode_image(path)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ImageDecodeError(f'{path}: empty file (0 bytes)')
    array = np.load(path)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (
            array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f'{path}: expected an (H, W[, 3 or 4]) uint8 '
                         f'array, got {array.dtype} {array.shape}')
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def read_image(path: str) -> np.ndarray:
    """:func:`load_rgb`, every failure an :class:`ImageReadError` whose one
    line names the file, the problem and what to do.

    Raises:
        ImageReadError: the file is missing or a directory, empty,
            truncated, not an image the pipeline's decoder reads, or has no
            pixels.
    """
    try:
        image = load_rgb(path)
    except IsADirectoryError:
        raise ImageReadError(f'{path} is a directory, not an image file: '
                             'give one image file') from None
    except FileNotFoundError:
        raise ImageReadError(f'{path}: no such file') from None
    except ImageDecodeError as err:
        raise ImageReadError(f'{err}; export it again or re-save it as PNG '
                             'or JPEG') from None
    except (OSError, ValueError, SyntaxError) as err:
        # .npy loading: ValueError (not an array file) or OSError.
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageReadError(
            f'{path}: cannot be read ({message}); the file may be truncated '
            'or corrupt') from None
    if image.size == 0:
        raise ImageReadError(f'{path}: the image has no pixels '
                             f'({image.shape[0]} x {image.shape[1]})')
    return image
