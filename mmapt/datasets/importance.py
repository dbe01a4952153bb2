"""Importance maps in the data pipeline.

Both transforms go *after* ``PackDetInputs`` / ``PackSegInputs``: they read
the packed data sample (its ``img_shape``, flip and boxes, i.e. the image's
final geometry) and set ``data_sample.importance_map``, a ``PixelData`` of
the packed image's size (content at the top-left, ``pad_value`` in the
pipeline's bottom/right padding). :class:`~mmapt.models.data_preprocessors.
APTDataPreprocessor` then batches the maps with the images. Plain
callables: no mmcv, mmdet or mmseg import.
"""
import os
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from torch import Tensor

from mmapt.choices import check_choice
from mmapt.registry import TRANSFORMS


class ImportanceMapError(ValueError):
    """An importance map file that cannot be used; the message names the
    file, the problem and the fix. ``tools/test.py`` / ``tools/train.py``
    print it as one line (also from a dataloader worker)."""


def _packed(results: dict):
    if 'data_samples' not in results or 'inputs' not in results:
        raise ValueError('importance transforms go after PackDetInputs / '
                         'PackSegInputs in the pipeline (they read the '
                         'packed data sample)')
    return results['inputs'], results['data_samples']


def _set_map(results: dict, content: Tensor, pad_value: float) -> dict:
    """Place an (h, w) map at the top-left of the packed image's canvas."""
    inputs, sample = _packed(results)
    height, width = inputs.shape[-2:]
    h, w = content.shape
    canvas = torch.full((height, width), pad_value, dtype=torch.float32)
    canvas[:min(h, height), :min(w, width)] = content[:height, :width]
    sample.importance_map = PixelData(data=canvas[None])
    return results


def _image_size(sample, inputs: Tensor):
    shape = sample.metainfo.get('img_shape', None)
    return tuple(shape[:2]) if shape is not None else tuple(inputs.shape[-2:])


@TRANSFORMS.register_module()
class BoxImportanceMap:
    """Importance ``value`` inside the sample's boxes, ``background``
    elsewhere.

    The boxes are ``data_sample.<field>.bboxes`` (default the ground truth:
    an oracle, for measuring what importance can buy; at test time give the
    boxes of a cheap first pass in that field instead), in the final image
    coordinates. Overlapping boxes take the larger value.

    Args:
        value (float): Importance inside boxes. Defaults to 1.
        background (float): Importance elsewhere. Defaults to 0.
        field (str): Instance field of the sample. Defaults to
            ``'gt_instances'``.
        pad_value (float): Importance of padding. Defaults to 0.
    """

    def __init__(self,
                 value: float = 1.0,
                 background: float = 0.0,
                 field: str = 'gt_instances',
                 pad_value: float = 0.0) -> None:
        self.value = float(value)
        self.background = float(background)
        self.field = field
        self.pad_value = float(pad_value)

    def __call__(self, results: dict) -> dict:
        inputs, sample = _packed(results)
        height, width = _image_size(sample, inputs)
        content = torch.full((height, width), self.background)
        instances = sample.get(self.field, None)
        boxes = getattr(instances, 'bboxes', None)
        if boxes is not None:
            boxes = getattr(boxes, 'tensor', boxes)  # mmdet box types
            boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            for x1, y1, x2, y2 in boxes.tolist():  # a few boxes per image
                left, top = max(0, int(x1)), max(0, int(y1))
                right = min(width, int(np.ceil(x2)))
                bottom = min(height, int(np.ceil(y2)))
                if right > left and bottom > top:
                    region = content[top:bottom, left:right]
                    region.fill_(self.value)
        return _set_map(results, content, self.pad_value)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(value={self.value}, '
                f'background={self.background}, field={self.field!r})')


@TRANSFORMS.register_module()
class LoadImportanceMap:
    """Read each image's importance map from a folder.

    The map of ``<img_path>`` is ``<folder>/<image name><suffix>``: a
    ``.npy`` float (H, W) array, or an 8-bit gray PNG read as value / 255,
    at the *original* image's size (a saliency model's output, rasterised
    boxes of a first pass). It is resized to the sample's ``img_shape``
    (bilinear) and flipped like the image (the sample's ``flip`` /
    ``flip_direction``), which covers resize + flip pipelines (the test
    pipelines); random crops are not tracked.

    Args:
        folder (str): Folder of the maps.
        suffix (str): ``'.npy'`` or ``'.png'``. Defaults to ``'.npy'``.
        pad_value (float): Importance of padding. Defaults to 0.
        missing (str): ``'error'`` (default) or ``'neutral'``: an image
            without a map gets 0 everywhere.
    """

    def __init__(self,
                 folder: str,
                 suffix: str = '.npy',
                 pad_value: float = 0.0,
                 missing: str = 'error') -> None:
        check_choice('importance map suffix', suffix, ('.npy', '.png'))
        check_choice('missing', missing, ('error', 'neutral'))
        self.folder = folder
        self.suffix = suffix
        self.pad_value = float(pad_value)
        self.missing = missing

    @property
    def _form(self) -> str:
        return ('an (H, W) float .npy array'
                if self.suffix == '.npy' else 'an 8-bit gray .png')

    def path_of(self, img_path: str) -> str:
        name = os.path.splitext(os.path.basename(img_path))[0]
        return os.path.join(self.folder, name + self.suffix)

    def _read(self, path: str) -> Optional[np.ndarray]:
        if not os.path.isfile(path):
            if self.missing == 'neutral':
                return None
            raise FileNotFoundError(
                f'no importance map {path}: write one per image (same name, '
                f'{self.suffix}) or set missing=\'neutral\'')
        try:
            if self.suffix == '.npy':
                return np.load(path).astype(np.float32)
            from PIL import Image
            with Image.open(path) as image:
                return np.asarray(image.convert('L'), np.float32) / 255.0
        except (OSError, ValueError, TypeError) as err:
            raise ImportanceMapError(
                f'importance map {path} cannot be read ({err}); write it '
                f'again as {self._form}') from None

    def __call__(self, results: dict) -> dict:
        inputs, sample = _packed(results)
        meta = sample.metainfo
        height, width = _image_size(sample, inputs)
        path = self.path_of(meta['img_path'])
        array = self._read(path)
        if array is None:
            return _set_map(results, torch.zeros(height, width),
                            self.pad_value)
        ori = tuple(meta.get('ori_shape', array.shape)[:2])
        if array.ndim != 2 or array.shape != ori:
            raise ImportanceMapError(
                f'importance map {path} has shape {array.shape}, expected '
                f'the original image size {ori} of {meta["img_path"]}: '
                f'write {self._form} of that size')
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            raise ImportanceMapError(
                f'importance map {path} contains {bad} NaN or inf values: '
                'give finite values (e.g. 0 = neutral, 1 = important)')
        content = torch.from_numpy(array)
        if content.shape != (height, width):
            content = F.interpolate(
                content[None, None], (height, width),
                mode='bilinear',
                align_corners=False)[0, 0]
        if meta.get('flip', False):
            direction = meta.get('flip_direction', 'horizontal')
            dims = {
                'horizontal': [1],
                'vertical': [0],
                'diagonal': [0, 1]
            }[direction]
            content = content.flip(dims)
        return _set_map(results, content, self.pad_value)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(folder={self.folder!r}, '
                f'suffix={self.suffix!r})')
