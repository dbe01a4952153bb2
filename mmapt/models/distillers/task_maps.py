"""Where the task needs fine patches, from a batch's labels, per base cell.

The optional task term of :class:`ScorerDistiller` (``task_weight``) weights
the feature drift of each base cell by ``1 + task_weight * m``, where ``m``
in [0, 1] says how much the cell matters to the task:

- detection / instance segmentation (``gt_instances``), ``'coverage'``
  (the default): the fraction of the cell covered by objects (the instance
  masks where the pipeline loads them, else the ground-truth boxes);
  ``'borders'``: 1 where the cell holds an object's border (against the
  background or another object), else 0;
- semantic segmentation (``gt_sem_seg``), ``'borders'`` (its only map):
  1 where the cell holds a class boundary (two neighbouring pixels of
  different classes, neither of them ignored), else 0.

Labels are read only here; an image without objects or without boundaries
gets ``m = 0`` (its target is the label-free one).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mmapt.choices import check_choice


def object_coverage(instances, shape: Tuple[int, int],
                    device: torch.device) -> Tensor:
    """(H, W) float: 1 inside any object of ``instances``, 0 elsewhere.

    Uses ``instances.masks`` (bitmap or polygon masks) where present, else
    ``instances.bboxes`` (x1, y1, x2, y2 in the padded canvas' pixels): a
    pixel is inside when its centre is, so a cell's mean is the box's area
    share of the cell. (``BoxImportanceMap`` marks every pixel a box
    touches instead: an importance map must not lose an object's edge; for
    boxes on whole pixels the two rules agree.)
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


def object_ids(instances, shape: Tuple[int, int],
               device: torch.device) -> Tensor:
    """(H, W) long: ``1 + i`` on the pixels of object ``i`` (the last one
    listed on top where objects overlap), 0 on the background; masks as in
    :func:`object_coverage`, else boxes."""
    height, width = shape
    out = torch.zeros(height, width, dtype=torch.long, device=device)
    for i in range(len(instances)):
        out[object_coverage(instances[i:i + 1], shape, device) > 0] = i + 1
    return out


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


#: The task maps (module docstring); None picks each task's first one.
TASK_MAPS = ('coverage', 'borders')


def task_cells(data_samples: Sequence,
               shape: Tuple[int, int],
               cell_size: int,
               device: torch.device,
               kind: Optional[str] = None) -> Tensor:
    """(B, H / cell, W / cell) task map ``m`` of a batch (module docstring).

    Args:
        data_samples (Sequence): The batch's data samples, with
            ``gt_instances`` (detection) or ``gt_sem_seg`` (segmentation).
        shape (tuple[int, int]): The padded batch's (H, W).
        cell_size (int): The base patch side in pixels.
        kind (str, optional): ``'coverage'`` or ``'borders'``; None:
            coverage for detection, borders (class boundaries) for
            segmentation.

    Raises:
        ValueError: No data samples, a sample without either label, or
            ``'coverage'`` asked of a segmentation label.
    """
    check_choice('task_map', kind, (None, ) + TASK_MAPS)
    if not data_samples:
        raise ValueError(
            'task_weight > 0 needs labels, but the batch has no data '
            'samples: add LoadAnnotations to the training pipeline, or set '
            'task_weight=0. for the label-free scorer')
    maps = []
    for sample in data_samples:
        if 'gt_instances' in sample and 'bboxes' in sample.gt_instances:
            if kind == 'borders':
                full = class_boundaries(
                    object_ids(sample.gt_instances, shape, device))
                pool = F.max_pool2d
            else:
                full = object_coverage(sample.gt_instances, shape, device)
                pool = F.avg_pool2d
        elif 'gt_sem_seg' in sample:
            if kind == 'coverage':
                raise ValueError(
                    'task_map=\'coverage\' needs object labels '
                    '(gt_instances); a segmentation label map gives '
                    'task_map=\'borders\' (class boundaries) or None')
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
