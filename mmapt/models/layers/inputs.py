"""The check every backbone runs on what it is handed."""
from typing import Any, Tuple

import torch
from torch import Tensor


def check_image_batch(
    x: Any, weight_dtype: torch.dtype, channels: Tuple[int,
                                                       ...] = (3, )) -> None:
    """A ValueError naming the expected input and the fix, for what a
    backbone cannot take: not a 4-D (B, C, H, W) tensor with ``channels``
    channels, integer pixels, or a float dtype other than the weights'
    outside autocast."""
    expected = ('a float (B, 3, H, W) batch of normalised images (the data '
                'preprocessor\'s output)')
    if not isinstance(x, Tensor):
        raise ValueError(f'the backbone takes {expected}, got '
                         f'{type(x).__name__}')
    if x.dim() != 4 or x.shape[1] not in channels:
        fix = (' (one image: add the batch axis, x[None])'
               if x.dim() == 3 else '')
        raise ValueError(f'the backbone takes {expected}, got shape '
                         f'{tuple(x.shape)}{fix}')
    if not x.is_floating_point():
        raise ValueError(
            f'the backbone takes {expected}, got {x.dtype} pixels: subtract '
            'the mean and divide by the std in float32 (mmdet / mmseg data '
            'preprocessors do; mmapt.apis.views.normalise in scripts)')
    if x.dtype != weight_dtype and \
            not torch.is_autocast_enabled(x.device.type):
        raise ValueError(
            f'input dtype {x.dtype} differs from the weights\' '
            f'{weight_dtype}: run under torch.autocast(\'{x.device.type}\', '
            f'dtype={x.dtype}) or pass x.to({weight_dtype})')
