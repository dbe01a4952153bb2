"""Predictions at the size a picture is drawn, for the demo.

mmdet and mmseg return predictions at the original image's size
(``ori_shape``): boxes in its pixels, masks and segmentation logits resized
to it. For a 10000 x 8000 photograph that means gigabytes of masks and
logits, only for the demo to shrink the drawing afterwards.
:func:`predictions_at_size` makes the model rescale its outputs to the
drawing size instead; the model itself still sees exactly what the test
pipeline made of the full image.
"""
import contextlib
from typing import Iterator, Tuple

from torch import nn

Size = Tuple[int, int]  # (height, width)


def drawing_size(height: int, width: int, long_side: int) -> Size:
    """(H, W) of an image shrunk (never enlarged) so that its long side is
    at most ``long_side``, aspect ratio kept."""
    scale = min(1.0, long_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


@contextlib.contextmanager
def predictions_at_size(model: nn.Module, size: Size) -> Iterator[None]:
    """Within the block, ``model``'s predictions (``model.test_step``,
    ``inference_detector``, ``inference_model``) come at ``size`` (H, W):
    each data sample's ``ori_shape`` becomes ``size`` and its
    ``scale_factor`` the factor from ``size`` to the network input, the two
    keys mmdet and mmseg rescale predictions with."""
    height, width = size

    def to_size(module, args, kwargs):
        for sample in kwargs.get('data_samples') or ():
            img_h, img_w = sample.metainfo['img_shape'][:2]
            sample.set_metainfo(
                dict(
                    ori_shape=(height, width),
                    scale_factor=(img_w / width, img_h / height)))
        return args, kwargs

    handle = model.register_forward_pre_hook(to_size, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
