"""Where the task needs fine patches, from a batch's labels, per base cell.

The optional task term of :class:`ScorerDistiller` (``task_weight``) weights
the feature drift of each base cell by ``1 + task_weight * m``, where ``m``
in [0, 1] says how much the cell matters to the task:

- detection / instance segmentation (``gt_instances``): the fraction of the
  cell covered by objects (the instance masks where the pipeline loads them,
  else the ground-truth boxes);
- semantic segmentation (``gt_sem_seg``): 1 where the cell holds a class
  boundary (two neighbouring pixels of different classes, neither of them
  ignored), else 0.

Labels are read only here; an image without objects or without boundaries
gets ``m = 0`` (its target is the label-free one).
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def object_coverage(instances, shape: Tuple[int, int],
                    device: torch.device) -> Tensor:
    """(H, W) float: 1 inside any object of ``instances``, 0 elsewhere.

    Uses ``instances.masks`` (bitmap or polygon masks) where present, else
    ``instances.bboxes`` (x1, y1, x2, y2 in the padded canvas' pixels).
    """
    height, width = shape
    out = torch.zeros(height, width, device=device)
    if len(instances) == 0:
        return out
    if 'masks' in instances:
        masks = instances.masks.to_tensor(torch.float32, device)
        h, w = min(masks.shape[-2], height), min(masks.shape[-1], width)
        out[:h, :w] = masks[:, :h, :w].amax(0)
        return out
    boxes = instances.bboxes
    boxes = getattr(boxes, 'tensor', boxes).to(device)
    rows = torch.arange(height, device=device).float() + 0.5
    cols = torch.arange(width, device=device).float() + 0.5
    inside_rows = (rows >= boxes[:, 1:2]) & (rows < boxes[:, 3:4])
    inside_cols = (cols >= boxes[:, 0:1]) & (cols < boxes[:, 2:3])
    inside = inside_rows[:, :, None] & inside_cols[:, None, :]
    return inside.any(0).float()


def class_boundaries(labels: Tensor, ignore_index: int = 255) -> Tensor:
    """(H, W) float: 1 at both pixels of every horizontally or vertically
    neighbouring pair with different classes, neither ``ignore_index``."""
    labels = labels.long()
    valid = labels != ignore_index
    out = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    across = (labels[:, 1:] != labels[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    out[:, 1:] |= across
    out[:, :-1] |= across
    down = (labels[1:] != labels[:-1]) & valid[1:] & valid[:-1]
    out[1:] |= down
    out[:-1] |= down
    return out.float()


def task_cells(data_samples: Sequence, shape: Tuple[int, int], cell_size: int,
               device: torch.device) -> Tensor:
    """(B, H / cell, W / cell) task map ``m`` of a batch (module docstring).

    Args:
        data_samples (Sequence): The batch's data samples, with
            ``gt_instances`` (detection) or ``gt_sem_seg`` (segmentation).
        shape (tuple[int, int]): The padded batch's (H, W).
        cell_size (int): The base patch side in pixels.

    Raises:
        ValueError: No data samples, or a sample without either label.
    """
    if not data_samples:
        raise ValueError(
            'task_weight > 0 needs labels, but the batch has no data '
            'samples: add LoadAnnotations to the training pipeline, or set '
            'task_weight=0. for the label-free scorer')
    maps = []
    for sample in data_samples:
        if 'gt_instances' in sample and 'bboxes' in sample.gt_instances:
            full = object_coverage(sample.gt_instances, shape, device)
            pool = F.avg_pool2d
        elif 'gt_sem_seg' in sample:
            labels = sample.gt_sem_seg.data[0].to(device)
            ignore = sample.metainfo.get('ignore_index', 255)
            full = torch.zeros(shape, device=device)
            h, w = min(labels.shape[0], shape[0]), min(labels.shape[1],
                                                       shape[1])
            full[:h, :w] = class_boundaries(labels[:h, :w], ignore)
            pool = F.max_pool2d
        else:
            raise ValueError(
                'task_weight > 0 needs labels: the data samples hold neither '
                'gt_instances nor gt_sem_seg; add LoadAnnotations to the '
                'training pipeline (with_bbox / with_mask for detection), or '
                'set task_weight=0. for the label-free scorer')
        maps.append(pool(full[None, None], cell_size)[0, 0])
    return torch.stack(maps)
