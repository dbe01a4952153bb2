"""Prepare photographs the way the test pipelines do, for the analysis tools.

Kept free of mmdet/mmseg so the tools also run on a machine with torch only;
files are decoded by :func:`mmapt.apis.decode_image`, the data pipeline's
own decoding (mmcv when installed, else the same OpenCV call).
"""
import argparse
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from .tokenizer import IMAGENET_MEAN, IMAGENET_STD, PatchTokenizer

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.npy')
# mmdet's Pad value for ViTDet-style square canvases.
CANVAS_PAD_VALUE = 114
# The real photographs scikit-image ships (no synthetic or microscopy
# images), RGB and gray: what the analysis tools are measured on.
SAMPLE_PHOTOS = ('astronaut.png', 'camera.png', 'chelsea.png', 'coffee.png',
                 'rocket.jpg', 'motorcycle_left.png', 'hubble_deep_field.jpg',
                 'moon.png')


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
    """(H, W, 3) uint8 RGB, decoded as the data pipeline's
    ``LoadImageFromFile`` does (:func:`mmapt.apis.decode_image`: EXIF
    orientation, 16-bit, alpha, gray and CMYK as the model sees them).

    ``.npy`` files hold an (H, W), (H, W, 3) or (H, W, 4) uint8 array (RGB).
    """
    if path.lower().endswith('.npy'):
        array = np.load(path)
        if array.dtype != np.uint8 or array.ndim not in (2, 3) or (
                array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise ValueError(f'{path}: expected an (H, W[, 3 or 4]) uint8 '
                             f'array, got {array.dtype} {array.shape}')
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        return np.ascontiguousarray(array[..., :3])
    # Imported here: the decoder lives with the tools, above this floor.
    from mmapt.apis.images import decode_image
    return decode_image(path)


def canvas_content_size(height: int, width: int,
                        canvas: int) -> Tuple[int, int]:
    """Size of an image's content on the :func:`to_canvas` canvas."""
    scale = canvas / max(height, width)
    return (max(1, min(canvas, round(height * scale))),
            max(1, min(canvas, round(width * scale))))


def to_canvas(image: np.ndarray, canvas: int) -> np.ndarray:
    """Detection test pipeline: long side to ``canvas`` keeping the aspect
    ratio (bilinear), then pad bottom/right with 114 to canvas x canvas."""
    new_h, new_w = canvas_content_size(*image.shape[:2], canvas)
    resized = np.asarray(
        Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    out = np.full((canvas, canvas, 3), CANVAS_PAD_VALUE, dtype=np.uint8)
    out[:new_h, :new_w] = resized
    return out


def to_crop(image: np.ndarray, crop: int) -> np.ndarray:
    """Segmentation-style view: short side to ``crop``, centre crop."""
    height, width = image.shape[:2]
    scale = crop / min(height, width)
    new_h = max(crop, round(height * scale))
    new_w = max(crop, round(width * scale))
    resized = np.asarray(
        Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    top, left = (new_h - crop) // 2, (new_w - crop) // 2
    return resized[top:top + crop, left:left + crop]


def normalise(images: Sequence[np.ndarray],
              mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Same-size (H, W, 3) uint8 RGB images -> (B, 3, H, W) normalised."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t


def prepare_view(image: np.ndarray,
                 canvas: Optional[int] = None,
                 crop: Optional[int] = None,
                 multiple: int = 1) -> np.ndarray:
    """The analysis tools' views of a photograph.

    ``canvas``: the detection test view (:func:`to_canvas`); ``crop``: the
    segmentation view (:func:`to_crop`); neither: the image as it is, padded
    bottom/right with 114 to a multiple of ``multiple`` (the largest patch).
    """
    if canvas:
        return to_canvas(image, canvas)
    if crop:
        return to_crop(image, crop)
    pad_h, pad_w = -image.shape[0] % multiple, -image.shape[1] % multiple
    return np.pad(
        image, ((0, pad_h), (0, pad_w), (0, 0)),
        constant_values=CANVAS_PAD_VALUE)


def tokenizer_and_images(path: str, patch_sizes: Sequence[int],
                         thresholds: Sequence[float], entropy_bins: int,
                         **tokenizer_args) -> Tuple[PatchTokenizer, List[str]]:
    """Validate a tool's tokenizer settings and list its images.

    ``tokenizer_args``: more :class:`PatchTokenizer` arguments (``scorer``,
    ``keep_ratio``, ``token_budget``, ``threshold_floor``).

    Raises ValueError / FileNotFoundError with the message a tool prints.
    """
    tokenizer = PatchTokenizer(
        patch_sizes[0],
        thresholds,
        entropy_bins=entropy_bins,
        patch_sizes=patch_sizes,
        **tokenizer_args)
    return tokenizer, list_images(path)


def add_entropy_bins_argument(parser: argparse.ArgumentParser) -> None:
    """``--entropy-bins`` (histogram bins of the entropy scorer), with the
    tools' former name ``--bins`` kept as a hidden alias."""
    parser.add_argument(
        '--entropy-bins',
        type=int,
        default=512,
        help='histogram bins over [0, 255] of the entropy maps')
    parser.add_argument(
        '--bins',
        dest='entropy_bins',
        type=int,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS)


def add_scorer_arguments(parser: argparse.ArgumentParser) -> None:
    """The tools' patch-scorer and budget options (and ``--entropy-bins``)."""
    parser.add_argument(
        '--scorer',
        default='entropy',
        help='patch scorer of mmapt.registry.PATCH_SCORERS: entropy '
        '(default), contrast, gradient')
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        '--keep-ratio',
        type=float,
        help='budget mode: keep this fraction of the plain grid\'s tokens '
        'in every image')
    budget.add_argument(
        '--token-budget',
        type=int,
        help='budget mode: this many content tokens in every image')
    parser.add_argument(
        '--threshold-floor',
        action='store_true',
        help='budget mode: the thresholds\' splits come first')
    add_entropy_bins_argument(parser)


def scorer_arguments(args: argparse.Namespace) -> dict:
    """:class:`PatchTokenizer` arguments of :func:`add_scorer_arguments`."""
    return dict(
        scorer=args.scorer,
        keep_ratio=args.keep_ratio,
        token_budget=args.token_budget,
        threshold_floor=args.threshold_floor)
