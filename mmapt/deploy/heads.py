"""Join ONNX Runtime features with an mmdet detector's heads in PyTorch.

The RoI heads of the detection configs use mmcv ops (``RoIAlign``, NMS,
soft-NMS) and mmapt's own cascade head, which the exporters of this stack do
not turn into ONNX (see docs/deploy.md, "Heads"). The backbone and neck run
in ONNX Runtime; the detector's RPN and RoI heads run in eager PyTorch on
those features, through mmdet's own ``predict`` (nothing reimplemented).
"""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn


@contextmanager
def features_from(detector: nn.Module, features: Tuple[Tensor,
                                                       ...]) -> Iterator[None]:
    """Inside the block ``detector.extract_feat`` returns ``features``
    instead of running the backbone and neck."""
    detector.extract_feat = lambda inputs: features
    try:
        yield
    finally:
        del detector.extract_feat  # the class's method again


def det_data_sample(ori_shape: Tuple[int, int], canvas: Tuple[int, int]):
    """The ``DetDataSample`` of an image resized into ``canvas`` keeping its
    aspect ratio and padded bottom/right (as
    :func:`~mmapt.deploy.runtime.prepare_image` does): boxes come back in
    the original image's pixels."""
    from mmdet.structures import DetDataSample
    scale = min(canvas[0] / ori_shape[0], canvas[1] / ori_shape[1])
    img_shape = (max(1, min(canvas[0], round(ori_shape[0] * scale))),
                 max(1, min(canvas[1], round(ori_shape[1] * scale))))
    sample = DetDataSample()
    sample.set_metainfo(
        dict(
            ori_shape=tuple(ori_shape),
            img_shape=img_shape,
            pad_shape=tuple(canvas),
            batch_input_shape=tuple(canvas),
            scale_factor=(img_shape[1] / ori_shape[1],
                          img_shape[0] / ori_shape[0])))
    return sample


@torch.no_grad()
def predict_from_features(detector: nn.Module,
                          features: Sequence[np.ndarray],
                          data_samples: List,
                          rescale: bool = True) -> List:
    """mmdet's ``detector.predict`` with the backbone + neck replaced by
    ``features`` (e.g. ``ONNXRuntimeModel(...)(x).outputs.values()``).

    Args:
        detector (nn.Module): The config's mmdet detector (eval mode), with
            the weights the features were exported with.
        features (Sequence[np.ndarray]): The neck's maps, in order.
        data_samples (list[DetDataSample]): One per image, with the
            metainfo the test pipeline sets (:func:`det_data_sample`).
        rescale (bool): Boxes in the original image's pixels.

    Returns:
        list[DetDataSample]: With ``pred_instances``.
    """
    if not hasattr(detector, 'roi_head') and not hasattr(
            detector, 'bbox_head'):
        raise ValueError(f'{type(detector).__name__} has no detection head: '
                         'give the mmdet detector of the exported config')
    device = next(detector.parameters()).device
    feats = tuple(torch.from_numpy(np.asarray(f)).to(device) for f in features)
    with features_from(detector, feats):
        return detector.predict(feats[0], data_samples, rescale=rescale)


def detect(runtime, detector: nn.Module, rgb: np.ndarray) -> Dict:
    """One RGB image (H, W, 3) uint8 through ONNX Runtime (backbone + neck,
    bucket chosen per image) and the detector's heads in PyTorch.

    Returns:
        dict: ``pred_instances`` (mmengine ``InstanceData``: boxes in the
        image's pixels, scores, labels, masks if the head has them),
        ``pack_size``, ``packed_tokens``, ``capped``.
    """
    from .runtime import prepare_image
    if runtime.manifest['task'] != 'detection':
        raise ValueError('detect() needs a detector export; this one is '
                         f'{runtime.manifest["task"]}')
    result = runtime(prepare_image(rgb, runtime.manifest))
    canvas = tuple(runtime.input_shape[2:])
    sample = det_data_sample(rgb.shape[:2], canvas)
    out = predict_from_features(detector, list(result.outputs.values()),
                                [sample])[0]
    return dict(
        pred_instances=out.pred_instances,
        pack_size=result.pack_size,
        packed_tokens=result.packed_tokens,
        capped=result.capped)
