"""Per-image maps reach the APT backbone as extra input channels.

mmdet and mmseg hand the backbone one tensor, the image batch, and they
pad, crop (mmseg slide inference) and slice it on the way. A per-image
importance map that travels in that same tensor, as channel 3 after RGB,
is padded, cropped and batched exactly like its image with no code in the
detectors or segmentors, and no state is parked on a module:

* a pipeline transform (``mmapt.datasets``) sets
  ``data_sample.importance_map`` (``PixelData``, the image's size);
* :class:`APTDataPreprocessor` runs the usual data preprocessor, pads every
  map like its image (bottom/right, neutral 0) and appends the maps as a
  4th channel: ``inputs`` (B, 4, H, W);
* the APT backbone's ``forward`` splits it off (:func:`split_apt_inputs`)
  and hands it to the tokenizer; ``backbone(x, importance=maps)`` with a
  3-channel ``x`` is the same call without the packing.
"""
from typing import Optional, Tuple

import torch
from mmengine.model import BaseDataPreprocessor
from torch import Tensor

from mmapt.registry import MODELS

#: RGB; channel 3 (when present) is the importance map.
IMAGE_CHANNELS = 3


def pack_apt_inputs(images: Tensor, importance: Tensor) -> Tensor:
    """(B, 3, H, W) images + (B, H, W) maps -> (B, 4, H, W) inputs."""
    if images.dim() != 4 or images.shape[1] != IMAGE_CHANNELS:
        raise ValueError(f'images must have shape (B, 3, H, W), got '
                         f'{tuple(images.shape)}')
    expected = (images.shape[0], *images.shape[2:])
    if tuple(importance.shape) != expected:
        raise ValueError(f'importance maps of shape '
                         f'{tuple(importance.shape)} do not match the images: '
                         f'expected {expected}')
    return torch.cat([images, importance[:, None].to(images)], dim=1)


def split_apt_inputs(
        x: Tensor,
        importance: Optional[Tensor] = None
) -> Tuple[Tensor, Optional[Tensor]]:
    """Backbone input -> (images (B, 3, H, W), importance (B, H, W) or
    None): a 4-channel input carries the maps as its last channel."""
    if x.dim() == 4 and x.shape[1] == IMAGE_CHANNELS + 1:
        if importance is not None:
            raise ValueError('importance maps given twice: as the 4th input '
                             'channel and as importance=')
        return x[:, :IMAGE_CHANNELS], x[:, IMAGE_CHANNELS]
    return x, importance


def _map_of(sample, key: str) -> Optional[Tensor]:
    value = sample.get(key, None) if hasattr(sample, 'get') else None
    if value is None:
        return None
    data = getattr(value, 'data', value)  # PixelData or a tensor
    if not isinstance(data, Tensor):
        data = torch.as_tensor(data)
    if data.dim() == 3 and data.shape[0] == 1:
        data = data[0]
    if data.dim() != 2:
        raise ValueError(f'data_sample.{key} must be (H, W) or (1, H, W), '
                         f'got {tuple(data.shape)}')
    return data


@MODELS.register_module()
class APTDataPreprocessor(BaseDataPreprocessor):
    """A data preprocessor that also delivers per-image importance maps.

    Builds the model's usual preprocessor (``wraps``, with every other
    argument) and runs it; afterwards, each data sample's ``importance_key``
    map, at its image's size before batch padding, is padded bottom/right
    with ``pad_value`` to the batch's size and appended as channel 3 of
    ``inputs``. In a config derived from one with a ``DetDataPreprocessor``
    (``mean``, ``std``, padding inherited)::

        model = dict(
            data_preprocessor=dict(
                type='APTDataPreprocessor', wraps='DetDataPreprocessor'),
            backbone=dict(scorer=dict(type='importance')))

    Attributes the wrapper lacks (``mean``, ``pad_size_divisor``, ...) are
    read from the wrapped preprocessor.

    Args:
        wraps (str): Type of the wrapped data preprocessor
            (``'DetDataPreprocessor'``, ``'SegDataPreProcessor'``, ...).
        importance_key (str): Data sample field of the maps. Defaults to
            ``'importance_map'``.
        pad_value (float): Importance of padded pixels. Defaults to 0
            (neutral).
        required (bool): Raise when a sample has no map; False: such samples
            get ``pad_value`` everywhere. Defaults to True.
        **kwargs: The wrapped preprocessor's arguments.
    """

    def __init__(self,
                 wraps: str,
                 importance_key: str = 'importance_map',
                 pad_value: float = 0.0,
                 required: bool = True,
                 **kwargs) -> None:
        super().__init__()
        if not isinstance(wraps, str) or wraps == type(self).__name__:
            raise ValueError(f'wraps must name the data preprocessor to '
                             f'wrap, e.g. \'DetDataPreprocessor\', got '
                             f'{wraps!r}')
        self.preprocessor = MODELS.build(dict(type=wraps, **kwargs))
        self.importance_key = importance_key
        self.pad_value = float(pad_value)
        self.required = required

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == 'preprocessor' or '_modules' not in self.__dict__ \
                    or 'preprocessor' not in self._modules:
                raise
            return getattr(self._modules['preprocessor'], name)

    def to(self, *args, **kwargs):
        self.preprocessor.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def cuda(self, *args, **kwargs):
        self.preprocessor.cuda(*args, **kwargs)
        return super().cuda(*args, **kwargs)

    def cpu(self, *args, **kwargs):
        self.preprocessor.cpu(*args, **kwargs)
        return super().cpu(*args, **kwargs)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.preprocessor(data, training)
        inputs, samples = data['inputs'], data.get('data_samples')
        if not isinstance(inputs, Tensor) or inputs.dim() != 4:
            raise ValueError('APTDataPreprocessor needs batched (B, C, H, W) '
                             'inputs from the wrapped preprocessor')
        batch, _, height, width = inputs.shape
        if samples is None or len(samples) != batch:
            raise ValueError('APTDataPreprocessor needs one data sample per '
                             'image to read the importance maps from')
        maps = inputs.new_full((batch, height, width), self.pad_value)
        for index, sample in enumerate(samples):
            value = _map_of(sample, self.importance_key)
            if value is None:
                if self.required:
                    raise ValueError(
                        f'data sample {index} has no {self.importance_key}: '
                        f'add an importance transform (LoadImportanceMap, '
                        f'BoxImportanceMap) after the Pack*Inputs step of '
                        f'the pipeline, or set required=False')
                continue
            h, w = value.shape
            if h > height or w > width:
                raise ValueError(
                    f'{self.importance_key} of sample {index} is {h}x{w}, '
                    f'larger than the batch images {height}x{width}: give '
                    f'maps at the image size before batch padding')
            maps[index, :h, :w] = value.to(maps)
        data['inputs'] = pack_apt_inputs(inputs, maps)
        return data
