"""The analysis tools' views of a photograph, as the test pipelines make
them (detection canvas, segmentation crop), and their normalisation.

Kept free of mmdet/mmseg so the tools also run on a machine with torch only.
"""
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from mmapt.tokenizer import IMAGENET_MEAN, IMAGENET_STD

# mmdet's Pad value for ViTDet-style square canvases.
CANVAS_PAD_VALUE = 114

Canvas = Union[int, Tuple[int, int]]


def _canvas_hw(canvas: Canvas) -> Tuple[int, int]:
    return (canvas, canvas) if isinstance(canvas, int) else \
        (int(canvas[0]), int(canvas[1]))


def canvas_content_size(height: int, width: int,
                        canvas: Canvas) -> Tuple[int, int]:
    """Size of an image's content on the :func:`to_canvas` canvas (a side,
    or (H, W))."""
    canvas_h, canvas_w = _canvas_hw(canvas)
    scale = min(canvas_h / height, canvas_w / width)
    return (max(1, min(canvas_h, round(height * scale))),
            max(1, min(canvas_w, round(width * scale))))


def to_canvas(image: np.ndarray, canvas: Canvas) -> np.ndarray:
    """Detection test pipeline: resized to fit ``canvas`` (a side, or
    (H, W)) keeping the aspect ratio (bilinear), then padded bottom/right
    with 114 to the canvas."""
    new_h, new_w = canvas_content_size(*image.shape[:2], canvas)
    resized = np.asarray(
        Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    out = np.full(_canvas_hw(canvas) + (3, ), CANVAS_PAD_VALUE, dtype=np.uint8)
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
